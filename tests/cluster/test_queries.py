"""
Minion queries and the fleet view on real hosts: nginx_ha.vip_status / is_master / health against
the kernel and keepalived, salt-run nginx_ha.status with one owner, SPLIT-BRAIN when the service
network between the nodes is cut (management still up), and a planned switchover with
nginx_ha.maintenance that no client request notices.
"""

import pathlib
import shutil
import tempfile

import pytest

from lab import Lab
from tests.cluster.support import VIP, apply, Poller, base_pillar, failed, served_by, vip_holders, wait_for, write_pillar

pytestmark = pytest.mark.cluster

REPO = pathlib.Path(__file__).resolve().parents[2]
NODES = ("web-a", "web-b")
MASTER_EXTRA = {
    "runner_dirs": [str(REPO / "_runners")],
    "peer": {".*": ["nginx_ha.health"]},
}


@pytest.fixture(scope="module")
def lab():
    pillar_dir = pathlib.Path(tempfile.mkdtemp(prefix="nginx-ha-pillar-", dir="/var/tmp"))
    pillar_dir.chmod(0o755)
    write_pillar(pillar_dir, base_pillar())
    try:
        with Lab(minions=NODES, pillar_dir=str(pillar_dir), file_roots=[str(REPO / "salt")], master_extra=MASTER_EXTRA) as lab:
            for node in NODES:
                lab.salt(node, "saltutil.sync_all", timeout=120)
            for node in NODES:
                ret = apply(lab, node)
                assert failed(ret) == {}, (node, failed(ret))
            wait_for(lambda: vip_holders(lab) == ["web-a"], 15, what="VIP on web-a")
            yield lab
    finally:
        shutil.rmtree(pillar_dir, ignore_errors=True)


def status_of(lab, node):
    return lab.salt(node, "nginx_ha.vip_status", timeout=60)["VI_web"]


def fleet(lab):
    code, data = lab.salt_run("nginx_ha.status", timeout=120)
    return code, data


def test_vip_status_matches_the_kernel(lab):
    a, b = status_of(lab, "web-a"), status_of(lab, "web-b")
    assert a["state"] == "MASTER" and a["holds_vip"] is True and a["vips_present"] == [VIP]
    assert b["state"] == "BACKUP" and b["holds_vip"] is False and b["vips_present"] == []
    assert a["base_priority"] == 100 and b["base_priority"] == 99
    assert a["last_transition"] and a["peers"] == ["web-b"]
    assert vip_holders(lab) == ["web-a"]


def test_is_master_and_role_grains(lab):
    assert lab.salt("web-a", "nginx_ha.is_master") is True
    assert lab.salt("web-b", "nginx_ha.is_master", "VI_web") is False
    assert sorted(lab.salt("nginx_ha:roles:VI_web:MASTER", "test.ping", tgt_type="grain")) == ["web-a"]
    assert sorted(lab.salt("nginx_ha:instances:VI_web", "test.ping", tgt_type="grain")) == ["web-a", "web-b"]


def test_unknown_instance_is_a_clear_error(lab):
    proc = lab.master.run(["salt", "web-a", "nginx_ha.vip_status", "VI_nope"])
    assert "instance 'VI_nope' is not configured on web-a" in proc.stdout + proc.stderr


def test_health(lab):
    for node in NODES:
        health = lab.salt(node, "nginx_ha.health", timeout=60)
        assert health["healthy"] is True, health
        assert health["nginx"]["answers"] and health["keepalived"]["running"]
        assert health["config"]["keepalived"]["valid"] and health["config"]["nginx"]["valid"]
        assert health["check_script"]["enabled"] is True


def test_fleet_view_one_owner(lab):
    code, view = fleet(lab)
    assert code == 0, view
    entry = view["vips"][VIP]
    assert entry["status"] == "OK" and entry["owner"] == "web-a" and entry["backups"] == ["web-b"]
    assert entry["nodes"]["web-b"]["healthy"] is True and view["unreachable"] == []


