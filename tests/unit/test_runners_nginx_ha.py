"""The fleet view's decisions: one owner, SPLIT-BRAIN, NO-OWNER, FAULT, UNHEALTHY, MAINTENANCE,
NO-ROLE, ERROR, NO-ANSWER (silent nodes listed, never dropped), NO-NODES."""

import pytest

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
    assert view["vips"][VIP]["status"] == "NO-OWNER"
    assert view["problems"] == [f"NO-OWNER: {VIP} (VI_web) is held by no node", "FAULT: web-a is in FAULT state for VI_web", "FAULT: web-b is in FAULT state for VI_web"]


def test_silent_node_is_listed_not_dropped():
    view = runner.summarize({"web-a": inst("MASTER", True, ["web-b"])}, HEALTHY, ["web-a"])
    assert view["unreachable"] == ["web-b"] and view["vips"][VIP]["unreachable"] == ["web-b"]
    assert "NO-ANSWER: web-b did not answer" in view["problems"] and not view["ok"]


# --------------------------------------------------------------------------------------------
# Nodes that cannot serve or cannot be seen; an empty target
# --------------------------------------------------------------------------------------------

NO_ROLE_ERROR = "ERROR executing 'nginx_ha.vip_status': nginx_ha:vrrp_instances: minion 'web-c' is not a node of any instance"


def kinds(view):
    return {p: (i["kind"], i["severity"]) for p, i in view["problem_info"].items()}


def test_fault_node_is_reported_critical_when_no_healthy_standby_is_left():
    view = runner.summarize({"web-a": inst("MASTER", True, ["web-b"]), "web-b": inst("FAULT", False, ["web-a"], 99)}, HEALTHY, ["web-a", "web-b"])
    assert not view["ok"] and view["vips"][VIP]["status"] == "OK"
    assert kinds(view) == {"FAULT: web-b is in FAULT state for VI_web": ("FAULT", "critical")}
    assert view["degraded"] == ["VI_web"]


def test_unhealthy_node_is_reported_with_its_reasons():
    sick = {"healthy": False, "nginx": {"running": True, "answers": False}, "keepalived": {"running": True}, "config": {"nginx": {"valid": False}}, "maintenance": False}
    view = runner.summarize({"web-a": inst("MASTER", True, ["web-b"]), "web-b": inst("BACKUP", False, ["web-a"], 99)}, {"web-a": {"healthy": True}, "web-b": sick}, ["web-a", "web-b"])
    assert kinds(view) == {"UNHEALTHY: web-b is not healthy (nginx does not answer its health URL; the nginx configuration is invalid)": ("UNHEALTHY", "critical")}


def test_problems_that_leave_a_healthy_standby_are_warnings():
    three = {
        m: {"VI_web": dict(inst(state, holds, [p for p in ("web-a", "web-b", "web-c") if p != m])["VI_web"])}
        for m, state, holds in (("web-a", "MASTER", True), ("web-b", "BACKUP", False), ("web-c", "FAULT", False))
    }
    healths = {"web-a": {"healthy": True}, "web-b": {"healthy": True}, "web-c": {"healthy": False}}
    view = runner.summarize(three, healths, ["web-a", "web-b", "web-c"])
    assert kinds(view) == {
        "FAULT: web-c is in FAULT state for VI_web": ("FAULT", "warning"),
        "UNHEALTHY: web-c is not healthy (nginx_ha.health says unhealthy)": ("UNHEALTHY", "warning"),
    }
    assert view["degraded"] == []


def test_node_in_maintenance_is_reported_and_is_no_standby():
    healths = {"web-a": {"healthy": True}, "web-b": {"healthy": True, "maintenance": True}}
    view = runner.summarize({"web-a": inst("MASTER", True, ["web-b"]), "web-b": inst("BACKUP", False, ["web-a"], 99)}, healths, ["web-a", "web-b"])
    assert kinds(view) == {"MAINTENANCE: web-b is in maintenance (kept out of MASTER)": ("MAINTENANCE", "warning")}
    assert view["degraded"] == ["VI_web"]


