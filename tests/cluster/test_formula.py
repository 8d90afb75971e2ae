"""
The nginx_ha formula on real hosts: a Salt master host and two minion hosts in the namespace lab,
real keepalived VRRP between them, real nginx, a client host requesting the VIP.

The tests run in file order and share one lab: each step starts from the state the previous one
left (first apply, idempotent apply, reload, refused configs, failover, nopreempt).
"""

import pathlib
import shutil
import tempfile
import time

import pytest

from lab import Lab
from tests.cluster.support import (
    VIP,
    apply,
    Poller,
    base_pillar,
    changed,
    failed,
    page,
    pid_of,
    served_by,
    state_results,
    vip_holders,
    wait_for,
    write_pillar,
)

pytestmark = pytest.mark.cluster

REPO = pathlib.Path(__file__).resolve().parents[2]
NODES = ("web-a", "web-b")
KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
SITE_CONF = "/etc/nginx/conf.d/nginx_ha.conf"


@pytest.fixture(scope="module")
def pillar_dir():
    path = pathlib.Path(tempfile.mkdtemp(prefix="nginx-ha-pillar-", dir="/var/tmp"))
    path.chmod(0o755)
    write_pillar(path, base_pillar())
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(pillar_dir):
    with Lab(minions=NODES, pillar_dir=str(pillar_dir), file_roots=[str(REPO / "salt")]) as lab:
        for node in NODES:
            lab.salt(node, "saltutil.sync_all", timeout=120)
        yield lab


def set_pillar(lab, pillar_dir, pillar):
    write_pillar(pillar_dir, pillar)
    for node in NODES:
        lab.salt(node, "saltutil.refresh_pillar", "wait=True", timeout=60)


def apply_all(lab, *args):
    return {node: apply(lab, node, *args) for node in NODES}


def test_first_apply_succeeds_on_every_node(lab):
    for node, ret in apply_all(lab).items():
        assert failed(ret) == {}, (node, failed(ret))
        results = state_results(ret)
        assert results["nginx_ha_keepalived_running"]["result"] is True
        assert results["nginx_ha_nginx_running"]["result"] is True


def test_exactly_one_host_owns_the_vip(lab):
    assert wait_for(lambda: vip_holders(lab) == ["web-a"], 15, what="VIP on web-a only")


def test_client_reaches_the_masters_page_through_the_vip(lab):
    assert wait_for(lambda: served_by(lab) == "web-a", 10, what="web-a's page through the VIP")
    assert "web-a" in page(lab)


def test_a_request_that_reaches_the_backup_is_answered_there_and_only_the_master_answers_arp(lab):
    """local_vip (default): every node has the VIP on lo; the BACKUP serves what still reaches it."""
    web_b = lab.host("web-b")
    lo = web_b.run("ip -o addr show dev lo", check=True).stdout
    assert f"{VIP}/32" in lo and "scope host" in lo, lo
    assert web_b.run("sysctl -n net.ipv4.conf.eth0.arp_ignore net.ipv4.conf.eth0.arp_announce", check=True).stdout.split() == ["1", "2"]
    assert lab.salt("web-b", "nginx_ha.vip_status")["VI_web"]["holds_vip"] is False  # lo is not holding it
    client = lab.client
    client.run(f"ip neigh flush to {VIP}", check=True)
    assert "web-a" in page(lab)
    neigh = client.run(f"ip neigh show to {VIP}", check=True).stdout
    assert lab.host("web-a").mac("svc") in neigh, neigh  # the ARP answer came from the MASTER alone
    # a client that still has web-b's MAC for the VIP (the moment after a handover) gets an answer
    try:
        client.run(f"ip neigh replace {VIP} lladdr {web_b.mac('svc')} dev eth0 nud permanent", check=True)
        assert "web-b" in page(lab)
    finally:
        client.run(f"ip neigh del {VIP} dev eth0")


def test_config_is_what_the_pillar_says(lab):
    a = lab.host("web-a").read_file(KEEPALIVED_CONF)
    b = lab.host("web-b").read_file(KEEPALIVED_CONF)
    assert "state MASTER" in a and "priority 100" in a
    assert "state BACKUP" in b and "priority 99" in b
    assert "enable_script_security" in a
    files = "/etc/keepalived/nginx_ha/health_watch.py /etc/keepalived/nginx_ha/health.json /etc/keepalived/nginx_ha"
    modes = lab.host("web-a").run(f"stat -c '%U %a' {files}", check=True).stdout.split()
    assert modes == ["root", "755", "root", "644", "root", "755"]
    sysctl = lab.host("web-b").run("sysctl -n net.ipv4.ip_nonlocal_bind", check=True).stdout.strip()
    assert sysctl == "1"


