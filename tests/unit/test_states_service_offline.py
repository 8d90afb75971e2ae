"""
nginx_ha.service_offline_answered: Salt's service.running asks the loader for service.offline; where
the host's service module has none (debian_service), that miss imports every execution module. The
state registers service.offline answering what that search finds (systemd_service's offline mode
where systemctl is installed without systemd as PID 1, else nothing: False) only where it is
missing, and leaves a module that has one alone. First with loader mocks, then with Salt's real
loader and Salt's real service state, both host kinds without systemd as PID 1.
"""

import types

import pytest

from tests.support import formula

states = formula.load_module("_states", "nginx_ha")


def service_module(name, source):
    """A stand-in for a loaded service module: its functions' globals are the module's namespace."""
    module = types.ModuleType(f"salt.loaded.int.module.{name}")
    exec(source, module.__dict__)  # noqa: S102 - fixed test source
    return module


SYSV = service_module("debian_service", "def status(name, sig=None):\n    return True\n")
SYSTEMD = service_module(
    "systemd_service",
    "def status(name, sig=None):\n    return True\n\ndef offline():\n    return False\n",
)
ALIASED = service_module(
    "aliased_service",
    "__func_alias__ = {'offline_': 'offline'}\n\ndef status(name, sig=None):\n    return True\n\n"
    "def offline_():\n    return False\n",
)


@pytest.fixture
def salt_funcs():
    return {}


@pytest.fixture
def opts():
    return {"test": False}


@pytest.fixture
def context():
    return {}


@pytest.fixture
def configure_loader_modules(salt_funcs, opts, context):
    return {states: {"__salt__": salt_funcs, "__opts__": opts, "__grains__": {"kernel": "Linux"}, "__context__": context}}


# salt.utils.systemd's answers, as it caches them in __context__: sysvinit (lab hosts hide
# systemctl) and systemctl installed without systemd as PID 1 (systemd_service's "offline mode")
SYSVINIT = {"salt.utils.systemd.booted": False, "salt.utils.systemd.offline": False}
OFFLINE_MODE = {"salt.utils.systemd.booted": False, "salt.utils.systemd.offline": "/usr/bin/systemctl"}


@pytest.mark.parametrize("test", [False, True], ids=["apply", "test=True"])
@pytest.mark.parametrize("host", [SYSVINIT, OFFLINE_MODE], ids=["sysvinit", "systemctl without systemd"])
def test_a_service_module_without_offline_gets_salts_answer(salt_funcs, opts, context, test, host):
    """The same with test=True: nothing on the host changes, and the test run's service states are as cheap."""
    opts["test"] = test
    context.update(host)
    salt_funcs["service.status"] = SYSV.status
    ret = states.service_offline_answered("prep")
    assert ret["result"] is True and ret["changes"] == {}
    assert "debian_service has no offline()" in ret["comment"]
    assert salt_funcs["service.offline"]() == host["salt.utils.systemd.offline"]


def test_systemd_service_disabled_leaves_nothing_to_find(salt_funcs, opts, context):
    context.update(OFFLINE_MODE)
    opts["disable_modules"] = ["systemd_service"]
    salt_funcs["service.status"] = SYSV.status
    states.service_offline_answered("prep")
    assert salt_funcs["service.offline"]() is False


@pytest.mark.parametrize("module", [SYSTEMD, ALIASED], ids=["defined", "aliased"])
def test_a_service_module_with_offline_is_left_alone(salt_funcs, module):
    salt_funcs["service.status"] = module.status
    ret = states.service_offline_answered("prep")
    assert ret["result"] is True and ret["changes"] == {}
    assert "provides service.offline" in ret["comment"]
    assert "service.offline" not in salt_funcs


def test_no_service_module_is_left_to_service_running(salt_funcs):
    ret = states.service_offline_answered("prep")
    assert ret["result"] is True and ret["changes"] == {} and "no service module" in ret["comment"]
    assert "service.offline" not in salt_funcs


def test_a_function_it_cannot_inspect_is_left_to_the_loader(salt_funcs):
    salt_funcs["service.status"] = len  # a builtin: no module globals to look at
    ret = states.service_offline_answered("prep")
    assert ret["result"] is True and "left to Salt's loader" in ret["comment"]
    assert "service.offline" not in salt_funcs


def _real_loaders(tmp_path, host):
    import salt.config
    import salt.loader

    opts = salt.config.minion_config(None)
    opts.update(file_client="local", cachedir=str(tmp_path / "cache"), extension_modules=str(tmp_path / "extmods"),
                test=False, grains={"id": "unit", "os_family": "Debian", "os": "Debian", "kernel": "Linux",
                                    "osmajorrelease": 12, "osfinger": "Debian-12", "init": "sysvinit"})
    context = dict(host)  # what salt.utils.systemd finds on such a host, cached where Salt caches it
    funcs = salt.loader.minion_mods(opts, context=context)
    status = funcs["service.status"]
    assert status.__module__.endswith(".debian_service"), status.__module__
    return opts, context, funcs, salt.loader.states(opts, funcs, salt.loader.utils(opts), {}, context=context)


@pytest.mark.parametrize("host", [SYSVINIT, OFFLINE_MODE], ids=["sysvinit", "systemctl without systemd"])
@pytest.mark.parametrize("prepared", [False, True], ids=["Salt alone", "answered first"])
def test_salts_real_service_state_answers_the_same_and_imports_every_module_only_alone(tmp_path, prepared, host):
    """Salt's own loader and service.running (on a service that does not exist: nothing is touched)."""
    opts, context, funcs, loader_states = _real_loaders(tmp_path, host)
    if prepared:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in {"__salt__": funcs, "__opts__": opts, "__grains__": opts["grains"], "__context__": context}.items():
                mp.setattr(states, key, value, raising=False)
            ret = states.service_offline_answered("prep")
            assert ret["result"] is True and "has no offline()" in ret["comment"], ret
            run = loader_states["service.running"]("nginx_ha_no_such_service")
    else:
        run = loader_states["service.running"]("nginx_ha_no_such_service")
    if host["salt.utils.systemd.offline"]:
        assert run["result"] is True and "OFFLINE mode" in run["comment"], run  # Salt's offline mode, either way
    else:
        assert run["result"] is False and "not available" in run["comment"], run  # Salt's own path after _offline()
    every = len(funcs.file_mapping) // 2  # well over the handful a lookup by name imports
    if prepared:
        assert len(funcs.loaded_files) < 20, sorted(funcs.loaded_files)
    elif not host["salt.utils.systemd.offline"]:  # the miss: Salt imports module after module
        assert len(funcs.loaded_files) > every, (len(funcs.loaded_files), len(funcs.file_mapping))
