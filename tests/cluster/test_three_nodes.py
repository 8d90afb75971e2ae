"""
Three nodes in one VRRP instance (web-a MASTER 100, web-b BACKUP 90, web-c BACKUP 80) on real
hosts: the fleet view lists three nodes and one owner; killing nginx moves the VIP down the
priorities (web-a -> web-b -> web-c) and repairing it brings the VIP back up in reverse; and
``nginx_ha.maintenance on`` on the MASTER hands the VIP to the best healthy peer (web-b, also when
web-c is the only healthy one: then web-c), and refuses when no peer can take over.

What the client saw (the page through the VIP) and which node served it are asserted each time.
"""

import pathlib

import pytest

from tests.cluster.support import VIP, base_pillar, cluster, page, pillar_directory, vip_holders, wait_for

pytestmark = pytest.mark.cluster

REPO = pathlib.Path(__file__).resolve().parents[2]
NODES = ("web-a", "web-b", "web-c")
PRIORITIES = {"web-a": 100, "web-b": 90, "web-c": 80}
MASTER_EXTRA = {"runner_dirs": [str(REPO / "_runners")], "peer": {".*": ["nginx_ha.health"]}}


def three_node_pillar():
    return base_pillar(
        nodes={
            "web-a": {"state": "MASTER", "priority": 100},
            "web-b": {"state": "BACKUP", "priority": 90},
            "web-c": {"state": "BACKUP", "priority": 80},
        }
    )


@pytest.fixture(scope="module")
def lab():
    with pillar_directory(three_node_pillar()) as pillar_dir:
        with cluster(pillar_dir, nodes=NODES, master_extra=MASTER_EXTRA) as lab:
            yield lab


def served_by(lab):
    """Which node's page the client got through the VIP (None: no answer)."""
    text = page(lab)
    if not text:
        return None
    return next((name for name in NODES if f"served by {name}" in text), "?")


def serving(lab, node, timeout=20):
    """Wait until exactly ``node`` holds the VIP and the client gets ``node``'s page through it."""
    wait_for(lambda: vip_holders(lab, NODES) == [node], timeout, what=f"the VIP on {node} alone")
    wait_for(lambda: served_by(lab) == node, 10, what=f"{node}'s page through the VIP")
    assert vip_holders(lab, NODES) == [node] and served_by(lab) == node


def kill_nginx(lab, node):
    lab.host(node).run("pkill -KILL -x nginx", check=True)


def start_nginx(lab, node):
    lab.salt(node, "service.start", "nginx", timeout=60)
    wait_for(lambda: lab.salt(node, "nginx_ha.health", timeout=60)["healthy"] is True, 30, what=f"{node} healthy")


def fleet(lab):
    return lab.salt_run("nginx_ha.status", timeout=120)


def test_fleet_view_lists_three_nodes_with_one_owner(lab):
    code, view = fleet(lab)
    assert code == 0 and view["ok"], view["problems"]
    assert list(view["clusters"]) == ["default"] and view["clusters"]["default"]["nodes"] == list(NODES)
    entry = view["vips"][VIP]
    assert entry["status"] == "OK" and entry["owner"] == "web-a" and entry["backups"] == ["web-b", "web-c"]
    assert {n: (e["state"], e["priority"], e["healthy"]) for n, e in entry["nodes"].items()} == {
        "web-a": ("MASTER", 100, True),
        "web-b": ("BACKUP", 90, True),
        "web-c": ("BACKUP", 80, True),
    }
    assert view["clusters"]["default"]["owners"] == {"VI_web": "web-a"}
    for node in NODES:
        assert lab.salt(node, "nginx_ha.vip_status", timeout=60)["VI_web"]["peers"] == sorted(set(NODES) - {node})
    assert served_by(lab) == "web-a"