def test_second_apply_reports_no_changes(lab):
    for node, ret in apply_all(lab).items():
        assert failed(ret) == {}
        assert changed(ret) == {}, (node, changed(ret))
        results = state_results(ret)
        # Salt's service.running checked the daemons (not skipped); where the host's service module
        # has no offline() (sysvinit: debian_service), the formula answered it without a loader search
        for sid in ("nginx_ha_nginx_running", "nginx_ha_keepalived_running"):
            assert "already running" in results[sid]["comment"], (node, sid, results[sid]["comment"])
        prep = results["nginx_ha_service_offline_answered"]["comment"]
        if lab.host(node).init == "systemd":
            assert "systemd_service provides service.offline" in prep, prep
        else:
            assert "debian_service has no offline()" in prep, prep


def test_test_mode_reports_without_changing(lab, pillar_dir):
    set_pillar(lab, pillar_dir, {**base_pillar(), "check": {"fall": 3}})
    before = lab.host("web-a").read_file(KEEPALIVED_CONF)
    ret = apply(lab, "web-a", "test=True")
    results = state_results(ret)
    ka = results["nginx_ha_keepalived_config_validated"]
    assert ka["result"] is None and "would be updated" in ka["comment"]
    assert "-    fall 2" in ka["changes"]["diff"] and "+    fall 3" in ka["changes"]["diff"]
    assert lab.host("web-a").read_file(KEEPALIVED_CONF) == before


def test_config_change_reloads_without_dropping_the_vip(lab, pillar_dir):
    ka_pid = pid_of(lab.host("web-a"), "/run/keepalived.pid")
    nginx_pid = pid_of(lab.host("web-a"), "/run/nginx.pid")
    poller = Poller(lab, name="reload")
    try:
        # The pillar already says fall: 3 (previous test); also change the nginx site.
        set_pillar(lab, pillar_dir, {**base_pillar(), "check": {"fall": 3}, "nginx": {"client_max_body_size": "20m"}})
        rets = apply_all(lab)
    finally:
        samples = poller.stop()
    for node, ret in rets.items():
        assert failed(ret) == {}, (node, failed(ret))
        assert "nginx_ha_keepalived_config_validated" in changed(ret)
        assert "nginx_ha_nginx_site_config_validated" in changed(ret)
    assert "fall 3" in lab.host("web-a").read_file(KEEPALIVED_CONF)
    assert "client_max_body_size 20m;" in lab.host("web-a").read_file(SITE_CONF)
    # Reloaded, not restarted: the same daemons, and no client request failed meanwhile.
    assert pid_of(lab.host("web-a"), "/run/keepalived.pid") == ka_pid
    assert pid_of(lab.host("web-a"), "/run/nginx.pid") == nginx_pid
    assert len(samples) > 10
    assert [s for s in samples if s[1] != "200"] == []
    assert vip_holders(lab) == ["web-a"]


def test_config_refused_by_nginx_never_goes_live(lab, pillar_dir):
    before = lab.host("web-a").read_file(SITE_CONF)
    nginx_pid = pid_of(lab.host("web-a"), "/run/nginx.pid")
    # Valid for the pillar model, refused by nginx -t: the upstream host does not resolve.
    pillar = {
        **base_pillar(),
        "check": {"fall": 3},
        "nginx": {
            "client_max_body_size": "20m",
            "upstreams": {"app": {"servers": ["no-such-host.invalid:8080"]}},
            "locations": {"/api/": {"proxy_pass": "app"}},
        },
    }
    set_pillar(lab, pillar_dir, pillar)
    ret = apply(lab, "web-a")
    errors = failed(ret)
    assert "nginx_ha_nginx_site_config_validated" in errors
    assert "no-such-host.invalid" in errors["nginx_ha_nginx_site_config_validated"]
    assert "the live file was not" in errors["nginx_ha_nginx_site_config_validated"]
    assert lab.host("web-a").read_file(SITE_CONF) == before
    assert pid_of(lab.host("web-a"), "/run/nginx.pid") == nginx_pid
    assert served_by(lab) == "web-a"


