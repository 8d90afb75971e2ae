"""
nginx-ha: keepalived + nginx high availability, seen from one minion.

The cluster is described once in the ``nginx_ha`` pillar (see ``pillar/nginx_ha.sls`` in the
nginx-ha repository). This module answers, on each node, what that pillar means for it.

Sync it to minions first: ``salt '*' saltutil.sync_all``.
"""

import copy
import fcntl
import json
import logging
import os
import signal
import time
import urllib.error
import urllib.request

import salt.utils.dictupdate
import salt.utils.platform
import salt.utils.yaml
from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "nginx_ha"

DEFAULTS_URL = "salt://nginx_ha/defaults.yaml"
OSFAMILYMAP_URL = "salt://nginx_ha/osfamilymap.yaml"


def __virtual__():
    if not salt.utils.platform.is_linux():
        return (False, "nginx_ha: keepalived VRRP and this module need Linux")
    for util in ("nginx_ha_model.node_view", "nginx_ha_status.parse_keepalived_json"):
        if util not in __utils__:
            return (False, f"nginx_ha: the {util.split('.')[0]} utils module is missing; run saltutil.sync_all")
    return __virtualname__


def _load_yaml(url, what):
    text = __salt__["cp.get_file_str"](url, saltenv=__opts__.get("saltenv") or "base")
    if not text:
        raise CommandExecutionError(f"nginx_ha: cannot read {what} from {url}; is the formula in the master's file_roots?")
    return salt.utils.yaml.safe_load(text)


def merged_config(defaults=None, osfamilymap=None, pillar=None):
    """
    Return the cluster configuration as the formula sees it: ``defaults.yaml`` merged with this
    OS family's entry of ``osfamilymap.yaml`` (under ``lookup``) and the ``nginx_ha`` pillar.
    Not validated; see :py:func:`node_config`.

    CLI Example:

    .. code-block:: bash

        salt 'web-a' nginx_ha.merged_config
    """
    if defaults is None:
        defaults = _load_yaml(DEFAULTS_URL, "the formula defaults")
    if osfamilymap is None:
        osfamilymap = _load_yaml(OSFAMILYMAP_URL, "the OS family map")
    if pillar is None:
        # unmask: Salt 3008 redacts pillar values returned to callers unless asked not to.
        pillar = __salt__["pillar.get"]("nginx_ha", {}, unmask=True)
    if not isinstance(pillar, dict):
        raise SaltInvocationError(f"nginx_ha: pillar key nginx_ha is {pillar!r}, not a mapping")
    config = copy.deepcopy(defaults.get("nginx_ha", defaults))
    os_family = __grains__.get("os_family")
    lookup = copy.deepcopy((osfamilymap or {}).get(os_family) or {})
    if not lookup:
        raise CommandExecutionError(
            f"nginx_ha: os_family {os_family!r} is not in osfamilymap.yaml; set nginx_ha:lookup in the pillar"
        )
    config["lookup"] = salt.utils.dictupdate.update(lookup, config.get("lookup") or {}, merge_lists=False)
    return salt.utils.dictupdate.update(config, copy.deepcopy(pillar), merge_lists=False)


def node_config(minion_id=None, defaults=None, osfamilymap=None, pillar=None):
    """
    Return this node's validated view of the cluster: its VRRP instances (with its own state,
    priority, interface and unicast peers), the health check and the nginx site, as the
    ``nginx_ha`` states render them.

    Raises ``SaltInvocationError`` listing every invalid pillar key with its value, or when this
    minion has no role in any instance.

    minion_id
        Whose view to compute (default: this minion's id).

    CLI Example:

    .. code-block:: bash

        salt 'web-*' nginx_ha.node_config
        salt 'web-a' nginx_ha.node_config minion_id=web-b
    """
    config = merged_config(defaults=defaults, osfamilymap=osfamilymap, pillar=pillar)
    minion_id = minion_id or __grains__["id"]
    try:
        view = __utils__["nginx_ha_model.node_view"](config, minion_id)
    except ValueError as exc:
        raise SaltInvocationError(str(exc)) from exc
    view["lookup"] = config["lookup"]
    return view


