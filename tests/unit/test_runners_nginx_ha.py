"""The fleet view's decisions: one owner, SPLIT-BRAIN, NO-OWNER, silent nodes listed."""

from tests.support import formula

runner = formula.load_module("_runners", "nginx_ha")

VIP = "203.0.113.100"


def inst(state, holds, peers, prio=100):
    return {
        "VI_web": {
            "vips": [VIP],
            "vips_present": [VIP] if holds else [],
            "holds_vip": holds,
            "state": state,
            "role": "MASTER" if prio == 100 else "BACKUP",
            "effective_priority": prio,
            "peers": peers,
            "last_transition": "2026-11-24T20:39:37+00:00",
        }
    }


HEALTHY = {"web-a": {"healthy": True}, "web-b": {"healthy": True}}


def test_one_owner():
    view = runner.summarize({"web-a": inst("MASTER", True, ["web-b"]), "web-b": inst("BACKUP", False, ["web-a"], 99)}, HEALTHY, ["web-a", "web-b"])
    entry = view["vips"][VIP]
    assert view["ok"] and entry["status"] == "OK" and entry["owner"] == "web-a" and entry["backups"] == ["web-b"]
    assert entry["nodes"]["web-b"] == {"state": "BACKUP", "holds_vip": False, "role": "BACKUP", "priority": 99, "healthy": True, "last_transition": "2026-11-24T20:39:37+00:00"}


def test_split_brain():
    view = runner.summarize({"web-a": inst("MASTER", True, ["web-b"]), "web-b": inst("MASTER", True, ["web-a"], 99)}, HEALTHY, ["web-a", "web-b"])
    assert not view["ok"] and view["vips"][VIP]["status"] == "SPLIT-BRAIN" and view["vips"][VIP]["owner"] is None
    assert view["problems"] == [f"SPLIT-BRAIN: {VIP} (VI_web) is held by web-a, web-b"]


def test_two_masters_one_holder_is_split_brain_too():
    view = runner.summarize({"web-a": inst("MASTER", True, ["web-b"]), "web-b": inst("MASTER", False, ["web-a"], 99)}, HEALTHY, ["web-a", "web-b"])
    assert view["vips"][VIP]["status"] == "SPLIT-BRAIN"


def test_no_owner():
    view = runner.summarize({"web-a": inst("FAULT", False, ["web-b"]), "web-b": inst("FAULT", False, ["web-a"], 99)}, HEALTHY, ["web-a", "web-b"])
    assert view["vips"][VIP]["status"] == "NO-OWNER" and view["problems"] == [f"NO-OWNER: {VIP} (VI_web) is held by no node"]


def test_silent_node_is_listed_not_dropped():
    view = runner.summarize({"web-a": inst("MASTER", True, ["web-b"])}, HEALTHY, ["web-a"])
    assert view["unreachable"] == ["web-b"] and view["vips"][VIP]["unreachable"] == ["web-b"]
    assert "NO-ANSWER: web-b did not answer" in view["problems"] and not view["ok"]
