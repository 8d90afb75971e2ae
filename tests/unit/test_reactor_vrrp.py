"""
reactor/vrrp.sls (rendered by Salt's py renderer in the master's reactor process): the event goes
to the runner as data, and the reactor's shared RunnerClient builds its MasterMinion under a lock.
"""

import importlib.machinery
import importlib.util
import threading
import time

import pytest
import salt.client.mixins

from tests.support import formula


def load_sls(tag="nginx_ha/vrrp/VI_web/fault", data=None):
    """The SLS as the py renderer runs it: a module whose globals hold ``tag`` and ``data``."""
    path = formula.REPO / "reactor" / "vrrp.sls"
    loader = importlib.machinery.SourceFileLoader("nginx_ha_reactor_vrrp_sls", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    module.tag, module.data = tag, data if data is not None else {"id": "web-a"}
    loader.exec_module(module)
    return module


@pytest.fixture
def fake_mminion(monkeypatch):
    """SyncClientMixin.mminion replaced by a slow builder that records how many run at once."""
    seen = {"now": 0, "max": 0, "calls": 0}
    guard = threading.Lock()

    def build(self):
        with guard:
            seen["now"] += 1
            seen["calls"] += 1
            seen["max"] = max(seen["max"], seen["now"])
        time.sleep(0.05)
        with guard:
            seen["now"] -= 1
        return "mminion"

    monkeypatch.setattr(salt.client.mixins.SyncClientMixin, "mminion", property(build))
    return seen


def test_the_event_reaches_the_runner_as_data(fake_mminion):
    data = {"id": "web-a", "data": {"state": "FAULT", "note": "{{ not templated }}; $(rm -rf /)"}}
    sls = load_sls("nginx_ha/vrrp/VI_web/fault", data)
    assert sls.run() == {
        "nginx_ha_vrrp_event": {"runner.nginx_ha_reactor.vrrp_event": [{"args": [{"tag": "nginx_ha/vrrp/VI_web/fault"}, {"data": data}]}]}
    }


def test_the_reactors_runner_client_builds_its_master_minion_one_thread_at_a_time(fake_mminion):
    """CI once lost a VRRP event without a trace: two reactor workers built the shared client's
    MasterMinion at once, Salt's loader raised in one (KeyError in clean_modules), and Salt's
    ThreadPool logged it at DEBUG; the runner never ran. Rendering the SLS serializes that build."""
    client = object.__new__(type("Client", (salt.client.mixins.SyncClientMixin,), {}))
    load_sls().run()
    threads = [threading.Thread(target=lambda: client.mminion) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fake_mminion == {"now": 0, "max": 1, "calls": 4}


def test_rendering_again_wraps_once(fake_mminion):
    load_sls().run()
    wrapped = salt.client.mixins.SyncClientMixin.__dict__["mminion"]
    load_sls().run()
    assert salt.client.mixins.SyncClientMixin.__dict__["mminion"] is wrapped
    assert wrapped.fget.nginx_ha_serialized is True


def test_a_salt_without_that_property_is_left_alone_and_said_once(monkeypatch, caplog):
    monkeypatch.setattr(salt.client.mixins.SyncClientMixin, "mminion", "not a property")
    monkeypatch.setattr(salt.client.mixins.SyncClientMixin, "nginx_ha_mminion_unguarded", False, raising=False)
    load_sls().run()
    load_sls().run()
    assert salt.client.mixins.SyncClientMixin.__dict__["mminion"] == "not a property"
    assert caplog.text.count("its build is not serialized") == 1
