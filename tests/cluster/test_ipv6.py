"""
IPv6 on real hosts (issue 10): keepalived's maintainers' way, one VRRP instance per address family
(VI_web4: 203.0.113.100, VI_web6: 2001:db8:113::100, VRRPv3) tied by a vrrp_sync_group, with
local_vip on (the default) and a notify_master program. The lab's service network is IPv4 only, so
the test gives web-a, web-b and the client addresses in 2001:db8:113::/64 itself (nodad: usable at
once). The tests run in file order on one lab:

* both VIPs on web-a's eth0 only; web-b keeps the IPv6 VIP on lo (local_vip), which it does not
  announce: the client's neighbour entry for the VIP is web-a's MAC, every time it is resolved;
* the client gets web-a's page over IPv6 (curl -g 'http://[2001:db8:113::100]/'), nginx listening
  on [::]:80 because the node has an IPv6 VIP;
* nginx_ha.vip_status and the fleet view (salt-run nginx_ha.status) carry the IPv6 VIP: web-a owns it;
* a second apply changes nothing (the notify programs' check included);
* nginx stopped on web-a: web-b serves over IPv6 and holds both VIPs (the group moved together), and
  keepalived ran the pillar's notify_master program there (through notify_hooks.py);
* nginx started again: web-a takes both VIPs back and serves over IPv6.

Works on sysvinit and systemd lab hosts ($NGINX_HA_LAB_INIT): nginx is stopped and started
through Salt's service module.
"""

import copy
import json
import pathlib

import pytest

from tests.cluster.support import VIP, apply, base_pillar, changed, cluster, failed, pillar_directory, vip_holders, wait_for

pytestmark = pytest.mark.cluster

NODES = ("web-a", "web-b")
PREFIX6 = "2001:db8:113::"
VIP6 = f"{PREFIX6}100"
URL6 = f"http://[{VIP6}]/"
HOOK_FILE = "/run/nginx_ha_test_notify_master"
REPO = pathlib.Path(__file__).resolve().parents[2]
MASTER_EXTRA = {"runner_dirs": [str(REPO / "_runners")], "peer": {".*": ["nginx_ha.health"]}}  # salt-run nginx_ha.status


def pillar():
    """The lab's base pillar, its instance split into one instance per address family, in a sync group."""
    p = base_pillar()
    inst4 = p["vrrp_instances"].pop("VI_web")
    inst6 = dict(copy.deepcopy(inst4), virtual_router_id=69, virtual_ipaddress=[f"{VIP6}/64"], notify_master=["/usr/bin/touch", HOOK_FILE])
    p["vrrp_instances"] = {"VI_web4": inst4, "VI_web6": inst6}
    p["vrrp_sync_groups"] = {"VG_web": {"group": ["VI_web4", "VI_web6"]}}
    return p


def addresses6(host, dev="eth0"):
    out = host.run(f"ip -j -6 addr show dev {dev}", check=True).stdout
    return {a["local"] for link in json.loads(out) for a in link.get("addr_info", [])}


def served_by6(lab, timeout=1):
    res = lab.client.run(f"curl -g -s -m {timeout} '{URL6}'", timeout=timeout + 10)
    if res.returncode != 0:
        return None
    return next((name for name in NODES if f"served by {name}" in res.stdout), "?")


def neighbour_mac(lab):
    """The client resolves the VIP afresh: the MAC that answered its neighbour solicitation."""
    client = lab.client
    client.run(f"ip -6 neigh flush to {VIP6} dev eth0")
    client.run(f"curl -g -s -o /dev/null -m 2 '{URL6}'", timeout=15)
    out = json.loads(client.run(f"ip -j -6 neigh show to {VIP6} dev eth0", check=True).stdout or "[]")
    return out[0].get("lladdr") if out else None


