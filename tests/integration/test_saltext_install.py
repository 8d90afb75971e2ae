"""
nginx-ha installed as a Salt extension (issue 11): a wheel built from this checkout is installed
into a fresh virtualenv, and a salt-master and two salt-minions run from that virtualenv. The
master's file server holds only the formula (a copy of salt/nginx_ha, without the salt/_* links)
and has no runner_dirs: every module (execution, state, runner, engine, utils) comes from the
package through Salt's "salt.loader" entry point, none through saltutil.sync_all.

web-a answers the module, state and runner checks; web-b runs the nginx_ha_events engine, whose
signed event the master's reactor hands to the packaged nginx_ha_reactor runner (the wire format
both import from _utils/nginx_ha_event.py). The minion that answers the module checks runs no
engine: an engine's import would put the package's _utils on the minion's sys.path for the job
processes it forks, and hide a module that cannot find its utils by itself.
"""

import concurrent.futures
import json
import shutil
import subprocess
import time

import pytest
import yaml
from saltfactories.manager import FactoriesManager

from tests.integration.conftest import REPO
from tests.support import package
from tests.support.events import collect, runner_returns, wait_for_fifo, write_fifo

pytestmark = pytest.mark.integration

EXAMPLE = yaml.safe_load((REPO / "pillar" / "nginx_ha.sls").read_text())["nginx_ha"]  # VI_web: web-a MASTER, web-b BACKUP


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("saltext")
    return package.venv_with_package(tmp, package.build_wheel(tmp))


@pytest.fixture(scope="module")
def sx_dir(tmp_path_factory):
    """Formula-only file roots, pillar, the engine's FIFO and spool, the reactor's state."""
    path = tmp_path_factory.mktemp("sx")
    shutil.copytree(REPO / "salt" / "nginx_ha", path / "roots" / "nginx_ha")
    (path / "pillar").mkdir()
    (path / "pillar" / "top.sls").write_text("base:\n  '*':\n    - nginx_ha\n")
    (path / "pillar" / "nginx_ha.sls").write_text(yaml.safe_dump({"nginx_ha": EXAMPLE}))
    return path


@pytest.fixture(scope="module")
def factories(installed, _salt_factories_config, event_listener, stats_processes, tmp_path_factory):
    """salt-factories with daemon and CLI scripts that run on the new virtualenv's Python."""
    # slow_stop off: the daemons are killed at the end (no coverage data to write), seconds sooner
    config = dict(_salt_factories_config, python_executable=str(installed.python), code_dir=None, scripts_dir=None, slow_stop=False)
    config["root_dir"] = tmp_path_factory.mktemp("sxd")
    return FactoriesManager(stats_processes=stats_processes, event_listener=event_listener, **config)


@pytest.fixture(scope="module")
def master(factories, sx_dir):
    overrides = {
        "file_roots": {"base": [str(sx_dir / "roots")]},
        "pillar_roots": {"base": [str(sx_dir / "pillar")]},
        "interface": "127.0.0.1",
        "reactor": [{"nginx_ha/vrrp/*": [str(REPO / "reactor" / "vrrp.sls")]}],
        "nginx_ha_reactor": {"state_file": str(sx_dir / "reactor-state.json")},
    }
    factory = factories.salt_master_daemon("sx-master", overrides=overrides)
    with factory.started():
        yield factory


@pytest.fixture(scope="module")
def minions(master, sx_dir):
    engine = {"fifo": str(sx_dir / "web-b.fifo"), "spool": str(sx_dir / "web-b.spool"), "vips": {"VI_web": ["203.0.113.100"]}, "backoff_max": 2}
    web_a = master.salt_minion_daemon("web-a", overrides={"master": "127.0.0.1"})
    web_b = master.salt_minion_daemon("web-b", overrides={"master": "127.0.0.1", "engines": [{"nginx_ha_events": engine}]})
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # both at once: each start mostly waits
        started = [pool.submit(factory.start) for factory in (web_a, web_b)]
    try:
        for future in started:
            future.result()
        yield {"web-a": web_a, "web-b": web_b}
    finally:
        for factory in (web_a, web_b):
            factory.terminate()


@pytest.fixture(scope="module")
def salt_cli(master, minions):
    return master.salt_cli(timeout=60)


@pytest.fixture(scope="module")
def salt_run(master, minions):
    return master.salt_run_cli(timeout=60)


def test_the_python_is_the_new_virtualenv_and_the_file_server_has_no_modules(installed, minions, salt_cli):
    ret = salt_cli.run("grains.get", "pythonexecutable", minion_tgt="web-a")
    assert ret.returncode == 0 and ret.data == str(installed.python), ret
    listed = salt_cli.run("cp.list_master", minion_tgt="web-a")
    # nothing for saltutil.sync_all to bring: no _modules, _states, _utils, _engines
    assert "nginx_ha/init.sls" in listed.data and not [p for p in listed.data if p.startswith("_")], listed.data


