"""
nginx-ha reactions to VRRP transitions, decided on the master.

``reactor/vrrp.sls`` hands every ``nginx_ha/vrrp/*`` event to :py:func:`vrrp_event`; everything
that decides lives here, in tested Python:

* **FAULT** from node X: restart nginx on X, and only on X. X is the minion id Salt authenticated
  (``data['id']``), checked against the cluster pillar (X must be a node of the instance the event
  names) and, by default, against the signature the ``nginx_ha_events`` engine puts on every event
  with X's key. Nothing from the payload reaches a target or a shell. At most ``restart_limit``
  restarts per ``restart_window`` seconds per node; when that budget is spent, or nginx is not
  healthy after the restart, a critical alert goes out and X is kept out of MASTER with
  ``nginx_ha.maintenance on force=True`` (undo with ``nginx_ha.maintenance off`` on X and
  ``salt-run nginx_ha_reactor.reset X``).
* **MASTER** from node X: an alert naming the old and the new owner (warning when the VIP moved,
  info otherwise).
* **STOP** from node X: a warning (keepalived stopped there). **BACKUP**: recorded only.

:py:func:`check_fleet` runs ``nginx_ha.status`` and alerts on SPLIT-BRAIN and NO-OWNER (schedule
it on the master). :py:func:`alert` fires ``nginx_ha/alert/<severity>`` on the master bus and POSTs
a Slack-compatible JSON body to the configured webhook.

Master configuration (all optional; defaults shown)::

    nginx_ha_reactor:
      restart_limit: 3          # restarts per node ...
      restart_window: 300       # ... per this many seconds
      restart_coalesce: 10      # FAULTs of one node this close together share one restart
      health_delay: 3           # seconds between the restart and the health check
      timeout: 30               # seconds to wait for each minion call
      require_signature: true   # act only on events signed by the engine with the sender's key
      state_file: <cachedir>/nginx_ha_reactor/state.json
      actions:                  # what runs on the node (module function, arg, kwarg)
        restart: {fun: service.restart, arg: [nginx]}
        health: {fun: nginx_ha.health}
        maintenance: {fun: nginx_ha.maintenance, arg: ['on'], kwarg: {force: true}}
      webhook: {url: 'https://hooks.slack.com/services/...', timeout: 2, retries: 3}
      fleet: {realert: 600}     # repeat an unchanged fleet problem at most this often

State (restart history, owners, nodes in maintenance, recently seen sequence numbers) is one JSON
file on the master, read and written under an exclusive file lock, so concurrent reactor workers
do not lose updates.
"""

import base64
import contextlib
import copy
import fcntl
import importlib.util
import json
import logging
import os
import re
import time

import salt.client
import salt.utils.event
import salt.utils.verify

log = logging.getLogger(__name__)

__virtualname__ = "nginx_ha_reactor"

STATES = ("MASTER", "BACKUP", "FAULT", "STOP")
_TAG = re.compile(r"^nginx_ha/vrrp/(?P<instance>[^/\s]{1,128})/(?P<state>master|backup|fault|stop)$")
_SEEN_KEEP = 512

DEFAULTS = {
    "restart_limit": 3,
    "restart_window": 300,
    "restart_coalesce": 10,
    "health_delay": 3,
    "check_before_restart": True,  # a FAULT of a node whose nginx is healthy again restarts nothing
    "timeout": 30,
    "require_signature": True,
    "state_file": None,
    "actions": {
        "restart": {"fun": "service.restart", "arg": ["nginx"], "kwarg": {}},
        "health": {"fun": "nginx_ha.health", "arg": [], "kwarg": {}},
        "maintenance": {"fun": "nginx_ha.maintenance", "arg": ["on"], "kwarg": {"force": True}},
    },
    "webhook": {"url": None, "timeout": 2, "retries": 3, "backoff": 0.5},
    "fleet": {"realert": 600},
}


def __virtual__():
    return __virtualname__


