"""
Every SLS of the formula applies on its own (issue 11). For each SLS file under salt/nginx_ha
(found by listing the directory, so a new one is covered without editing this file):

* ``state.show_sls <sls>`` through the real master and minion renders, and every requisite in
  it (require, watch, onchanges, ..., and the ``*_in`` forms) names a state of that same output:
  the requisite graph is closed, so the SLS includes what it needs; each step of the reload
  chain present directly requires the step before it; every ``salt://`` source it names is a file
  the master serves;
* ``state.sls <sls> mock=True`` (masterless, one salt process for all SLS) compiles and "runs" it
  with Salt's own requisite resolution and ordering, calling no state function: every state
  succeeds (a missing requisite would fail it) and the reload chain runs in the documented order
  whichever SLS is the entry point. ``state.apply nginx_ha mock=True`` also runs through the real
  minion.

The masterless runs (``salt-call --local`` style, a configuration of their own) put the formula
under another directory name (``tplroot``: map.jinja, includes and sources follow it), and use a
Rocky Linux 9 node's grains (os_family RedHat), where the RedHat lookup must show (packages, no
default site to remove, service names).
"""

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.integration.conftest import MINION_ID, REPO
from tests.support import formula

pytestmark = pytest.mark.integration

FORMULA = formula.FORMULA
SLS_FILES = formula.sls_files()
EXAMPLE = yaml.safe_load((REPO / "pillar" / "nginx_ha.sls").read_text())["nginx_ha"]
sls_name = formula.sls_name
SLS = [sls_name(p) for p in SLS_FILES]

# The order of a run that reloads (service.sls, watcher.sls): each step must directly require
# (require / watch / onchanges) the one before it, so no entry SLS can reorder them.
CHAIN = formula.RELOAD_CHAIN
RELOADS = {"nginx_ha_nginx_running", "nginx_ha_keepalived_running"}

KINDS = ("require", "watch", "onchanges", "onfail", "prereq", "listen", "use")
REQUISITES = {*KINDS, *(k + "_any" for k in KINDS), "onfail_all"}
REQUISITES_IN = {k + "_in" for k in KINDS}


def declarations(high):
    """(state id, state module, argument list) of every state in show_sls output."""
    for sid, body in high.items():
        if sid.startswith("__") or not isinstance(body, dict):
            continue
        for module, args in body.items():
            if not module.startswith("__"):
                yield sid, module, args


def requisites(high):
    """(state id, requisite kind, module or None, target) of every requisite."""
    for sid, _module, args in declarations(high):
        for arg in args:
            if not isinstance(arg, dict):
                continue
            for kind, refs in arg.items():
                if kind in REQUISITES or kind in REQUISITES_IN:
                    for ref in refs:
                        module, target = next(iter(ref.items())) if isinstance(ref, dict) else (None, ref)
                        yield sid, kind, module, str(target)


def resolver(high):
    """{(module, id or name): state id} and {(None, id or name): state id}, as Salt matches requisites."""
    found = {}
    for sid, module, args in declarations(high):
        names = [sid] + [str(a["name"]) for a in args if isinstance(a, dict) and "name" in a]
        for name in names:
            found[(module, name)] = sid
            found[(None, name)] = sid
    return found


def check_closed(high):
    """Every requisite's target is in ``high``; returns the edges {(dependent, prerequisite)}."""
    assert isinstance(high, dict) and high, f"show_sls returned errors: {high!r}"
    found = resolver(high)
    sls_files = {body.get("__sls__") for body in high.values() if isinstance(body, dict)}
    missing, edges = [], set()
    for sid, kind, module, target in requisites(high):
        if module == "sls":
            if target not in sls_files:
                missing.append((sid, kind, module, target))
            continue
        other = found.get((module, target))
        if other is None:
            missing.append((sid, kind, module, target))
        elif kind in REQUISITES_IN:
            edges.add((other, sid))
        else:
            edges.add((sid, other))
    assert missing == [], f"requisites naming states that are not in the run: {missing}"
    return edges


