"""
nginx-ha: keepalived + nginx high availability, seen from one minion.

The cluster is described once in the ``nginx_ha`` pillar (see ``pillar/nginx_ha.sls`` in the
nginx-ha repository). This module answers, on each node, what that pillar means for it.

Sync it to minions first: ``salt '*' saltutil.sync_all``.
"""

import contextlib
import copy
import fcntl
import importlib.util
import json
import logging
import os
import signal
import sys
import time
import urllib.error
import urllib.request

import salt.utils.dictupdate
import salt.utils.platform
from salt.exceptions import CommandExecutionError, SaltInvocationError

# The extension's own Python (_utils/) as ordinary imports: on the loader's sys.path when synced
# (<extension_modules>/utils), else the _utils folder beside this module's folder (the pip package;
# how and why: saltext/nginx_ha/__init__.py, "Shared Python").
if importlib.util.find_spec("nginx_ha_model") is None:
    sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "_utils"))
try:
    import nginx_ha_model as model
    import nginx_ha_schema as schema
    import nginx_ha_status

    IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by __virtual__
    IMPORT_ERROR = exc

log = logging.getLogger(__name__)

__virtualname__ = "nginx_ha"

# Where the last state run records this node's configuration (JSON, root 0600). The queries below
# answer from it, so they need neither the master nor the pillar (`salt-call --local`).
# Minion config `nginx_ha.node_file` moves it.
NODE_FILE = "/etc/keepalived/nginx_ha/node.json"


def __virtual__():
    if not salt.utils.platform.is_linux():
        return (False, "nginx_ha: keepalived VRRP and this module need Linux")
    if IMPORT_ERROR is not None:
        return (False, f"nginx_ha: the extension's utils are missing ({IMPORT_ERROR}); run saltutil.sync_all, or pip install . (saltext.nginx_ha)")
    return __virtualname__


def merged_config(defaults=None, lookup=None, pillar=None):
    """
    Return the cluster configuration as the formula sees it: the schema's defaults
    (``_utils/nginx_ha_schema.py``) with this OS family's paths and names under ``lookup``
    (``OS_FAMILY_LOOKUP`` there), merged with the ``nginx_ha`` pillar. Not validated; see
    :py:func:`node_config`. Reads only the minion's pillar: nothing from the master's fileserver.

    CLI Example:

    .. code-block:: bash

        salt 'web-a' nginx_ha.merged_config
    """
    if defaults is None:
        defaults = schema.defaults()
    if pillar is None:
        # unmask: Salt 3008 redacts pillar values returned to callers unless asked not to.
        pillar = __salt__["pillar.get"]("nginx_ha", {}, unmask=True)
    if not isinstance(pillar, dict):
        raise SaltInvocationError(f"nginx_ha: pillar key nginx_ha is {pillar!r}, not a mapping")
    config = copy.deepcopy(defaults.get("nginx_ha", defaults))
    if lookup is None:
        os_family = __grains__.get("os_family")
        lookup = schema.lookup_for(os_family)
        if lookup is None and not pillar.get("lookup"):
            raise CommandExecutionError(
                f"nginx_ha: os_family {os_family!r} has no defaults (known: {', '.join(sorted(schema.OS_FAMILY_LOOKUP))}); "
                "set nginx_ha:lookup in the pillar"
            )
    # schema defaults < this OS family's entry < the pillar's lookup (merged below)
    config["lookup"] = salt.utils.dictupdate.update(config.get("lookup") or {}, copy.deepcopy(lookup or {}), merge_lists=False)
    return salt.utils.dictupdate.update(config, copy.deepcopy(pillar), merge_lists=False)


def node_config(minion_id=None, defaults=None, lookup=None, pillar=None):
    """
    Return this node's validated view of the cluster, computed from the pillar: its VRRP
    instances (with its own state, priority, interface and unicast peers), the health check and
    the nginx site, as the ``nginx_ha`` states render them. (The queries answer from what the last
    state run deployed instead: :py:func:`deployed`.)

    Raises ``SaltInvocationError`` listing every invalid pillar key with its value, or when this
    minion has no role in any instance.

    minion_id
        Whose view to compute (default: this minion's id).

    CLI Example:

    .. code-block:: bash

        salt 'web-*' nginx_ha.node_config
        salt 'web-a' nginx_ha.node_config minion_id=web-b
    """
    config = merged_config(defaults=defaults, lookup=lookup, pillar=pillar)
    minion_id = minion_id or __grains__["id"]
    try:
        active = active_health({"lookup": config["lookup"]})
    except (KeyError, TypeError):
        active = None  # a lookup without keepalived:script_dir: node_view reports the pillar
    # Every SLS of a run asks for the view (map.jinja): validated once per distinct input. The key
    # is everything the view is computed from, so a cached view is never one of other inputs.
    key = json.dumps([minion_id, config, active, node_file()], sort_keys=True, default=repr)
    cache = __context__.get("nginx_ha.node_config")
    if cache is not None and cache[0] == key:
        return copy.deepcopy(cache[1])
    try:
        view = model.node_view(config, minion_id)
    except ValueError as exc:
        raise SaltInvocationError(str(exc)) from exc
    view["lookup"] = config["lookup"]
    view["health_endpoints"] = {
        # what nginx serves while the health path switches: the new endpoint and the probed one
        "transitional": model.health_endpoints(view, active),
        "final": model.health_endpoints(view),
    }
    view["node_file"] = node_file()
    __context__["nginx_ha.node_config"] = (key, copy.deepcopy(view))
    return view