class Rejected(Exception):
    """The event is not acted upon (reason in the message)."""


# ---------------------------------------------------------------------------------------------
# Configuration, state, helpers
# ---------------------------------------------------------------------------------------------


def _config():
    cfg = copy.deepcopy(DEFAULTS)
    user = __opts__.get("nginx_ha_reactor") or {}
    for key, value in user.items():
        if key == "actions" and isinstance(value, dict):
            for name, action in value.items():
                cfg["actions"][name] = dict({"arg": [], "kwarg": {}}, **(action or {}))
        elif isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    if not cfg["state_file"]:
        cfg["state_file"] = os.path.join(__opts__["cachedir"], "nginx_ha_reactor", "state.json")
    return cfg


def _empty_state():
    return {"restarts": {}, "owners": {}, "seen": {}, "maintenance": {}, "nodes": {}, "fleet": {}}


@contextlib.contextmanager
def _state(cfg):
    """Load, yield and save the state JSON under an exclusive lock (flock on ``<file>.lock``)."""
    path = cfg["state_file"]
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path + ".lock", "a", encoding="ascii") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            try:
                with open(path, encoding="utf-8") as fh:
                    state = dict(_empty_state(), **json.load(fh))
            except FileNotFoundError:
                state = _empty_state()
            except ValueError:
                log.error("nginx_ha_reactor: state file %s is corrupt; starting afresh", path)
                state = _empty_state()
            yield state
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(state, fh, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


_ALERT_UTIL = None


def _alert_util():
    """``_utils/nginx_ha_alert.py``: next to this runner in the repository, else from __utils__."""
    global _ALERT_UTIL  # pylint: disable=global-statement
    if _ALERT_UTIL is None:
        path = os.path.join(os.path.dirname(os.path.realpath(__file__)), os.pardir, "_utils", "nginx_ha_alert.py")
        if os.path.isfile(path):
            spec = importlib.util.spec_from_file_location("nginx_ha_alert_runner_copy", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _ALERT_UTIL = module
        else:
            utils = globals().get("__utils__") or {}

            class _FromUtils:
                payload = staticmethod(utils["nginx_ha_alert.payload"])
                post = staticmethod(utils["nginx_ha_alert.post"])
                check_severity = staticmethod(utils["nginx_ha_alert.check_severity"])

            _ALERT_UTIL = _FromUtils
    return _ALERT_UTIL


def _fire(tag, data):
    """Fire an event on the master's own bus."""
    with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False) as bus:
        bus.fire_event(data, tag)


def _call(node, action, timeout):
    """
    Run ``action`` ({fun, arg, kwarg}) on exactly one minion, ``node`` (a list target: never a
    glob or compound expression). Returns ``(ok, return)``; ``ok`` is False when the node did not
    answer or the function failed.
    """
    with salt.client.get_local_client(__opts__["conf_file"]) as client:
        ret = client.cmd(
            [node],
            action["fun"],
            arg=list(action.get("arg") or []),
            kwarg=dict(action.get("kwarg") or {}),
            tgt_type="list",
            timeout=timeout,
            full_return=True,
        )
    answer = ret.get(node) if isinstance(ret, dict) else None
    if not isinstance(answer, dict):
        return False, None
    return answer.get("retcode", 0) == 0 and answer.get("success", True) is not False, answer.get("ret")


def _healthy(ok, ret):
    return bool(ok) and (ret is True or (isinstance(ret, dict) and ret.get("healthy") is True))


def canonical(minion_id, tag, data):
    """The bytes the engine signs (must match ``_engines/nginx_ha_events.py:canonical``)."""
    body = {"id": minion_id, "tag": tag, "data": {k: v for k, v in data.items() if k != "sig"}}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _minion_public_key(minion_id):
    """The accepted public key of ``minion_id`` from the master's key store, else None."""
    import salt.cache  # pylint: disable=import-outside-toplevel

    cache = salt.cache.Cache(__opts__, driver=__opts__.get("keys.cache_driver") or "localfs_key")
    entry = cache.fetch("keys", minion_id)
    if not isinstance(entry, dict) or entry.get("state") != "accepted" or not entry.get("pub"):
        return None
    return entry["pub"]


def verify_signature(minion_id, tag, data, public_pem):
    """True when ``data['sig']`` is ``minion_id``'s signature over (id, tag, data)."""
    from cryptography.exceptions import InvalidSignature  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives import hashes, serialization  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives.asymmetric import padding  # pylint: disable=import-outside-toplevel

    sig = data.get("sig")
    if not isinstance(sig, str) or not public_pem:
        return False
    try:
        key = serialization.load_pem_public_key(public_pem.encode() if isinstance(public_pem, str) else public_pem)
        key.verify(base64.b64decode(sig, validate=True), canonical(minion_id, tag, data), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def parse_event(tag, data, require_signature=True, public_key=None):
    """
    Check one reactor event and return what may be used from it: ``{node, instance, state,
    priority, previous_state, seq, time, vips}``. ``node`` is ``data['id']`` (set by the master from
    the authenticated request), never a payload field. Raises :py:class:`Rejected`.

    public_key
        ``callable(minion_id) -> PEM or None`` (default: the master's accepted key).
    """
    if not isinstance(data, dict):
        raise Rejected("event data is not a mapping")
    node = data.get("id")
    if not isinstance(node, str) or not node or not salt.utils.verify.valid_id(__opts__, node):
        raise Rejected(f"event without a valid sender id: {node!r:.80}")
    match = _TAG.match(tag) if isinstance(tag, str) else None
    if not match:
        raise Rejected(f"tag {tag!r:.160} is not nginx_ha/vrrp/<instance>/<master|backup|fault|stop>")
    payload = data.get("data")
    if not isinstance(payload, dict):
        raise Rejected("event without a payload mapping under data")
    instance, state = match.group("instance"), match.group("state").upper()
    if payload.get("instance") != instance or str(payload.get("state", "")).upper() != state:
        raise Rejected(f"payload instance/state {payload.get('instance')!r:.80}/{payload.get('state')!r:.20} disagree with the tag {tag}")
    if require_signature:
        pem = (public_key or _minion_public_key)(node)
        if not pem:
            raise Rejected(f"no accepted key for {node} to verify the event signature")
        if not verify_signature(node, tag, payload, pem):
            raise Rejected(f"signature of the event does not verify with {node}'s key")
    seq = payload.get("seq")
    priority = payload.get("priority")
    previous = payload.get("previous_state")
    vips = payload.get("vips")
    return {
        "node": node,
        "instance": instance,
        "state": state,
        "priority": priority if isinstance(priority, int) and not isinstance(priority, bool) else None,
        "previous_state": previous if previous in STATES else None,
        "seq": seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
        "time": payload.get("time") if isinstance(payload.get("time"), (int, float)) else None,
        "vips": [str(v) for v in vips][:32] if isinstance(vips, list) else [],
    }


def cluster_instances(pillar, node):
    """Instance names of the ``nginx_ha`` pillar that list ``node`` among their nodes."""
    instances = ((pillar or {}).get("nginx_ha") or {}).get("vrrp_instances") or {}
    if not isinstance(instances, dict):
        return []
    return sorted(name for name, inst in instances.items() if isinstance(inst, dict) and node in (inst.get("nodes") or {}))


def _pillar_of(node):
    return __salt__["pillar.show_pillar"](node)


# ---------------------------------------------------------------------------------------------
# Alerts
# ---------------------------------------------------------------------------------------------


def alert(severity, message, **fields):
    """
    Raise an alert: fire ``nginx_ha/alert/<severity>`` (info, warning, critical) on the master's
    event bus and, when ``nginx_ha_reactor:webhook:url`` is set, POST a Slack-compatible JSON body
    (``text``) to it: each attempt times out after ``webhook:timeout`` seconds, at most
    ``webhook:retries`` attempts, so a dead webhook never holds the caller for long.

    CLI Example:

    .. code-block:: bash

        salt-run nginx_ha_reactor.alert warning 'test alert from the master'
    """
    util = _alert_util()
    severity = util.check_severity(severity)
    fields = {k: v for k, v in fields.items() if not k.startswith("__")}
    body = util.payload(severity, message, **fields)
    event = dict(body["nginx_ha"], text=body["text"], time=time.time())
    try:
        _fire(f"nginx_ha/alert/{severity}", event)
    except Exception:  # pylint: disable=broad-except
        log.exception("nginx_ha_reactor: cannot fire the alert event")
    log.log(logging.CRITICAL if severity == "critical" else logging.WARNING if severity == "warning" else logging.INFO, "nginx_ha alert [%s] %s", severity, message)
    webhook = _config()["webhook"]
    result = {"severity": severity, "message": message, "webhook": None}
    if webhook.get("url"):
        result["webhook"] = util.post(
            webhook["url"], body, timeout=float(webhook.get("timeout", 2)), retries=int(webhook.get("retries", 3)), backoff=float(webhook.get("backoff", 0.5))
        )
        if not result["webhook"]["ok"]:
            log.error("nginx_ha_reactor: webhook delivery failed after %s attempts: %s", result["webhook"]["attempts"], result["webhook"]["error"])
    return result


# ---------------------------------------------------------------------------------------------
# Reactions
# ---------------------------------------------------------------------------------------------


def _result(event, action, ok=True, **extra):
    ret = {"result": ok, "action": action, "node": event["node"], "instance": event["instance"], "state": event["state"], "seq": event["seq"]}
    ret.update(extra)
    return ret


def _on_master(event, cfg):
    with _state(cfg) as state:
        previous = state["owners"].get(event["instance"])
        # Events of different nodes can arrive out of order (a master outage, a cut management
        # link): the transition's own time (the node's clock) decides who is the newer owner.
        if previous and event["time"] is not None and previous.get("event_time") is not None and event["time"] < previous["event_time"]:
            return _result(event, "stale", owner=previous["node"])
        state["owners"][event["instance"]] = {"node": event["node"], "time": time.time(), "event_time": event["time"], "seq": event["seq"]}
    old = previous["node"] if previous else None
    new = event["node"]
    if old and old != new:
        severity, message = "warning", f"{event['instance']}: MASTER moved from {old} to {new}"
    elif old == new:
        severity, message = "info", f"{event['instance']}: {new} is MASTER again"
    else:
        severity, message = "info", f"{event['instance']}: {new} is MASTER (no previous owner known)"
    alert(severity, message, instance=event["instance"], old_owner=old, new_owner=new, vips=event["vips"], node=new)
    return _result(event, "owner-changed" if old != new else "owner-confirmed", old_owner=old, new_owner=new, severity=severity)


def _keep_out(event, cfg, reason):
    """Critical alert and maintenance on the node (so it cannot become MASTER again)."""
    node = event["node"]
    ok, ret = _call(node, cfg["actions"]["maintenance"], cfg["timeout"])
    alert(
        "critical",
        f"{event['instance']}: {reason}; {node} put in maintenance"
        + ("" if ok else f" (maintenance FAILED: {str(ret)[:200]})")
        + f"; fix nginx, then `salt {node} nginx_ha.maintenance off` and `salt-run nginx_ha_reactor.reset {node}`",
        instance=event["instance"],
        node=node,
        maintenance=ok,
    )
    return ok, ret


def _on_fault(event, cfg):
    node = event["node"]
    limit, window = int(cfg["restart_limit"]), float(cfg["restart_window"])
    with _state(cfg) as state:
        in_maintenance = node in state["maintenance"]
    if not in_maintenance and cfg["check_before_restart"]:
        # A FAULT can arrive late (the master was down) or be keepalived's own start-up: heal
        # only what is still broken, never restart an nginx that serves.
        health_ok, health_ret = _call(node, cfg["actions"]["health"], cfg["timeout"])
        if _healthy(health_ok, health_ret):
            return _result(event, "already-healthy", restarts_in_window=None)
    with _state(cfg) as state:
        now = time.time()  # under the lock: concurrent workers see times in the order they decide
        history = [t for t in state["restarts"].get(node, []) if now - t < window]
        if node in state["maintenance"]:
            decision = "in-maintenance"
        elif history and now - history[-1] < float(cfg["restart_coalesce"]):
            decision = "coalesced"
        elif len(history) >= limit:
            decision = "budget-exhausted"
            state["maintenance"][node] = {"time": now, "reason": f"{len(history)} restarts in {window:g}s", "instance": event["instance"]}
        else:
            decision = "restart"
            history.append(now)
        state["restarts"][node] = history
    used = len(history)
    if decision in ("in-maintenance", "coalesced"):
        return _result(event, decision, restarts_in_window=used)
    if decision == "budget-exhausted":
        ok, _ = _keep_out(event, cfg, f"FAULT on {node} and its restart budget is spent ({used} restarts in {window:g}s)")
        return _result(event, "maintenance", ok=ok, reason="budget-exhausted", restarts_in_window=used)

    restarted, restart_ret = _call(node, cfg["actions"]["restart"], cfg["timeout"])
    time.sleep(float(cfg["health_delay"]))
    health_ok, health_ret = _call(node, cfg["actions"]["health"], cfg["timeout"])
    if _healthy(health_ok, health_ret):
        alert(
            "warning",
            f"{event['instance']}: FAULT on {node}; nginx restarted and healthy again ({used}/{limit} restarts in {window:g}s)",
            instance=event["instance"],
            node=node,
            restarts_in_window=used,
        )
        return _result(event, "restarted", restarted=restarted, healthy=True, restarts_in_window=used)
    with _state(cfg) as state:
        state["maintenance"][node] = {"time": time.time(), "reason": "unhealthy after restart", "instance": event["instance"]}
    detail = ""
    if isinstance(health_ret, dict):
        nginx_check = ((health_ret.get("config") or {}).get("nginx") or {})
        if nginx_check.get("valid") is False:
            detail = f" (nginx -t: {str(nginx_check.get('output', ''))[:300]})"
        elif not (health_ret.get("nginx") or {}).get("answers", True):
            detail = f" (health endpoint: {str((health_ret.get('nginx') or {}).get('detail', ''))[:200]})"
    what = "did not bring health back" if restarted else f"failed ({cfg['actions']['restart']['fun']} returned {str(restart_ret)[:200]})"
    reason = f"FAULT on {node}; nginx restart {what}{detail}"
    ok, _ = _keep_out(event, cfg, reason)
    return _result(event, "maintenance", ok=ok, reason="unhealthy-after-restart", restarted=restarted, healthy=False, restarts_in_window=used)


def _on_stop(event, cfg):
    alert("warning", f"{event['instance']}: keepalived stopped on {event['node']}", instance=event["instance"], node=event["node"])
    return _result(event, "alerted")


def vrrp_event(tag, data, **kwargs):  # pylint: disable=unused-argument
    """
    React to one ``nginx_ha/vrrp/<instance>/<state>`` event (called by ``reactor/vrrp.sls`` with
    the event's ``tag`` and ``data``). Returns what was decided: ``{result, action, node,
    instance, state, ...}``; ``action`` is ``rejected`` (with ``reason``) for an event that is not
    acted upon.

    CLI Example:

    .. code-block:: bash

        salt-run nginx_ha_reactor.vrrp_event tag=nginx_ha/vrrp/VI_web/master data='{...}'
    """
    cfg = _config()
    try:
        event = parse_event(tag, data, require_signature=bool(cfg["require_signature"]))
        members = cluster_instances(_pillar_of(event["node"]), event["node"])
        if event["instance"] not in members:
            raise Rejected(f"{event['node']} is not a node of {event['instance']} in the nginx_ha pillar")
    except Rejected as exc:
        log.warning("nginx_ha_reactor: ignoring %s: %s", tag, exc)
        return {"result": False, "action": "rejected", "reason": str(exc), "tag": str(tag)[:200]}

    with _state(cfg) as state:
        seen = state["seen"].setdefault(event["node"], [])
        if event["seq"] is not None and event["seq"] in seen:
            return _result(event, "duplicate")
        if event["seq"] is not None:
            seen.append(event["seq"])
            del seen[:-_SEEN_KEEP]
        state["nodes"].setdefault(event["node"], {})[event["instance"]] = {"state": event["state"], "time": event["time"], "seq": event["seq"]}

    handler = {"MASTER": _on_master, "FAULT": _on_fault, "STOP": _on_stop}.get(event["state"])
    if handler is None:
        return _result(event, "recorded")
    return handler(event, cfg)


def check_fleet(tgt="I@nginx_ha:vrrp_instances", tgt_type="compound", timeout=5):
    """
    Run ``nginx_ha.status`` (the fleet view) and alert: critical for SPLIT-BRAIN and NO-OWNER,
    warning for nodes that do not answer; an unchanged problem is repeated at most every
    ``fleet:realert`` seconds, and its end is announced (info). ``salt-run`` exits 1 while there
    is a problem. Schedule it on the master::

        schedule:
          nginx_ha_fleet_check:
            function: nginx_ha_reactor.check_fleet
            seconds: 60

    CLI Example:

    .. code-block:: bash

        salt-run nginx_ha_reactor.check_fleet
    """
    cfg = _config()
    view = __salt__["nginx_ha.status"](tgt=tgt, tgt_type=tgt_type, timeout=timeout)
    problems = list(view.get("problems") or [])
    now = time.time()
    realert = float(cfg["fleet"].get("realert", 600))
    to_alert, resolved = [], []
    with _state(cfg) as state:
        known = state["fleet"]
        for problem in problems:
            entry = known.setdefault(problem, {"first": now, "alerted": None})
            if entry["alerted"] is None or now - entry["alerted"] >= realert:
                entry["alerted"] = now
                to_alert.append(problem)
        for problem in [p for p in known if p not in problems]:
            resolved.append(problem)
            del known[problem]
    for problem in to_alert:
        severity = "warning" if problem.startswith("NO-ANSWER") else "critical"
        alert(severity, problem, check="fleet", problem=problem.split(":", 1)[0])
    for problem in resolved:
        alert("info", f"resolved: {problem}", check="fleet", problem=problem.split(":", 1)[0])
    if problems:
        __context__["retcode"] = 1  # the job's success flag
    # salt-run takes its exit code from a "retcode" key of the return (Salt 3008).
    return {"ok": not problems, "problems": problems, "alerted": to_alert, "resolved": resolved, "retcode": 1 if problems else 0}


def show_state():
    """
    Show what the reactor remembers: restarts per node in the window, owners, nodes it put in
    maintenance, last state per node and instance, open fleet problems.

    CLI Example:

    .. code-block:: bash

        salt-run nginx_ha_reactor.show_state
    """
    cfg = _config()
    with _state(cfg) as state:
        return {k: v for k, v in state.items() if k != "seen"}


def reset(node):
    """
    Forget ``node``'s restart history and maintenance mark (after nginx is fixed and
    ``nginx_ha.maintenance off`` was run there), so FAULTs are handled again.

    CLI Example:

    .. code-block:: bash

        salt-run nginx_ha_reactor.reset web-a
    """
    cfg = _config()
    with _state(cfg) as state:
        had = {"restarts": state["restarts"].pop(node, []), "maintenance": state["maintenance"].pop(node, None)}
    return {"node": node, "forgotten": had}