def test_failover_follows_priority_and_repair_goes_back_in_reverse(lab):
    serving(lab, "web-a")
    try:
        kill_nginx(lab, "web-a")
        serving(lab, "web-b")  # the priority-2 node, not web-c
        code, view = fleet(lab)
        assert view["vips"][VIP]["owner"] == "web-b" and view["vips"][VIP]["status"] == "OK", view
        # web-c is still a healthy standby: web-a's FAULT is a warning, not critical
        assert view["problem_info"]["FAULT: web-a is in FAULT state for VI_web"]["severity"] == "warning", view["problem_info"]

        kill_nginx(lab, "web-b")
        serving(lab, "web-c")  # the priority-3 node
        code, view = fleet(lab)
        assert code == 1 and view["vips"][VIP]["owner"] == "web-c", view
        # now nobody is left to take over from web-c: both FAULTs are critical
        assert {p: i["severity"] for p, i in view["problem_info"].items() if i["kind"] == "FAULT"} == {
            "FAULT: web-a is in FAULT state for VI_web": "critical",
            "FAULT: web-b is in FAULT state for VI_web": "critical",
        }, view["problem_info"]

        start_nginx(lab, "web-b")  # repair in reverse: web-b preempts web-c
        serving(lab, "web-b")
    finally:
        for node in ("web-b", "web-a"):
            start_nginx(lab, node)
    serving(lab, "web-a")
    code, view = fleet(lab)
    assert code == 0 and view["vips"][VIP]["owner"] == "web-a", view["problems"]


def test_maintenance_on_the_master_hands_the_vip_to_the_best_healthy_peer(lab):
    serving(lab, "web-a")
    try:
        ret = lab.salt("web-a", "nginx_ha.maintenance", "on", timeout=120, wait=20)
        assert ret["maintenance"] is True and ret["settled"] is True and ret["holds_vip"] == [], ret
        assert ret["best_peer"] == {"VI_web": "web-b"} and ret["owners"] == {"VI_web": "web-b"}, ret
        serving(lab, "web-b")
    finally:
        lab.salt("web-a", "nginx_ha.maintenance", "off", timeout=120, wait=20)
    serving(lab, "web-a")


def test_maintenance_skips_an_unhealthy_peer_for_the_next_best(lab):
    serving(lab, "web-a")
    try:
        kill_nginx(lab, "web-b")
        wait_for(lambda: lab.salt("web-b", "nginx_ha.vip_status", timeout=60)["VI_web"]["state"] == "FAULT", 20, what="web-b FAULT")
        ret = lab.salt("web-a", "nginx_ha.maintenance", "on", timeout=120, wait=20)
        assert ret["best_peer"] == {"VI_web": "web-c"} and ret["owners"] == {"VI_web": "web-c"}, ret
        serving(lab, "web-c")
    finally:
        lab.salt("web-a", "nginx_ha.maintenance", "off", timeout=120, wait=20)
        start_nginx(lab, "web-b")
    serving(lab, "web-a")


def test_maintenance_refuses_when_no_peer_can_take_over(lab):
    serving(lab, "web-a")
    try:
        for node in ("web-b", "web-c"):
            kill_nginx(lab, node)
        for node in ("web-b", "web-c"):
            wait_for(lambda: lab.salt(node, "nginx_ha.vip_status", timeout=60)["VI_web"]["state"] == "FAULT", 20, what=f"{node} FAULT")
        proc = lab.master.run(["salt", "--out", "json", "--static", "web-a", "nginx_ha.maintenance", "on"], timeout=120)
        text = proc.stdout + proc.stderr
        assert "refusing maintenance: no healthy peer for VI_web can take over" in text, text
        assert "web-b: unhealthy" in text and "web-c: unhealthy" in text, text
        # nothing moved: web-a still serves
        assert vip_holders(lab, NODES) == ["web-a"] and served_by(lab) == "web-a"
        assert lab.salt("web-a", "nginx_ha.health", timeout=60)["maintenance"] is False
    finally:
        for node in ("web-b", "web-c"):
            start_nginx(lab, node)
    serving(lab, "web-a")