def test_config_refused_by_keepalived_never_goes_live(lab, pillar_dir):
    before = lab.host("web-a").read_file(KEEPALIVED_CONF)
    ka_pid = pid_of(lab.host("web-a"), "/run/keepalived.pid")
    pillar = {**base_pillar(), "check": {"fall": 3}, "nginx": {"client_max_body_size": "20m"}}
    pillar["vrrp_instances"]["VI_web"]["nodes"]["web-a"]["interface"] = "eth9"  # no such interface on web-a
    set_pillar(lab, pillar_dir, pillar)
    ret = apply(lab, "web-a")
    errors = failed(ret)
    assert "nginx_ha_keepalived_config_validated" in errors, errors
    assert "eth9" in errors["nginx_ha_keepalived_config_validated"]
    assert lab.host("web-a").read_file(KEEPALIVED_CONF) == before
    assert pid_of(lab.host("web-a"), "/run/keepalived.pid") == ka_pid
    assert vip_holders(lab) == ["web-a"]


def test_invalid_pillar_changes_nothing(lab, pillar_dir):
    host = lab.host("web-a")
    stat = "stat -c '%Y %s' " + " ".join([KEEPALIVED_CONF, SITE_CONF, "/etc/keepalived/nginx_ha/health.json"])
    before = host.run(stat, check=True).stdout
    pillar = base_pillar(virtual_router_id=300)
    set_pillar(lab, pillar_dir, pillar)
    with pytest.raises(Exception) as exc:
        state_results(apply(lab, "web-a"))
    assert "nginx_ha:vrrp_instances:VI_web:virtual_router_id: 300 is not an integer within 1-255" in str(exc.value)
    assert host.run(stat, check=True).stdout == before


def test_back_to_the_base_pillar(lab, pillar_dir):
    set_pillar(lab, pillar_dir, base_pillar())
    for node, ret in apply_all(lab).items():
        assert failed(ret) == {}, (node, failed(ret))
    assert wait_for(lambda: vip_holders(lab) == ["web-a"], 10, what="VIP on web-a")


@pytest.mark.parametrize("fault, repair", [("STOP", "CONT")], ids=["hung-nginx"])
def test_vip_moves_when_master_nginx_hangs_and_returns_after_repair(lab, fault, repair):
    """The tutorial's `ps -C nginx` check misses this: the processes exist but do not answer."""
    web_a = lab.host("web-a")
    web_a.run(f"pkill -{fault} -x nginx", check=True)
    try:
        assert wait_for(lambda: vip_holders(lab) == ["web-b"], 15, what="VIP moved to web-b")
        assert wait_for(lambda: served_by(lab) == "web-b", 5, what="web-b's page through the VIP")
    finally:
        web_a.run(f"pkill -{repair} -x nginx")
    assert wait_for(lambda: vip_holders(lab) == ["web-a"], 15, what="VIP back on web-a (preemption)")
    assert wait_for(lambda: served_by(lab) == "web-a", 5, what="web-a's page again")


def test_vip_moves_when_master_nginx_dies(lab):
    web_a = lab.host("web-a")
    web_a.run("pkill -KILL -x nginx", check=True)
    assert wait_for(lambda: vip_holders(lab) == ["web-b"], 15, what="VIP moved to web-b")
    assert wait_for(lambda: served_by(lab) == "web-b", 5, what="web-b's page through the VIP")
    # Repair: the formula brings nginx back (service.running), and the VIP returns.
    ret = apply(lab, "web-a")
    assert failed(ret) == {}
    assert "nginx_ha_nginx_running" in changed(ret)
    assert wait_for(lambda: vip_holders(lab) == ["web-a"], 15, what="VIP back on web-a")


def test_nopreempt_keeps_the_vip_where_it_is_after_repair(lab, pillar_dir):
    set_pillar(lab, pillar_dir, base_pillar(nopreempt=True))
    for node, ret in apply_all(lab).items():
        assert failed(ret) == {}, (node, failed(ret))
    assert "nopreempt" in lab.host("web-a").read_file(KEEPALIVED_CONF)
    assert vip_holders(lab) == ["web-a"]
    web_a = lab.host("web-a")
    web_a.run("pkill -STOP -x nginx", check=True)
    try:
        assert wait_for(lambda: vip_holders(lab) == ["web-b"], 15, what="VIP moved to web-b")
    finally:
        web_a.run("pkill -CONT -x nginx")
    # web-a is healthy again and has the higher priority, but nopreempt: the VIP stays on web-b.
    wait_for(lambda: "ok" in web_a.run("curl -s -m 1 http://127.0.0.1:8081/nginx_ha/health").stdout, 10, what="web-a healthy")
    time.sleep(5)  # several advert intervals: a preempting MASTER would have taken the VIP back by now
    assert vip_holders(lab) == ["web-b"]
    assert served_by(lab) == "web-b"