def check_chain(high, edges):
    present = [sid for sid in CHAIN if sid in high]
    if RELOADS & set(present):  # a run that reloads a daemon has every step of the order
        assert present == list(CHAIN), sorted(set(CHAIN) - set(present))
    for before, after in zip(present, present[1:]):
        assert (after, before) in edges, f"{after} does not require {before}"
    return present


def check_mock_run(ret, present):
    """state.sls ... mock=True: Salt compiled the run (requisites resolved) and ordered the chain."""
    assert isinstance(ret, dict) and ret, f"state run errors: {ret!r}"
    bad = {v.get("__id__", k): v["comment"] for k, v in ret.items() if v["result"] is not True}
    assert bad == {}, bad
    run_num = {v["__id__"]: v["__run_num__"] for v in ret.values()}
    assert sorted(present, key=run_num.__getitem__) == present, {sid: run_num[sid] for sid in present}


def salt_sources(high):
    return {arg[key] for _sid, _module, args in declarations(high) for arg in args if isinstance(arg, dict)
            for key in ("source", "watcher_source") if isinstance(arg.get(key), str) and arg[key].startswith("salt://")}


# ---- through the real master and minion -------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def example_pillar(write_pillar, salt_minion):
    write_pillar(EXAMPLE)
    assert salt_minion.salt_call_cli().run("saltutil.refresh_pillar", wait=True).returncode == 0


@pytest.fixture(scope="module")
def served(salt_minion):
    ret = salt_minion.salt_call_cli().run("cp.list_master")
    assert ret.returncode == 0, ret
    return set(ret.data)


def test_every_sls_file_is_covered():
    assert len(SLS) >= 10 and "nginx_ha" in SLS and "nginx_ha.service" in SLS, SLS


# What an SLS alone brings into the run, where that is a design decision: keepalived.sls validates
# and writes keepalived.conf but reloads nothing (neither service.sls nor nginx.sls is included).
ALONE = {
    "nginx_ha.keepalived": ({"nginx_ha_packages_installed", "nginx_ha_script_dir_present", "nginx_ha_keepalived_config_validated"},
                            set(CHAIN) - {"nginx_ha_keepalived_config_validated"}),
}


@pytest.mark.parametrize("sls", SLS)
def test_sls_renders_alone_with_a_closed_requisite_graph(salt_call_cli, served, sls):
    show = salt_call_cli.run("state.show_sls", sls)
    assert show.returncode == 0, show.stdout + show.stderr
    check_chain(show.data, check_closed(show.data))
    missing = {s for s in salt_sources(show.data) if s[len("salt://"):] not in served}
    assert missing == set(), missing
    if sls in ALONE:
        wanted, unwanted = ALONE[sls]
        assert wanted <= set(show.data) and not unwanted & set(show.data), sorted(show.data)


def test_the_whole_formula_runs_the_chain_in_order_through_the_minion(salt_call_cli):
    """state.apply nginx_ha mock=True on the real minion: compiled by Salt, the chain in order."""
    show = salt_call_cli.run("state.show_sls", "nginx_ha")
    present = check_chain(show.data, check_closed(show.data))
    run = salt_call_cli.run("state.apply", "nginx_ha", "mock=True")
    assert run.returncode == 0, run.stdout + run.stderr
    check_mock_run(run.data, present)


# ---- masterless: another directory name, and RedHat grains --------------------------------------

BATCH = """
import json, sys
import salt.client, salt.config
opts = salt.config.minion_config(sys.argv[1])
caller = salt.client.Caller(mopts=opts)
out = [caller.cmd(fun, *args, **kwargs) for fun, args, kwargs in json.loads(sys.stdin.read())]
print(json.dumps(out, default=str))
"""


