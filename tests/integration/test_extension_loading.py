"""The extensions reach a real minion through saltutil.sync_all and feel native there."""

import pytest
import yaml

from tests.integration.conftest import MINION_ID, REPO

pytestmark = pytest.mark.integration

EXAMPLE = yaml.safe_load((REPO / "pillar" / "nginx_ha.sls").read_text())["nginx_ha"]


@pytest.fixture(autouse=True)
def example_pillar(write_pillar, salt_call_cli):
    write_pillar(EXAMPLE)
    assert salt_call_cli.run("saltutil.refresh_pillar", wait=True).returncode == 0
    yield


def test_sync_all_brings_module_state_and_utils(salt_call_cli):
    ret = salt_call_cli.run("saltutil.sync_all")
    assert ret.returncode == 0
    ret = salt_call_cli.run("sys.list_functions", "nginx_ha")
    assert "nginx_ha.node_config" in ret.data and "nginx_ha.validate_pillar" in ret.data
    ret = salt_call_cli.run("sys.list_state_functions", "nginx_ha")
    assert ret.data == ["nginx_ha.engine_synced", "nginx_ha.service_offline_answered", "nginx_ha.validated_config"]


def test_sys_doc_has_cli_examples(salt_call_cli):
    ret = salt_call_cli.run("sys.doc", "nginx_ha")
    assert ret.returncode == 0 and ret.data
    for name, doc in ret.data.items():
        assert "CLI Example" in doc, name


def test_node_config_through_the_real_loader(salt_call_cli):
    ret = salt_call_cli.run("nginx_ha.node_config")
    assert ret.returncode == 0, ret.stdout + ret.stderr
    assert ret.data["id"] == MINION_ID
    assert ret.data["instances"][0]["state"] == "MASTER"
    assert ret.data["lookup"]["keepalived"]["config"] == "/etc/keepalived/keepalived.conf"


def test_show_sls_renders_with_a_valid_pillar(salt_call_cli):
    ret = salt_call_cli.run("state.show_sls", "nginx_ha")
    assert ret.returncode == 0, ret
    ids = set(ret.data)
    assert {
        "nginx_ha_packages_installed",
        "nginx_ha_keepalived_config_validated",
        "nginx_ha_nginx_site_config_validated",
        "nginx_ha_nginx_running",
        "nginx_ha_keepalived_running",
    } <= ids


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p["vrrp_instances"]["VI_web"].update(virtual_router_id=300), "nginx_ha:vrrp_instances:VI_web:virtual_router_id: 300 is not an integer within 1-255"),
        (lambda p: p["vrrp_instances"]["VI_web"]["nodes"]["web-b"].update(state="MASTER"), "web-a, web-b are all MASTER"),
        (lambda p: p["vrrp_instances"]["VI_web"].pop("virtual_ipaddress"), "nginx_ha:vrrp_instances:VI_web:virtual_ipaddress: is required"),
    ],
)
def test_invalid_pillar_fails_at_render_naming_the_key(write_pillar, salt_call_cli, change, message):
    import copy

    pillar = copy.deepcopy(EXAMPLE)
    change(pillar)
    write_pillar(pillar)
    assert salt_call_cli.run("saltutil.refresh_pillar", wait=True).returncode == 0
    ret = salt_call_cli.run("state.apply", "nginx_ha", "test=True")
    assert ret.returncode != 0
    assert message in str(ret.data) + ret.stdout + ret.stderr
    ret = salt_call_cli.run("nginx_ha.validate_pillar")
    assert any(message in e for e in ret.data)
