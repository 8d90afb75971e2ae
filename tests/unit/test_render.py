"""
Render the formula's templates for several cluster pillars and feed the output to the real
``keepalived -t`` and ``nginx -t`` (in a private sandbox, see tests/support/sandbox.py).
"""

import copy

import pytest

from tests.support import formula, sandbox

SINGLE = formula.example_pillar()

ACTIVE_ACTIVE = {
    "vrrp_instances": {
        "VI_a": {
            "interface": "eth0",
            "virtual_router_id": 51,
            "virtual_ipaddress": ["203.0.113.100/24"],
            "nodes": {"web-a": {"state": "MASTER", "priority": 100}, "web-b": {"state": "BACKUP", "priority": 90}},
        },
        "VI_b": {
            "interface": "eth0",
            "virtual_router_id": 52,
            "virtual_ipaddress": ["203.0.113.101/24", "203.0.113.102/24 dev eth0 label eth0:vip"],
            "nodes": {"web-a": {"state": "BACKUP", "priority": 90}, "web-b": {"state": "MASTER", "priority": 100}},
        },
    }
}

UNICAST = {
    "nodes": {
        "web-a": {"unicast_src_ip": "203.0.113.11"},
        "web-b": {"unicast_src_ip": "203.0.113.12"},
        "web-c": {"unicast_src_ip": "203.0.113.13", "interface": "ens4"},
    },
    "vrrp_instances": {
        "VI_web": {
            "interface": "eth0",
            "virtual_router_id": 68,
            "unicast": True,
            "version": 3,
            "advert_int": 0.5,
            "virtual_ipaddress": ["203.0.113.100/24"],
            "options": {"garp_master_delay": 1, "garp_master_refresh": 30},
            "nodes": {
                "web-a": {"state": "MASTER", "priority": 100},
                "web-b": {"state": "BACKUP", "priority": 99},
                "web-c": {"state": "BACKUP", "priority": 98},
            },
        }
    },
    "global_defs": {"vrrp_garp_master_refresh": 60},
    "check": {"interval": 2, "timeout": 1, "fall": 1, "rise": 3, "weight": -20, "track_process": True},
}

NOPREEMPT = {
    "vrrp_instances": {
        "VI_web": {
            "interface": "eth0",
            "virtual_router_id": 68,
            "nopreempt": True,
            "virtual_ipaddress": ["203.0.113.100/24"],
            "nodes": {"web-a": {"state": "MASTER", "priority": 100}, "web-b": {"state": "BACKUP", "priority": 99}},
        }
    },
    "nginx": {
        "listen": [80, 8080],
        "server_name": ["www.example.test", "example.test"],
        "client_max_body_size": "10m",
        "upstreams": {"app": {"servers": ["192.0.2.21:8080", "192.0.2.22:8080 backup"], "keepalive": 16}},
        "locations": {"/api/": {"proxy_pass": "app", "proxy_connect_timeout": "2s", "proxy_read_timeout": "30s"}},
    },
}

PILLARS = {"single": SINGLE, "active-active": ACTIVE_ACTIVE, "unicast": UNICAST, "nopreempt": NOPREEMPT}


def rendered_files(node):
    return formula.rendered_files(node)


def interfaces_of(node):
    return sorted({inst["interface"] for inst in node["instances"]})


@pytest.mark.parametrize("name", sorted(PILLARS))
@pytest.mark.parametrize("minion_id", ["web-a", "web-b"])
def test_keepalived_accepts_rendered_config(name, minion_id):
    node = formula.node_view(PILLARS[name], minion_id)
    files = rendered_files(node)
    res = sandbox.run_checked(files, ["keepalived", "-t", "-f", node["lookup"]["keepalived"]["config"]], interfaces_of(node))
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("name", sorted(PILLARS))
def test_nginx_accepts_rendered_config(name):
    node = formula.node_view(PILLARS[name], "web-a")
    res = sandbox.run_checked(rendered_files(node), ["nginx", "-t", "-q"])
    assert res.returncode == 0, res.stdout + res.stderr


def test_keepalived_check_refuses_unknown_interface():
    """The validator is real: a config naming an interface the node lacks is refused."""
    node = formula.node_view(SINGLE, "web-a")
    res = sandbox.run_checked(rendered_files(node), ["keepalived", "-t", "-f", node["lookup"]["keepalived"]["config"]], ["eth9"])
    assert res.returncode != 0


