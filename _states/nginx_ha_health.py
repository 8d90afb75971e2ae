"""
The health path of nginx-ha: what keepalived's check and the health watcher probe, switched only
once nginx answers it.

``nginx_ha_health.settings``
    Writes the watcher program and the JSON settings file it and keepalived's check read (the
    health URL, intervals, fall/rise, the track file). Scripts keepalived runs take no pillar text:
    they read this root-owned file. A changed endpoint is switched to only after the new endpoint
    answers HTTP 200 (nginx has loaded it): until then, and when it never answers, the old
    settings stay and the watcher goes on probing the endpoint nginx still serves. A changed
    watcher program makes the running watcher exit; keepalived's check starts the new one within
    a check interval, and the track file keeps its value meanwhile.

Sync to minions with ``salt '*' saltutil.sync_all``.
"""

import http.client
import importlib.util
import json
import logging
import os
import sys
import time

# The extension's own Python (_utils/) as ordinary imports: on the loader's sys.path when synced
# (<extension_modules>/utils), else the _utils folder beside this module's folder (the pip package;
# how and why: saltext/nginx_ha/__init__.py, "Shared Python").
if importlib.util.find_spec("nginx_ha_files") is None:
    sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "_utils"))
import nginx_ha_files  # pylint: disable=wrong-import-position

log = logging.getLogger(__name__)

__virtualname__ = "nginx_ha_health"


def __virtual__():
    if "cp.get_file_str" not in __salt__:
        return (False, "nginx_ha_health: the cp execution module is not available")
    return __virtualname__


def answers(host, port, request, timeout):
    """True when ``GET request`` on host:port answers HTTP 200 within ``timeout`` (no proxy, ever)."""
    conn = http.client.HTTPConnection(host.strip("[]"), port, timeout=timeout)
    try:
        conn.request("GET", request, headers={"User-Agent": "nginx_ha-switch"})
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _wait_answers(settings, wait):
    deadline = time.monotonic() + wait
    while True:
        if answers(settings["host"], settings["port"], settings["request"], min(1.0, max(0.1, settings["check_timeout"]))):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def watcher_pid(state_file):
    """The pid of the running watcher (it holds ``<state_file>.lock`` and wrote its pid there), else None."""
    return nginx_ha_files.lock_holder(state_file + ".lock", b"health_watch.py")


def _stop_watcher(state_file):
    return nginx_ha_files.stop_holder(state_file + ".lock", b"health_watch.py")


def settings(name, settings, watcher_source, watcher_path, wait=10, saltenv=None):  # pylint: disable=redefined-outer-name
    """
    Switch the health path (what keepalived's check and the watcher probe) to ``settings``, but
    only once nginx answers the new endpoint.

    name
        The settings file (JSON, root 0644), e.g. ``/etc/keepalived/nginx_ha/health.json``.
    settings
        ``{host, port, request, check_timeout, enabled, interval, retry_interval, timeout, fall,
        rise, state_file, pidfile}`` (computed by ``nginx_ha.node_config``; never free text).
    watcher_source
        ``salt://`` URL of the watcher program (``health_watch.py``).
    watcher_path
        Where it goes (root 0755, in the root-owned script directory keepalived requires).
    wait
        Seconds to wait for nginx to answer a new endpoint (a reload is asynchronous).

    .. code-block:: yaml

        nginx_ha_health_path_switched:
          nginx_ha_health.settings:
            - name: /etc/keepalived/nginx_ha/health.json
            - settings: {...}
            - watcher_source: salt://nginx_ha/files/health_watch.py
            - watcher_path: /etc/keepalived/nginx_ha/health_watch.py
            - require:
              - service: nginx_ha_nginx_running
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    for path in (name, watcher_path):
        if not isinstance(path, str) or not os.path.isabs(path):
            ret["comment"] = f"{path!r} is not an absolute path"
            return ret
    program = __salt__["cp.get_file_str"](watcher_source, saltenv=saltenv or __env__)
    if not program:
        ret["comment"] = f"{watcher_source} was not found on the master"
        return ret
    program = program.encode()
    data = (json.dumps(settings, sort_keys=True, indent=1) + "\n").encode()
    old_data, old_program = nginx_ha_files.read_bytes(name), nginx_ha_files.read_bytes(watcher_path)
    try:
        old = json.loads(old_data) if old_data else None
    except ValueError:
        old = None
    settings_changed, program_changed = old_data != data, old_program != program
    if not settings_changed and not program_changed:
        ret.update(result=True, comment="the health path is as configured")
        return ret

    changes = {}
    if settings_changed:
        changes["settings"] = {"old": old, "new": settings}
    if program_changed:
        changes["watcher"] = f"{watcher_path} {'updated' if old_program else 'created'}"
    if __opts__["test"]:
        ret.update(result=None, changes=changes, comment="the health path would switch once nginx answers the new endpoint")
        return ret

    endpoint = f"http://{settings['host']}:{settings['port']}{settings['request']}"
    if settings_changed and not _wait_answers(settings, float(wait)):
        ret["comment"] = (
            f"nginx does not answer the new health endpoint {endpoint} within {wait}s; the health path"
            " is unchanged (the watcher keeps probing the endpoint nginx serves)"
        )
        return ret

    try:
        if program_changed:
            nginx_ha_files.atomic_write(watcher_path, program, 0o755)
        old_state_file = (old or {}).get("state_file")
        new_state_file = settings["state_file"]
        if old_state_file and old_state_file != new_state_file and not os.path.exists(new_state_file):
            # the new track file starts with the current health, so nothing flaps at the switch
            current = nginx_ha_files.read_bytes(old_state_file)
            if current is not None:
                nginx_ha_files.atomic_write(new_state_file, current, 0o644)
        nginx_ha_files.atomic_write(name, data, 0o644)
    except OSError as exc:
        ret["comment"] = f"cannot write the health path files: {exc}"
        return ret

    restart = program_changed or (old_state_file not in (None, new_state_file)) or not settings.get("enabled", True)
    if restart:
        stopped = _stop_watcher(old_state_file or new_state_file)
        if stopped:
            changes["watcher_restarted"] = f"pid {stopped} stopped; keepalived's check starts the new watcher"
    ret.update(result=True, changes=changes, comment=f"the health path now probes {endpoint}")
    return ret
