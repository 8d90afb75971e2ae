"""
nginx-ha lab: several "hosts" on one machine, each a Linux network + mount + PID + UTS namespace
with its own PID 1 (``lab.init``, or systemd with ``init="systemd"`` / $NGINX_HA_LAB_INIT=systemd),
on two bridged networks (management 198.51.100.0/24, service 203.0.113.0/24), running real
salt-master / salt-minion daemons.

    from lab import Lab, LabError
    with Lab(minions=("web-a", "web-b"), pillar_dir="pillar") as lab:
        lab.salt("web-a", "test.ping")                       # True
        lab.host("web-a").run("ip -br addr", check=True).stdout
        lab.client.run("curl -s -m 1 http://203.0.113.11/")
        lab.power_off("web-a"); lab.power_on("web-a")

Standard library only; must run as root. ``python -m lab.cleanup`` removes leftovers of crashed
runs (a new Lab does that on start too).
"""

import os

from .common import LabError, check_root_netns

# How a state run restarts a lab host's salt-minion (it runs as `salt-minion -d`, not as an init
# service): detached with setsid so the minion's shutdown does not take it along. For the
# nginx_ha pillar key events:minion_restart_cmd.
MINION_RESTART_CMD = [
    "setsid", "sh", "-c",
    "sleep 1; pid=$(cat /run/salt-minion.pid); kill $pid; "
    "while kill -0 $pid 2>/dev/null; do sleep 0.2; done; exec salt-minion -d >/dev/null 2>&1 </dev/null",
]
# The same on a systemd host, where salt-minion is a unit: through systemd, one second later (so the
# state run returns first), from a transient timer of its own (outside the minion's cgroup).
SYSTEMD_MINION_RESTART_CMD = [
    "systemd-run", "--quiet", "--on-active=1", "--timer-property=AccuracySec=100ms",
    "systemctl", "restart", "salt-minion",
]

INIT_ENV = "NGINX_HA_LAB_INIT"  # the host kind of a Lab created without init=: "sysvinit" (default) or "systemd"
INIT_KINDS = ("sysvinit", "systemd")


def default_init():
    """The host kind ``Lab()`` uses without ``init=``: $NGINX_HA_LAB_INIT, else "sysvinit"."""
    kind = os.environ.get(INIT_ENV, "").strip() or "sysvinit"
    if kind not in INIT_KINDS:
        raise LabError(f"{INIT_ENV}={kind!r}: expected one of {', '.join(INIT_KINDS)}")
    return kind


def minion_restart_cmd(init=None):
    """events:minion_restart_cmd for hosts of kind ``init`` (default: default_init())."""
    return list(SYSTEMD_MINION_RESTART_CMD if (init or default_init()) == "systemd" else MINION_RESTART_CMD)


__all__ = ["MINION_RESTART_CMD", "SYSTEMD_MINION_RESTART_CMD", "INIT_ENV", "INIT_KINDS", "default_init",
           "minion_restart_cmd", "Lab", "Host", "LabError", "CommandError", "CommandTimeout", "check_root_netns"]


def __getattr__(name):
    # lazy, so that `python -m lab.init` / `python -m lab.cleanup` do not import themselves twice
    if name in ("Lab", "Host", "CommandError", "CommandTimeout"):
        from . import core

        return getattr(core, name)
    raise AttributeError(f"module 'lab' has no attribute {name!r}")
