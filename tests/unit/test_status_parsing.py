"""Parsing keepalived 2.2.7's JSON data dump and `ip -j addr` (fixtures captured from the real tools)."""

import copy
import json
import pathlib

import pytest

from tests.support import formula

status = formula.load_module("_utils", "nginx_ha_status")
DATA = pathlib.Path(__file__).parent / "data"


def test_parse_keepalived_json_master():
    parsed = status.parse_keepalived_json((DATA / "keepalived-2.2.7-master.json").read_text())
    inst = parsed["VI_web"]
    assert inst["state"] == "MASTER" and inst["wantstate"] == "MASTER"
    assert inst["base_priority"] == 100 and inst["effective_priority"] == 100
    assert inst["vrid"] == 68 and inst["interface"] == "eth0"
    assert inst["vips"] == ["203.0.113.100/24"]
    assert inst["last_transition_iso"].startswith("2026-11-24T20:39:37")
    assert inst["stats"]["become_master"] == 1


@pytest.mark.parametrize("code, name", [(0, "INIT"), (1, "BACKUP"), (2, "MASTER"), (3, "FAULT"), (98, "STOP"), (7, "UNKNOWN(7)")])
def test_state_codes(code, name):
    dump = json.loads((DATA / "keepalived-2.2.7-master.json").read_text())
    dump[0]["data"]["state"] = code
    assert status.parse_keepalived_json(json.dumps(dump))["VI_web"]["state"] == name


@pytest.mark.parametrize("text", ["", "{", '{"a": 1}', '[{"stats": {}}]'])
def test_parse_keepalived_json_rejects_garbage(text):
    with pytest.raises(ValueError):
        status.parse_keepalived_json(text)


def test_parse_ip_addr():
    addrs = status.parse_ip_addr((DATA / "ip-addr-master.json").read_text())
    assert addrs["203.0.113.11"] == ["eth0"] and addrs["203.0.113.100"] == ["eth0"]
    assert "fe80::ac5a:43ff:fe4e:cc9" in addrs


def configured():
    return formula.node_view(formula.example_pillar(), "web-a")["instances"][0]


def test_instance_status_master_holding_vip():
    ka = status.parse_keepalived_json((DATA / "keepalived-2.2.7-master.json").read_text())["VI_web"]
    addrs = status.parse_ip_addr((DATA / "ip-addr-master.json").read_text())
    st = status.instance_status(configured(), ka, addrs, True)
    assert st["state"] == "MASTER" and st["holds_vip"] is True and st["vips_present"] == ["203.0.113.100"]
    assert st["role"] == "MASTER" and st["peers"] == ["web-b"] and st["effective_priority"] == 100


def test_instance_status_keepalived_stopped():
    st = status.instance_status(configured(), None, {"203.0.113.11": ["eth0"]}, False)
    assert st["state"] == "STOP" and st["holds_vip"] is False and "not running" in st["comment"]


def test_instance_status_unknown_instance_to_running_keepalived():
    st = status.instance_status(configured(), None, {}, True)
    assert st["state"] == "UNKNOWN" and "reload" in st["comment"]


def test_a_vip_on_lo_only_is_not_held():
    """local_vip: every node has the VIPs on lo; only the VRRP interface's copy means ownership."""
    ka = status.parse_keepalived_json((DATA / "keepalived-2.2.7-master.json").read_text())["VI_web"]
    backup = {"203.0.113.11": ["eth0"], "203.0.113.100": ["lo"]}
    assert status.instance_status(configured(), ka, backup, True)["holds_vip"] is False
    master = {"203.0.113.11": ["eth0"], "203.0.113.100": ["lo", "eth0"]}
    assert status.instance_status(configured(), ka, master, True)["vips_present"] == ["203.0.113.100"]


def test_a_vip_with_its_own_dev_is_held_on_that_interface():
    inst = copy.deepcopy(configured())
    inst["virtual_ipaddress"][0]["interface"] = "eth1"  # as the model sets it for "203.0.113.100/24 dev eth1"
    assert status.instance_status(inst, None, {"203.0.113.100": ["eth0"]}, True)["holds_vip"] is False
    assert status.instance_status(inst, None, {"203.0.113.100": ["eth1"]}, True)["holds_vip"] is True
