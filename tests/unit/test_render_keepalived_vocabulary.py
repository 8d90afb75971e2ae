"""
keepalived's own vocabulary in the pillar (issue 10): IPv6 instances and sync groups, track_interface,
virtual_ipaddress_excluded, virtual_routes / virtual_rules, garp_*, authentication and the notify_*
programs. Each key is typed by the schema, refused with its pillar key when keepalived would refuse
(or silently change) what it means, and rendered into a keepalived.conf the real ``keepalived -t``
accepts (in the sandbox, tests/support/sandbox.py). The notify programs run through
``notify_hooks.py`` (no shell, a timeout, keepalived's script security rules), tested here as
keepalived runs it.

``MUTATIONS`` feeds the property test (tests/unit/test_schema_properties.py) with these keys.
"""

import copy
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest
from hypothesis import strategies as st

from tests.support import formula, sandbox

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="keepalived -t in a private namespace, chown: root")
model = formula.model()
status = formula.load_module("_utils", "nginx_ha_status")
HOOKS = formula.load_module_file(formula.FILES / "notify_hooks.py")

# ------------------------------------------------------------------------------------------------
# Strategies for the property test: each mutation merges keepalived keys into VI_web
# ------------------------------------------------------------------------------------------------

_TEXT = st.text(alphabet=st.sampled_from(list("aZ09 /._-$`'\"\\{}#%@+,~*!|\n") + ["é", "\x00"]), max_size=16)
_ARG = st.text(alphabet=st.sampled_from(list("aZ09 /._-$`'\"\\{}#%@+,~*!|;&<>") + ["é"]), max_size=16)
_NUMBERISH = st.one_of(st.integers(-3, 300), st.sampled_from(["1", "x", "", True, 0.5]))
_HOOK = st.lists(_ARG, max_size=3).map(lambda args: ["/usr/bin/logger", *args])
GARP_KEYS = ("garp_master_delay", "garp_master_repeat", "garp_master_refresh", "garp_master_refresh_repeat", "garp_lower_prio_delay", "garp_lower_prio_repeat")
HOOK_KINDS = ("notify_master", "notify_backup", "notify_fault", "notify_stop", "notify")

VOCABULARY = {
    "garp": st.fixed_dictionaries(
        {}, optional={key: st.one_of(st.sampled_from([0, 1, 5, 4294, 2147483647, 4294967295]), st.sampled_from([4295, 2147483648, 4294967296]), _NUMBERISH) for key in GARP_KEYS}
    ),
    "track_interface": st.fixed_dictionaries(
        {"track_interface": st.lists(st.one_of(st.sampled_from(["eth1", "eth1 weight -60", "eth2 weight 10 reverse", "eth3 weight 253"]), st.sampled_from(["eth1 weight 254", "eth1 reverse"]), _TEXT), max_size=2)}
    ),
    "authentication": st.fixed_dictionaries(
        {
            "authentication": st.fixed_dictionaries(
                {"auth_type": st.sampled_from(["PASS", "PASS", "AH", "pass"]), "auth_pass": st.one_of(st.sampled_from(["secret", "12345678", "123456789", "a$b"]), _TEXT)}
            ),
            "version": st.sampled_from([2, 2, 3]),
            "advert_int": st.just(1),
        }
    ),
    "evips": st.fixed_dictionaries(
        {
            "virtual_ipaddress_excluded": st.lists(
                st.one_of(
                    st.sampled_from(["203.0.113.200/24", "2001:db8::200/64", "2001:db8::201 dev eth1", "203.0.113.201/24 dev eth1 label eth1:x"]),
                    st.sampled_from(["203.0.113.100/24", "2001:db8::202/64 scope global"]),
                    _TEXT,
                ),
                unique=True,
                max_size=2,
            )
        }
    ),
    "routes": st.fixed_dictionaries(
        {
            "virtual_routes": st.lists(
                st.fixed_dictionaries(
                    {"to": st.sampled_from(["198.51.100.0/24", "198.18.0.0/15", "2001:db8:5::/64", "0.0.0.0/0", "198.51.100.1/24"]), "dev": st.sampled_from(["eth0", "eth0", "eth1", "e th"])},
                    optional={
                        "via": st.sampled_from(["203.0.113.1", "fe80::1", "2001:db8::1"]),
                        "src": st.just("203.0.113.100"),
                        "table": st.integers(0, 300),
                        "metric": st.integers(-1, 10),
                        "no_track": st.booleans(),
                        "scope": st.sampled_from(["link", "global", "x"]),
                        "type": st.sampled_from(["unicast", "unicast", "blackhole", "throw", "nat"]),
                    },
                ),
                max_size=2,
            )
        }
    ),
    "rules": st.fixed_dictionaries(
        {
            "virtual_rules": st.lists(
                st.fixed_dictionaries(
                    {"table": st.integers(0, 300), "priority": st.integers(-1, 40000), "to": st.sampled_from(["198.51.100.0/24", "198.51.101.0/24", "2001:db8:1::/64"])},
                    optional={
                        "from": st.sampled_from(["203.0.113.0/24", "2001:db8::/64", "10.0.0.1/8"]),
                        "iif": st.sampled_from(["eth0", "eth1"]),
                        "oif": st.just("eth1"),
                        "fwmark": st.integers(0, 9),
                        "no_track": st.booleans(),
                    },
                ),
                max_size=2,
            )
        }
    ),
    "notify_hooks": st.fixed_dictionaries(
        {},
        optional={
            **{kind: st.one_of(_HOOK, _HOOK, _HOOK, st.sampled_from([["relative/x"], "/bin/true"]), st.lists(_TEXT, max_size=2)) for kind in HOOK_KINDS},
            "notify_timeout": st.one_of(st.integers(1, 3600), _NUMBERISH),
        },
    ),
    "options": st.fixed_dictionaries(
        {
            "options": st.dictionaries(
                st.sampled_from(["notify_master", "track_interface", "garp_master_delay", "lower_prio_no_advert", "auth_pass"]), st.booleans(), max_size=1
            )
        }
    ),
}


