"""Execution module nginx_ha (configuration side) with pytest-salt-factories loader mocks."""

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.support import formula

mod = formula.load_module("_modules", "nginx_ha")
model = formula.model()

PILLAR = formula.example_pillar()


def file_str(url, saltenv="base"):
    return {
        "salt://nginx_ha/defaults.yaml": (formula.FORMULA / "defaults.yaml").read_text(),
        "salt://nginx_ha/osfamilymap.yaml": (formula.FORMULA / "osfamilymap.yaml").read_text(),
    }.get(url, False)


@pytest.fixture
def pillar():
    return {"nginx_ha": PILLAR}


@pytest.fixture
def configure_loader_modules(pillar):
    return {
        mod: {
            "__salt__": {"cp.get_file_str": file_str, "pillar.get": lambda key, default=None, unmask=False: pillar.get(key, default) if unmask else "**********"},
            "__grains__": {"id": "web-b", "os_family": "Debian"},
            "__opts__": {"saltenv": None},
            "__utils__": {"nginx_ha_model.node_view": model.node_view, "nginx_ha_model.validate": model.validate},
        }
    }


def test_node_config_is_this_minions_view():
    view = mod.node_config()
    assert view["id"] == "web-b"
    assert [(i["name"], i["state"], i["priority"]) for i in view["instances"]] == [("VI_web", "BACKUP", 99)]
    assert view["lookup"]["keepalived"]["config"] == "/etc/keepalived/keepalived.conf"
    assert view["check"]["interval"] == 1 and view["nginx"]["health"]["url"] == "http://127.0.0.1:8081/nginx_ha/health"


def test_node_config_for_another_minion():
    assert mod.node_config(minion_id="web-a")["instances"][0]["state"] == "MASTER"


def test_pillar_overrides_defaults_and_lookup(pillar):
    pillar["nginx_ha"] = dict(PILLAR, check={"fall": 5}, lookup={"curl": "/opt/bin/curl"})
    view = mod.node_config()
    assert view["check"]["fall"] == 5 and view["check"]["rise"] == 2
    assert view["lookup"]["curl"] == "/opt/bin/curl" and view["lookup"]["nginx"]["service"] == "nginx"


def test_invalid_pillar_raises_salt_invocation_error(pillar):
    pillar["nginx_ha"] = {"vrrp_instances": {"VI_web": dict(PILLAR["vrrp_instances"]["VI_web"], virtual_router_id=300)}}
    with pytest.raises(SaltInvocationError, match="nginx_ha:vrrp_instances:VI_web:virtual_router_id: 300"):
        mod.node_config()
    assert any("virtual_router_id: 300" in e for e in mod.validate_pillar())


def test_pillar_not_a_mapping(pillar):
    pillar["nginx_ha"] = ["oops"]
    with pytest.raises(SaltInvocationError, match="not a mapping"):
        mod.node_config()


def test_unknown_os_family():
    mod.__grains__["os_family"] = "Solaris"
    with pytest.raises(CommandExecutionError, match="os_family 'Solaris' is not in osfamilymap.yaml"):
        mod.node_config()


def test_formula_missing_on_master():
    mod.__salt__["cp.get_file_str"] = lambda *a, **k: False
    with pytest.raises(CommandExecutionError, match="cannot read the formula defaults"):
        mod.node_config()


def test_validate_pillar_valid():
    assert mod.validate_pillar() == []


def test_every_public_function_has_a_cli_example():
    public = [n for n in dir(mod) if not n.startswith("_") and callable(getattr(mod, n)) and getattr(getattr(mod, n), "__module__", "") == mod.__name__]
    assert public
    for name in public:
        assert "CLI Example" in (getattr(mod, name).__doc__ or ""), name


# ---- live state functions (keepalived, kernel and nginx replaced by captured outputs) ----

status_utils = formula.load_module("_utils", "nginx_ha_status")
DATA = formula.REPO / "tests" / "unit" / "data"


@pytest.fixture
def live(monkeypatch):
    """web-a, keepalived running as MASTER, the VIP on eth0 (outputs captured from the real tools)."""
    mod.__grains__["id"] = "web-a"
    mod.__utils__.update(
        {
            "nginx_ha_status.parse_keepalived_json": status_utils.parse_keepalived_json,
            "nginx_ha_status.parse_ip_addr": status_utils.parse_ip_addr,
            "nginx_ha_status.instance_status": status_utils.instance_status,
        }
    )
    ip_out = (DATA / "ip-addr-master.json").read_text()
    mod.__salt__["cmd.run_all"] = lambda cmd, **kw: {"retcode": 0, "stdout": ip_out, "stderr": ""}
    state = {"pid": 4242}
    monkeypatch.setattr(mod, "_keepalived_pid", lambda lookup: state["pid"])
    monkeypatch.setattr(
        mod, "_keepalived_dump", lambda lookup, pid: status_utils.parse_keepalived_json((DATA / "keepalived-2.2.7-master.json").read_text())
    )
    return state


def test_vip_status(live):
    ret = mod.vip_status()
    assert list(ret) == ["VI_web"]
    assert ret["VI_web"]["state"] == "MASTER" and ret["VI_web"]["holds_vip"] is True
    assert ret["VI_web"]["last_transition"].startswith("2026-11-24T20:39:37")
    assert mod.is_master() is True and mod.is_master("VI_web") is True


def test_vip_status_unknown_instance(live):
    with pytest.raises(SaltInvocationError, match="instance 'VI_nope' is not configured on web-a"):
        mod.vip_status("VI_nope")


def test_vip_status_keepalived_down(live):
    live["pid"] = None
    ret = mod.vip_status()
    assert ret["VI_web"]["state"] == "STOP"
    assert mod.is_master() is False


@pytest.mark.parametrize("mode", ["maybe", "", "1"])
def test_maintenance_bad_mode(live, mode):
    with pytest.raises(SaltInvocationError, match="is not on or off"):
        mod.maintenance(mode)


def test_maintenance_refuses_without_healthy_peer(live, monkeypatch, tmp_path):
    monkeypatch.setattr(mod, "_maintenance_file", lambda lookup: str(tmp_path / "maintenance"))
    mod.__salt__["publish.publish"] = lambda *a, **k: {"web-b": {"healthy": False}}
    with pytest.raises(CommandExecutionError, match="no healthy peer for VI_web"):
        mod.maintenance("on")
    assert not (tmp_path / "maintenance").exists()