def node_file():
    """
    Return the path of the file where the state run records this node's configuration
    (``/etc/keepalived/nginx_ha/node.json``, or the minion option ``nginx_ha.node_file``).

    CLI Example:

    .. code-block:: bash

        salt-call --local nginx_ha.node_file
    """
    path = __opts__.get("nginx_ha.node_file") or (__opts__.get("nginx_ha") or {}).get("node_file") or NODE_FILE
    if not isinstance(path, str) or not os.path.isabs(path):
        raise SaltInvocationError(f"nginx_ha: minion option nginx_ha.node_file must be an absolute path, not {path!r}")
    return path


def deployed():
    """
    Return this node's configuration as the last ``nginx_ha`` state run deployed it (what the
    running keepalived and nginx were configured with), read from :py:func:`node_file`. Needs
    neither the master nor the pillar: during an incident, on the node,
    ``salt-call --local nginx_ha.<query>`` answers from it. Before the first state run there is no
    such file and the queries compute the view from the pillar (:py:func:`node_config`).

    CLI Example:

    .. code-block:: bash

        salt-call --local nginx_ha.deployed
    """
    path = node_file()
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CommandExecutionError(f"nginx_ha: cannot read this node's deployed configuration {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("instances"), list) or not isinstance(data.get("lookup"), dict):
        raise CommandExecutionError(f"nginx_ha: {path} is not a node configuration written by the nginx_ha states")
    return data


def _node():
    """The configuration the queries answer from: the deployed one, else (never applied) the pillar's."""
    node = deployed()
    if node is None:
        if __opts__.get("file_client") == "local" and not __salt__["pillar.get"]("nginx_ha", {}, unmask=True):
            raise CommandExecutionError(
                f"nginx_ha: no deployed configuration at {node_file()} and no nginx_ha pillar here; apply the nginx_ha states first"
            )
        node = node_config()
    return node


def _health_settings_file(lookup):
    return os.path.join(lookup["keepalived"]["script_dir"], "health.json")


def active_health(node=None):
    """
    Return the health settings this node's check and watcher use right now (the
    ``health.json`` the last state run switched to), or None before the first run. A damaged
    file is reported in the log and returned as None.

    CLI Example:

    .. code-block:: bash

        salt 'web-a' nginx_ha.active_health
    """
    node = node or _node()
    path = _health_settings_file(node["lookup"])
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("nginx_ha: cannot read the health settings %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def validate_pillar(pillar=None):
    """
    Check the ``nginx_ha`` pillar for the whole cluster and return the list of problems, each
    naming its pillar key and the bad value (an empty list when it is valid).

    CLI Example:

    .. code-block:: bash

        salt 'web-a' nginx_ha.validate_pillar
    """
    return model.validate(merged_config(pillar=pillar))


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
                    return nginx_ha_status.parse_keepalived_json(fh.read())
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
    return nginx_ha_status.parse_ip_addr(res["stdout"])


def vip_status(instance=None):
    """
    Return, for each VRRP instance this minion belongs to: its VIPs, which of them are on this
    host's interfaces right now (the kernel's truth), keepalived's own VRRP state (MASTER, BACKUP,
    FAULT, INIT, or STOP when keepalived is not running), base and effective priority, the
    time of the last transition (read from keepalived's JSON data dump), its peers and the
    ``cluster`` the node belongs to (``nginx_ha:cluster``, from the deployed node view).

    instance
        Only this instance (default: all of this minion's instances).

    CLI Example:

    .. code-block:: bash

        salt '*' nginx_ha.vip_status
        salt 'web-a' nginx_ha.vip_status VI_web --out json
    """
    return _vip_status(_node(), instance)


def _vip_status(node, instance=None):
    lookup = node["lookup"]
    instances = {inst["name"]: inst for inst in node["instances"]}
    if instance is not None and instance not in instances:
        raise SaltInvocationError(
            f"nginx_ha: instance {instance!r} is not configured on {node['id']} (its instances: {', '.join(sorted(instances))})"
        )
    pid = _keepalived_pid(lookup)
    dump = _keepalived_dump(lookup, pid) if pid else {}
    addresses = _local_addresses(lookup)
    build = nginx_ha_status.instance_status
    cluster = _cluster_of(node)
    return {
        name: dict(build(inst, dump.get(name), addresses, pid is not None), cluster=cluster)
        for name, inst in sorted(instances.items())
        if instance is None or name == instance
    }


def _cluster_of(node):
    """The cluster name the node view records (``nginx_ha:cluster``); a node.json written before
    clusters had names belongs to the default one."""
    return node.get("cluster") or schema.DEFAULT_CLUSTER


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
    return _check_config(_node()["lookup"])


def _check_config(lookup):
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
    Returns ``{healthy: bool, ...}`` with the detail of each check, plus ``maintenance`` (true also
    while a ``maintenance on`` call is pending here), ``maintenance_pending`` and ``vrrp``
    (``{instance: MASTER|BACKUP|FAULT|INIT|STOP}``) with ``vrrp_priority`` (``{instance: effective
    priority}``), which peers read before their maintenance, and this node's ``cluster``.

    CLI Example:

    .. code-block:: bash

        salt '*' nginx_ha.health
        salt -C 'I@nginx_ha:vrrp_instances' nginx_ha.health --out json
    """
    node = _node()
    lookup = node["lookup"]
    answers, detail = _nginx_answers(node["nginx"]["health"]["url"], float(node["check"]["timeout"]))
    configs = _check_config(lookup)
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
    # A node whose maintenance('on') is asking its peers right now counts as going away.
    result["maintenance_pending"] = _maintenance_pending(lookup)
    result["maintenance"] = result["maintenance"] or result["maintenance_pending"]
    try:  # keepalived's state per instance (STOP when it is not running), for a peer deciding on maintenance
        statuses = _vip_status(node)
        result["vrrp"] = {name: inst_status["state"] for name, inst_status in statuses.items()}
        result["vrrp_priority"] = {name: inst_status["effective_priority"] for name, inst_status in statuses.items()}
    except (CommandExecutionError, OSError) as exc:
        result["vrrp"] = {inst["name"]: "UNKNOWN" for inst in node["instances"]}
        result["vrrp_priority"] = {inst["name"]: None for inst in node["instances"]}
        result["vrrp_detail"] = str(exc)
    result["cluster"] = _cluster_of(node)
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
    """
    Ask the peers for nginx_ha.health through the master (publish; needs the master's peer: rule).
    Returns ``{peer: its health dict, an error string, or None when it did not answer}``.
    """
    if not peers:
        return {}
    if __opts__.get("file_client") == "local":
        raise CommandExecutionError(
            "nginx_ha: maintenance on asks the peers through the master, which a masterless call (salt-call --local) "
            f"cannot reach; check {', '.join(peers)} yourself (salt-call --local nginx_ha.health there) and use force=True"
        )
    try:
        ret = __salt__["publish.publish"](",".join(peers), "nginx_ha.health", tgt_type="list", timeout=timeout)
    except Exception as exc:  # publish raises a variety of errors when the master is unreachable
        raise CommandExecutionError(f"nginx_ha: cannot ask the peers for their health through the master: {exc}") from exc
    if not isinstance(ret, dict):
        raise CommandExecutionError(f"nginx_ha: the master refused the peer query ({ret!r}); see the peer: rule in conf/master.d/nginx_ha.conf")
    return {peer: ret.get(peer) for peer in peers}


def maintenance(mode, force=False, wait=10, timeout=10):
    """
    Planned switchover. ``on`` hands this node's VIPs to its peers gracefully: keepalived lowers
    this node's priority (a tracked file), the best peer preempts with a gratuitous ARP and
    this node steps down, so clients see no failed request. ``off`` gives the VIPs back (with
    preemption). The setting survives restarts until ``off``.

    ``on`` refuses (``CommandExecutionError``) unless, for every instance of this node, a peer
    (asked through the master) is healthy, not FAULT for that instance, not in maintenance and not
    going into maintenance itself, unless ``force=True``. With more than one peer (a cluster of N
    nodes) VRRP elects the fit peer with the highest effective priority: the return names it per
    instance (``best_peer``) and, once the VIPs have left, the peer that is MASTER now
    (``owners``, asked again; a warning is logged when another peer took over). Calls on several nodes at once (``salt
    'web-*' nginx_ha.maintenance on``) are safe: each node first writes a "maintenance pending"
    mark (``<script_dir>/maintenance.pending``), which its ``health`` reports, then asks its
    peers; two nodes asking each other see each other pending and both refuse, so the VIPs stay
    served. The mark is removed when the call ends; one left by a crashed call is ignored after
    ``MAINTENANCE_PENDING_TTL`` (60) seconds.

    mode
        ``on`` or ``off``.
    force
        Skip the peer check (the reactor uses it to keep a broken node out).
    wait
        Seconds to wait for the VIPs to leave (on) or return (off); 0 to return at once.
    timeout
        Seconds to wait for the peers' answers (keep it well below ``MAINTENANCE_PENDING_TTL``).

    CLI Example:

    .. code-block:: bash

        salt 'web-a' nginx_ha.maintenance on
        salt 'web-a' nginx_ha.maintenance off
    """
    mode = {True: "on", False: "off"}.get(mode, str(mode).lower())
    if mode not in ("on", "off"):
        raise SaltInvocationError(f"nginx_ha.maintenance: mode {mode!r} is not on or off")
    node = _node()
    lookup = node["lookup"]
    if _keepalived_pid(lookup) is None:
        raise CommandExecutionError("nginx_ha: keepalived is not running here; nothing to hand over")
    before = _maintenance_offset(lookup)
    pending = mode == "on" and not force
    best_peer, peers = {}, []
    if pending:
        _write_maintenance_pending(lookup)  # before asking: a peer asking us now sees us going
        try:
            peers = sorted({p for inst in node["instances"] for p in inst["peers"]})
            answers = _peer_health(peers, timeout)
            problems = []
            for inst in node["instances"]:
                verdicts = {p: _peer_can_take_over(answers.get(p), inst["name"]) for p in inst["peers"]}
                best_peer[inst["name"]] = _best_peer(verdicts, answers, inst["name"])
                if not any(ok for ok, _ in verdicts.values()):
                    problems.append(
                        f"no healthy peer for {inst['name']} can take over"
                        f" (peers: {', '.join(f'{p}: {why}' for p, (_, why) in verdicts.items()) or 'none'})"
                    )
            if not problems and not _maintenance_pending(lookup):
                problems.append(f"the peer check took longer than the pending mark's {MAINTENANCE_PENDING_TTL}s")
            if problems:
                raise CommandExecutionError(f"nginx_ha: refusing maintenance: {'; '.join(problems)}; use force=True to override")
        except BaseException:
            _remove_maintenance_pending(lookup)
            raise
    preempting = [inst["name"] for inst in node["instances"] if inst["role"] == "MASTER" and not inst["nopreempt"]]
    offset = MAINTENANCE_OFFSET if mode == "on" else 0
    try:
        if offset != before:
            _write_maintenance(lookup, offset)
    finally:
        if pending:  # the real offset is in place (or failed): the mark has done its job
            _remove_maintenance_pending(lookup)
    deadline = time.monotonic() + float(wait)
    while True:
        status = _vip_status(node)
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
    ret = {
        "maintenance": mode == "on",
        "changed": offset != before,
        "holds_vip": held,
        "settled": done,
        "instances": status,
    }
    if pending:
        ret["best_peer"] = best_peer
        if done and float(wait) > 0:
            ret["owners"] = _new_owners(node, peers, best_peer, deadline, timeout)
    return ret


def _best_peer(verdicts, answers, instance):
    """The fit peer VRRP elects: the highest effective priority (from its health), else None."""
    fit = [p for p, (ok, _) in verdicts.items() if ok]
    ranked = sorted(fit, key=lambda p: -(((answers.get(p) or {}).get("vrrp_priority") or {}).get(instance) or 0))
    return ranked[0] if ranked else None


def _new_owners(node, peers, best_peer, deadline, timeout):
    """
    After ``on`` settled: which peer is MASTER of each instance now (asked through the master,
    until each instance has exactly one, or ``deadline``; at least once). A peer other than the
    best one is logged as a warning (its priority or health changed meanwhile).
    """
    owners = {}
    while True:
        try:
            answers = _peer_health(peers, timeout)
        except CommandExecutionError as exc:
            log.warning("nginx_ha: maintenance on: cannot ask the peers who took over: %s", exc)
            return {inst["name"]: None for inst in node["instances"]}
        for inst in node["instances"]:
            masters = [
                p for p in inst["peers"] if isinstance(answers.get(p), dict) and (answers[p].get("vrrp") or {}).get(inst["name"]) == "MASTER"
            ]
            owners[inst["name"]] = masters[0] if len(masters) == 1 else (masters or None)
        if all(isinstance(o, str) for o in owners.values()) or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    for name, owner in sorted(owners.items()):
        if best_peer.get(name) and owner != best_peer[name]:
            log.warning("nginx_ha: maintenance on: %s went to %s, not to the best peer %s", name, owner, best_peer[name])
    return owners


# --------------------------------------------------------------------------------------------
# Healing a hung nginx (restart_nginx) and the maintenance handshake between peers.
# Standard-library imports are local to these functions on purpose (this part of the module is
# maintained separately from the configuration functions above).
# --------------------------------------------------------------------------------------------

PROC_ROOT = "/proc"

# A "maintenance pending" mark counts for this many seconds. maintenance('on') writes it before it
# asks the peers and removes it when it is done; a mark left by a call that crashed (minion killed,
# power loss) is ignored after this bound, so it can never block the peers' maintenance for good.
MAINTENANCE_PENDING_TTL = 60


def _maintenance_pending_file(lookup):
    return _maintenance_file(lookup) + ".pending"


def _boot_clock():
    """(boot id, seconds since boot): immune to wall-clock steps; a mark from an earlier boot is stale."""
    try:
        with open(os.path.join(PROC_ROOT, "sys", "kernel", "random", "boot_id"), encoding="ascii") as fh:
            boot_id = fh.read().strip()
    except OSError:
        boot_id = ""
    return boot_id, time.clock_gettime(time.CLOCK_BOOTTIME)


def _write_maintenance_pending(lookup):
    """Atomically write this node's "maintenance pending" mark (0644, owned by the minion's user: root)."""
    boot_id, now = _boot_clock()
    path = _maintenance_pending_file(lookup)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, (json.dumps({"boot_id": boot_id, "boottime": now, "time": time.time(), "pid": os.getpid()}) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _remove_maintenance_pending(lookup):
    try:
        os.unlink(_maintenance_pending_file(lookup))
    except FileNotFoundError:
        pass


def _maintenance_pending(lookup, ttl=None):
    """True while this node has a "maintenance pending" mark younger than ``ttl`` seconds."""
    ttl = MAINTENANCE_PENDING_TTL if ttl is None else float(ttl)
    path = _maintenance_pending_file(lookup)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
            mtime = os.fstat(fh.fileno()).st_mtime
    except OSError:
        return False
    try:
        mark = json.loads(text)
        boot_id, now = _boot_clock()
        if mark["boot_id"] != boot_id:
            return False  # written before the last boot
        age = now - float(mark["boottime"])
    except (ValueError, KeyError, TypeError):
        age = time.time() - mtime  # not our format: its modification time decides
    return 0 <= age < ttl


def _peer_can_take_over(answer, instance):
    """(ok, reason): can the peer whose nginx_ha.health returned ``answer`` take ``instance`` over?"""
    if answer is None:
        return False, "no answer"
    if not isinstance(answer, dict):
        return False, f"error: {str(answer)[:200]}"
    if answer.get("healthy") is not True:
        return False, "unhealthy"
    if answer.get("maintenance_pending"):
        return False, "going into maintenance itself"
    if answer.get("maintenance"):
        return False, "in maintenance"
    vrrp = answer.get("vrrp")
    if not isinstance(vrrp, dict):
        return False, "its health has no VRRP state (an older nginx_ha module there? run saltutil.sync_all)"
    state = vrrp.get(instance)
    if state not in ("MASTER", "BACKUP"):
        return False, f"VRRP state {state or 'unknown'}"
    return True, f"healthy, {state}"


def _proc_stat(proc_root, pid):
    """(state, ppid, starttime) of ``pid`` from ``<proc_root>/<pid>/stat``; None when it is gone."""
    try:
        with open(os.path.join(proc_root, str(pid), "stat"), encoding="utf-8", errors="replace") as fh:
            data = fh.read()
        fields = data[data.rindex(")") + 2 :].split()  # comm may hold spaces and ')'
        return fields[0], int(fields[1]), int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _proc_exe(proc_root, pid):
    try:
        exe = os.readlink(os.path.join(proc_root, str(pid), "exe"))
    except OSError:
        return None  # kernel thread, or gone
    return exe[: -len(" (deleted)")] if exe.endswith(" (deleted)") else exe


def _proc_comm(proc_root, pid):
    try:
        with open(os.path.join(proc_root, str(pid), "comm"), encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _proc_mnt_ns(proc_root, pid):
    try:
        return os.readlink(os.path.join(proc_root, str(pid), "ns", "mnt"))
    except OSError:
        return None


def _nginx_processes(proc_root, binary, master_pid=None, exclude=(1,)):
    """
    The nginx process tree as ``proc_root`` shows it: ``master_pid`` (the pid in nginx's pidfile)
    when that process is nginx (its executable is ``binary`` or its name is nginx; a stale pidfile
    naming a reused pid selects nothing), every descendant of it, and every other live process whose
    executable is ``binary`` in this mount namespace (orphaned workers: they hold the listening
    sockets; an nginx in a container on this host is not ours). Zombies (they hold nothing) and
    ``exclude`` are left out. Returns sorted pids, the master first.
    """
    binaries = {binary, os.path.realpath(binary)}
    own_ns = _proc_mnt_ns(proc_root, "self")
    live = {}
    for entry in os.listdir(proc_root):
        if not entry.isdigit():
            continue
        pid = int(entry)
        stat = _proc_stat(proc_root, pid)
        if stat is None or stat[0] in ("Z", "X", "x") or pid in exclude or pid == os.getpid():
            continue
        live[pid] = stat[1]
    found = {pid for pid in live if _proc_exe(proc_root, pid) in binaries and _proc_mnt_ns(proc_root, pid) == own_ns}
    roots = set()
    if master_pid in live and (master_pid in found or _proc_comm(proc_root, master_pid) == "nginx"):
        roots.add(master_pid)
    tree, grew = set(roots), True
    while grew:  # descendants of the master, whatever they run
        grew = False
        for pid, ppid in live.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sorted(found | tree, key=lambda pid: (pid not in roots, pid))


def _read_pid(pidfile):
    try:
        with open(pidfile, encoding="ascii") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _kill_nginx_tree(lookup, timeout):
    """SIGCONT then SIGKILL to the whole nginx process tree until none is left; removes a stale pidfile.
    Returns the pids killed; raises CommandExecutionError when processes survive ``timeout`` seconds."""
    binary, pidfile = lookup["nginx"]["binary"], lookup["nginx"]["pidfile"]
    killed = []
    deadline = time.monotonic() + float(timeout)
    while True:
        pids = _nginx_processes(PROC_ROOT, binary, _read_pid(pidfile))
        if not pids:
            break
        if time.monotonic() >= deadline:
            raise CommandExecutionError(f"nginx_ha: nginx processes {pids} are still there {timeout:g}s after SIGKILL")
        for sig in (signal.SIGCONT, signal.SIGKILL):  # the master first: it cannot respawn workers
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        killed.extend(pid for pid in pids if pid not in killed)
        time.sleep(0.05)
    try:  # no nginx process is left: whatever pid the pidfile names is stale
        os.unlink(pidfile)
    except FileNotFoundError:
        pass
    return killed


def _service_argv(name, action, timeout):
    """
    The command Salt's service module runs for ``action`` (systemctl where systemd runs, else
    ``service``, else the init script), under coreutils ``timeout``: on expiry the whole process
    group (init script, start-stop-daemon...) gets SIGTERM, 2 s later SIGKILL. None when there is
    no such command.
    """
    import salt.utils.path  # pylint: disable=import-outside-toplevel
    import salt.utils.systemd  # pylint: disable=import-outside-toplevel

    timeout_bin = salt.utils.path.which("timeout")
    if not timeout_bin:
        return None
    argv = None
    systemctl = salt.utils.path.which("systemctl")
    if systemctl and salt.utils.systemd.booted(__context__):
        argv = [systemctl, action, name]
    elif salt.utils.path.which("service"):
        argv = [salt.utils.path.which("service"), name, action]
    elif os.access(f"/etc/init.d/{name}", os.X_OK):
        argv = [f"/etc/init.d/{name}", action]
    return [timeout_bin, "-k", "2", f"{float(timeout):g}", *argv] if argv else None


def _bounded_service(name, action, timeout):
    """Run ``service.<action> name`` so that it cannot hang: (ok, timed_out, detail)."""
    argv = _service_argv(name, action, timeout)
    if argv:
        res = __salt__["cmd.run_all"](
            argv, python_shell=False, ignore_retcode=True, output_loglevel="quiet", timeout=float(timeout) + 10
        )
        retcode = res.get("retcode")
        command = " ".join(argv[4:])
        output = " ".join(x.strip() for x in (res.get("stdout") or "", res.get("stderr") or "") if x.strip())[:300]
        if retcode in (124, 137, None):
            return False, True, f"`{command}` did not finish within {timeout:g}s"
        return retcode == 0, False, f"`{command}` exited {retcode}" + (f": {output}" if output else "")
    # No command line to bound: Salt's service module in a thread we stop waiting for.
    import threading  # pylint: disable=import-outside-toplevel

    result = {}

    def call():
        try:
            result["ret"] = __salt__[f"service.{action}"](name)
        except Exception as exc:  # pylint: disable=broad-except
            result["error"] = exc

    thread = threading.Thread(target=call, name=f"nginx_ha-service-{action}", daemon=True)
    thread.start()
    thread.join(float(timeout))
    if thread.is_alive():
        return False, True, f"service.{action} {name} did not return within {timeout:g}s"
    if "error" in result:
        return False, False, f"service.{action} {name} failed: {result['error']}"
    return result["ret"] is True, False, f"service.{action} {name} returned {result['ret']!r}"


def _wait_answers(url, grace):
    """Poll nginx's health URL until it answers or ``grace`` seconds passed (at least one probe)."""
    deadline = time.monotonic() + float(grace)
    while True:
        remaining = deadline - time.monotonic()
        answers, detail = _nginx_answers(url, min(1.0, max(0.2, remaining)))
        if answers or time.monotonic() >= deadline:
            return answers, detail
        time.sleep(0.05)


def restart_nginx(grace=5, timeout=10, unless_healthy=False, verify=False):
    """
    Restart nginx and make sure it serves again, also when it hangs (every nginx process stopped
    or deadlocked: an init script's stop does not finish stopped workers, they keep the listening
    sockets and the new nginx cannot bind).

    0. With ``unless_healthy=True``: when nginx answers its health URL and :py:func:`health` says
       the node is healthy, nothing is restarted (``restarted: False``); the reactor's "is it
       healthy already?" in the same call as the restart.
    1. When no nginx process is left at all (it crashed or was killed), a start through the
       service manager; otherwise a graceful restart (what ``service.restart`` runs). Either is
       bounded by ``timeout`` seconds; then nginx must answer its health URL within ``grace``
       seconds (polled every 0.05 s). The start skips what an init script's restart does first
       for a running nginx (Debian's: ``nginx -t``, stop, ``sleep 1``).
    2. Otherwise (it did not finish in time, or nginx does not answer) escalate: SIGCONT and
       SIGKILL to the whole nginx process tree (the master from the pidfile, its children, every
       process running the nginx binary), wait until they are gone, remove a stale pidfile, start
       nginx and check again. Logged at warning level.

    Returns ``{healthy: True, restarted: bool, escalated: bool, killed: [pids], detail: str}``,
    with ``verify=True`` also ``health``: :py:func:`health` after the restart (the full check:
    nginx answers and runs, keepalived runs, both configurations pass their checkers), so the
    caller needs no second call to verify it. Raises ``CommandExecutionError`` (non-zero retcode)
    when nginx still does not answer afterwards.

    grace
        Seconds nginx has to answer its health URL after the restart (and after the start).
    timeout
        Seconds the restart (and the start) may take, and the processes to die after SIGKILL.
    unless_healthy
        Restart only when the node is not healthy (default False: always restart).
    verify
        Add ``health`` (:py:func:`health`) after the restart (default False).

    CLI Example:

    .. code-block:: bash

        salt 'web-a' nginx_ha.restart_nginx
        salt 'web-a' nginx_ha.restart_nginx grace=10 timeout=20
        salt 'web-a' nginx_ha.restart_nginx unless_healthy=True verify=True
    """
    grace, timeout = float(grace), float(timeout)
    node = _node()
    lookup = node["lookup"]
    name = lookup["nginx"]["service"]
    url = node["nginx"]["health"]["url"]
    lock_path = os.path.join(os.path.dirname(lookup["nginx"]["pidfile"]), "nginx_ha.restart.lock")
    with open(lock_path, "a", encoding="ascii") as lock:
        # One restart at a time (the reactor and a person may both try); a waiter then finds it healed.
        waited, deadline = False, time.monotonic() + 2 * (timeout + grace) + 10
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise CommandExecutionError("nginx_ha: another restart_nginx is still running here") from None
                waited = True
                time.sleep(0.1)
        if waited:
            answers, detail = _nginx_answers(url, 1.0)
            if answers:
                ret = {"healthy": True, "restarted": False, "escalated": False, "killed": [], "detail": "healed by a concurrent restart_nginx"}
                return _with_health(ret) if verify else ret
        if unless_healthy:
            found = _already_healthy(node, url)
            if found is not None:
                return {"healthy": True, "restarted": False, "escalated": False, "killed": [],
                        "detail": "already healthy: nothing restarted", "health": found}
        ret = _restart_nginx_locked(lookup, name, url, grace, timeout)
        return _with_health(ret) if verify else ret


def _already_healthy(node, url):
    """:py:func:`health` when nginx answers and the node is healthy, else None (one probe when nginx is down)."""
    answers, _ = _nginx_answers(url, float(node["check"]["timeout"]))
    if not answers:
        return None  # health() would say unhealthy: no need for its configuration checks
    found = _health_or_error()
    return found if found.get("healthy") is True else None


def _health_or_error():
    try:
        return health()
    except Exception as exc:  # pylint: disable=broad-except
        log.warning("nginx_ha: health check after the restart failed: %s", exc, exc_info=True)
        return {"healthy": False, "error": f"{type(exc).__name__}: {exc}"[:500]}


def _with_health(ret):
    ret["health"] = _health_or_error()
    return ret


def _restart_nginx_locked(lookup, name, url, grace, timeout):
    # Nothing of nginx left (crashed, killed): start it. A restart would first test the
    # configuration and stop what is not there (Debian's init script then sleeps 1 s).
    action = "restart" if _nginx_processes(PROC_ROOT, lookup["nginx"]["binary"], _read_pid(lookup["nginx"]["pidfile"])) else "start"
    _, timed_out, detail = _bounded_service(name, action, timeout)  # its exit code: the health URL decides
    steps = [f"{action}: {detail}"]
    if not timed_out:
        answers, how = _wait_answers(url, grace)
        if answers:
            return {"healthy": True, "restarted": True, "escalated": False, "killed": [], "detail": f"{steps[0]}; {url} answers ({how})"}
        steps.append(f"{url} did not answer within {grace:g}s ({how})")
    # Killing helps only if a new nginx can start: with a configuration nginx refuses, leave it be.
    check = __salt__["cmd.run_all"](
        [lookup["nginx"]["binary"], "-t", "-q", "-c", lookup["nginx"]["config"]],
        python_shell=False, ignore_retcode=True, output_loglevel="quiet", timeout=timeout,
    )
    if check.get("retcode") != 0:
        output = " ".join(x.strip() for x in (check.get("stdout") or "", check.get("stderr") or "") if x.strip())
        raise CommandExecutionError(
            f"nginx_ha: nginx does not answer and `nginx -t` refuses its configuration, so it was not killed: {output} ({'; '.join(steps)})"
        )
    log.warning("nginx_ha: graceful restart of nginx failed (%s); killing the whole nginx process tree", "; ".join(steps))
    killed = _kill_nginx_tree(lookup, timeout)
    steps.append(f"killed nginx processes {killed}" if killed else "no nginx process left to kill")
    _, timed_out, detail = _bounded_service(name, "start", timeout)
    steps.append(f"start: {detail}")
    answers, how = _wait_answers(url, grace)
    if not answers:
        log.warning("nginx_ha: nginx still does not answer after killing and starting it: %s", "; ".join(steps))
        raise CommandExecutionError(
            f"nginx_ha: nginx still not answering {url} after killing its processes and starting it ({how}): " + "; ".join(steps)
        )
    steps.append(f"{url} answers ({how})")
    log.warning("nginx_ha: nginx healed by escalation: %s", "; ".join(steps))
    return {"healthy": True, "restarted": True, "escalated": True, "killed": killed, "detail": "; ".join(steps)}


# ---------------------------------------------------------------------------------------------
# Claims: "this event is handled by master X until T", kept on the node that sent it, so that
# several masters (Salt's hot multi-master) act on each event once. See :py:func:`claim`.
# ---------------------------------------------------------------------------------------------

CLAIM_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:@/|-")
CLAIM_KEEP = 86400.0  # seconds a finished (or expired) claim is remembered, then removed
CLAIM_LEASE_MAX = 86400.0


def _claim_dir():
    """Where the claims live: minion config ``nginx_ha.claim_dir``, else <cachedir>/nginx_ha/claims."""
    return __opts__.get("nginx_ha.claim_dir") or os.path.join(__opts__.get("cachedir", "/var/cache/salt/minion"), "nginx_ha", "claims")


def _claim_text(value, what, limit=200):
    value = str(value)
    if not value or len(value) > limit or not set(value) <= CLAIM_KEY_CHARS:
        raise SaltInvocationError(f"nginx_ha.claim: {what} {value[:80]!r} must be 1-{limit} of [A-Za-z0-9_.:@/|-]")
    return value


def _claim_path(directory, key):
    import hashlib  # pylint: disable=import-outside-toplevel

    return os.path.join(directory, hashlib.sha256(key.encode()).hexdigest()[:40] + ".json")


def _claim_read(path):
    try:
        with open(path, encoding="utf-8") as fh:
            record = json.load(fh)
        return record if isinstance(record, dict) else None
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        log.error("nginx_ha: claim record %s is unreadable; treating it as expired", path)
        return {"state": "held", "holder": None, "boot_id": None}


def _claim_write(path, record):
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, json.dumps(record, sort_keys=True).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _claim_left(record, boot_id, now):
    """Seconds left on a held claim's lease (<= 0: expired; a claim of an earlier boot is expired)."""
    if record.get("boot_id") != boot_id:
        return 0.0
    try:
        return float(record["until"]) - now
    except (KeyError, TypeError, ValueError):
        return 0.0


@contextlib.contextmanager
def _claims_locked():
    directory = _claim_dir()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    fd = os.open(os.path.join(directory, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield directory
    finally:
        os.close(fd)  # releases the lock


def _claim_answer(key, record, boot_id, now, won, **extra):
    left = _claim_left(record, boot_id, now) if record and record.get("state") == "held" else None
    ret = {
        "won": won,
        "key": key,
        "holder": (record or {}).get("holder"),
        "state": (record or {}).get("state"),
        "expires_in": None if left is None else round(max(left, 0.0), 3),
        "info": (record or {}).get("info") or {},
    }
    if (record or {}).get("state") == "done":
        ret["result"] = record.get("result")
    ret.update(extra)
    return ret


def _claims_gc(directory, boot_id, now, keep=CLAIM_KEEP):
    for name in os.listdir(directory):
        if not name.endswith(".json"):
            continue
        path = os.path.join(directory, name)
        record = _claim_read(path) or {}
        ended = record.get("ended")
        if record.get("state") == "held" and _claim_left(record, boot_id, now) <= 0:
            ended = record.get("until") if record.get("boot_id") == boot_id else None
        if record.get("boot_id") != boot_id or (ended is not None and now - float(ended) > keep):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass  # another caller collected it
            except OSError as exc:
                # kept, not lost: the record still answers claims; only the directory grows
                log.warning("nginx_ha: cannot remove the expired claim record %s: %s", path, exc)


def claim(key, holder, lease=300, info=None):
    """
    Claim ``key`` (an event of this node, e.g. ``vrrp|VI_web|<boot>|<seq>``) for ``holder`` (a
    master's id) for ``lease`` seconds, atomically (an exclusive lock on the claim directory:
    minion config ``nginx_ha.claim_dir``, else ``<cachedir>/nginx_ha/claims``; directory 0700,
    records 0600). Several Salt masters call this on the node before they act on its event: one
    wins, the others leave the event to it.

    The caller wins when nobody holds ``key``, when it holds it already (its lease is renewed),
    or when the holder's lease ran out before it called :py:func:`claim_done` (it died or hangs:
    the answer then names it in ``taken_over``). A finished claim (``claim_done``) is never won
    again. The lease is measured on this node's boot clock (``CLOCK_BOOTTIME``; wall-clock steps
    do not matter); a claim of an earlier boot has expired. Finished and expired claims are
    removed a day later.

    Returns ``{won, key, holder, state (held|done), expires_in, info, [taken_over], [result]}``:
    the winner's view, or who holds it and for how long. ``info`` is a small mapping the holder
    stores with the claim (what the event was), for whoever takes it over.

    CLI Example:

    .. code-block:: bash

        salt 'web-a' nginx_ha.claim 'vrrp|VI_web|8c1f...|1700000000123' master-1 lease=300
    """
    key = _claim_text(key, "key")
    holder = _claim_text(holder, "holder", 128)
    try:
        lease = float(lease)
    except (TypeError, ValueError):
        raise SaltInvocationError(f"nginx_ha.claim: lease {lease!r} is not a number of seconds") from None
    if not 0 < lease <= CLAIM_LEASE_MAX:
        raise SaltInvocationError(f"nginx_ha.claim: lease must be within (0, {CLAIM_LEASE_MAX:g}] seconds")
    if info is not None and not isinstance(info, dict):
        raise SaltInvocationError("nginx_ha.claim: info must be a mapping")
    info = json.loads(json.dumps(info or {}, default=str))
    if len(json.dumps(info)) > 2000:
        raise SaltInvocationError("nginx_ha.claim: info is larger than 2000 bytes as JSON")
    boot_id, now = _boot_clock()
    with _claims_locked() as directory:
        _claims_gc(directory, boot_id, now)
        path = _claim_path(directory, key)
        record = _claim_read(path)
        if record is not None and record.get("key") not in (None, key):
            raise CommandExecutionError(f"nginx_ha.claim: hash collision between {key!r} and {record.get('key')!r}")
        if record is not None and record.get("state") == "done":
            return _claim_answer(key, record, boot_id, now, won=False)  # handled: never again
        taken_over = None
        if record is not None and record.get("holder") != holder:
            if _claim_left(record, boot_id, now) > 0:
                return _claim_answer(key, record, boot_id, now, won=False)
            taken_over = record.get("holder")
            log.warning("nginx_ha: claim %s of %s expired unfinished; taken over by %s", key, taken_over, holder)
        new = {
            "key": key,
            "holder": holder,
            "state": "held",
            "boot_id": boot_id,
            "since": record.get("since", now) if record is not None and taken_over is None else now,
            "until": now + lease,
            "time": time.time(),
            "info": info or (record or {}).get("info") or {},
            "history": ((record or {}).get("history") or [])[-8:] + ([{"holder": taken_over, "expired": True}] if taken_over else []),
        }
        _claim_write(path, new)
        extra = {"taken_over": taken_over} if taken_over else {}
        return _claim_answer(key, new, boot_id, now, won=True, **extra)


def claim_done(key, holder, result=None):
    """
    Mark ``key`` as handled by ``holder`` (its claim's winner) with a short ``result`` (e.g. the
    reactor's action): the claim no longer expires, so no other master takes the event over.
    Returns ``{done: True, ...}``, or ``{done: False, holder: <other>}`` when another holder took
    the claim over meanwhile (this holder's lease had run out).

    CLI Example:

    .. code-block:: bash

        salt 'web-a' nginx_ha.claim_done 'vrrp|VI_web|8c1f...|1700000000123' master-1 result=restarted
    """
    key = _claim_text(key, "key")
    holder = _claim_text(holder, "holder", 128)
    boot_id, now = _boot_clock()
    with _claims_locked() as directory:
        path = _claim_path(directory, key)
        record = _claim_read(path)
        if record is not None and record.get("holder") != holder:
            return dict(_claim_answer(key, record, boot_id, now, won=False), done=False)
        record = dict(record or {"key": key, "holder": holder, "boot_id": boot_id, "since": now, "info": {}})
        record.update(state="done", ended=now, result=str(result)[:200] if result is not None else None, boot_id=boot_id)
        _claim_write(path, record)
        return dict(_claim_answer(key, record, boot_id, now, won=True), done=True)


def claims(expired=False):
    """
    The claims this node keeps (see :py:func:`claim`): ``[{key, holder, state, expires_in,
    info}]``; with ``expired=True`` only held claims whose lease ran out (their holder died or
    hangs: a master takes them over).

    CLI Example:

    .. code-block:: bash

        salt 'web-*' nginx_ha.claims expired=True
    """
    boot_id, now = _boot_clock()
    out = []
    directory = _claim_dir()
    if not os.path.isdir(directory):
        return out
    with _claims_locked() as directory:
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".json"):
                continue
            record = _claim_read(os.path.join(directory, name))
            if not record or not record.get("key"):
                continue
            answer = _claim_answer(record["key"], record, boot_id, now, won=False)
            del answer["won"]
            if expired and not (record.get("state") == "held" and (answer["expires_in"] or 0) <= 0):
                continue
            out.append(answer)
    return out