def test_roleless_minion_is_no_role_not_a_permanent_no_answer():
    errors = {"web-c": {"nginx_ha.vip_status": NO_ROLE_ERROR}}
    view = runner.summarize({"web-a": inst("MASTER", True, ["web-b"]), "web-b": inst("BACKUP", False, ["web-a"], 99)}, HEALTHY, ["web-a", "web-b", "web-c"], errors=errors)
    assert view["problems"] == ["NO-ROLE: web-c has the nginx_ha pillar but no role in any instance"]
    assert view["unreachable"] == [] and kinds(view)[view["problems"][0]] == ("NO-ROLE", "warning")


def test_a_minion_that_answered_with_an_error_is_not_a_silent_one():
    errors = {"web-b": {"nginx_ha.vip_status": "ERROR: nginx_ha: ip -j addr failed: boom"}}
    view = runner.summarize({"web-a": inst("MASTER", True, ["web-b"])}, HEALTHY, ["web-a", "web-b"], errors=errors)
    assert view["problems"] == ["ERROR: web-b answered nginx_ha.vip_status with an error: ERROR: nginx_ha: ip -j addr failed: boom"]
    assert view["unreachable"] == []


def test_an_empty_target_is_never_ok():
    view = runner.summarize({}, {}, [], target="I@nginx_ha:vrrp_instances (compound)")
    assert not view["ok"] and view["problems"] == ["NO-NODES: target I@nginx_ha:vrrp_instances (compound) matched no minion"]
    assert kinds(view)[view["problems"][0]] == ("NO-NODES", "critical")


class FakeClient:
    """LocalClient.cmd with full_return: answers per function; minions missing from it are silent."""

    def __init__(self, answers):
        self.answers = answers

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def cmd(self, minions, fun, **kwargs):
        return {m: self.answers[fun][m] for m in minions if m in self.answers.get(fun, {})}


@pytest.fixture
def status_env(monkeypatch):
    runner.__opts__ = {"conf_file": "/dev/null"}
    runner.__context__ = {}
    env = {"minions": [], "answers": {}}

    class CkMinions:
        def __init__(self, opts):
            pass

        def check_minions(self, tgt, tgt_type):
            return {"minions": list(env["minions"])}

    monkeypatch.setattr(runner.salt.utils.minions, "CkMinions", CkMinions)
    monkeypatch.setattr(runner.salt.client, "get_local_client", lambda *a, **kw: FakeClient(env["answers"]))
    yield env
    del runner.__opts__, runner.__context__


def test_status_tells_errors_silence_and_no_role_apart(status_env):
    status_env["minions"] = ["web-a", "web-b", "web-c", "web-d"]
    status_env["answers"] = {
        "nginx_ha.vip_status": {
            "web-a": {"ret": inst("MASTER", True, ["web-b"]), "retcode": 0},
            "web-b": {"ret": "ERROR: nginx_ha: keepalived dump unreadable", "retcode": 1},
            "web-c": {"ret": NO_ROLE_ERROR, "retcode": 1},
        },
        "nginx_ha.health": {"web-a": {"ret": {"healthy": True, "maintenance": False}, "retcode": 0}},
    }
    view = runner.status()
    assert view["retcode"] == 1 and runner.__context__["retcode"] == 1
    assert view["problems"] == [
        "ERROR: web-b answered nginx_ha.vip_status with an error: ERROR: nginx_ha: keepalived dump unreadable",
        "NO-ROLE: web-c has the nginx_ha pillar but no role in any instance",
        "NO-ANSWER: web-d did not answer",
    ]


def test_status_of_an_empty_target_fails(status_env):
    view = runner.status(tgt="web-*", tgt_type="glob")
    assert view["retcode"] == 1 and view["problems"] == ["NO-NODES: target web-* (glob) matched no minion"]


def test_salts_stand_in_for_a_silent_minion_is_no_answer_not_an_error(status_env):
    """LocalClient answers for a minion that timed out with a 'Minion did not return' text."""
    status_env["minions"] = ["web-a", "web-b"]
    status_env["answers"] = {
        "nginx_ha.vip_status": {
            "web-a": {"ret": inst("MASTER", True, ["web-b"]), "retcode": 0},
            "web-b": {"ret": "Minion did not return. [No response]\nThe minions may not have all finished running", "retcode": 1},
        },
        "nginx_ha.health": {"web-a": {"ret": {"healthy": True, "maintenance": False}, "retcode": 0}},
    }
    view = runner.status()
    assert view["unreachable"] == ["web-b"] and "NO-ANSWER: web-b did not answer" in view["problems"], view["problems"]
    assert not any(p.startswith("ERROR:") for p in view["problems"])