def test_vip_status_flips_after_failover(lab):
    web_a = lab.host("web-a")
    web_a.run("pkill -STOP -x nginx", check=True)
    try:
        wait_for(lambda: vip_holders(lab) == ["web-b"], 15, what="VIP on web-b")
        a, b = status_of(lab, "web-a"), status_of(lab, "web-b")
        assert a["state"] == "FAULT" and a["holds_vip"] is False
        assert b["state"] == "MASTER" and b["holds_vip"] is True
        assert lab.salt("web-a", "nginx_ha.health", timeout=60)["healthy"] is False
        code, view = fleet(lab)
        # the VIP is served by web-b, and the fleet view flags the node that cannot serve
        assert view["vips"][VIP]["owner"] == "web-b" and view["vips"][VIP]["status"] == "OK", view
        assert code == 1 and any(p.startswith("FAULT: web-a") for p in view["problems"]), view["problems"]
    finally:
        web_a.run("pkill -CONT -x nginx")
    wait_for(lambda: vip_holders(lab) == ["web-a"], 15, what="VIP back on web-a")
    assert wait_for(lambda: status_of(lab, "web-a")["state"] == "MASTER", 10, what="web-a MASTER again")


def test_split_brain_is_reported_and_recovers(lab):
    lab.set_link("web-b", "svc", up=False, keep_carrier=True)  # service network cut, management up
    try:
        wait_for(lambda: vip_holders(lab) == ["web-a", "web-b"], 10, what="both nodes holding the VIP")
        code, view = wait_for(lambda: (lambda r: r if r[0] != 0 else None)(fleet(lab)), 20, interval=0.5, what="SPLIT-BRAIN")
        assert view["vips"][VIP]["status"] == "SPLIT-BRAIN", view
        assert any(p.startswith("SPLIT-BRAIN: 203.0.113.100") for p in view["problems"])
    finally:
        lab.set_link("web-b", "svc", up=True, keep_carrier=True)
    wait_for(lambda: vip_holders(lab) == ["web-a"], 15, what="one holder again")
    code, view = wait_for(lambda: (lambda r: r if r[0] == 0 else None)(fleet(lab)), 20, interval=0.5, what="fleet OK again")
    assert view["vips"][VIP]["owner"] == "web-a"


def test_silent_node_is_listed(lab):
    lab.power_off("web-b")
    try:
        code, view = fleet(lab)
        assert code != 0 and view["unreachable"] == ["web-b"]
        assert view["vips"][VIP]["owner"] == "web-a"
    finally:
        lab.power_on("web-b")
    for node in ("web-b",):
        ret = apply(lab, node)
        assert failed(ret) == {}
    wait_for(lambda: status_of(lab, "web-b")["state"] == "BACKUP", 15, what="web-b BACKUP again")


def test_maintenance_switches_over_without_a_failed_request(lab):
    assert served_by(lab) == "web-a"
    poller = Poller(lab, interval=0.02, timeout=0.25, name="maintenance")
    try:
        on = lab.salt("web-a", "nginx_ha.maintenance", "on", timeout=120)
        assert on["maintenance"] is True and on["settled"] is True and on["holds_vip"] == [], on
        assert vip_holders(lab) == ["web-b"]
        assert wait_for(lambda: served_by(lab) == "web-b", 5, what="web-b's page")
        assert lab.salt("web-a", "nginx_ha.health")["maintenance"] is True
        off = lab.salt("web-a", "nginx_ha.maintenance", "off", timeout=120)
        assert off["maintenance"] is False and off["settled"] is True and off["holds_vip"] == ["VI_web"], off
        assert wait_for(lambda: served_by(lab) == "web-a", 5, what="web-a's page")
    finally:
        samples = poller.stop()
    assert len(samples) > 20
    assert [s for s in samples if s[1] != "200"] == []


def test_maintenance_refuses_when_the_peer_is_unhealthy(lab):
    web_b = lab.host("web-b")
    web_b.run("pkill -STOP -x nginx", check=True)
    try:
        wait_for(lambda: lab.salt("web-b", "nginx_ha.health", timeout=60)["healthy"] is False, 10, what="web-b unhealthy")
        proc = lab.master.run(["salt", "web-a", "nginx_ha.maintenance", "on"], timeout=120)
        assert "refusing maintenance: no healthy peer for VI_web" in proc.stdout + proc.stderr
        assert vip_holders(lab) == ["web-a"]
    finally:
        web_b.run("pkill -CONT -x nginx")