class Masterless:
    """A masterless minion configuration (file_client local) of its own, driven by salt-call."""

    def __init__(self, root, file_roots, grains=None, path=None):
        self.root = root
        pillar = root / "pillar"
        pillar.mkdir()
        (pillar / "top.sls").write_text("base:\n  '*':\n    - nginx_ha\n")
        (pillar / "nginx_ha.sls").write_text(yaml.safe_dump({"nginx_ha": EXAMPLE}))
        config = {
            "id": MINION_ID,
            "file_client": "local",
            "root_dir": str(root / "root"),
            "file_roots": {"base": [str(file_roots)]},
            "pillar_roots": {"base": [str(pillar)]},
            "log_level": "warning",
        }
        if grains:
            config["grains"] = grains
        (root / "conf").mkdir()
        self.conf = root / "conf" / "minion"
        self.conf.write_text(yaml.safe_dump(config))
        self.env = dict(os.environ, PATH=f"{path}:{os.environ['PATH']}" if path else os.environ["PATH"])

    def batch(self, calls):
        """[(fun, args, kwargs)] -> their returns, in one salt process (a salt-call start each is slow)."""
        res = subprocess.run([sys.executable, "-c", BATCH, str(self.conf)], input=json.dumps(calls), capture_output=True,
                             text=True, env=self.env, timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        return json.loads(res.stdout)


def check_every_sls(minion, root):
    """show_sls + mock run of every SLS under ``root``; returns {sls: show_sls output}."""
    names = [sls_name(p, root) for p in SLS_FILES]
    # the extensions from the local file_roots' _modules, _states, _utils (links to the repo's)
    calls = [("saltutil.sync_all", [], {"refresh": False}), ("cp.list_master", [], {})]
    for name in names:
        calls += [("state.show_sls", [name], {}), ("state.sls", [name], {"mock": True})]
    synced, served, *rets = minion.batch(calls)
    assert "modules.nginx_ha" in synced["modules"], synced
    shown = {}
    for name, show, run in zip(names, rets[0::2], rets[1::2]):
        edges = check_closed(show)
        present = check_chain(show, edges)
        assert {s[len("salt://"):] for s in salt_sources(show)} <= set(served), name
        assert all(s.startswith(f"salt://{root}/files/") for s in salt_sources(show)), salt_sources(show)
        check_mock_run(run, present)
        shown[name] = show
    return shown


def test_the_formula_works_under_another_directory_name(tmp_path):
    """tplroot: map.jinja, includes and salt:// sources follow the directory the formula is in."""
    roots = tmp_path / "file_roots"
    roots.mkdir()
    (roots / "web_ha").symlink_to(FORMULA)
    for ext in ("_modules", "_states", "_utils", "_engines"):
        (roots / ext).symlink_to(REPO / "salt" / ext)
    shown = check_every_sls(Masterless(tmp_path, roots), "web_ha")
    included = {body["__sls__"] for body in shown["web_ha"].values()}
    assert {"web_ha.service", "web_ha.keepalived", "web_ha.nginx"} <= included
    assert all(sls.startswith("web_ha.") for sls in included), included


def test_every_sls_renders_and_runs_in_order_for_a_redhat_node(tmp_path):
    """Rocky 9 grains: OS_FAMILY_LOOKUP["RedHat"] in the rendered states, Salt's RedHat pkg module."""
    grains = {"os_family": "RedHat", "os": "Rocky", "osfinger": "Rocky Linux-9", "osmajorrelease": 9, "osrelease": "9.4"}
    # Salt loads its RedHat package module (yumpkg) only where dnf or yum is on PATH; mock=True
    # calls no state function, so this stand-in is never run.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dnf").write_text("#!/bin/sh\necho 'stand-in dnf, never run' >&2\nexit 1\n")
    (fake / "dnf").chmod(0o755)
    minion = Masterless(tmp_path, REPO / "salt", grains=grains, path=fake)
    shown = check_every_sls(minion, "nginx_ha")
    assert minion.batch([("test.provider", ["pkg"], {}), ("grains.get", ["os_family"], {})]) == ["yumpkg", "RedHat"]
    high = shown["nginx_ha"]
    pkgs = next(a["pkgs"] for a in high["nginx_ha_packages_installed"]["pkg"] if isinstance(a, dict) and "pkgs" in a)
    assert pkgs == ["keepalived", "nginx"]
    assert "nginx_ha_nginx_default_site_disabled" not in high
    names = {sid: next(a["name"] for a in high[sid]["service"] if isinstance(a, dict) and "name" in a)
             for sid in ("nginx_ha_nginx_running", "nginx_ha_keepalived_running")}
    assert names == {"nginx_ha_nginx_running": "nginx", "nginx_ha_keepalived_running": "keepalived"}