def validate_pillar(pillar=None):
    """
    Check the ``nginx_ha`` pillar for the whole cluster and return the list of problems, each
    naming its pillar key and the bad value (an empty list when it is valid).

    CLI Example:

    .. code-block:: bash

        salt 'web-a' nginx_ha.validate_pillar
    """
    return __utils__["nginx_ha_model.validate"](merged_config(pillar=pillar))


# --------------------------------------------------------------------------------------------
# Live state: what keepalived, nginx and the kernel say right now.
# --------------------------------------------------------------------------------------------

MAINTENANCE_OFFSET = -253  # keepalived clamps the effective priority at 1: below every peer


def _pid_alive(pidfile, name):
    """The pid in ``pidfile`` when that process runs ``name``, else None."""
    try:
        with open(pidfile, encoding="ascii") as fh:
            pid = int(fh.read().split()[0])
        with open(f"/proc/{pid}/comm", encoding="utf-8") as fh:
            comm = fh.read().strip()
    except (OSError, ValueError, IndexError):
        return None
    return pid if comm == name else None


def _keepalived_pid(lookup):
    return _pid_alive(lookup["keepalived"]["pidfile"], "keepalived")


def _json_signal(lookup):
    if "nginx_ha.json_signal" not in __context__:
        res = __salt__["cmd.run_all"]([lookup["keepalived"]["binary"], "--signum=JSON"], python_shell=False, ignore_retcode=True)
        try:
            __context__["nginx_ha.json_signal"] = int(res["stdout"].strip())
        except ValueError as exc:
            raise CommandExecutionError(
                f"nginx_ha: this keepalived cannot dump its state as JSON ({res['stdout']} {res['stderr']}".strip() + ")"
            ) from exc
    return __context__["nginx_ha.json_signal"]


def _keepalived_dump(lookup, pid, timeout=3.0):
    """Ask the running keepalived for its JSON data dump and parse it."""
    path = lookup["keepalived"]["json_dump"]
    lock_path = os.path.join(os.path.dirname(lookup["keepalived"]["pidfile"]), "nginx_ha.dump.lock")
    with open(lock_path, "a", encoding="ascii") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        try:
            os.kill(pid, _json_signal(lookup))
        except ProcessLookupError as exc:
            raise CommandExecutionError("nginx_ha: keepalived exited while being asked for its state") from exc
        deadline = time.monotonic() + timeout
        last_error = None
        while time.monotonic() < deadline:
            try:
                with open(path, encoding="utf-8") as fh:
                    return __utils__["nginx_ha_status.parse_keepalived_json"](fh.read())
            except FileNotFoundError:
                pass
            except ValueError as exc:  # still being written
                last_error = exc
            time.sleep(0.02)
    raise CommandExecutionError(
        f"nginx_ha: keepalived (pid {pid}) did not write its state dump {path} within {timeout}s" + (f": {last_error}" if last_error else "")
    )


def _local_addresses(lookup):
    res = __salt__["cmd.run_all"]([lookup["ip"], "-j", "addr"], python_shell=False, ignore_retcode=True)
    if res["retcode"] != 0:
        raise CommandExecutionError(f"nginx_ha: ip -j addr failed: {res['stderr']}")
    return __utils__["nginx_ha_status.parse_ip_addr"](res["stdout"])


