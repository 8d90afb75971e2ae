"""
nginx_ha.engine_synced: the minion's copy of the nginx_ha_events engine is the one the master serves;
saltutil.sync_engines runs only when it is not (missing, different, or no longer served), never in
an idempotent run. Loader mocks: the file server's hash answer and the sync, which writes the file as
Salt's would.
"""

import hashlib

import pytest

from tests.support import formula

states = formula.load_module("_states", "nginx_ha")

SERVED = b"# the engine the master serves\n"


def sha256(data):
    return hashlib.sha256(data).hexdigest()


class FakeMaster:
    """What the master's file server holds (``served``) and what a sync does to the minion's cache."""

    def __init__(self, extmods, served=SERVED):
        self.extmods = extmods
        self.served = served
        self.hash_calls = []
        self.sync_calls = []
        self.sync_writes = True

    def hash_file(self, path, saltenv=None):
        self.hash_calls.append((path, saltenv))
        if self.served is None:
            return ""  # what cp.hash_file answers for a file the environment does not have
        return {"hsum": sha256(self.served), "hash_type": "sha256"}

    def sync_engines(self, saltenv=None, refresh=True):
        self.sync_calls.append((saltenv, refresh))
        local = self.extmods / "engines" / "nginx_ha_events.py"
        if not self.sync_writes:
            return []
        if self.served is None:
            if local.exists():
                local.unlink()  # clean_dynamic_modules: True (Salt's default)
            return []
        if local.exists() and local.read_bytes() == self.served:
            return []
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(self.served)
        return ["engines.nginx_ha_events"]


@pytest.fixture
def extmods(tmp_path):
    return tmp_path / "extmods"


@pytest.fixture
def master(extmods):
    return FakeMaster(extmods)


@pytest.fixture
def opts(extmods):
    return {"test": False, "extension_modules": str(extmods), "hash_type": "sha256"}


@pytest.fixture
def configure_loader_modules(master, opts):
    funcs = {"cp.hash_file": master.hash_file, "saltutil.sync_engines": master.sync_engines}
    return {states: {"__salt__": funcs, "__opts__": opts}}


def synced_copy(extmods, data):
    path = extmods / "engines" / "nginx_ha_events.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_in_sync_asks_for_one_hash_and_does_not_sync(master, extmods):
    synced_copy(extmods, SERVED)
    ret = states.engine_synced("nginx_ha_events", saltenv="prod")
    assert ret["result"] is True and ret["changes"] == {}, ret
    assert master.hash_calls == [("salt://_engines/nginx_ha_events.py", "prod")]
    assert master.sync_calls == []


@pytest.mark.parametrize("local", [None, b"# an older engine\n"], ids=["missing", "different"])
def test_missing_or_different_copy_is_synced_from_the_runs_environment(master, extmods, local):
    if local is not None:
        synced_copy(extmods, local)
    ret = states.engine_synced("nginx_ha_events", saltenv="prod")
    assert ret["result"] is True, ret
    assert ret["changes"] == {"engines": ["engines.nginx_ha_events"]}
    assert master.sync_calls == [("prod", False)]
    assert (extmods / "engines" / "nginx_ha_events.py").read_bytes() == SERVED
    # the next run: in sync, no sync
    ret = states.engine_synced("nginx_ha_events", saltenv="prod")
    assert ret["result"] is True and ret["changes"] == {} and len(master.sync_calls) == 1


def test_test_mode_reports_the_sync_without_running_it(master, extmods, opts):
    synced_copy(extmods, b"old\n")
    opts["test"] = True
    ret = states.engine_synced("nginx_ha_events")
    assert ret["result"] is None and "differs" in ret["comment"] and ret["changes"] == {}
    assert master.sync_calls == []
    assert (extmods / "engines" / "nginx_ha_events.py").read_bytes() == b"old\n"


def test_test_mode_in_sync_is_true(master, extmods, opts):
    synced_copy(extmods, SERVED)
    opts["test"] = True
    assert states.engine_synced("nginx_ha_events")["result"] is True


def test_not_served_and_not_synced_means_the_package_provides_it(master):
    master.served = None
    ret = states.engine_synced("nginx_ha_events")
    assert ret["result"] is True and ret["changes"] == {} and "package" in ret["comment"]
    assert master.sync_calls == []


def test_a_copy_the_master_no_longer_serves_is_removed_by_the_sync(master, extmods):
    """A stale synced copy would shadow the engine of the installed package: the sync cleans it."""
    path = synced_copy(extmods, SERVED)
    master.served = None
    ret = states.engine_synced("nginx_ha_events")
    assert ret["result"] is True and "stale" in ret["comment"], ret
    assert master.sync_calls and not path.exists()


def test_a_sync_that_leaves_the_copy_wrong_fails_loudly(master, extmods):
    synced_copy(extmods, b"old\n")
    master.sync_writes = False  # e.g. the sync could not write the cache
    ret = states.engine_synced("nginx_ha_events")
    assert ret["result"] is False and "still not what the master serves" in ret["comment"], ret


def test_a_failing_sync_fails_the_state(master, extmods, configure_loader_modules):
    def broken(**kwargs):
        raise OSError("No space left on device")

    states.__salt__["saltutil.sync_engines"] = broken
    ret = states.engine_synced("nginx_ha_events")
    assert ret["result"] is False and "No space left on device" in ret["comment"]


def test_file_server_unreachable_fails_the_state(configure_loader_modules):
    def unreachable(path, saltenv=None):
        raise OSError("master did not answer")

    states.__salt__["cp.hash_file"] = unreachable
    ret = states.engine_synced("nginx_ha_events")
    assert ret["result"] is False and "master did not answer" in ret["comment"]


@pytest.mark.parametrize("name", ["../x", "a b", "", "nginx_ha_events.py"])
def test_a_name_that_is_not_a_module_is_refused_before_any_path_is_built(master, name):
    ret = states.engine_synced(name)
    assert ret["result"] is False and master.hash_calls == [] and master.sync_calls == []
