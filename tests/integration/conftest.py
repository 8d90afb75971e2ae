"""
Integration tier: a real salt-master and salt-minion (pytest-salt-factories daemons on loopback)
serving this repository's formula and extensions. Nothing here applies states for real: these
tests cover Salt's loading, syncing, rendering and CLI behaviour; the cluster tier applies.
"""

import pathlib

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
MINION_ID = "web-a"


@pytest.fixture(scope="package")
def pillar_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("pillar")
    (path / "top.sls").write_text("base:\n  '*':\n    - nginx_ha\n")
    return path


@pytest.fixture(scope="package")
def write_pillar(pillar_dir):
    def write(data):
        (pillar_dir / "nginx_ha.sls").write_text(yaml.safe_dump({"nginx_ha": data}))

    return write


@pytest.fixture(scope="package")
def salt_master(salt_factories, pillar_dir, write_pillar):
    write_pillar(yaml.safe_load((REPO / "pillar" / "nginx_ha.sls").read_text())["nginx_ha"])
    overrides = {
        "file_roots": {"base": [str(REPO / "salt")]},
        "pillar_roots": {"base": [str(pillar_dir)]},
        "interface": "127.0.0.1",
    }
    factory = salt_factories.salt_master_daemon("nginx-ha-master", overrides=overrides)
    with factory.started():
        yield factory


@pytest.fixture(scope="package")
def salt_minion(salt_master):
    factory = salt_master.salt_minion_daemon(MINION_ID, overrides={"master": "127.0.0.1"})
    with factory.started():
        ret = factory.salt_call_cli().run("saltutil.sync_all")
        assert ret.returncode == 0, ret
        yield factory


@pytest.fixture(scope="package")
def salt_cli(salt_master):
    return salt_master.salt_cli()


@pytest.fixture
def salt_call_cli(salt_minion):
    return salt_minion.salt_call_cli()


# ---------------------------------------------------------------------------------------------
# Event-bus automation (issue 4): a master of its own with the reactor and the nginx_ha_reactor
# runner, and two cluster nodes whose nginx_ha_events engine is configured by the formula's own
# nginx_ha.events state. The FIFOs live in a temp dir; the reactor's actions are harmless real
# functions whose effect the tests observe (events on the bus, a file the health check reads).
# ---------------------------------------------------------------------------------------------

EVENTS_NODES = ("ev-a", "ev-b")
EVENTS_PILLAR = {
    "vrrp_instances": {
        "VI_web": {
            "interface": "eth0",
            "virtual_router_id": 68,
            "virtual_ipaddress": ["203.0.113.100/24"],
            "nodes": {"ev-a": {"state": "MASTER", "priority": 100}, "ev-b": {"state": "BACKUP", "priority": 99}},
        },
        "VI_api": {
            "interface": "eth0",
            "virtual_router_id": 69,
            "virtual_ipaddress": ["203.0.113.101/24"],
            "nodes": {"ev-a": {"state": "BACKUP", "priority": 99}, "ev-b": {"state": "MASTER", "priority": 100}},
        },
    },
    # The test restarts the minion itself (the factory), not `service.restart salt-minion`; and
    # retries quickly while the master is down.
    "events": {"restart_minion": False, "backoff_max": 2},
}


@pytest.fixture(scope="package")
def events_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("nginx-ha-events")
    path.chmod(0o755)
    return path


@pytest.fixture(scope="package")
def webhook():
    from tests.support.webhook import WebhookServer

    with WebhookServer() as hook:
        yield hook


@pytest.fixture(scope="package")
def events_reactor_config(events_dir, webhook):
    return {
        "restart_limit": 3,
        "restart_window": 300,
        "restart_coalesce": 0,
        "health_delay": 0.2,
        "timeout": 20,
        # The stand-in health ("healthy" file) does not change with the stand-in restart, so the
        # health check before a restart would always skip it here (unit and cluster tests cover it).
        "check_before_restart": False,
        "actions": {
            # Observable stand-ins: the node itself fires an event (so data['id'] shows who ran
            # it), and the health check is a file the test controls.
            "restart": {"fun": "event.send", "arg": ["nginx_ha/test/restart"]},
            "health": {"fun": "file.file_exists", "arg": [str(events_dir / "healthy")]},
            "maintenance": {"fun": "event.send", "arg": ["nginx_ha/test/maintenance"]},
        },
        "webhook": {"url": webhook.url, "timeout": 1, "retries": 2, "backoff": 0.1},
        "state_file": str(events_dir / "reactor-state.json"),
    }


@pytest.fixture(scope="package")
def events_master(salt_factories, tmp_path_factory, events_dir, events_reactor_config):
    pillar = tmp_path_factory.mktemp("events-pillar")
    top = {"base": {"*": ["nginx_ha"]}}
    for node in EVENTS_NODES:
        sls = node.replace("-", "_")
        top["base"][node] = [sls]
        # Each node's keepalived notify_fifo (what the engine reads) in the temp dir.
        (pillar / f"{sls}.sls").write_text(
            yaml.safe_dump({"nginx_ha": {"lookup": {"keepalived": {"notify_fifo": str(events_dir / f"{node}.fifo")}}}})
        )
    (pillar / "top.sls").write_text(yaml.safe_dump(top))
    (pillar / "nginx_ha.sls").write_text(yaml.safe_dump({"nginx_ha": EVENTS_PILLAR}))
    overrides = {
        "file_roots": {"base": [str(REPO / "salt")]},
        "pillar_roots": {"base": [str(pillar)]},
        "interface": "127.0.0.1",
        "runner_dirs": [str(REPO / "_runners")],
        "reactor": [{"nginx_ha/vrrp/*": [str(REPO / "reactor" / "vrrp.sls")]}],
        "nginx_ha_reactor": events_reactor_config,
    }
    factory = salt_factories.salt_master_daemon("nginx-ha-events-master", overrides=overrides)
    with factory.started():
        yield factory


def _engine_minion(master, minion_id):
    """Start a minion, sync, apply nginx_ha.events (writes minion.d/nginx_ha_events.conf), restart."""
    factory = master.salt_minion_daemon(minion_id, overrides={"master": "127.0.0.1", "acceptance_wait_time": 1})
    factory.start()
    try:
        cli = factory.salt_call_cli()
        for args in (("saltutil.sync_all",), ("state.sls", "nginx_ha.events")):
            ret = cli.run(*args)
            assert ret.returncode == 0, ret
        factory.terminate()
        factory.start()
    except BaseException:
        factory.terminate()
        raise
    return factory


@pytest.fixture(scope="package")
def events_minions(events_master):
    started = []
    try:
        for node in EVENTS_NODES:
            started.append(_engine_minion(events_master, node))
        yield dict(zip(EVENTS_NODES, started))
    finally:
        for factory in started:
            factory.terminate()