def _add_ipv6_group(pillar, drawn):
    """A second instance (VI_web6, usually IPv6) beside VI_web, and a sync group of some members."""
    vip, members, tracked = drawn
    web6 = dict(copy.deepcopy(pillar["vrrp_instances"]["VI_web"]), virtual_router_id=69, virtual_ipaddress=[vip])
    pillar["vrrp_instances"]["VI_web6"] = web6
    pillar["vrrp_sync_groups"] = {"VG_web": {"group": members, "track_interface": tracked}}


MUTATIONS = {
    **{name: (strategy, lambda p, v: p["vrrp_instances"]["VI_web"].update(v)) for name, strategy in VOCABULARY.items()},
    "ipv6_sync_group": (
        st.tuples(
            st.sampled_from(["2001:db8:113::100/64", "2001:db8:113::100/64 dev eth1", "203.0.113.101/24", "fe80::100/64"]),
            st.sampled_from([["VI_web", "VI_web6"], ["VI_web6", "VI_web"], ["VI_web", "VI_web6"], ["VI_web6"], ["VI_web", "nope"], ["VI_web6", "VI_web6"]]),
            st.lists(st.sampled_from(["eth1", "eth1 weight -60", "eth0 weight 300"]), max_size=1),
        ),
        _add_ipv6_group,
    ),
}

# ------------------------------------------------------------------------------------------------
# Example pillars
# ------------------------------------------------------------------------------------------------

NODES = {"web-a": {"state": "MASTER", "priority": 100}, "web-b": {"state": "BACKUP", "priority": 90}}


def dual_stack():
    """keepalived's maintainers' way: one instance per address family, tied by a sync group."""
    return {
        "vrrp_instances": {
            "VI_web4": {"interface": "eth0", "virtual_router_id": 68, "virtual_ipaddress": ["203.0.113.100/24"], "nodes": copy.deepcopy(NODES)},
            "VI_web6": {"interface": "eth0", "virtual_router_id": 69, "virtual_ipaddress": ["2001:db8:113::100/64"], "nodes": copy.deepcopy(NODES)},
        },
        "vrrp_sync_groups": {"VG_web": {"group": ["VI_web4", "VI_web6"], "track_interface": ["eth1 weight -50"]}},
        "check": {"weight": -20},
    }


def every_key():
    """Every vocabulary key at once, on a VRRPv2 instance (authentication needs v2)."""
    pillar = formula.two_node_pillar(backup_priority=90)
    pillar["vrrp_instances"]["VI_web"].update(
        {
            "version": 2,
            "advert_int": 1,
            "track_interface": ["eth1 weight -60", "eth2"],
            "garp_master_delay": 0,
            "garp_master_repeat": 3,
            "garp_master_refresh": 60,
            "garp_master_refresh_repeat": 2,
            "garp_lower_prio_delay": 4294,
            "garp_lower_prio_repeat": 2147483647,
            "authentication": {"auth_type": "PASS", "auth_pass": "s3cr=t"},
            "virtual_ipaddress_excluded": ["2001:db8:113::100/64", "203.0.113.200/24 dev eth1"],
            "virtual_routes": [
                {"to": "198.51.100.0/24", "via": "203.0.113.1", "src": "203.0.113.100", "dev": "eth0", "table": 100, "metric": 5},
                {"to": "192.0.2.0/24", "type": "blackhole", "no_track": True},
                {"to": "2001:db8:5::/64", "via": "fe80::1", "dev": "eth0"},
            ],
            "virtual_rules": [{"from": "203.0.113.0/24", "table": 100, "priority": 100}, {"to": "2001:db8:7::/64", "iif": "eth0", "table": 100, "priority": 101, "no_track": True}],
            "notify_master": ["/usr/bin/logger", "-t", "vip", "became MASTER; $(id) `id` 'q' \"q\""],
            "notify_fault": ["/usr/bin/logger", "fault"],
            "notify": ["/usr/bin/logger", "-t", "any"],
            "notify_timeout": 3,
            "options": {"lower_prio_no_advert": True},
        }
    )
    pillar["events"] = {"notify_script": True}
    return pillar