@pytest.fixture(scope="module")
def lab():
    with pillar_directory(pillar()) as pillar_dir, cluster(pillar_dir, NODES, master_extra=MASTER_EXTRA, applied=False) as lab:
        for name in (*NODES, "client"):
            host = lab.host(name)
            host.run(f"sysctl -qw net.ipv6.conf.eth0.disable_ipv6=0 && ip -6 addr add {PREFIX6}{host.octet}/64 dev eth0 nodad", check=True)
        for node in NODES:
            ret = apply(lab, node)
            assert failed(ret) == {}, (node, failed(ret))
        yield lab


def test_both_vips_are_on_the_masters_interface_and_the_backup_keeps_the_ipv6_one_on_lo(lab):
    wait_for(lambda: VIP6 in addresses6(lab.host("web-a")) and vip_holders(lab) == ["web-a"], 20, what="both VIPs on web-a")
    assert VIP6 not in addresses6(lab.host("web-b"))
    assert VIP6 in addresses6(lab.host("web-b"), "lo") and VIP6 in addresses6(lab.host("web-a"), "lo")
    conf = lab.host("web-a").read_file("/etc/keepalived/keepalived.conf")
    assert "vrrp_sync_group VG_web {" in conf and f"{VIP6}/128 dev lo\n" in conf
    assert lab.host("web-a").run("sysctl -n net.ipv6.ip_nonlocal_bind", check=True).stdout.strip() == "1"


def test_the_client_gets_the_masters_page_over_ipv6_and_only_the_master_answers_for_the_vip(lab):
    wait_for(lambda: served_by6(lab) == "web-a", 15, what="web-a's page over IPv6")
    assert "listen [::]:80 default_server;" in lab.host("web-a").read_file("/etc/nginx/conf.d/nginx_ha.conf")
    # web-b has the VIP on lo but never answers a neighbour solicitation for it on eth0
    for _ in range(3):
        assert neighbour_mac(lab) == lab.host("web-a").mac("svc")


def test_vip_status_and_the_fleet_view_carry_the_ipv6_vip(lab):
    a = lab.salt("web-a", "nginx_ha.vip_status", "VI_web6", timeout=60)["VI_web6"]
    assert a["vips"] == [VIP6] and a["vips_present"] == [VIP6] and a["holds_vip"] is True and a["state"] == "MASTER"
    b = lab.salt("web-b", "nginx_ha.vip_status", "VI_web6", timeout=60)["VI_web6"]
    assert b["holds_vip"] is False and b["state"] == "BACKUP"  # its lo copy is not holding the VIP
    code, fleet = lab.salt_run("nginx_ha.status", timeout=120)
    assert fleet["vips"][VIP6]["owner"] == "web-a" and fleet["vips"][VIP6]["status"] == "OK", fleet
    assert fleet["vips"][VIP]["owner"] == "web-a" and fleet["ok"] is True and code == 0, fleet["problems"]


def test_a_second_apply_changes_nothing(lab):
    assert changed(apply(lab, "web-a")) == {}


def test_nginx_stopped_on_the_master_moves_both_vips_and_web_b_serves_over_ipv6(lab):
    lab.host("web-b").run(f"rm -f {HOOK_FILE}", check=True)
    assert lab.salt("web-a", "service.stop", "nginx", timeout=60) is True
    wait_for(lambda: served_by6(lab) == "web-b", 15, what="web-b's page over IPv6")
    wait_for(lambda: vip_holders(lab) == ["web-b"] and VIP6 in addresses6(lab.host("web-b")), 10, what="both VIPs on web-b")
    assert VIP6 not in addresses6(lab.host("web-a"))
    assert neighbour_mac(lab) == lab.host("web-b").mac("svc")
    # keepalived ran the pillar's notify_master program on the new MASTER
    wait_for(lambda: lab.host("web-b").run(f"test -f {HOOK_FILE}").returncode == 0, 10, what="notify_master's file on web-b")


def test_nginx_back_on_web_a_takes_both_vips_back(lab):
    assert lab.salt("web-a", "service.start", "nginx", timeout=60) is True
    wait_for(lambda: served_by6(lab) == "web-a", 30, what="web-a's page over IPv6 again")
    wait_for(lambda: vip_holders(lab) == ["web-a"] and VIP6 not in addresses6(lab.host("web-b")), 10, what="both VIPs back on web-a")