def test_execution_module_comes_from_the_package(salt_cli):
    ret = salt_cli.run("sys.list_functions", "nginx_ha", minion_tgt="web-a")
    assert ret.returncode == 0 and {"nginx_ha.node_config", "nginx_ha.validate_pillar", "nginx_ha.health"} <= set(ret.data or []), ret
    ret = salt_cli.run("nginx_ha.node_config", minion_tgt="web-a")
    assert ret.returncode == 0, ret
    assert ret.data["id"] == "web-a" and ret.data["instances"][0]["state"] == "MASTER"


def test_state_modules_come_from_the_package(salt_cli):
    ret = salt_cli.run("sys.list_state_functions", "nginx_ha", "nginx_ha_health", minion_tgt="web-a")
    assert ret.returncode == 0 and isinstance(ret.data, list), ret
    assert {f.split(".")[0] for f in ret.data} == {"nginx_ha", "nginx_ha_health"}, ret.data
    assert [f for f in ret.data if f.startswith("nginx_ha.")] == ["nginx_ha.engine_synced", "nginx_ha.service_offline_answered", "nginx_ha.validated_config"]


def test_the_formula_renders_with_a_valid_pillar(minions):
    ret = minions["web-a"].salt_call_cli(timeout=60).run("state.show_sls", "nginx_ha")
    assert ret.returncode == 0, ret
    assert {"nginx_ha_keepalived_config_validated", "nginx_ha_nginx_site_config_validated", "nginx_ha_keepalived_running"} <= set(ret.data)


def test_runners_come_from_the_package(salt_run, master, event_listener):
    view = salt_run.run("nginx_ha.status").data  # the fleet view: asks both minions
    assert {"vips", "problems", "unreachable"} <= set(view), view
    assert not any(p.startswith("NO-NODES") for p in view["problems"]), view["problems"]
    after = time.time()
    ret = salt_run.run("nginx_ha_reactor.alert", "info", "alert from the packaged runner")
    assert ret.returncode == 0 and ret.data["severity"] == "info", ret
    (alert,) = collect(event_listener, master.id, "nginx_ha/alert/info", after, 1, timeout=30)
    assert alert.data["text"] == ":information_source: nginx-ha INFO: alert from the packaged runner"


def test_packaged_engine_signs_and_packaged_runner_verifies(minions, master, sx_dir, event_listener, salt_run):
    fifo = str(sx_dir / "web-b.fifo")
    wait_for_fifo(fifo)
    after = time.time()
    write_fifo(fifo, 'INSTANCE "VI_web" BACKUP 99')
    (event,) = collect(event_listener, master.id, "nginx_ha/vrrp/VI_web/backup", after, 1, timeout=30, where=lambda e: e.data.get("id") == "web-b")
    assert event.data["data"]["vips"] == ["203.0.113.100"] and event.data["data"]["sig"]
    (ret,) = runner_returns(event_listener, master.id, after, 1, timeout=60, where=lambda r: r.get("node") == "web-b")
    assert ret["result"] is True and ret["action"] == "recorded", ret  # a rejected signature would be "rejected"
    assert salt_run.run("nginx_ha_reactor.show_state").data["nodes"]["web-b"]["VI_web"]["state"] == "BACKUP"


PRECEDENCE = """
import json, os, sys
import salt.config, salt.loader

base, kind, name, runner_dirs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
defaults = salt.config.DEFAULT_MASTER_OPTS if kind == "runners" else salt.config.DEFAULT_MINION_OPTS
opts = dict(defaults, cachedir=base, extension_modules=os.path.join(base, "extmods"), runner_dirs=runner_dirs, utils_dirs=[])
loader = salt.loader.runner(opts) if kind == "runners" else salt.loader.minion_mods(opts, utils={})
print(loader.file_mapping[name][0])
"""


@pytest.mark.parametrize("kind, name, folder", [("runners", "nginx_ha_reactor", "_runners"), ("modules", "nginx_ha", "_modules")])
def test_which_copy_salt_loads_when_both_installs_are_present(installed, tmp_path, kind, name, folder):
    """Synced extension modules win over runner_dirs, which win over the package's entry point."""

    def loaded(runner_dirs=()):
        args = [str(installed.python), "-c", PRECEDENCE, str(tmp_path), kind, name, json.dumps(list(runner_dirs))]
        # not from the checkout: there `saltext.nginx_ha` would be the checkout's (python -c puts the cwd on sys.path)
        return subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True).stdout.strip().splitlines()[-1]

    packaged = str(installed.site_packages / "saltext" / "nginx_ha" / folder / f"{name}.py")
    assert loaded() == packaged
    if kind == "runners":
        assert loaded([str(REPO / folder)]) == str(REPO / folder / f"{name}.py")
    synced = tmp_path / "extmods" / kind / f"{name}.py"
    synced.parent.mkdir(parents=True)
    shutil.copy(REPO / folder / f"{name}.py", synced)
    assert loaded([str(REPO / folder)] if kind == "runners" else []) == str(synced)
