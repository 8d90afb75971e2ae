"""
The metrics of nginx-ha: the writer program and its settings, or nothing when the metrics are off.

``nginx_ha_metrics.settings``
    Writes the metrics writer (``nginx_ha_metrics.py``, root 0755) and the JSON settings file it
    reads (``metrics.json``, root 0644), both in the root-owned script directory beside
    ``health.json``: keepalived's check starts the writer when that file is there and no writer
    runs (so the writer lives with keepalived, on sysvinit and systemd hosts alike). A changed
    program or settings file stops the running writer (SIGTERM; it removes its textfile and closes
    its port); the check starts the new one within a check interval. With the metrics off
    (``settings: null``) the writer is stopped and the program, the settings and the textfile of
    the last settings are removed.

Sync to minions with ``salt '*' saltutil.sync_all``.
"""

import importlib.util
import json
import logging
import os
import sys

# The extension's own Python (_utils/) as ordinary imports: on the loader's sys.path when synced
# (<extension_modules>/utils), else the _utils folder beside this module's folder (the pip package;
# how and why: saltext/nginx_ha/__init__.py, "Shared Python").
if importlib.util.find_spec("nginx_ha_files") is None:
    sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "_utils"))
import nginx_ha_files  # pylint: disable=wrong-import-position

log = logging.getLogger(__name__)

__virtualname__ = "nginx_ha_metrics"

PROGRAM_NAME = b"nginx_ha_metrics.py"
DEFAULT_LOCK = "/run/nginx_ha_metrics.lock"


def __virtual__():
    if "cp.get_file_str" not in __salt__:
        return (False, "nginx_ha_metrics: the cp execution module is not available")
    return __virtualname__


def writer_pid(lock_file):
    """The pid of the running metrics writer (it holds ``lock_file`` and wrote its pid there), else None."""
    return nginx_ha_files.lock_holder(lock_file, PROGRAM_NAME)


def stop_writer(lock_file, wait=5.0):
    """SIGTERM the running writer and wait (up to ``wait`` s) until it let go of its lock: its textfile is gone then."""
    return nginx_ha_files.stop_holder(lock_file, PROGRAM_NAME, wait=wait)


def _hostport(listen):
    host = listen.get("host", "")
    return f"[{host}]:{listen.get('port')}" if ":" in host else f"{host}:{listen.get('port')}"


def _remove(path):
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def settings(name, settings, program_source, program_path, saltenv=None):  # pylint: disable=redefined-outer-name
    """
    Put the metrics writer in place with ``settings``, or take it away (``settings: null``).

    name
        The settings file (JSON, root 0644), e.g. ``/etc/keepalived/nginx_ha/metrics.json``: beside
        ``health.json``, where keepalived's check looks for it.
    settings
        ``{node, textfile, listen, interval, lock_file, ...}`` (computed by ``nginx_ha.node_config``
        as ``metrics_settings``; never free text), or None: metrics off.
    program_source
        ``salt://`` URL of the writer (``nginx_ha_metrics.py``).
    program_path
        Where it goes (root 0755, ``nginx_ha_metrics.py`` in the same directory as ``name``).

    .. code-block:: yaml

        nginx_ha_metrics_configured:
          nginx_ha_metrics.settings:
            - name: /etc/keepalived/nginx_ha/metrics.json
            - settings: {...}
            - program_source: salt://nginx_ha/files/nginx_ha_metrics.py
            - program_path: /etc/keepalived/nginx_ha/nginx_ha_metrics.py
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    for path in (name, program_path):
        if not isinstance(path, str) or not os.path.isabs(path):
            ret["comment"] = f"{path!r} is not an absolute path"
            return ret
    if os.path.dirname(name) != os.path.dirname(program_path) or os.path.basename(program_path) != PROGRAM_NAME.decode():
        ret["comment"] = f"keepalived's check runs {PROGRAM_NAME.decode()} beside {name}, not {program_path}"
        return ret
    if settings is not None and (not isinstance(settings, dict) or not (settings.get("textfile") or settings.get("listen"))):
        ret["comment"] = f"settings must be the node view's metrics_settings (a textfile or a listen) or null, not {settings!r}"
        return ret
    old_data = nginx_ha_files.read_bytes(name)
    try:
        old = json.loads(old_data) if old_data else None
    except ValueError:
        old = None
    old = old if isinstance(old, dict) else None
    old_lock = (old or {}).get("lock_file") if isinstance((old or {}).get("lock_file"), str) else DEFAULT_LOCK
    old_textfile = (old or {}).get("textfile") if isinstance((old or {}).get("textfile"), str) else None

    if settings is None:
        present = [p for p in (name, program_path) if os.path.lexists(p)]
        if not present:
            ret.update(result=True, comment="the metrics are off")
            return ret
        changes = {"removed": present}
        if __opts__["test"]:
            ret.update(result=None, changes=changes, comment="the metrics writer would be stopped and removed")
            return ret
        stopped = stop_writer(old_lock)
        if stopped:
            changes["writer_stopped"] = f"pid {stopped}"
        for path in (name, program_path):
            _remove(path)
        if old_textfile and _remove(old_textfile):
            changes["removed"].append(old_textfile)
        ret.update(result=True, changes=changes, comment="the metrics are off: writer stopped, its files removed")
        return ret

    program = __salt__["cp.get_file_str"](program_source, saltenv=saltenv or __env__)
    if not program:
        ret["comment"] = f"{program_source} was not found on the master"
        return ret
    program = program.encode()
    data = (json.dumps(settings, sort_keys=True, indent=1) + "\n").encode()
    old_program = nginx_ha_files.read_bytes(program_path)
    settings_changed, program_changed = old_data != data, old_program != program
    if not settings_changed and not program_changed:
        ret.update(result=True, comment="the metrics writer is as configured")
        return ret
    changes = {}
    if settings_changed:
        changes["settings"] = {"old": old, "new": settings}
    if program_changed:
        changes["program"] = f"{program_path} {'updated' if old_program else 'created'}"
    if __opts__["test"]:
        ret.update(result=None, changes=changes, comment="the metrics writer would be (re)configured")
        return ret
    try:
        if settings.get("textfile"):
            # node_exporter's textfile directory (its package makes it; created 0755 only when missing)
            os.makedirs(os.path.dirname(settings["textfile"]), mode=0o755, exist_ok=True)
        nginx_ha_files.atomic_write(program_path, program, 0o755)
        nginx_ha_files.atomic_write(name, data, 0o644)
    except OSError as exc:
        ret["comment"] = f"cannot write the metrics writer's files: {exc}"
        return ret
    stopped = stop_writer(old_lock)
    if stopped:
        changes["writer_restarted"] = f"pid {stopped} stopped; keepalived's check starts the new writer"
    if old_textfile and old_textfile != settings.get("textfile") and _remove(old_textfile):
        changes["removed"] = [old_textfile]
    where = " and ".join(
        x for x in (
            settings.get("textfile") and f"writes {settings['textfile']}",
            settings.get("listen") and f"serves http://{_hostport(settings['listen'])}/metrics",
        ) if x
    )
    ret.update(result=True, changes=changes, comment=f"the metrics writer {where} (started by keepalived's check)")
    return ret
