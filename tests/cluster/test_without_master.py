"""
High availability never depends on the Salt master. After one state run, the master host is
powered off; then, on each node, `salt-call --local nginx_ha.<query>` answers from what the run
left on the node (node.json), keepalived still fails over when nginx dies, and a planned
switchover works with `force=True` (the peer check needs the master: refused at once, saying so).
"""

import json
import time

import pytest

from tests.cluster.support import cluster, pillar_directory, served_by, vip_holders, wait_for

pytestmark = pytest.mark.cluster

NODES = ("web-a", "web-b")
NODE_FILE = "/etc/keepalived/nginx_ha/node.json"


@pytest.fixture(scope="module")
def lab():
    with pillar_directory() as pillar_dir, cluster(pillar_dir, NODES) as lab:
        for node in NODES:  # what the run left on the node: root's alone
            stat = lab.host(node).run(["stat", "-c", "%U %G %a", NODE_FILE], check=True).stdout.split()
            assert stat == ["root", "root", "600"], (node, stat)
        lab.power_off("master")
        yield lab


def local(lab, node, fun, *args, check=True):
    """`salt-call --local --out json <fun> <args>` on the node: (parsed return, seconds, process)."""
    t0 = time.monotonic()
    proc = lab.host(node).run(["salt-call", "--local", "--out", "json", "--log-level", "quiet", fun, *args], timeout=60)
    took = time.monotonic() - t0
    print(f"{node}: salt-call --local {fun} {' '.join(args)}: {took:.2f}s, exit {proc.returncode}")
    if check:
        assert proc.returncode == 0, (node, fun, proc.stdout, proc.stderr)
    try:
        ret = json.loads(proc.stdout)["local"]
    except (ValueError, KeyError):
        ret = None
    return ret, took, proc


def test_the_master_is_gone(lab):
    assert not lab.master.running
    proc = lab.host("web-a").run(["ping", "-c1", "-W1", lab.master.addr("mgmt")], timeout=10)
    assert proc.returncode != 0


def test_queries_answer_on_each_node(lab):
    a, _, _ = local(lab, "web-a", "nginx_ha.vip_status")
    b, _, _ = local(lab, "web-b", "nginx_ha.vip_status")
    assert a["VI_web"]["state"] == "MASTER" and a["VI_web"]["holds_vip"] is True
    assert b["VI_web"]["state"] == "BACKUP" and b["VI_web"]["holds_vip"] is False
    assert local(lab, "web-a", "nginx_ha.is_master")[0] is True
    assert local(lab, "web-b", "nginx_ha.is_master")[0] is False
    for node in NODES:
        health, _, _ = local(lab, node, "nginx_ha.health")
        assert health["healthy"] is True, (node, health)
        assert health["vrrp"] == {"VI_web": "MASTER" if node == "web-a" else "BACKUP"}
        deployed, _, _ = local(lab, node, "nginx_ha.deployed")
        assert deployed["id"] == node and deployed["instances"][0]["name"] == "VI_web"
        assert local(lab, node, "nginx_ha.active_health")[0]["request"] == "/nginx_ha/health"


def test_keepalived_fails_over_without_the_master(lab):
    """The check path is the node's own: nginx stops on the MASTER, web-b takes the VIP and serves."""
    assert served_by(lab) == "web-a"
    lab.host("web-a").run(["/etc/init.d/nginx", "stop"], check=True, timeout=30)
    try:
        wait_for(lambda: vip_holders(lab) == ["web-b"], 15, what="VIP on web-b")
        wait_for(lambda: served_by(lab) == "web-b", 10, what="web-b serving the VIP")
        assert local(lab, "web-b", "nginx_ha.is_master")[0] is True
        health, _, _ = local(lab, "web-a", "nginx_ha.health")
        assert health["healthy"] is False and health["nginx"]["answers"] is False
    finally:
        lab.host("web-a").run(["/etc/init.d/nginx", "start"], check=True, timeout=30)
    wait_for(lambda: vip_holders(lab) == ["web-a"], 15, what="VIP back on web-a (preemption)")
    wait_for(lambda: served_by(lab) == "web-a", 10, what="web-a serving the VIP again")


def test_maintenance_without_the_master(lab):
    ret, _, proc = local(lab, "web-a", "nginx_ha.maintenance", "on", check=False)
    assert proc.returncode != 0
    assert "cannot reach; check web-b yourself" in proc.stdout + proc.stderr and "force=True" in proc.stdout + proc.stderr
    assert vip_holders(lab) == ["web-a"]  # refused: nothing changed
    ret, _, _ = local(lab, "web-a", "nginx_ha.maintenance", "on", "force=True")
    assert ret["maintenance"] is True and ret["settled"] is True and ret["holds_vip"] == []
    wait_for(lambda: served_by(lab) == "web-b", 10, what="web-b serving during maintenance")
    assert local(lab, "web-a", "nginx_ha.health")[0]["maintenance"] is True
    ret, _, _ = local(lab, "web-a", "nginx_ha.maintenance", "off")
    assert ret["maintenance"] is False and ret["holds_vip"] == ["VI_web"]
    wait_for(lambda: served_by(lab) == "web-a", 10, what="web-a serving after maintenance")