def node(pillar, minion="web-a"):
    return formula.node_view(pillar, minion)


def keepalived_t(view, extra_files=None):
    """The real ``keepalived -t`` on ``view``'s keepalived.conf (every interface it names exists)."""
    files = {view["lookup"]["keepalived"]["config"]: (formula.render("keepalived.conf.jinja", node=view), 0o644)}
    files.update(extra_files or {})
    return sandbox.run_checked(files, ["keepalived", "-t", "-f", view["lookup"]["keepalived"]["config"]], sorted(set(view["interfaces"]) | {"eth0"}))


def block(text, head):
    """The lines of the ``head {`` block of ``text`` (first match), without the braces."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == head + " {")
    depth, out = 0, []
    for line in lines[start:]:
        depth += line.count("{") - line.count("}")
        out.append(line.strip())
        if depth == 0:
            return out[1:-1]
    raise AssertionError(f"{head} is not closed")


# ------------------------------------------------------------------------------------------------
# Accepted: rendered as keepalived spells it, accepted by the real keepalived -t
# ------------------------------------------------------------------------------------------------


@ROOT_ONLY
def test_dual_stack_sync_group_renders_what_keepalived_accepts_and_nginx_listens_on_both_families():
    view = node(dual_stack())
    text = formula.render("keepalived.conf.jinja", node=view)
    # IPv6 local VIP on lo: no scope (keepalived refuses one for IPv6), a /128 (deprecated: never a source)
    assert block(text, "static_ipaddress") == ["203.0.113.100/32 dev lo scope host", "2001:db8:113::100/128 dev lo"]
    inst6 = block(text, "vrrp_instance VI_web6")
    assert "version 3" in inst6 and "2001:db8:113::100/64" in inst6
    # the members track nothing themselves (keepalived would zero their weights): the group does
    for name in ("VI_web4", "VI_web6"):
        assert not any(line.startswith(("track_script", "track_file")) for line in block(text, f"vrrp_instance {name}"))
    group = block(text, "vrrp_sync_group VG_web")
    assert group[:4] == ["group {", "VI_web4", "VI_web6", "}"]
    assert "eth1 weight -50" in group and "nginx_ha_check" in group and "nginx_ha_maintenance" in group and "nginx_ha_health" in group
    res = sandbox.run_checked(formula.rendered_files(view), ["sh", "-c", 'keepalived -t -f "$1" && nginx -t -q', "sh", view["lookup"]["keepalived"]["config"]], sorted(set(view["interfaces"]) | {"eth0"}))
    assert res.returncode == 0, res.stderr + text
    site = formula.site(view)
    assert "listen 80 default_server;" in site and "listen [::]:80 default_server;" in site
    assert view["ipv6"] is True and view["firewall"]["vrrp"] == [
        {"family": 4, "interface": "eth0", "group": "224.0.0.18"},
        {"family": 6, "interface": "eth0", "group": "ff02::12"},
    ]


def test_an_ipv4_only_node_gets_no_ipv6_listen_and_no_ipv6_sysctl():
    view = node(formula.two_node_pillar())
    assert view["ipv6"] is False and "[::]" not in formula.site(view)
    from tests.unit.test_schema_properties import render_sls

    assert "nginx_ha_sysctl_ipv6_ip_nonlocal_bind" not in render_sls("sysctl", view)
    states = render_sls("sysctl", node(dual_stack()))
    assert states["nginx_ha_sysctl_ipv6_ip_nonlocal_bind"]["sysctl.present"][0] == {"name": "net.ipv6.ip_nonlocal_bind"}
    # local_vip with IPv6 needs no arp_* counterpart; the IPv4 ones stay on the VRRP interface
    assert {k for k in states if k.startswith("nginx_ha_sysctl_arp")} == {"nginx_ha_sysctl_arp_ignore_eth0", "nginx_ha_sysctl_arp_announce_eth0"}


def test_an_explicit_ipv6_listen_is_left_to_the_pillar():
    pillar = dual_stack()
    pillar["nginx"] = {"listen": [80, "[::]:80", 8080]}
    listens = [line.strip() for line in formula.site(node(pillar)).splitlines() if line.strip().startswith("listen ")]
    assert listens[:4] == ["listen 80 default_server;", "listen [::]:80;", "listen 8080;", "listen [::]:8080;"]


@ROOT_ONLY
def test_every_vocabulary_key_is_rendered_as_keepalived_spells_it_and_accepted():
    view = node(every_key())
    text = formula.render("keepalived.conf.jinja", node=view)
    inst = block(text, "vrrp_instance VI_web")
    assert block(text, "track_interface") == ["eth1 weight -60", "eth2"]
    for key in GARP_KEYS:
        assert sum(line.startswith(key + " ") for line in inst) == 1, key
    assert block(text, "authentication") == ["auth_type PASS", "auth_pass s3cr=t"]
    assert block(text, "virtual_ipaddress_excluded") == ["2001:db8:113::100/64", "203.0.113.200/24 dev eth1"]
    assert block(text, "virtual_routes") == [
        "198.51.100.0/24 src 203.0.113.100 via 203.0.113.1 dev eth0 table 100 metric 5",
        "blackhole 192.0.2.0/24 no_track",
        "2001:db8:5::/64 via fe80::1 dev eth0",
    ]
    assert block(text, "virtual_rules") == ["from 203.0.113.0/24 table 100 priority 100", "to 2001:db8:7::/64 iif eth0 table 100 priority 101 no_track"]
    # no pillar text in keepalived.conf for the programs: instance and kind only, the argv is data
    hooks = [line for line in inst if line.startswith("notify")]
    assert hooks == [
        f'{kind} "/usr/bin/python3 /etc/keepalived/nginx_ha/notify_hooks.py run /etc/keepalived/nginx_ha/notify_hooks.json VI_web {kind}"'
        for kind in ("notify_master", "notify_fault", "notify")
    ]
    assert "$(id)" not in text and "logger" not in text
    # keepalived takes one `notify`: the events' notify script runs through notify_hooks.py too
    assert view["notify_hooks"]["instances"]["VI_web"]["notify"] == [
        {"argv": ["/usr/bin/logger", "-t", "any"], "timeout": 3},
        {"argv": ["/etc/keepalived/nginx_ha/notify_event.sh"], "timeout": 20},
    ]
    # both families of excluded VIPs on lo with local_vip
    assert "2001:db8:113::100/128" in view["local_vips"] and "203.0.113.200/32" in view["local_vips"]
    res = keepalived_t(view)
    assert res.returncode == 0, res.stderr + text


def test_keepalived_conf_is_root_only_with_a_password_and_the_hooks_are_checked_before_it_goes_live():
    from tests.unit.test_schema_properties import render_sls

    states = render_sls("keepalived", node(every_key()))
    config = {k: v for d in states["nginx_ha_keepalived_config_validated"]["nginx_ha.validated_config"] for k, v in d.items()}
    assert config["mode"] == "0600" and {"cmd": "nginx_ha_notify_hooks_checked"} in config["require"]
    check = {k: v for d in states["nginx_ha_notify_hooks_checked"]["cmd.run"] for k, v in d.items()}
    assert check["name"] == check["unless"] == "/usr/bin/python3 /etc/keepalived/nginx_ha/notify_hooks.py check /etc/keepalived/nginx_ha/notify_hooks.json"
    settings = {k: v for d in states["nginx_ha_notify_hooks_settings"]["file.serialize"] for k, v in d.items()}
    assert settings["dataset"] == node(every_key())["notify_hooks"] and settings["mode"] == "0644"
    plain = render_sls("keepalived", node(formula.two_node_pillar()))
    config = {k: v for d in plain["nginx_ha_keepalived_config_validated"]["nginx_ha.validated_config"] for k, v in d.items()}
    assert config["mode"] == "0644" and "nginx_ha_notify_hooks_checked" not in plain
    assert {v["file.absent"][0]["name"] for k, v in plain.items() if k.startswith("nginx_ha_notify_hooks_absent")} == {
        "/etc/keepalived/nginx_ha/notify_hooks.py",
        "/etc/keepalived/nginx_ha/notify_hooks.json",
    }


# ------------------------------------------------------------------------------------------------
# Refused: with the pillar key and the value
# ------------------------------------------------------------------------------------------------


def _inst(**changes):
    def change(pillar):
        pillar["vrrp_instances"]["VI_web"].update(changes)

    return change


def _group(members, **extra):
    def change(pillar):
        pillar["vrrp_instances"]["VI_web6"] = dict(copy.deepcopy(pillar["vrrp_instances"]["VI_web"]), virtual_router_id=69, virtual_ipaddress=["2001:db8::100/64"])
        pillar["vrrp_sync_groups"] = {"VG": dict({"group": members}, **extra)}

    return change


REFUSED = [
    (_inst(virtual_ipaddress=["203.0.113.100/24", "2001:db8::100/64"]), "VI_web:virtual_ipaddress:1: 2001:db8::100 mixes IPv4 and IPv6 in one instance"),
    (_inst(virtual_ipaddress=["2001:db8::100/64"], version=2, advert_int=1), "VI_web:virtual_ipaddress:0: 2001:db8::100 is IPv6, which needs version: 3"),
    (_inst(virtual_ipaddress=["2001:db8::100/64 label eth0:1"]), "VI_web:virtual_ipaddress:0: '2001:db8::100/64 label eth0:1' is IPv6, which takes no label"),
    (_inst(virtual_ipaddress=["2001:db8::100/64 scope global"]), "which takes no scope"),
    (_inst(virtual_ipaddress=["203.0.113.100/24 brd 2001:db8::ff"]), "brd 2001:db8::ff is not of the address's family"),
    (_inst(virtual_ipaddress_excluded=["203.0.113.100/24"]), "VI_web:virtual_ipaddress_excluded:0: 203.0.113.100 is already a VIP of vrrp_instances:VI_web"),
    (_inst(authentication={"auth_type": "PASS", "auth_pass": "secret"}), "VI_web:authentication: VRRPv3 (RFC 5798) has no authentication"),
    (_inst(authentication={"auth_type": "PASS", "auth_pass": "123456789"}, version=2, advert_int=1), "VI_web:authentication:auth_pass: (value not shown) is not a password of 1-8"),
    (_inst(authentication={"auth_type": "AH", "auth_pass": "secret"}, version=2, advert_int=1), "VI_web:authentication:auth_type: AH adverts are IP protocol 51"),
    (_inst(authentication={"auth_type": "MD5", "auth_pass": "secret"}, version=2, advert_int=1), "VI_web:authentication:auth_type: 'MD5' is not PASS or AH"),
    (_inst(garp_master_delay=4295), "VI_web:garp_master_delay: 4295 is not an integer within 0-4294"),
    (_inst(garp_master_repeat=0), "VI_web:garp_master_repeat: 0 is not an integer within 1-4294967295"),
    (_inst(garp_master_refresh=4294967296), "VI_web:garp_master_refresh: 4294967296 is not an integer"),
    (_inst(garp_lower_prio_repeat=2147483648), "VI_web:garp_lower_prio_repeat: 2147483648 is not an integer within 0-2147483647"),
    (_inst(track_interface=["eth1 weight 254"]), "VI_web:track_interface:0: 'eth1 weight 254' weight '254' is not an integer within -253..253"),
    (_inst(track_interface=["eth1", "eth1 weight -5"]), "VI_web:track_interface:1: eth1 is tracked twice"),
    (_inst(notify_master=["bin/x"]), "VI_web:notify_master: ['bin/x'] program 'bin/x' is not an absolute path"),
    (_inst(notify_master="/usr/local/bin/x arg"), "VI_web:notify_master: '/usr/local/bin/x arg' is not a command as a list"),
    (_inst(notify=["/usr/bin/logger", "a\nb"]), "VI_web:notify: ['/usr/bin/logger', 'a\\nb'] argument 'a\\nb' is not a one-line string"),
    (_inst(notify_timeout=0), "VI_web:notify_timeout: 0 is not an integer within 1-3600"),
    (_inst(options={"notify_master": "/tmp/x"}), "VI_web:options:notify_master: runs a program; set it as vrrp_instances:VI_web:notify_master"),
    (_inst(options={"track_interface": "eth1"}), "VI_web:options:track_interface: is written from its own key"),
    (_inst(options={"garp_master_delay": 1}, garp_master_delay=2), "VI_web:options:garp_master_delay: is also set as vrrp_instances:VI_web:garp_master_delay"),
    (_inst(virtual_routes=[{"to": "198.51.100.0/24", "via": "2001:db8::1", "dev": "eth0"}]), "VI_web:virtual_routes:0: mixes IPv4 and IPv6"),
    (_inst(virtual_routes=[{"to": "198.51.100.0/24", "via": "203.0.113.1"}]), "VI_web:virtual_routes:0:dev: is required unless no_track: true"),
    (_inst(virtual_routes=[{"to": "2001:db8:5::/64", "via": "fe80::1", "no_track": True}]), "VI_web:virtual_routes:0:via: fe80::1 is link-local, which needs dev"),
    (_inst(virtual_routes=[{"to": "198.51.100.0/24", "via": "203.0.113.1", "dev": "eth0", "type": "blackhole"}]), "VI_web:virtual_routes:0:via: a blackhole route has no gateway"),
    (_inst(virtual_routes=[{"to": "198.51.100.1/24", "dev": "eth0"}]), "VI_web:virtual_routes:0:to: '198.51.100.1/24' is not a network"),
    (_inst(virtual_rules=[{"from": "203.0.113.0/24", "table": 100}]), "VI_web:virtual_rules:0:priority: is required"),
    (_inst(virtual_rules=[{"from": "203.0.113.0/24", "to": "2001:db8::/64", "table": 100, "priority": 5}]), "VI_web:virtual_rules:0: mixes IPv4 and IPv6"),
    (_group(["VI_web", "VI_nope"]), "nginx_ha:vrrp_sync_groups:VG:group:1: VI_nope is not an instance under nginx_ha:vrrp_instances"),
    (_group(["VI_web"]), "nginx_ha:vrrp_sync_groups:VG:group: needs at least 2 item(s)"),
    (_group(["VI_web", "VI_web"]), "nginx_ha:vrrp_sync_groups:VG:group:1: VI_web is listed twice"),
    (_group(["VI_web", "VI_web6"], track_interface=["eth1"]), None),  # accepted (control)
]


def _two_groups(pillar):
    _group(["VI_web", "VI_web6"])(pillar)
    pillar["vrrp_instances"]["VI_web7"] = dict(copy.deepcopy(pillar["vrrp_instances"]["VI_web"]), virtual_router_id=70, virtual_ipaddress=["203.0.113.107/24"])
    pillar["vrrp_sync_groups"]["VG2"] = {"group": ["VI_web7", "VI_web"]}


def _roles_differ(pillar):
    _group(["VI_web", "VI_web6"])(pillar)
    pillar["vrrp_instances"]["VI_web6"]["nodes"] = {"web-a": {"state": "BACKUP", "priority": 90}, "web-b": {"state": "MASTER", "priority": 100}}


def _weighted_member(pillar):
    _group(["VI_web", "VI_web6"])(pillar)
    pillar["vrrp_instances"]["VI_web6"]["track_interface"] = ["eth1 weight -60"]


def _twice_tracked(pillar):
    _group(["VI_web", "VI_web6"], track_interface=["eth1 weight -60"])(pillar)
    pillar["vrrp_instances"]["VI_web"]["track_interface"] = ["eth1"]


REFUSED += [
    (_two_groups, "nginx_ha:vrrp_sync_groups:VG2:group:1: VI_web is already in vrrp_sync_groups:VG; an instance belongs to one sync group at most"),
    (_roles_differ, "nginx_ha:vrrp_sync_groups:VG:group:1: VI_web6 has other nodes, roles or nopreempt than VI_web (web-a BACKUP, web-b MASTER vs web-a MASTER, web-b BACKUP)"),
    (_weighted_member, "nginx_ha:vrrp_instances:VI_web6:track_interface:0: 'eth1 weight -60' is weighted, and keepalived ignores the weights of a sync group's members"),
    (_twice_tracked, "nginx_ha:vrrp_instances:VI_web:track_interface:0: eth1 is also tracked by vrrp_sync_groups:VG"),
]


@pytest.mark.parametrize("change, expected", REFUSED)
def test_what_keepalived_would_refuse_is_refused_with_the_key_and_the_value(change, expected):
    pillar = formula.two_node_pillar(backup_priority=90)
    change(pillar)
    if expected is None:
        node(pillar)
        return
    with pytest.raises(model.ModelError) as exc:
        node(pillar)
    assert any(expected in e for e in exc.value.errors), exc.value.errors
    assert all(e.startswith("nginx_ha:") for e in exc.value.errors)
    assert not any("123456789" in e for e in exc.value.errors)  # a password is never shown


@ROOT_ONLY
@pytest.mark.parametrize(
    "force, message",
    [
        (lambda v: v["instances"][0].update(authentication={"auth_type": "PASS", "auth_pass": "secret"}), "VRRP version 3 does not support authentication"),
        (lambda v: v.update(sync_groups=[{"name": "VG", "group": ["VI_web"], "track_interface": []}]), "has only 1 virtual router"),
        (lambda v: v["instances"][0]["virtual_ipaddress"][0].update(address="2001:db8::100/64", extra="label eth0:1"), "Cannot specify label for IPv6"),
        (lambda v: v["instances"][0].update(garp={"garp_master_repeat": 0}), "garp_master_repeat must be greater than 0"),
        (lambda v: v["instances"][0].update(virtual_routes=["198.51.100.0/24 via 203.0.113.1"]), "cannot track route"),
        (lambda v: v["instances"][0].update(virtual_rules=["from 203.0.113.0/24 table 100"]), "Rule has no preference"),
        (lambda v: v.update(sync_groups=[{"name": "VG", "group": ["VI_web", "VI_x"], "track_interface": []}]), "doesn't exist"),
    ],
)
def test_the_refusals_are_what_keepalived_itself_refuses(force, message):
    """The same things forced past the schema into a node view: the real keepalived -t refuses each."""
    view = node(formula.two_node_pillar())
    force(view)
    res = keepalived_t(view)
    assert res.returncode != 0 and message in res.stdout + res.stderr, res.stdout + res.stderr


# ------------------------------------------------------------------------------------------------
# notify_hooks.py: keepalived's notify programs, run without a shell, with a timeout
# ------------------------------------------------------------------------------------------------


def _settings(tmp_path, instances, mode=0o644):
    path = tmp_path / "notify_hooks.json"
    path.write_text(json.dumps({"instances": instances}))
    path.chmod(mode)
    return path


def _recorder(tmp_path, name="record"):
    script = tmp_path / name
    script.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done > "$0.out"\n')
    script.chmod(0o755)
    return script


@pytest.fixture
def hook_dir(tmp_path):
    tmp_path.chmod(0o755)  # the programs' directory must not be writable by others either
    return tmp_path


@ROOT_ONLY
def test_a_program_gets_its_arguments_byte_for_byte_and_notify_gets_keepalived_s_four(hook_dir):
    record = _recorder(hook_dir)
    args = ["a b", "$(id)", "`id`", "'q'", '"q"', "x;y|z&", "é", ""]
    settings = _settings(hook_dir, {"VI_web": {"notify_master": [{"argv": [str(record), *args], "timeout": 5}], "notify": [{"argv": [str(record), "-x"], "timeout": 5}]}})
    log = []
    assert HOOKS.run(str(settings), "VI_web", "notify_master", ["INSTANCE", "VI_web", "MASTER", "100"], log=lambda *a: log.append(a)) == {str(record): "exit 0"}
    assert (hook_dir / "record.out").read_bytes().split(b"\0")[:-1] == [a.encode() for a in args]
    HOOKS.run(str(settings), "VI_web", "notify", ["INSTANCE", "VI_web", "MASTER", "100"], log=lambda *a: None)
    assert (hook_dir / "record.out").read_bytes().split(b"\0")[:-1] == [b"-x", b"INSTANCE", b"VI_web", b"MASTER", b"100"]
    # another instance or kind: nothing to run
    assert HOOKS.run(str(settings), "VI_other", "notify_master", [], log=lambda *a: None) == {}


@ROOT_ONLY
def test_a_program_past_its_timeout_is_killed_with_its_children(hook_dir):
    script = hook_dir / "hang"
    script.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {hook_dir}/child\nwait\n")
    script.chmod(0o755)
    settings = _settings(hook_dir, {"VI_web": {"notify_fault": [{"argv": [str(script)], "timeout": 0.5}]}})
    start = time.monotonic()
    outcome = HOOKS.run(str(settings), "VI_web", "notify_fault", [], log=lambda *a: None)
    assert outcome == {str(script): "killed after 0.5s"} and time.monotonic() - start < 4
    child = int((hook_dir / "child").read_text())
    time.sleep(0.2)
    assert not os.path.exists(f"/proc/{child}") or "Z" in pathlib.Path(f"/proc/{child}/stat").read_text().split()[2]


@ROOT_ONLY
def test_an_unsafe_program_or_settings_file_is_refused_as_keepalived_would(hook_dir):
    writable = _recorder(hook_dir, "writable")
    writable.chmod(0o757)
    foreign = _recorder(hook_dir, "foreign")
    os.chown(foreign, 65534, 0)
    sub = hook_dir / "open"
    sub.mkdir()
    sub.chmod(0o777)
    in_open_dir = _recorder(sub, "prog")
    good = _recorder(hook_dir, "good")
    instances = {"VI_web": {"notify_master": [{"argv": [str(p)], "timeout": 5} for p in (writable, foreign, in_open_dir, good, hook_dir / "missing")]}}
    settings = _settings(hook_dir, instances)
    outcome = HOOKS.run(str(settings), "VI_web", "notify_master", [], log=lambda *a: None)
    assert outcome[str(good)] == "exit 0"
    assert outcome[str(writable)] == f"not run: {writable} is writable by others"
    assert outcome[str(foreign)] == f"not run: {foreign} is not owned by root"
    assert outcome[str(in_open_dir)] == f"not run: {sub} is writable by others"
    assert outcome[str(hook_dir / "missing")].startswith("not run: ") and "No such file" in outcome[str(hook_dir / "missing")]
    assert not (hook_dir / "writable.out").exists() and not (sub / "prog.out").exists()
    # check mode: what Salt runs before keepalived.conf goes live
    res = subprocess.run([sys.executable, str(formula.FILES / "notify_hooks.py"), "check", str(settings)], capture_output=True, text=True)
    assert res.returncode == 1 and res.stderr.count("vrrp_instances:VI_web:notify_master:") == 4, res.stderr
    good_only = _settings(hook_dir, {"VI_web": {"notify_master": [{"argv": [str(good)], "timeout": 5}]}})
    assert subprocess.run([sys.executable, str(formula.FILES / "notify_hooks.py"), "check", str(good_only)]).returncode == 0
    # settings anyone else could write are not read at all
    good_only.chmod(0o666)
    with pytest.raises(HOOKS.Refused, match="writable by others"):
        HOOKS.load_settings(str(good_only))
    assert subprocess.run([sys.executable, str(formula.FILES / "notify_hooks.py"), "run", str(good_only), "VI_web", "notify_master"]).returncode == 1


def test_a_program_on_a_merged_usr_path_passes_the_check():
    """/bin is a link to usr/bin on current Debian: a root-owned link is fine, as for keepalived."""
    assert HOOKS.program_problem("/bin/true") is None and HOOKS.program_problem("/usr/bin/logger") is None
    assert HOOKS.program_problem("relative") == "'relative' is not an absolute path"


# ------------------------------------------------------------------------------------------------
# IPv6 VIPs through vip_status, the fleet view and the events
# ------------------------------------------------------------------------------------------------


def _ip_addr(*entries):
    """``ip -j addr`` of links: (ifname, [(address, prefix, flags...)])."""
    return json.dumps(
        [
            {"ifname": name, "addr_info": [dict({"family": "inet6" if ":" in a else "inet", "local": a, "prefixlen": p}, **{f: True for f in flags}) for a, p, *flags in addrs]}
            for name, addrs in entries
        ]
    )


def test_vip_status_holds_an_ipv6_vip_only_on_the_vrrp_interface_and_only_when_usable():
    view = node(dual_stack())
    inst6 = next(i for i in view["instances"] if i["name"] == "VI_web6")
    master = status.parse_ip_addr(_ip_addr(("lo", [("2001:db8:113::100", 128)]), ("eth0", [("2001:db8:113:0::100", 64, "nodad"), ("fe80::1", 64)])))
    st_ = status.instance_status(inst6, None, master, True)
    assert st_["vips"] == ["2001:db8:113::100"] and st_["holds_vip"] is True
    backup = status.parse_ip_addr(_ip_addr(("lo", [("2001:db8:113::100", 128)]), ("eth0", [("2001:db8:113::12", 64)])))
    assert status.instance_status(inst6, None, backup, True)["holds_vip"] is False
    for flag in ("tentative", "dadfailed"):
        unusable = status.parse_ip_addr(_ip_addr(("eth0", [("2001:db8:113::100", 64, flag)])))
        assert status.instance_status(inst6, None, unusable, True)["vips_present"] == [], flag


def test_excluded_vips_count_as_the_instance_s_vips():
    view = node(every_key())
    inst = view["instances"][0]
    addrs = status.parse_ip_addr(_ip_addr(("eth0", [("203.0.113.100", 24), ("2001:db8:113::100", 64)])))
    st_ = status.instance_status(inst, None, addrs, True)
    assert st_["vips"] == ["203.0.113.100", "2001:db8:113::100", "203.0.113.200"]
    assert st_["vips_present"] == ["203.0.113.100", "2001:db8:113::100"] and st_["holds_vip"] is False  # 203.0.113.200 goes on eth1


def test_the_fleet_view_reports_an_ipv6_vip_and_its_split_brain():
    runner = formula.load_module("_runners", "nginx_ha")
    vip6 = "2001:db8:113::100"

    def answer(state, held):
        return {"VI_web6": {"vips": [vip6], "vips_present": [vip6] if held else [], "state": state, "role": "MASTER", "peers": [], "effective_priority": 100}}

    ok = runner.summarize({"web-a": answer("MASTER", True), "web-b": answer("BACKUP", False)}, {}, ["web-a", "web-b"])
    assert ok["vips"][vip6]["owner"] == "web-a" and ok["vips"][vip6]["status"] == "OK"
    split = runner.summarize({"web-a": answer("MASTER", True), "web-b": answer("MASTER", True)}, {}, ["web-a", "web-b"])
    assert f"SPLIT-BRAIN: {vip6} (VI_web6) is held by web-a, web-b" in split["problems"]


def test_the_events_carry_the_ipv6_vips(monkeypatch):
    engine = formula.load_module("_engines", "nginx_ha_events")
    view = node(dual_stack())
    engine.__salt__ = {"nginx_ha.node_config": lambda: view}
    try:
        resolve = engine._vips_resolver(None)
        assert resolve("VI_web6") == ["2001:db8:113::100"] and resolve("VI_web4") == ["203.0.113.100"]
    finally:
        del engine.__salt__
