#!py
"""
Reactor for nginx_ha/vrrp/* events: hand the event, as data, to the nginx_ha_reactor runner.

Rendered with the py renderer, so the event's tag and data reach the runner as Python objects:
nothing from a minion's payload is ever templated into YAML or a command. All decisions (who is
the sender, whether it is a cluster node, restart budget, alerts) are in
_runners/nginx_ha_reactor.py.
"""


def run():
    return {
        "nginx_ha_vrrp_event": {
            "runner.nginx_ha_reactor.vrrp_event": [
                {"args": [{"tag": tag}, {"data": data}]},  # noqa: F821 (tag, data: set by the reactor)
            ]
        }
    }
