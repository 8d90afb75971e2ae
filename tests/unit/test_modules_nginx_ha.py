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