def vip_status(instance=None):
    """
    Return, for each VRRP instance this minion belongs to: its VIPs, which of them are on this
    host's interfaces right now (the kernel's truth), keepalived's own VRRP state (MASTER, BACKUP,
    FAULT, INIT, or STOP when keepalived is not running), base and effective priority, and the
    time of the last transition (read from keepalived's JSON data dump).

    instance
        Only this instance (default: all of this minion's instances).

    CLI Example:

    .. code-block:: bash

        salt '*' nginx_ha.vip_status
        salt 'web-a' nginx_ha.vip_status VI_web --out json
    """
    node = node_config()
    lookup = node["lookup"]
    instances = {inst["name"]: inst for inst in node["instances"]}
    if instance is not None and instance not in instances:
        raise SaltInvocationError(
            f"nginx_ha: instance {instance!r} is not configured on {node['id']} (its instances: {', '.join(sorted(instances))})"
        )
    pid = _keepalived_pid(lookup)
    dump = _keepalived_dump(lookup, pid) if pid else {}
    addresses = _local_addresses(lookup)
    build = __utils__["nginx_ha_status.instance_status"]
    return {
        name: build(inst, dump.get(name), addresses, pid is not None)
        for name, inst in sorted(instances.items())
        if instance is None or name == instance
    }


def is_master(instance=None):
    """
    Return True when keepalived is MASTER of ``instance`` (default: of every instance this minion
    belongs to) and the kernel holds all of its VIPs. For scripts and targeting.

    CLI Example:

    .. code-block:: bash

        salt '*' nginx_ha.is_master
        salt '*' nginx_ha.is_master VI_web
    """
    status = vip_status(instance)
    return bool(status) and all(s["state"] == "MASTER" and s["holds_vip"] for s in status.values())


def _run_check(cmd):
    res = __salt__["cmd.run_all"](cmd, python_shell=False, ignore_retcode=True, output_loglevel="quiet")
    output = "\n".join(x for x in (res.get("stdout", ""), res.get("stderr", "")) if x).strip()
    return {"valid": res["retcode"] == 0, "output": output}


def check_config():
    """
    Check the live configuration files with the daemons' own checkers: ``keepalived -t`` and
    ``nginx -t``. Returns ``{keepalived: {valid, output}, nginx: {valid, output}}``.

    CLI Example:

    .. code-block:: bash

        salt '*' nginx_ha.check_config
    """
    lookup = node_config()["lookup"]
    return {
        "keepalived": _run_check([lookup["keepalived"]["binary"], "-t", "-f", lookup["keepalived"]["config"]]),
        "nginx": _run_check([lookup["nginx"]["binary"], "-t", "-q", "-c", lookup["nginx"]["config"]]),
    }


def _nginx_answers(url, timeout):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # nosec: the local health endpoint
            return resp.status == 200, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, str(getattr(exc, "reason", exc))


def health():
    """
    Is this node fit to serve? Checks that nginx answers its health endpoint (the same request
    keepalived's check makes), nginx and keepalived are running, both configurations pass their
    checkers, and keepalived did not disable the check script (script security).
    Returns ``{healthy: bool, ...}`` with the detail of each check.

    CLI Example:

    .. code-block:: bash

        salt '*' nginx_ha.health
        salt -C 'I@nginx_ha:vrrp_instances' nginx_ha.health --out json
    """
    node = node_config()
    lookup = node["lookup"]
    answers, detail = _nginx_answers(node["nginx"]["health"]["url"], float(node["check"]["timeout"]))
    configs = check_config()
    ka_output = configs["keepalived"]["output"]
    script_ok = "Disabling track script" not in ka_output and "insecure" not in ka_output.lower()
    result = {
        "nginx": {
            "running": _pid_alive(lookup["nginx"]["pidfile"], "nginx") is not None,
            "answers": answers,
            "url": node["nginx"]["health"]["url"],
            "detail": detail,
        },
        "keepalived": {"running": _keepalived_pid(lookup) is not None},
        "config": configs,
        "check_script": {"enabled": script_ok, "detail": "" if script_ok else ka_output},
        "maintenance": _maintenance_offset(lookup) != 0,
    }
    result["healthy"] = (
        answers
        and result["nginx"]["running"]
        and result["keepalived"]["running"]
        and configs["keepalived"]["valid"]
        and configs["nginx"]["valid"]
        and script_ok
    )
    return result


