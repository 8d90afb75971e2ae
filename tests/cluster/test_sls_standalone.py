"""
Each SLS of the formula applied alone on fresh lab nodes (issue 11): a real Salt master, real
keepalived VRRP between web-a and web-b, real nginx, a client requesting the VIP. The tests run in
file order on one lab whose nodes start with nothing applied:

* web-b, fresh: ``nginx_ha.keepalived`` alone succeeds: keepalived.conf validated and written
  (this node's BACKUP instance), nothing started, no nginx site written;
* web-a, fresh: ``nginx_ha.service`` alone brings nginx and keepalived up, web-a takes the VIP
  and the client gets its page; the run went through the documented order (its run numbers);
* web-b: ``nginx_ha.nginx`` alone brings it up as BACKUP (the VIP stays on web-a);
* every other SLS alone on web-b succeeds (sysctl, scripts, package, grains, watcher, events,
  and any SLS added later, found by listing salt/nginx_ha);
* ``nginx_ha`` on both succeeds, and a second run changes nothing.
"""

import pytest

from tests.cluster.support import (
    VIP,
    base_pillar,
    changed,
    cluster,
    failed,
    pid_of,
    pillar_directory,
    served_by,
    state_results,
    vip_holders,
    wait_for,
)
from tests.support import formula

pytestmark = pytest.mark.cluster

NODES = ("web-a", "web-b")
KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
SITE_CONF = "/etc/nginx/conf.d/nginx_ha.conf"
DONE_ALONE = {"nginx_ha.keepalived", "nginx_ha.service", "nginx_ha.nginx", "nginx_ha"}  # covered by their own tests


@pytest.fixture(scope="module")
def lab():
    with pillar_directory(base_pillar()) as pillar_dir, cluster(pillar_dir, NODES, applied=False) as lab:
        yield lab


def apply_sls(lab, node, sls, timeout=300):
    """state.apply <sls> on one node; waits for the minion when the run restarted it (events.sls)."""
    before = lab.minion_pid(node)
    ret = lab.salt(node, "state.apply", sls, timeout=timeout)
    results = state_results(ret)
    restart = results.get("nginx_ha_events_minion_restart")
    if restart and restart["changes"]:
        lab.wait_minion_restart(node, before)
    return ret


def running(host, pidfile):
    pid = pid_of(host, pidfile)
    return bool(pid) and host.run(f"kill -0 {pid}").returncode == 0


def test_keepalived_alone_on_a_fresh_node_validates_and_writes_its_config_only(lab):
    web_b = lab.host("web-b")
    assert web_b.read_file(KEEPALIVED_CONF, missing_ok=True) is None  # fresh
    ret = apply_sls(lab, "web-b", "nginx_ha.keepalived")
    assert failed(ret) == {}, failed(ret)
    states = set(state_results(ret))
    assert {"nginx_ha_packages_installed", "nginx_ha_script_dir_present", "nginx_ha_keepalived_config_validated"} <= states
    assert not states & set(formula.RELOAD_CHAIN) - {"nginx_ha_keepalived_config_validated"}, states  # no nginx, no reload
    conf = web_b.read_file(KEEPALIVED_CONF)
    assert "state BACKUP" in conf and "priority 99" in conf
    assert not running(web_b, "/run/keepalived.pid") and not running(web_b, "/run/nginx.pid")
    assert web_b.read_file(SITE_CONF, missing_ok=True) is None


def test_service_alone_on_a_fresh_node_brings_nginx_and_keepalived_up_with_the_vip(lab):
    web_a = lab.host("web-a")
    assert web_a.read_file(KEEPALIVED_CONF, missing_ok=True) is None and not running(web_a, "/run/nginx.pid")
    ret = apply_sls(lab, "web-a", "nginx_ha.service")
    assert failed(ret) == {}, failed(ret)
    results = state_results(ret)
    # the run went through every step of the order, in that order
    order = sorted(formula.RELOAD_CHAIN, key=lambda sid: results[sid]["__run_num__"])
    assert order == list(formula.RELOAD_CHAIN), order
    for sid in ("nginx_ha_nginx_site_config_validated", "nginx_ha_keepalived_config_validated", "nginx_ha_health_path_switched",
                "nginx_ha_keepalived_running", "nginx_ha_node_config_recorded"):
        assert results[sid]["changes"], sid
    assert running(web_a, "/run/nginx.pid") and running(web_a, "/run/keepalived.pid")
    wait_for(lambda: vip_holders(lab) == ["web-a"], 15, what="VIP on web-a")
    wait_for(lambda: served_by(lab) == "web-a", 10, what="web-a's page through the VIP")
    assert lab.salt("web-a", "nginx_ha.is_master", "VI_web", timeout=60) is True


def test_nginx_alone_brings_the_backup_up_and_the_vip_stays(lab):
    web_b = lab.host("web-b")
    ret = apply_sls(lab, "web-b", "nginx_ha.nginx")
    assert failed(ret) == {}, failed(ret)
    assert "nginx_ha_keepalived_running" in state_results(ret)
    assert running(web_b, "/run/nginx.pid") and running(web_b, "/run/keepalived.pid")
    assert "ok web-b" in web_b.run("curl -s -m 2 http://127.0.0.1:8081/nginx_ha/health", timeout=10).stdout
    wait_for(lambda: lab.salt("web-b", "nginx_ha.vip_status", timeout=60)["VI_web"]["state"] == "BACKUP", 15, what="web-b BACKUP")
    assert vip_holders(lab) == ["web-a"] and served_by(lab) == "web-a"


@pytest.mark.parametrize("sls", [s for s in map(formula.sls_name, formula.sls_files()) if s not in DONE_ALONE])
def test_every_other_sls_alone_succeeds(lab, sls):
    ret = apply_sls(lab, "web-b", sls)
    assert failed(ret) == {}, failed(ret)
    assert vip_holders(lab) == ["web-a"]


def test_the_whole_formula_succeeds_on_both_then_changes_nothing(lab):
    for node in NODES:
        ret = apply_sls(lab, node, "nginx_ha")
        assert failed(ret) == {}, (node, failed(ret))
    for node in NODES:
        ret = apply_sls(lab, node, "nginx_ha")
        assert failed(ret) == {}, (node, failed(ret))
        assert changed(ret) == {}, (node, changed(ret))
    wait_for(lambda: vip_holders(lab) == ["web-a"], 15, what="VIP on web-a")
    assert served_by(lab) == "web-a"
    assert VIP in lab.host("web-a").run("ip -o addr show dev eth0", check=True).stdout