def test_keepalived_check_refuses_insecure_script():
    """keepalived drops a check program others may write; our checker run surfaces it."""
    pillar = copy.deepcopy(SINGLE)
    pillar["check"] = {"watcher": {"python": "/etc/keepalived/insecure-python"}}
    node = formula.node_view(pillar, "web-a")
    files = rendered_files(node)
    files["/etc/keepalived/insecure-python"] = ("#!/bin/sh\nexit 0\n", 0o777)
    res = sandbox.run_checked(files, ["keepalived", "-t", "-f", node["lookup"]["keepalived"]["config"]])
    assert res.returncode != 0
    assert "nginx_ha_check" in res.stdout + res.stderr


def test_single_instance_renders_tutorial_equivalent():
    node = formula.node_view(SINGLE, "web-b")
    text = formula.render("keepalived.conf.jinja", node=node)
    assert "state BACKUP" in text and "priority 99" in text and "virtual_router_id 68" in text
    assert "enable_script_security" in text and "script_user root" in text
    assert "203.0.113.100/24" in text and "nginx_ha_check" in text
    assert "router_id web-b" in text


def test_active_active_each_node_masters_one_instance():
    a = formula.render("keepalived.conf.jinja", node=formula.node_view(ACTIVE_ACTIVE, "web-a"))
    b = formula.render("keepalived.conf.jinja", node=formula.node_view(ACTIVE_ACTIVE, "web-b"))
    assert a.index("vrrp_instance VI_a") < a.index("state MASTER") < a.index("vrrp_instance VI_b")
    assert b.index("vrrp_instance VI_b") < b.index("state MASTER")
    assert "203.0.113.102/24 dev eth0 label eth0:vip" in a


def test_local_vip_puts_every_vip_on_lo_once_and_lists_the_vrrp_interfaces():
    node = formula.node_view(ACTIVE_ACTIVE, "web-b")
    text = formula.render("keepalived.conf.jinja", node=node)
    block = text[text.index("static_ipaddress {"):text.index("}", text.index("static_ipaddress {"))]
    assert block.count(" dev lo scope host") == len(node["local_vips"]) >= 2
    assert "203.0.113.102/32 dev lo scope host" in block
    assert node["vrrp_interfaces"] == ["eth0"]
    off = copy.deepcopy(ACTIVE_ACTIVE)
    off["local_vip"] = False
    assert "static_ipaddress" not in formula.render("keepalived.conf.jinja", node=formula.node_view(off, "web-b"))


def test_unicast_peers_are_the_other_nodes():
    node = formula.node_view(UNICAST, "web-c")
    inst = node["instances"][0]
    assert inst["unicast_src_ip"] == "203.0.113.13"
    assert inst["unicast_peer"] == ["203.0.113.11", "203.0.113.12"]
    assert inst["interface"] == "ens4"
    text = formula.render("keepalived.conf.jinja", node=node)
    assert "unicast_peer {\n        203.0.113.11\n        203.0.113.12\n    }" in text
    assert "vrrp_track_process nginx_ha_process" in text and "weight -20" in text


def test_nopreempt_starts_every_node_as_backup():
    for minion in ("web-a", "web-b"):
        text = formula.render("keepalived.conf.jinja", node=formula.node_view(NOPREEMPT, minion))
        assert "state BACKUP" in text and "state MASTER" not in text and "nopreempt" in text


def test_default_site_names_the_node_and_serves_health():
    node = formula.node_view(SINGLE, "web-a")
    site = formula.site(node)
    assert "listen 80 default_server;" in site
    assert 'location = "/nginx_ha/health"' in site and "listen 127.0.0.1:8081;" in site
    page = formula.render("index.html.jinja", node_id="web-a")
    assert "web-a" in page
    settings = node["health_settings"]
    assert (settings["host"], settings["port"], settings["request"], settings["check_timeout"]) == ("127.0.0.1", 8081, "/nginx_ha/health", 1)
    conf = formula.render("keepalived.conf.jinja", node=node)
    assert 'script "/usr/bin/python3 /etc/keepalived/nginx_ha/health_watch.py check /etc/keepalived/nginx_ha/health.json"' in conf