def _maintenance_file(lookup):
    return os.path.join(lookup["keepalived"]["script_dir"], "maintenance")


def _maintenance_offset(lookup):
    try:
        with open(_maintenance_file(lookup), encoding="ascii") as fh:
            return int(fh.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def _write_maintenance(lookup, offset):
    path = _maintenance_file(lookup)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="ascii") as fh:
        fh.write(f"{offset}\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _peer_health(peers, timeout):
    """Ask the peers for nginx_ha.health through the master (publish; needs the master's peer: rule)."""
    if not peers:
        return {}
    try:
        ret = __salt__["publish.publish"](",".join(peers), "nginx_ha.health", tgt_type="list", timeout=timeout)
    except Exception as exc:  # publish raises a variety of errors when the master is unreachable
        raise CommandExecutionError(f"nginx_ha: cannot ask the peers for their health through the master: {exc}") from exc
    if not isinstance(ret, dict):
        raise CommandExecutionError(f"nginx_ha: the master refused the peer query ({ret!r}); see the peer: rule in conf/master.d/nginx_ha.conf")
    return {peer: (ret.get(peer) or {}).get("healthy") is True if isinstance(ret.get(peer), dict) else False for peer in peers}


def maintenance(mode, force=False, wait=10, timeout=10):
    """
    Planned switchover. ``on`` hands this node's VIPs to its peers gracefully: keepalived lowers
    this node's priority (a tracked file), the healthiest peer preempts with a gratuitous ARP and
    this node steps down, so clients see no failed request. ``off`` gives the VIPs back (with
    preemption). ``on`` refuses when no peer of every instance is healthy (asked through the
    master), unless ``force=True``. The setting survives restarts until ``off``.

    mode
        ``on`` or ``off``.
    force
        Skip the peer health check.
    wait
        Seconds to wait for the VIPs to leave (on) or return (off); 0 to return at once.

    CLI Example:

    .. code-block:: bash

        salt 'web-a' nginx_ha.maintenance on
        salt 'web-a' nginx_ha.maintenance off
    """
    mode = {True: "on", False: "off"}.get(mode, str(mode).lower())
    if mode not in ("on", "off"):
        raise SaltInvocationError(f"nginx_ha.maintenance: mode {mode!r} is not on or off")
    node = node_config()
    lookup = node["lookup"]
    if _keepalived_pid(lookup) is None:
        raise CommandExecutionError("nginx_ha: keepalived is not running here; nothing to hand over")
    before = _maintenance_offset(lookup)
    if mode == "on" and not force:
        peers = sorted({p for inst in node["instances"] for p in inst["peers"]})
        healthy = _peer_health(peers, timeout)
        for inst in node["instances"]:
            if not any(healthy.get(p) for p in inst["peers"]):
                raise CommandExecutionError(
                    f"nginx_ha: refusing maintenance: no healthy peer for {inst['name']}"
                    f" (peers: {', '.join(f'{p}={healthy.get(p)}' for p in inst['peers']) or 'none'}); use force=True to override"
                )
    preempting = [inst["name"] for inst in node["instances"] if inst["role"] == "MASTER" and not inst["nopreempt"]]
    offset = MAINTENANCE_OFFSET if mode == "on" else 0
    if offset != before:
        _write_maintenance(lookup, offset)
    deadline = time.monotonic() + float(wait)
    while True:
        status = vip_status()
        held = sorted(name for name, s in status.items() if s["holds_vip"])
        if mode == "on":
            done = not held
        else:
            # Back where the pillar puts them: this node holds the VIPs of the instances it is MASTER of
            # (with preemption; nopreempt instances stay where they are).
            done = all(status[name]["holds_vip"] for name in preempting if name in status)
        if done or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    return {
        "maintenance": mode == "on",
        "changed": offset != before,
        "holds_vip": held,
        "settled": done,
        "instances": status,
    }
