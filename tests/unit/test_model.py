"""The cluster model: every invalid pillar is refused with a message naming the key and the value."""

import copy

import pytest

from tests.support import formula

BASE = formula.two_node_pillar()


def errors_for(change):
    pillar = copy.deepcopy(BASE)
    change(pillar)
    return formula.model().validate(formula.merged(pillar))


def inst(p):
    return p["vrrp_instances"]["VI_web"]


def second_instance(p, **over):
    other = copy.deepcopy(inst(p))
    other.update(over)
    p["vrrp_instances"]["VI_two"] = other


CASES = {
    "missing VIP": (lambda p: inst(p).pop("virtual_ipaddress"), "nginx_ha:vrrp_instances:VI_web:virtual_ipaddress: is required"),
    "bad VIP": (lambda p: inst(p).update(virtual_ipaddress=["203.0.113.300/24"]), "nginx_ha:vrrp_instances:VI_web:virtual_ipaddress:0: '203.0.113.300/24' is not an IP address"),
    "router id too big": (lambda p: inst(p).update(virtual_router_id=300), "nginx_ha:vrrp_instances:VI_web:virtual_router_id: 300 is not an integer within 1-255"),
    "router id zero": (lambda p: inst(p).update(virtual_router_id=0), "virtual_router_id: 0 is not an integer within 1-255"),
    "router id missing": (lambda p: inst(p).pop("virtual_router_id"), "nginx_ha:vrrp_instances:VI_web:virtual_router_id: is required"),
    "priority too big": (lambda p: inst(p)["nodes"]["web-a"].update(priority=255), "nginx_ha:vrrp_instances:VI_web:nodes:web-a:priority: 255 is not an integer within 1-254"),
    "priority zero": (lambda p: inst(p)["nodes"]["web-b"].update(priority=0), "nodes:web-b:priority: 0 is not an integer within 1-254"),
    "same router id twice": (
        lambda p: second_instance(p, virtual_ipaddress=["203.0.113.101/24"]),
        "nginx_ha:vrrp_instances:VI_two:virtual_router_id: 68 is already used by vrrp_instances:VI_web",
    ),
    "same VIP twice": (
        lambda p: second_instance(p, virtual_router_id=69),
        "VI_two:virtual_ipaddress:0: 203.0.113.100 is already a VIP of vrrp_instances:VI_web",
    ),
    "node with no role": (lambda p: inst(p)["nodes"].update({"web-c": {"priority": 50}}), "nginx_ha:vrrp_instances:VI_web:nodes:web-c:state: is missing"),
    "node with empty entry": (lambda p: inst(p)["nodes"].update({"web-c": None}), "nodes:web-c:state: is missing"),
    "bad role": (lambda p: inst(p)["nodes"]["web-b"].update(state="SLAVE"), "nodes:web-b:state: 'SLAVE' is not MASTER or BACKUP"),
    "two masters": (lambda p: inst(p)["nodes"]["web-b"].update(state="MASTER"), "nginx_ha:vrrp_instances:VI_web:nodes: web-a, web-b are all MASTER"),
    "no master": (lambda p: inst(p)["nodes"]["web-a"].update(state="BACKUP"), "no node has state: MASTER"),
    "backup outranks master": (lambda p: inst(p)["nodes"]["web-b"].update(priority=150), "nodes:web-b:priority: 150 is not below the MASTER's (web-a: 100)"),
    "no interface": (lambda p: inst(p).pop("interface"), "nodes:web-a:interface: is missing"),
    "unicast without addresses": (lambda p: inst(p).update(unicast=True), "nodes:web-a:unicast_src_ip: is required with unicast: true"),
    "unicast single node": (
        lambda p: (inst(p).update(unicast=True), inst(p)["nodes"].pop("web-b"), p.update(nodes={"web-a": {"unicast_src_ip": "203.0.113.11"}})),
        "unicast needs at least two nodes (peers would be empty)",
    ),
    "subsecond advert on v2": (lambda p: inst(p).update(advert_int=0.5, version=2), "advert_int: 0.5 needs version: 3"),
    "nopreempt not bool": (lambda p: inst(p).update(nopreempt="yes"), "nginx_ha:vrrp_instances:VI_web:nopreempt: 'yes' is not true or false"),
    "local_vip not bool": (lambda p: p.update(local_vip="on"), "nginx_ha:local_vip: 'on' is not true or false"),
    "config injection in option": (
        lambda p: inst(p).update(options={"garp_master_delay": "1\n}\nvrrp_script x {"}),
        "nginx_ha:vrrp_instances:VI_web:options:garp_master_delay:",
    ),
    "injection in VIP extras": (lambda p: inst(p).update(virtual_ipaddress=["203.0.113.100/24 dev eth0;"]), "virtual_ipaddress:0: '203.0.113.100/24 dev eth0;' dev 'eth0;' is not an interface name"),
    "no instances": (lambda p: p.pop("vrrp_instances"), "nginx_ha:vrrp_instances: is required"),
    "check interval fraction": (lambda p: p.update(check={"interval": 0.5}), "nginx_ha:check:interval: 0.5 is not an integer within 1-4294"),
    "upstream unknown": (
        lambda p: p.update(nginx={"locations": {"/api/": {"proxy_pass": "app"}}}),
        "nginx_ha:nginx:locations:/api/:proxy_pass: 'app' is not an upstream under nginx_ha:nginx:upstreams",
    ),
    "upstream injection": (
        lambda p: p.update(nginx={"upstreams": {"app": {"servers": ["10.0.0.1:80; } server { listen 81"]}}}),
        "nginx_ha:nginx:upstreams:app:servers:0: '10.0.0.1:80; } server { listen 81' '10.0.0.1:80;' is not HOST:PORT",
    ),
    "bad listen": (lambda p: p.update(nginx={"listen": [70000]}), "nginx_ha:nginx:listen:0: 70000 is not a port 1-65535 or ADDRESS:PORT"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_invalid_pillar_names_key_and_value(case):
    change, expected = CASES[case]
    errors = errors_for(change)
    assert any(expected in e for e in errors), errors


def test_valid_pillar_has_no_errors():
    assert formula.model().validate(formula.merged(BASE)) == []
    assert formula.model().validate(formula.merged(formula.example_pillar())) == []


def test_node_view_raises_with_every_error():
    pillar = copy.deepcopy(BASE)
    inst(pillar).update(virtual_router_id=300)
    inst(pillar)["nodes"]["web-a"].update(priority=999)
    with pytest.raises(ValueError) as exc:
        formula.node_view(pillar, "web-a")
    assert "virtual_router_id: 300" in str(exc.value) and "priority: 999" in str(exc.value)


def test_minion_without_role_is_refused():
    with pytest.raises(ValueError, match="minion 'db-1' is not a node of any instance"):
        formula.node_view(BASE, "db-1")


def test_node_view_per_node():
    a = formula.node_view(BASE, "web-a")
    b = formula.node_view(BASE, "web-b")
    assert [i["state"] for i in a["instances"]] == ["MASTER"]
    assert [i["state"] for i in b["instances"]] == ["BACKUP"]
    assert a["instances"][0]["peers"] == ["web-b"]
    assert a["global_defs"]["router_id"] == "web-a"
    assert a["instances"][0]["virtual_ipaddress"] == [{"address": "203.0.113.100/24", "ip": "203.0.113.100", "extra": "", "interface": "eth0"}]


def test_a_vip_goes_on_its_dev_else_on_the_instance_interface():
    pillar = copy.deepcopy(BASE)
    inst(pillar)["virtual_ipaddress"] = ["203.0.113.100/24 dev eth1 label eth1:1", "203.0.113.101"]
    view = formula.node_view(pillar, "web-a")
    assert [v["interface"] for v in view["instances"][0]["virtual_ipaddress"]] == ["eth1", "eth0"]
    assert view["vrrp_interfaces"] == ["eth1", "eth0"]
    assert view["local_vips"] == ["203.0.113.100/32", "203.0.113.101/32"]


def test_node_only_renders_its_instances():
    pillar = copy.deepcopy(BASE)
    second_instance(pillar, virtual_router_id=69, virtual_ipaddress=["203.0.113.101/24"])
    inst(pillar)["nodes"]["web-c"] = {"state": "BACKUP", "priority": 10}
    assert [i["name"] for i in formula.node_view(pillar, "web-c")["instances"]] == ["VI_web"]
    assert [i["name"] for i in formula.node_view(pillar, "web-a")["instances"]] == ["VI_two", "VI_web"]


def test_health_url():
    assert formula.model().health_url("127.0.0.1:8081", "/h") == "http://127.0.0.1:8081/h"
    assert formula.model().health_url(8081, "/h") == "http://127.0.0.1:8081/h"
    assert formula.model().health_url("*:8081", "/h") == "http://127.0.0.1:8081/h"


@pytest.mark.parametrize("listens", [[1025, "*:1025"], [80, "0.0.0.0:80"], ["*:8080", "0.0.0.0:8080"]])
def test_one_socket_listed_twice_in_other_words_is_refused(listens):
    # found by the property test: nginx -t refuses "a duplicate listen 0.0.0.0:1025"
    pillar = {"vrrp_instances": {"VI_web": {"interface": "eth0", "virtual_router_id": 68, "virtual_ipaddress": ["203.0.113.100/24"],
                                           "nodes": {"web-a": {"state": "MASTER", "priority": 100}, "web-b": {"state": "BACKUP", "priority": 90}}}},
              "nginx": {"listen": listens}}
    errors = formula.model().validate(formula.merged(pillar))
    assert any(e.startswith("nginx_ha:nginx:listen:1:") and "is a second listen on" in e for e in errors), errors
