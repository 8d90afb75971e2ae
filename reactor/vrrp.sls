#!py
"""
Reactor for nginx_ha/vrrp/* events: hand the event, as data, to the nginx_ha_reactor runner.

Rendered with the py renderer, so the event's tag and data reach the runner as Python objects:
nothing from a minion's payload is ever templated into YAML or a command. All decisions (who is
the sender, whether it is a cluster node, restart budget, alerts) are in
_runners/nginx_ha_reactor.py.
"""

import logging
import threading

import salt.client.mixins as salt_client_mixins  # (the py renderer injects its own "salt" name)


def _serialize_mminion():
    """
    Salt's reactor runs runner jobs in a ThreadPool on one shared RunnerClient (salt/utils/reactor.py),
    a new one every reactor_refresh_interval. Its ``mminion`` (a MasterMinion: config, grains,
    loaders) is built lazily by the first jobs, concurrently, and outside the try of
    ``SyncClientMixin.low`` (salt/client/mixins.py): two jobs building it at once race in Salt's
    loader (KeyError in LazyLoader.clean_modules, "dictionary changed size during iteration" in
    mminion_config), and the job that loses vanishes: ThreadPool logs the exception at DEBUG only,
    no salt/run/<jid>/new or ret, the runner never runs, the event is never handled. So it is built
    under one lock, in the reactor process (where this file is rendered, before any job runs).
    """
    cls = salt_client_mixins.SyncClientMixin
    prop = cls.__dict__.get("mminion")
    if not isinstance(prop, property):
        if not getattr(cls, "nginx_ha_mminion_unguarded", False):  # said once per reactor process
            cls.nginx_ha_mminion_unguarded = True
            logging.getLogger("nginx_ha.reactor").warning(
                "nginx_ha reactor: this Salt's SyncClientMixin.mminion is not a property; its build is "
                "not serialized (concurrent first reactor jobs may vanish, see reactor/vrrp.sls)"
            )
        return
    if getattr(prop.fget, "nginx_ha_serialized", False):
        return
    lock = threading.Lock()
    fget = prop.fget

    def mminion(self):
        with lock:
            return fget(self)

    mminion.nginx_ha_serialized = True
    cls.mminion = property(mminion, doc=prop.__doc__)


def run():
    _serialize_mminion()
    return {
        "nginx_ha_vrrp_event": {
            "runner.nginx_ha_reactor.vrrp_event": [
                {"args": [{"tag": tag}, {"data": data}]},  # noqa: F821 (tag, data: set by the reactor)
            ]
        }
    }
