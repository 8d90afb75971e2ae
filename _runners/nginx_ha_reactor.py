"""
nginx-ha reactions to VRRP transitions, decided on the master.

``reactor/vrrp.sls`` hands every ``nginx_ha/vrrp/*`` event to :py:func:`vrrp_event`; everything
that decides lives here, in tested Python:

* **FAULT** from node X: heal nginx on X, and only on X. X is the minion id Salt authenticated
  (``data['id']``), checked against the cluster pillar (X must be a node of the instance the event
  names; a pillar that does not list X is compiled again before the event is rejected, see
  :py:func:`_membership`) and, by default, against the signature the ``nginx_ha_events``
  engine puts on every event with X's key. Nothing from the payload reaches a target or a shell. A FAULT always ends in one
  of three ways, never in silence:

  1. ``already-healthy``: ``nginx_ha.health`` on X says healthy (a late FAULT, keepalived's own
     start-up FAULT): nothing is restarted.
  2. ``restarted``: ``nginx_ha.restart_nginx`` on X (a start when nothing of nginx is left, else
     a graceful restart; either escalates to killing the whole nginx process tree when it does not
     serve in time), then ``nginx_ha.health`` confirms it (warning alert). A FAULT after a restart
     that was verified healthy is a *new* failure and gets a restart of its own.

  With the default actions these are **one minion call**: ``nginx_ha.restart_nginx
  unless_healthy=True verify=True`` runs ``nginx_ha.health`` on X itself, restarts only when X
  is not healthy, and returns the health after the restart (``restarted: false`` means case 1).
  With other actions (or when the budget is spent) the health action is a call of its own. When
  the verification of a restart that succeeded does not say healthy, the health action is asked
  again every 0.5 s until ``health_wait`` seconds passed (after ``health_delay``, a fixed wait, 0
  by default); a restart that failed or did not answer gets one health check.
  3. a critical alert: the restart budget (``restart_limit`` per ``restart_window`` seconds per
     node; every attempt counts) is spent, or nginx is not healthy after the restart, or the
     restart failed. X is then kept out of MASTER with ``nginx_ha.maintenance on force=True``;
     only when that call succeeded is X marked "in maintenance" here (its later FAULTs are then
     ignored until ``salt-run nginx_ha_reactor.reset X``). When it failed, the critical alert says
     so and X is not marked, so its next FAULT is handled (and alerted) again.

  FAULTs of X that arrive while a worker is healing X (X is *in progress*: a mark in the state
  file with an expiry, ``in_progress_expiry``) share that restart: they are answered
  ``coalesced`` and the worker checks health once more before it lets go of X, so a failure that
  came in meanwhile is never dropped. A mark whose worker died expires, with a critical alert
  (raised by the next event or the next :py:func:`check_fleet`).
* **MASTER** from node X: an alert naming the old and the new owner (warning when the VIP moved,
  info otherwise).
* **STOP** from node X: a warning (keepalived stopped there). **BACKUP**: recorded only.

Any error of Salt's client (a minion that does not answer, ``SaltClientError``, a timeout) is a
failed action that leads to the next step above; any other error while handling an event is
logged and raised as a critical alert: an event is never lost silently.

Time, order and replays (node clocks are never trusted):

* The time an event happened is the master's **receive time**: ``_stamp``, which the master sets
  on every event it fires (a minion cannot set it), else the master's clock when the runner
  starts. Ownership of a VIP goes to the MASTER event received last, unless a newer event of the
  same node was already recorded (``superseded``); when the owner's own newer event says it gave
  the VIP up (a MASTER that arrived late), the owner is the node whose newest state is MASTER. The
  payload's ``time`` (the node's clock) orders nothing.
* Engine events carry ``boot`` (the node's ``/proc/sys/kernel/random/boot_id``) and ``seq``
  (signed with the payload). The engine sends a node's events one at a time in ``seq`` order, so
  the master receives them in that order. Per node and boot the last 64 ``seq`` numbers are
  remembered: one seen before is a ``duplicate`` redelivery. An older ``seq`` than the newest
  seen is an event that concurrent workers admitted out of order when the master received it
  *before* that newest one, or (as IPsec's window) is within 64 below it and never seen: handled,
  and the node's newer recorded state stands. Otherwise (received after it, or below the 64
  remembered) it is a ``replay``. The same for boots: an event of a boot never seen, received
  before the first event of the node's current boot, is an earlier boot's event admitted late
  (handled, without overwriting what the current boot recorded; that boot is left behind). An
  event of a boot left behind, received later, is a ``replay``, unless its ``seq`` is above any
  seen of that boot: then that boot is alive and the node's again (the master fired an event out
  of order at a reboot, or its clock stepped back), so a misjudged order cannot lock a node out.
  A boot never seen before, received later, is the node's new boot. Events without ``boot`` (the
  notify-script path, older engines) are dropped as ``duplicate`` when their ``seq`` is one of the
  last 512 of that node.
* **Late events** are recorded (node states, owners) but trigger no alert of their own. An event
  is late when it waited more than ``max_event_age`` seconds on the master (``_stamp`` vs now);
  or when it reached the master more than ``max_event_age`` seconds after it happened, measured
  as ``(_stamp - time) - baseline``, the baseline being the smallest ``_stamp - time`` seen from
  that node (so only differences of the node's own clock count: any constant offset, even years,
  cancels out; the baseline starts afresh with each boot of the node, and a node clock stepped
  back is re-based after two separate late-looking events with the same offset); or when more than ``backlog:burst`` events of one node arrive within
  ``backlog:window`` seconds (a spool replayed after a master outage, or a flapping node).
  Late events of a node are collected and reported in **one summary alert** (per node and
  instance: the transitions and the state now) once the node has sent nothing for
  ``backlog:quiet`` seconds, or when a live event of it arrives (checked on every event and by
  :py:func:`check_fleet`). Actions are still decided on the latest state only: a late FAULT that
  a newer event of the same node and instance has superseded does nothing, otherwise it is
  handled as above with the health check first (also when ``check_before_restart`` is off).

Alerts raised here are deduplicated (the same severity and message within ``alerts:dedupe``
seconds goes out once) and rate-limited (at most ``alerts:limit`` per ``alerts:window`` seconds
per node, or instance; the rest are counted and reported in one "suppressed N alerts" summary
when the window ends). Critical alerts are deduplicated but never rate-limited away.

:py:func:`check_fleet` runs ``nginx_ha.status`` (the fleet view) and alerts on its problems (see
there). :py:func:`alert` fires ``nginx_ha/alert/<severity>`` on the master bus and POSTs a
Slack-compatible JSON body to the configured webhook.

Master configuration (all optional; defaults shown)::

    nginx_ha_reactor:
      restart_limit: 3          # restart attempts per node ...
      restart_window: 300       # ... per this many seconds
      health_delay: 0           # a fixed wait between the restart and the first health check
      health_wait: 10           # seconds to keep checking health after the restart until healthy
      check_before_restart: true  # a FAULT of a node whose nginx is healthy restarts nothing
      timeout: 30               # seconds to wait for each minion call (unless the action sets one)
      in_progress_expiry: null  # seconds a worker may hold a node; null: the sum of the action
                                # timeouts (health twice) + health_delay + health_wait + 60
      max_event_age: 120        # older events are late: recorded and summarized, no own alert
      require_signature: true   # act only on events signed by the engine with the sender's key
      state_file: <cachedir>/nginx_ha_reactor/state.json
      actions:                  # what runs on the node (module function, arg, kwarg, timeout)
        restart: {fun: nginx_ha.restart_nginx, timeout: 90}
        health: {fun: nginx_ha.health}
        maintenance: {fun: nginx_ha.maintenance, arg: ['on'], kwarg: {force: true}}
      backlog: {burst: 5, window: 10, quiet: 30}
      alerts: {dedupe: 300, limit: 10, window: 300}
      webhook: {url: 'https://hooks.slack.com/services/...', timeout: 2, retries: 3}
      fleet: {realert: 600}     # repeat an unchanged fleet problem at most this often

``restart_coalesce`` of earlier versions is ignored: FAULTs share a restart only while it is in
progress. The restart action must return ``{healthy, escalated, ...}`` or fail (non-zero retcode);
any function that returns True works too (e.g. ``{fun: service.restart, arg: [nginx]}``; then the
health check before it and after it are calls of their own).

State (restart history, owners, nodes in maintenance, nodes in progress, boots and sequence
numbers, late events, alert bookkeeping) is one JSON file on the master, read and written under an
exclusive file lock, so concurrent reactor workers do not lose updates.
"""

import contextlib
import copy
import datetime
import fcntl
import importlib.util
import json
import logging
import os
import sys
import time
import uuid

import salt.client
import salt.utils.event
import salt.utils.verify

# The event wire format (_utils/nginx_ha_event.py, shared with the nginx_ha_events engine) and the
# alert body and webhook delivery (_utils/nginx_ha_alert.py), as ordinary Python: on the loader's
# sys.path, else in the _utils folder beside this module's folder (runner_dirs: <repo>/_utils; how
# and why: saltext/nginx_ha/__init__.py, "Shared Python").
if importlib.util.find_spec("nginx_ha_event") is None:
    sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "_utils"))
import nginx_ha_alert  # pylint: disable=wrong-import-position
import nginx_ha_event  # pylint: disable=wrong-import-position

log = logging.getLogger(__name__)

__virtualname__ = "nginx_ha_reactor"

_WINDOW = 64  # seq numbers remembered per node and boot (anti-replay)
_SEEN_KEEP = 512  # seq numbers remembered per node for events without a boot id
_BOOTS_KEEP = 32  # superseded boot ids remembered per node
_BACKLOG_KEEP = 100  # late events listed per node in a summary (all are counted)
_STEP_TOLERANCE = 5.0  # seconds: the same offset twice means the node's clock was stepped

DEFAULTS = {
    "restart_limit": 3,
    "restart_window": 300,
    "health_delay": 0,
    "health_wait": 10,
    "check_before_restart": True,  # a FAULT of a node whose nginx is healthy again restarts nothing
    "timeout": 30,
    "in_progress_expiry": None,
    "max_event_age": 120,
    "require_signature": True,
    "state_file": None,
    "actions": {
        "restart": {"fun": "nginx_ha.restart_nginx", "arg": [], "kwarg": {}, "timeout": 90},
        "health": {"fun": "nginx_ha.health", "arg": [], "kwarg": {}},
        "maintenance": {"fun": "nginx_ha.maintenance", "arg": ["on"], "kwarg": {"force": True}},
    },
    "backlog": {"burst": 5, "window": 10, "quiet": 30},
    "alerts": {"dedupe": 300, "limit": 10, "window": 300},
    "webhook": {"url": None, "timeout": 2, "retries": 3, "backoff": 0.5},
    "fleet": {"realert": 600},
    # Several masters (Salt's hot multi-master): claims on the nodes, see _claim_event (off: one master)
    "multi_master": {"claims": False, "lease": None, "holder": None, "fleet_lease": 180},
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
    return {
        "restarts": {},
        "owners": {},
        "seen": {},
        "boots": {},
        "clocks": {},
        "maintenance": {},
        "in_progress": {},
        "nodes": {},
        "backlog": {},
        "alerts": {},
        "fleet": {},
    }


@contextlib.contextmanager
def _state(cfg):
    """
    Load, yield and save the state JSON under an exclusive lock (flock on ``<file>.lock``).
    Never call a minion or :py:func:`alert` inside: the lock is the master's, for milliseconds.
    """
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


_FIRE_TRIES = 3  # attempts to put one event on the master's bus
_FIRE_TIMEOUT_MS = 5000  # each: Salt's default is 1 s, short for a master whose cores are saturated


def _fire(tag, data):
    """
    Fire an event on the master's own bus. Salt's ``fire_event`` answers False, without a word,
    when it cannot reach the master's event publisher in time (a loaded master): tried again, and
    an event that never went out is an error in the log, never a silent loss. True when fired.
    """
    for attempt in range(1, _FIRE_TRIES + 1):
        with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False) as bus:
            if bus.fire_event(dict(data), tag, timeout=_FIRE_TIMEOUT_MS) is not False:
                return True
        log.warning("nginx_ha_reactor: the master's event bus did not take %s (attempt %d of %d)", tag, attempt, _FIRE_TRIES)
    log.error("nginx_ha_reactor: %s was NOT fired on the master's event bus after %d attempts", tag, _FIRE_TRIES)
    return False


def _call(node, action, timeout):
    """
    Run ``action`` ({fun, arg, kwarg, timeout}) on exactly one minion, ``node`` (a list target:
    never a glob or compound expression). Returns ``(ok, return)``; ``ok`` is False when the node
    did not answer, the function failed, or Salt's client raised (``return`` then says what
    happened). Never raises.
    """
    timeout = float(action.get("timeout") or timeout)
    try:
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
    except Exception as exc:  # pylint: disable=broad-except
        # SaltClientError, a timeout, a master that cannot publish: a failed action, not a lost event.
        log.error("nginx_ha_reactor: %s on %s: Salt's client failed: %s: %s", action["fun"], node, type(exc).__name__, exc, exc_info=True)
        return False, f"Salt client error: {type(exc).__name__}: {exc}"
    answer = ret.get(node) if isinstance(ret, dict) else None
    if not isinstance(answer, dict):
        return False, f"no answer from {node} within {timeout:g}s"
    return answer.get("retcode", 0) == 0 and answer.get("success", True) is not False, answer.get("ret")


def _healthy(ok, ret):
    return bool(ok) and (ret is True or (isinstance(ret, dict) and ret.get("healthy") is True))


def _lease(cfg):
    """Seconds a worker may hold a node (``in_progress_expiry``, else what its calls can take)."""
    if cfg.get("in_progress_expiry"):
        return float(cfg["in_progress_expiry"])
    default = float(cfg["timeout"])
    actions = cfg["actions"]
    calls = sum(float(actions[name].get("timeout") or default) for name in ("health", "restart", "health", "maintenance"))
    return calls + float(cfg["health_delay"]) + float(cfg["health_wait"]) + 60.0


def _minion_public_key(minion_id):
    """The accepted public key of ``minion_id`` from the master's key store, else None."""
    import salt.cache  # pylint: disable=import-outside-toplevel

    cache = salt.cache.Cache(__opts__, driver=__opts__.get("keys.cache_driver") or "localfs_key")
    entry = cache.fetch("keys", minion_id)
    if not isinstance(entry, dict) or entry.get("state") != "accepted" or not entry.get("pub"):
        return None
    return entry["pub"]


def receive_time(data, now=None):
    """
    When the master received the event: its ``_stamp`` (ISO 8601, set by the master's event bus
    for every event it fires; a naive stamp is UTC), else ``now`` (default: the master's clock).
    """
    stamp = data.get("_stamp") if isinstance(data, dict) else None
    if isinstance(stamp, str):
        try:
            when = datetime.datetime.fromisoformat(stamp)
        except ValueError:
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.timezone.utc)
            return when.timestamp()
    return time.time() if now is None else now


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def parse_event(tag, data, require_signature=True, public_key=None):
    """
    Check one reactor event and return what may be used from it: ``{node, instance, state,
    priority, previous_state, seq, boot, time, recv, vips}``. ``node`` is ``data['id']`` (set by
    the master from the authenticated request), never a payload field; ``recv`` is the master's
    receive time (:py:func:`receive_time`); ``time`` is the node's clock, used only for
    differences. Raises :py:class:`Rejected`.

    public_key
        ``callable(minion_id) -> PEM or None`` (default: the master's accepted key).
    """
    if not isinstance(data, dict):
        raise Rejected("event data is not a mapping")
    node = data.get("id")
    if not isinstance(node, str) or not node or not salt.utils.verify.valid_id(__opts__, node):
        raise Rejected(f"event without a valid sender id: {node!r:.80}")
    parsed = nginx_ha_event.parse_tag(tag)
    if parsed is None:
        raise Rejected(f"tag {tag!r:.160} is not nginx_ha/vrrp/<instance>/<master|backup|fault|stop>")
    payload = data.get("data")
    if not isinstance(payload, dict):
        raise Rejected("event without a payload mapping under data")
    instance, state = parsed
    if payload.get("instance") != instance or str(payload.get("state", "")).upper() != state:
        raise Rejected(f"payload instance/state {payload.get('instance')!r:.80}/{payload.get('state')!r:.20} disagree with the tag {tag}")
    if require_signature:
        pem = (public_key or _minion_public_key)(node)
        if not pem:
            raise Rejected(f"no accepted key for {node} to verify the event signature")
        if not nginx_ha_event.verify(node, tag, payload, pem):
            raise Rejected(f"signature of the event does not verify with {node}'s key")
    seq = payload.get("seq")
    seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
    boot = payload.get("boot")
    if boot is not None and (not isinstance(boot, str) or not nginx_ha_event.BOOT.fullmatch(boot)):
        raise Rejected(f"payload boot {boot!r:.80} is not a boot id")
    if boot is not None and seq is None:
        raise Rejected("payload has a boot id but no integer seq")
    priority = payload.get("priority")
    previous = payload.get("previous_state")
    vips = payload.get("vips")
    return {
        "node": node,
        "instance": instance,
        "state": state,
        "priority": priority if isinstance(priority, int) and not isinstance(priority, bool) else None,
        "previous_state": previous if previous in nginx_ha_event.STATES else None,
        "seq": seq,
        "boot": boot,
        "time": _number(payload.get("time")),
        "recv": receive_time(data),
        "vips": [str(v) for v in vips][:32] if isinstance(vips, list) else [],
    }


def cluster_instances(pillar, node):
    """Instance names of the ``nginx_ha`` pillar that list ``node`` among their nodes."""
    config = pillar.get("nginx_ha") if isinstance(pillar, dict) else None
    instances = (config.get("vrrp_instances") if isinstance(config, dict) else None) or {}
    if not isinstance(instances, dict):
        return []
    return sorted(name for name, inst in instances.items() if isinstance(inst, dict) and node in (inst.get("nodes") or {}))


def _pillar_of(node):
    return __salt__["pillar.show_pillar"](node)


_PILLAR_TRIES = 3  # pillar compilations before an event's sender is judged not a node of its instance


class PillarUnreadable(Exception):
    """The sender's pillar could not be compiled: the event is not acted upon (a critical alert)."""


def _pillar_problem(pillar):
    """Why a compiled pillar cannot say who is a node (None when it can): errors, no nginx_ha key."""
    if not isinstance(pillar, dict):
        return f"not a mapping but {type(pillar).__name__}: {str(pillar)[:200]}"
    if pillar.get("_errors"):
        return "its compilation failed: " + "; ".join(str(e) for e in pillar["_errors"])[:300]
    if not isinstance(pillar.get("nginx_ha"), dict):
        return "it has no nginx_ha key"
    return None


def _pillar_summary(pillar):
    """What a pillar says about nginx_ha, for a log line: cluster and instance names, or its problem."""
    problem = _pillar_problem(pillar)
    if problem:
        return problem
    config = pillar["nginx_ha"]
    instances = config.get("vrrp_instances")
    listed = {name: sorted(str(n) for n in ((inst or {}).get("nodes") or {})) for name, inst in instances.items() if isinstance(inst, dict)} if isinstance(instances, dict) else instances
    return f"cluster {config.get('cluster')!r}, vrrp_instances {str(listed)[:300]}"


def _membership(node, instance):
    """
    The sender's pillar and the instances it is a node of, ``(pillar, members)``; ``instance``
    among them or an exception.

    Salt's ``pillar.show_pillar`` runs in the reactor's worker threads, concurrently in one
    process, and under load it can return **another minion's pillar** (measured in the 20-minion
    scale benchmark: web-20's FAULT got pair02's pillar, web-03 and web-04's; Salt's own reports:
    saltstack/salt#30353, #38868). Taken at its word, that rejected a FAULT of a real node ("not
    a node of") and nginx stayed down. So a pillar that does not list the node is compiled again
    (``_PILLAR_TRIES`` in all, each miss logged) before the event is rejected. A crossed pillar
    cannot make a stranger a node: it lists the sender only when it is the pillar of a node of
    the sender's own cluster. A pillar that cannot be compiled at all (``_errors``, no
    ``nginx_ha``), or compilations that disagree and never list the node, are an error
    (:py:class:`PillarUnreadable`: a critical alert), never a silent rejection; the same pillar
    every time, without the node, rejects a stranger.
    """
    seen = []
    for attempt in range(1, _PILLAR_TRIES + 1):
        pillar = _pillar_of(node)
        members = cluster_instances(pillar, node)
        if instance in members:
            if seen:
                log.warning(
                    "nginx_ha_reactor: the pillar of %s lists it in %s only at compilation %d; before: %s",
                    node, instance, attempt, " | ".join(seen),
                )
            return pillar, members
        seen.append(_pillar_summary(pillar))
        log.warning("nginx_ha_reactor: the pillar of %s (compilation %d of %d) does not list it in %s: %s", node, attempt, _PILLAR_TRIES, instance, seen[-1])
    problem = _pillar_problem(pillar)
    if problem:
        raise PillarUnreadable(f"the pillar of {node} cannot say whether it is a node of {instance}: {problem}")
    if len(set(seen)) > 1:
        # compilations that disagree are crossed pillars, not an answer: the sender may be a real
        # node whose FAULT would go unhealed, so this is a critical alert, not a quiet rejection
        raise PillarUnreadable(
            f"the pillar of {node} came out differently in {len(seen)} compilations and never listed it in "
            f"{instance} (crossed pillars under load?): {' | '.join(seen)}"
        )
    raise Rejected(f"{node} is not a node of {instance} in the nginx_ha pillar")


def cluster_scope(pillar, node, instance):
    """
    The sender's own cluster, from its pillar: ``(cluster name, the nodes of instance)``. Whatever
    the reactor reads about peers (owners, other nodes' states, standbys) is limited to these
    nodes: it never acts, or reasons, across clusters (two clusters may use the same instance
    names on one master).
    """
    config = ((pillar or {}).get("nginx_ha") or {}) if isinstance(pillar, dict) else {}
    cluster = config.get("cluster") if isinstance(config, dict) else None
    cluster = cluster if isinstance(cluster, str) and cluster else "default"
    inst = ((config.get("vrrp_instances") or {}).get(instance) or {}) if isinstance(config, dict) else {}
    nodes = sorted(str(n) for n in (inst.get("nodes") or {})) if isinstance(inst, dict) else []
    return cluster, nodes or [node]


def _owner_key(event):
    """Where the instance's owner is recorded: the instance name in the default cluster (as before
    clusters had names), ``<cluster>/<instance>`` in a named one."""
    cluster = event.get("cluster") or "default"
    return event["instance"] if cluster == "default" else f"{cluster}/{event['instance']}"


def _cluster_peers(event):
    """The other nodes of the event's instance in the sender's own cluster (see cluster_scope)."""
    return [n for n in event.get("members") or [] if n != event["node"]]


# ---------------------------------------------------------------------------------------------
# Admission: repeats and replays, late events, the node's latest state
# ---------------------------------------------------------------------------------------------


def _check_sequence(state, event):
    """
    None when the event is new, else ``(action, reason)`` with action ``duplicate`` (the same
    event again: delivery is at least once) or ``replay`` (an older event). See the module doc.

    The engine sends a node's events one at a time, in ``seq`` order, so the master receives
    them in that order: the receive time ``recv`` (the master's ``_stamp``) tells an older event
    that concurrent reactor workers admitted after a newer one (it was received *before* that
    newer one: handled, out of order) from a replay (received *after* it). This holds from the
    first event of a boot on and across boots, whatever ``seq`` step the node's clock gave.
    """
    node, seq, boot, recv = event["node"], event["seq"], event["boot"], event["recv"]
    if boot is None:
        if seq is None:
            return None
        seen = state["seen"].setdefault(node, [])
        if seq in seen:
            return "duplicate", f"seq {seq} of {node} was seen already"
        seen.append(seq)
        del seen[:-_SEEN_KEEP]
        return None
    track = state["boots"].setdefault(node, {"boot": None, "seq": None, "left": []})
    if boot == track["boot"]:
        return _check_in_boot(track, node, seq, boot, recv)
    left = _left_behind(track)
    since = track.get("since")
    if track["boot"] is not None and since is not None and recv < since:
        # received before the first event of the node's current boot: an event of an earlier
        # boot that a worker admits late. Handled (the newer recorded state stands); that boot
        # stays behind, so a copy of it sent again later is a replay.
        late = track.setdefault("late", [])
        if [boot, seq] in late:
            return "duplicate", f"seq {seq} of {node} (boot {boot}, left behind) was seen already"
        track["late"] = (late + [[boot, seq]])[-2 * _WINDOW:]
        _leave_behind(track, boot, max(seq, left.get(boot) or seq))
        return None
    if boot in left:
        newest = track.get("recv")
        if left[boot] is not None and seq > left[boot] and newest is not None and recv > newest:
            # a boot left behind sends a seq above any seen of it, received after the current
            # boot's newest: it is alive, so it was the newer one (the master fired an event out of
            # order at a reboot, or its clock stepped back). A replay cannot do this: every event
            # of that boot the master never saw is still on its way from the node.
            log.warning("nginx_ha_reactor: %s: boot %s, left behind, is newer than boot %s (seq %s above its highest, %s)",
                        node, boot, track["boot"], seq, left[boot])
            _switch_boot(track, node, boot, seq, recv)
            return None
        return "replay", f"boot {boot} of {node} was superseded by boot {track['boot']}"
    _switch_boot(track, node, boot, seq, recv)
    return None


def _left_behind(track):
    """
    The boots the node has left, ``{boot: the highest seq seen of it}`` (None: not known), kept
    in the track as ``left``, ``[[boot, seq], ...]`` oldest first (a list: the state file sorts
    mapping keys, and the oldest are forgotten first). A track of the previous version listed
    them as ``superseded``.
    """
    if "left" not in track:
        track["left"] = [[b, None] for b in track.pop("superseded", [])]
    return {b: s for b, s in track["left"]}


def _leave_behind(track, boot, seq):
    """Mark ``boot`` as left behind, with ``seq`` the highest seen of it."""
    _left_behind(track)
    track["left"] = ([[b, s] for b, s in track["left"] if b != boot] + [[boot, seq]])[-_BOOTS_KEEP:]


def _switch_boot(track, node, boot, seq, recv):
    """Make ``boot`` the node's current boot; the one it replaces is left behind."""
    if track["boot"] is not None:
        log.info("nginx_ha_reactor: %s booted again (boot %s after %s)", node, boot, track["boot"])
        # the boot left behind may still have a repeat in flight, received before this event
        track["late"] = (track.get("late", []) + [[track["boot"], s] for s in track.get("recent", [])])[-2 * _WINDOW:]
        _leave_behind(track, track["boot"], track["seq"])
    _left_behind(track)
    track["left"] = [[b, s] for b, s in track["left"] if b != boot]
    seen = sorted({s for b, s in track.get("late", []) if b == boot} | {seq})[-_WINDOW:]
    track.update(boot=boot, seq=max(seen), recv=recv, since=recv, recent=seen)


def _check_in_boot(track, node, seq, boot, recv):
    """:func:`_check_sequence` for an event of the node's current boot (``track``)."""
    recent = track.setdefault("recent", [track["seq"]] if track["seq"] is not None else [])
    if seq in recent or seq == track["seq"]:
        return "duplicate", f"seq {seq} of {node} (boot {boot}) was seen already"
    if track["seq"] is not None and seq < track["seq"]:
        newest_recv = track.get("recv")
        received_before = newest_recv is not None and recv < newest_recv
        # Received after the newest: a replay, unless (as IPsec's window) unseen and close below
        # it (every seq seen that close is remembered): a send the master's workers fired after
        # the next one. A track without ``recv`` (previous version): any lower seq is refused.
        if newest_recv is None or (not received_before and track["seq"] - seq >= _WINDOW):
            return "replay", (f"seq {seq} of {node} (boot {boot}) is older than seq {track['seq']} "
                              "and was received after it")
        if len(recent) >= _WINDOW and seq < recent[0]:
            # older than every seq remembered: it cannot be told from one seen before
            return "replay", f"seq {seq} of {node} (boot {boot}) is below the window of the last {_WINDOW} seen"
    else:
        track["seq"], track["recv"] = seq, recv
    track["recent"] = sorted(recent + [seq])[-_WINDOW:]
    track["since"] = recv if track.get("since") is None else min(track["since"], recv)
    return None


def _delivery_lag(clock, offset, recv, max_age, window):
    """
    How much later than usual the node's event reached the master: ``offset`` (receive time
    minus the node's ``time``) minus the node's baseline (the smallest offset seen). Only
    differences of the node's own clock count, so a constant skew of any size cancels out.
    """
    base, last = clock.get("base"), clock.get("last")
    if base is None or offset < base:
        base = offset
    lag = offset - base
    if (
        lag > max_age
        and last
        and last.get("lag", 0) > max_age
        and recv - last["recv"] > window
        and abs(offset - last["offset"]) <= _STEP_TOLERANCE
    ):
        # Two separate deliveries late by the same amount: the node's clock was stepped back.
        log.info("nginx_ha_reactor: the clock of a node was stepped by %.0fs; new baseline", lag)
        base, lag = offset, 0.0
    clock["base"] = base
    clock["last"] = {"recv": recv, "offset": offset, "lag": lag}
    return lag


def _lateness(state, event, cfg, now):
    """Why the event is late (an empty list when it is live). See the module doc."""
    max_age = float(cfg["max_event_age"])
    window, burst = float(cfg["backlog"]["window"]), int(cfg["backlog"]["burst"])
    node, recv = event["node"], event["recv"]
    reasons = []
    waited = now - recv
    if waited > max_age:
        reasons.append(f"received {waited:.0f}s before it was handled")
    clock = state["clocks"].setdefault(node, {})
    if event["boot"] is not None and clock.get("boot") != event["boot"]:
        # A reboot may have set the clock anew: the baseline starts afresh with each boot.
        clock.update(boot=event["boot"], base=None, last=None)
    if event["time"] is not None:
        lag = _delivery_lag(clock, recv - event["time"], recv, max_age, window)
        if lag > max_age:
            reasons.append(f"reached the master {lag:.0f}s later than {node}'s events usually do")
    recent = [r for r in clock.get("recent", []) if abs(recv - r) <= window] + [recv]
    clock["recent"] = recent[-(burst + 1):]
    if len(clock["recent"]) > burst:
        reasons.append(f"more than {burst} events of {node} within {window:g}s")
    return reasons


def _record(state, event):
    """Remember the event as the node's state for its instance, unless a newer one is known."""
    slot = state["nodes"].setdefault(event["node"], {})
    old = slot.get(event["instance"]) or {}
    current = (state["boots"].get(event["node"]) or {}).get("boot")
    if old and event["boot"] is not None and event["boot"] != current and old.get("boot") == current:
        return False  # an event of a boot the node has left, admitted late: the current boot's state stands
    if old and event["boot"] is not None and old.get("boot") == event["boot"] and None not in (old.get("seq"), event["seq"]):
        if event["seq"] < old["seq"]:
            return False  # an older event admitted out of order: the node's newer state stands
    if old and event["boot"] is None and old.get("boot") is None:
        # Without a boot id (notify script, older engines) the per-node seq orders, else the
        # master's receive time: an older event arriving after a newer one changes nothing.
        if None not in (old.get("seq"), event["seq"]):
            if event["seq"] < old["seq"]:
                return False
        elif old.get("recv") is not None and event["recv"] < old["recv"]:
            return False
    slot[event["instance"]] = {"state": event["state"], "seq": event["seq"], "boot": event["boot"], "recv": event["recv"], "time": event["time"]}
    return True


def _reconcile_owner(state, event):
    """
    A non-MASTER event from the node recorded as the instance's owner (its newest event: same
    node, higher seq) means that node gave the VIP up: the owner is the node whose own newest
    recorded state for the instance is MASTER (the one received last), if any. This undoes a
    MASTER event that arrived late (its node was cut off): keepalived's order, per node, wins
    over arrival order across nodes. Returns ``(old, new)`` when the owner changed, else None.
    """
    owner = state["owners"].get(_owner_key(event))
    if event["state"] == "MASTER" or not owner or owner.get("node") != event["node"] or not _is_latest(state, event):
        return None
    peers = set(_cluster_peers(event)) if event.get("members") else None  # the sender's cluster only
    candidates = [
        (slot[event["instance"]].get("recv") or 0, node, slot[event["instance"]])
        for node, slot in state["nodes"].items()
        if node != event["node"] and (peers is None or node in peers) and (slot.get(event["instance"]) or {}).get("state") == "MASTER"
    ]
    if not candidates:
        return None  # nobody else claims it: keep the record (its next MASTER confirms it)
    recv, node, slot = max(candidates, key=lambda c: (c[0], c[1]))
    state["owners"][_owner_key(event)] = {"node": node, "recv": slot.get("recv"), "seq": slot.get("seq"), "boot": slot.get("boot"), "time": time.time()}
    return (event["node"], node)


def _is_latest(state, event):
    """True while no newer event of the same node and instance has been recorded."""
    slot = (state["nodes"].get(event["node"]) or {}).get(event["instance"]) or {}
    return (slot.get("seq"), slot.get("boot"), slot.get("recv")) == (event["seq"], event["boot"], event["recv"])


def _note_late(state, event, reasons, now):
    entry = state["backlog"].setdefault(event["node"], {"first": now, "count": 0, "events": [], "reason": reasons[0]})
    entry["count"] += 1
    entry["last"] = now
    entry["events"].append([event["instance"], event["state"], event["seq"]])
    del entry["events"][:-_BACKLOG_KEEP]


def _admit(state, event, cfg, now):
    """
    Sequence check, lateness, record. Returns ``({action, reason, late}, due alerts)``; action
    None: go on. A live event of a node ends its backlog: that summary is due first, with the
    states from before this event.
    """
    repeated = _check_sequence(state, event)
    late = [] if repeated else _lateness(state, event, cfg, now)
    due = _housekeeping(state, cfg, now, flush=(event["node"],) if not repeated and not late else ())
    if repeated:
        return {"action": repeated[0], "reason": repeated[1], "late": []}, due
    _record(state, event)
    corrected = _reconcile_owner(state, event)
    if late:
        _note_late(state, event, late, now)
    return {"action": None, "reason": None, "late": late, "owner_corrected": corrected}, due


# ---------------------------------------------------------------------------------------------
# Alerts
# ---------------------------------------------------------------------------------------------


def alert(severity, message, **fields):
    """
    Raise an alert: fire ``nginx_ha/alert/<severity>`` (info, warning, critical) on the master's
    event bus and, when ``nginx_ha_reactor:webhook:url`` is set, POST a Slack-compatible JSON body
    (``text``) to it: each attempt times out after ``webhook:timeout`` seconds, at most
    ``webhook:retries`` attempts, so a dead webhook never holds the caller for long. Called from
    the command line it is sent as is; the reactor's own alerts are deduplicated and rate-limited
    first (``alerts`` in the master configuration).

    CLI Example:

    .. code-block:: bash

        salt-run nginx_ha_reactor.alert warning 'test alert from the master'
    """
    severity = nginx_ha_alert.check_severity(severity)
    fields = {k: v for k, v in fields.items() if not k.startswith("__")}
    body = nginx_ha_alert.payload(severity, message, **fields)
    event = dict(body["nginx_ha"], text=body["text"], time=time.time())
    try:
        _fire(f"nginx_ha/alert/{severity}", event)
    except Exception:  # pylint: disable=broad-except
        log.exception("nginx_ha_reactor: cannot fire the alert event")
    log.log(logging.CRITICAL if severity == "critical" else logging.WARNING if severity == "warning" else logging.INFO, "nginx_ha alert [%s] %s", severity, message)
    webhook = _config()["webhook"]
    result = {"severity": severity, "message": message, "webhook": None}
    if webhook.get("url"):
        result["webhook"] = nginx_ha_alert.post(
            webhook["url"], body, timeout=float(webhook.get("timeout", 2)), retries=int(webhook.get("retries", 3)), backoff=float(webhook.get("backoff", 0.5))
        )
        if not result["webhook"]["ok"]:
            log.error("nginx_ha_reactor: webhook delivery failed after %s attempts: %s", result["webhook"]["attempts"], result["webhook"]["error"])
    return result


def _subject(fields):
    """Whom an alert is about, for the rate limit: the node, else the instance, else the check."""
    return str(fields.get("node") or fields.get("instance") or fields.get("check") or "nginx_ha")


def _suppressed(subject, slot):
    return (
        "warning",
        f"{slot['suppressed']} more alert(s) about {subject} were suppressed by the rate limit ({slot['sent']} sent since "
        f"{datetime.datetime.fromtimestamp(slot['start'], datetime.timezone.utc).strftime('%H:%M:%S')} UTC); the last: {slot['last']}",
        {"check": "rate-limit", "subject": subject, "suppressed": slot["suppressed"]},
    )


def _gate(state, cfg, severity, message, fields, now):
    """
    Deduplicate and rate-limit one alert. Returns the alerts to send now: none, this one, and/or
    the summary of a rate-limit window that has ended.
    """
    conf = cfg["alerts"]
    dedupe, limit, window = float(conf["dedupe"]), int(conf["limit"]), float(conf["window"])
    book = state["alerts"]
    recent = book.setdefault("recent", {})
    for key in [k for k, sent in recent.items() if now - sent["time"] >= dedupe]:
        del recent[key]
    key = f"{severity}|{message}"
    if key in recent:
        book["deduplicated"] = book.get("deduplicated", 0) + 1
        log.info("nginx_ha_reactor: alert sent %.0fs ago, not repeated: [%s] %s", now - recent[key]["time"], severity, message)
        return []
    out = []
    subject = _subject(fields)
    limits = book.setdefault("limits", {})
    slot = limits.get(subject)
    if slot is None or now - slot["start"] >= window:
        if slot and slot["suppressed"]:
            out.append(_suppressed(subject, slot))
        slot = limits[subject] = {"start": now, "sent": 0, "suppressed": 0, "last": None}
    if slot["sent"] >= limit and severity != "critical":
        slot["suppressed"] += 1
        slot["last"] = f"[{severity}] {message}"[:300]
        log.warning("nginx_ha_reactor: rate limit for %s: not sent: [%s] %s", subject, severity, message)
        return out
    slot["sent"] += 1
    recent[key] = {"time": now, "subject": subject}
    out.append((severity, message, fields))
    return out


def _send(alerts):
    for severity, message, fields in alerts:
        try:
            alert(severity, message, **fields)
        except Exception:  # pylint: disable=broad-except
            log.exception("nginx_ha_reactor: cannot send the alert [%s] %s", severity, message)


def _alert(cfg, severity, message, **fields):
    """The reactor's alerts: through :py:func:`_gate`; True when this alert went out."""
    if cfg.get("quiet"):  # another master claimed the event: it alerts
        log.info("nginx_ha_reactor: alert left to the master that claimed the event: [%s] %s", severity, message)
        return False
    try:
        with _state(cfg) as state:
            out = _gate(state, cfg, severity, message, fields, time.time())
    except Exception:  # pylint: disable=broad-except
        log.exception("nginx_ha_reactor: alert bookkeeping failed; sending the alert anyway")
        out = [(severity, message, fields)]
    _send(out)
    return any(m == message for _, m, _ in out)


def _backlog_summary(state, entries):
    """One alert for the late events of ``entries`` ({node: backlog entry})."""
    parts, detail, severity, total = [], {}, "info", 0
    for node, entry in sorted(entries.items()):
        total += entry["count"]
        per = {}
        for instance, vrrp_state, _ in entry["events"]:
            per.setdefault(instance, []).append(vrrp_state)
        texts = []
        detail[node] = {}
        for instance, seen in sorted(per.items()):
            final = ((state["nodes"].get(node) or {}).get(instance) or {}).get("state") or seen[-1]
            if final in ("FAULT", "STOP"):
                severity = "warning"
            detail[node][instance] = {"transitions": seen, "now": final}
            shown = ">".join(seen[-8:])
            texts.append(f"{instance} {'...>' if len(seen) > 8 else ''}{shown} (now {final})")
        more = f" [{entry['count']} events, first: {entry['reason']}]"
        parts.append(f"{node}: {', '.join(texts)}{more}")
    owners = {name: (owner or {}).get("node") for name, owner in sorted(state["owners"].items())}
    message = (
        f"{total} late VRRP event(s) (delivered after a master outage, or in a burst) summarized: "
        + "; ".join(parts)
        + (f"; owners now: {', '.join(f'{k} {v}' for k, v in owners.items())}" if owners else "")
    )
    return severity, message, {"check": "backlog", "backlog": detail, "owners": owners}


def _housekeeping(state, cfg, now, flush=()):
    """
    Alerts that are due: the summary of late events of nodes that went quiet (or are in
    ``flush``), rate-limit windows that ended with suppressed alerts, and nodes whose
    in-progress mark expired (the worker died: its FAULT may be unhandled).
    """
    out = []
    quiet = float(cfg["backlog"]["quiet"])
    due = {node: entry for node, entry in state["backlog"].items() if node in flush or now - entry.get("last", 0) >= quiet}
    if due:
        out.append(_backlog_summary(state, due))
        for node in due:
            del state["backlog"][node]
    window = float(cfg["alerts"]["window"])
    limits = state["alerts"].get("limits") or {}
    for subject, slot in list(limits.items()):
        if now - slot["start"] >= window:
            if slot["suppressed"]:
                out.append(_suppressed(subject, slot))
            del limits[subject]
    for node, mark in list(state["in_progress"].items()):
        if now >= mark["expires"]:
            del state["in_progress"][node]
            waiting = f", {mark['pending']} more FAULT(s) of it waiting" if mark.get("pending") else ""
            out.append(
                (
                    "critical",
                    f"the reactor worker healing {node} did not finish within {mark['expires'] - mark['since']:.0f}s (it died or hangs{waiting}); "
                    f"{node} may still be broken: check `salt {node} nginx_ha.health`",
                    {"node": node, "check": "reactor"},
                )
            )
    return out


# ---------------------------------------------------------------------------------------------
# Reactions
# ---------------------------------------------------------------------------------------------


def _result(event, action, ok=True, **extra):
    ret = {"result": ok, "action": action, "node": event["node"], "instance": event["instance"], "state": event["state"], "seq": event["seq"]}
    ret.update(extra)
    return ret


def _on_master(event, cfg, late):
    with _state(cfg) as state:
        previous = state["owners"].get(_owner_key(event))
        if not _is_latest(state, event):
            # a newer event of the same node was admitted first (concurrent workers): it says more
            return _result(event, "superseded", owner=previous["node"] if previous else None)
        # Events of different nodes can be handled out of order (concurrent workers): the master's
        # receive time decides who is the newer owner, never a node's clock.
        if previous and previous.get("recv") is not None and event["recv"] < previous["recv"]:
            return _result(event, "stale", owner=previous["node"])
        state["owners"][_owner_key(event)] = {"node": event["node"], "recv": event["recv"], "seq": event["seq"], "boot": event["boot"], "time": time.time()}
    old = previous["node"] if previous else None
    new = event["node"]
    if late:
        return _result(event, "late", old_owner=old, new_owner=new, late=late)
    if old and old != new:
        severity, message = "warning", f"{event['instance']}: MASTER moved from {old} to {new}"
    elif old == new:
        severity, message = "info", f"{event['instance']}: {new} is MASTER again"
    else:
        severity, message = "info", f"{event['instance']}: {new} is MASTER (no previous owner known)"
    _alert(cfg, severity, message, instance=event["instance"], old_owner=old, new_owner=new, vips=event["vips"], node=new)
    return _result(event, "owner-changed" if old != new else "owner-confirmed", old_owner=old, new_owner=new, severity=severity)


def _keep_out(event, cfg, reason, why):
    """
    Critical alert, and maintenance on the node (so it cannot become MASTER again). The node is
    marked in maintenance here only when that call succeeded. Returns ``(ok, return)``.
    """
    node = event["node"]
    ok, ret = _call(node, cfg["actions"]["maintenance"], cfg["timeout"])
    if ok:
        with _state(cfg) as state:
            state["maintenance"][node] = {"time": time.time(), "reason": why, "instance": event["instance"]}
        message = (
            f"{event['instance']}: {reason}; {node} put in maintenance; fix nginx, then "
            f"`salt {node} nginx_ha.maintenance off` and `salt-run nginx_ha_reactor.reset {node}`"
        )
    else:
        message = (
            f"{event['instance']}: {reason}; putting {node} in maintenance FAILED "
            f"({cfg['actions']['maintenance']['fun']}: {str(ret)[:200]}): {node} is NOT kept out of MASTER "
            f"and its next FAULT is handled again; fix it by hand"
        )
    _alert(cfg, "critical", message, instance=event["instance"], node=node, maintenance=ok)
    return ok, ret


def _kept_out(event, cfg, reason, why, **extra):
    ok, _ = _keep_out(event, cfg, reason, why)
    return _result(event, "maintenance" if ok else "maintenance-failed", ok=ok, reason=why, maintenance=ok, **extra)


def _restart_detail(restarted, restart_ret, health_ret, fun):
    detail = ""
    if isinstance(health_ret, dict):
        nginx_check = (health_ret.get("config") or {}).get("nginx") or {}
        if nginx_check.get("valid") is False:
            detail = f" (nginx -t: {str(nginx_check.get('output', ''))[:300]})"
        elif not (health_ret.get("nginx") or {}).get("answers", True):
            detail = f" (health endpoint: {str((health_ret.get('nginx') or {}).get('detail', ''))[:200]})"
    elif health_ret is not None and not isinstance(health_ret, bool):
        detail = f" (health check: {str(health_ret)[:200]})"
    what = "did not bring health back" if restarted else f"failed ({fun} returned {str(restart_ret)[:200]})"
    return what + detail


_HEALTH_POLL = 0.5  # seconds between health checks while waiting for a restarted node to be healthy


def _folded(cfg):
    """
    True when the restart action is ``nginx_ha.restart_nginx`` and the health action
    ``nginx_ha.health`` (the defaults): then "healthy already?", the restart and its verification
    are one minion call (``unless_healthy``, ``verify``: the module runs the same health check).
    """
    actions = cfg["actions"]
    return actions["restart"].get("fun") == "nginx_ha.restart_nginx" and actions["health"].get("fun") == "nginx_ha.health" and not (
        actions["health"].get("arg") or actions["health"].get("kwarg")
    )


def _verify(node, cfg, first=None, poll=True):
    """
    The health check after a restart: ``first`` (the health the restart call returned, when it
    did) or the health action; with ``poll`` (the restart call succeeded) the health action again
    every ``_HEALTH_POLL`` seconds while it answers unhealthy, until ``health_wait`` seconds passed
    (after the fixed ``health_delay``, 0 by default). Returns the last ``(ok, return)``.
    """
    delay = float(cfg["health_delay"])
    if first is not None and not delay and _healthy(*first):
        return first
    if delay:
        time.sleep(delay)
    deadline = time.time() + float(cfg["health_wait"])
    while True:
        health_ok, health_ret = _call(node, cfg["actions"]["health"], cfg["timeout"])
        if _healthy(health_ok, health_ret) or not health_ok or not poll or time.time() >= deadline:
            return health_ok, health_ret  # no answer at all (after its own timeout): not worth waiting on
        time.sleep(min(_HEALTH_POLL, max(0.0, deadline - time.time())))


def _heal(event, cfg, check):
    """
    One round for a FAULT of a node this worker holds: health check, restart or keep-out. With
    the default actions (:py:func:`_folded`) the check, the restart and its verification are one
    minion call: the module restarts only a node that is not healthy, and returns its health.
    """
    node = event["node"]
    limit, window = int(cfg["restart_limit"]), float(cfg["restart_window"])
    actions = cfg["actions"]
    folded = _folded(cfg)
    if check and not folded:
        # A FAULT can arrive late or be keepalived's own start-up: heal only what is still broken.
        health_ok, health_ret = _call(node, actions["health"], cfg["timeout"])
        if _healthy(health_ok, health_ret):
            return _result(event, "already-healthy", restarts_in_window=None)
    with _state(cfg) as state:
        now = time.time()
        history = [t for t in state["restarts"].get(node, []) if now - t < window]
        state["restarts"][node] = history
    used = len(history)
    if used >= limit:
        if check and folded:  # the budget is spent: ask health alone, a healthy node needs nothing
            health_ok, health_ret = _call(node, actions["health"], cfg["timeout"])
            if _healthy(health_ok, health_ret):
                return _result(event, "already-healthy", restarts_in_window=None)
        reason = f"FAULT on {node} and its restart budget is spent ({used} restarts in {window:g}s)"
        return _kept_out(event, cfg, reason, "budget-exhausted", restarts_in_window=used)

    restart = actions["restart"]
    if folded:
        restart = dict(restart, kwarg=dict(restart.get("kwarg") or {}, unless_healthy=bool(check), verify=True))
    started = time.time()
    restarted, restart_ret = _call(node, restart, cfg["timeout"])
    took = {"checks": round(event.get("checked") or 0.0, 3), "restart_call": round(time.time() - started, 3)}
    reported = restart_ret.get("health") if folded and isinstance(restart_ret, dict) else None
    if folded and restarted and isinstance(restart_ret, dict) and restart_ret.get("restarted") is False and _healthy(True, reported):
        # the module found it healthy: nothing restarted
        return _result(event, "already-healthy", restarts_in_window=None, took=took)
    with _state(cfg) as state:
        # Every attempt counts against the budget, recorded once the call returned.
        history = [t for t in state["restarts"].get(node, []) if started - t < window] + [started]
        state["restarts"][node] = history
    used = len(history)
    escalated = isinstance(restart_ret, dict) and restart_ret.get("escalated") is True
    verifying = time.time()
    # a restart that failed (or did not answer) gets one health check, the judge: no waiting for a miracle
    health_ok, health_ret = _verify(node, cfg, first=(True, reported) if restarted and isinstance(reported, dict) else None, poll=restarted)
    took["verify"] = round(time.time() - verifying, 3)
    log.info("nginx_ha_reactor: FAULT of %s: checks %.2fs, restart call %.2fs, verification %.2fs", node, took["checks"], took["restart_call"], took["verify"])
    if _healthy(health_ok, health_ret):  # the health check is the judge, also after a restart call that timed out
        how = " (a graceful restart did not finish: the nginx process tree was killed and nginx started again)" if escalated else ""
        _alert(
            cfg,
            "warning",
            f"{event['instance']}: FAULT on {node}; nginx restarted{how} and healthy again ({used}/{limit} restarts in {window:g}s)",
            instance=event["instance"],
            node=node,
            restarts_in_window=used,
            escalated=escalated,
        )
        return _result(event, "restarted", restarted=restarted, escalated=escalated, healthy=True, restarts_in_window=used, took=took)
    reason = f"FAULT on {node}; nginx restart {_restart_detail(restarted, restart_ret, health_ret, actions['restart']['fun'])}"
    return _kept_out(
        event,
        cfg,
        reason,
        "unhealthy-after-restart" if restarted else "restart-failed",
        restarted=restarted,
        escalated=escalated,
        healthy=False,
        restarts_in_window=used,
        took=took,
    )


def _take(cfg, event):
    """
    Take the node for this worker (its in-progress mark). Returns ``(token, None)``, or
    ``(None, result)`` when the FAULT needs no worker: node in maintenance, superseded by a newer
    event, or another worker is healing the node (the FAULT is then added to that worker's
    pending count, and that worker checks health again before it lets go).
    """
    node = event["node"]
    with _state(cfg) as state:
        now = time.time()
        if node in state["maintenance"]:
            return None, _result(event, "in-maintenance", since=state["maintenance"][node].get("time"))
        if not _is_latest(state, event):
            current = state["nodes"][node][event["instance"]]
            return None, _result(event, "superseded", by_state=current.get("state"), by_seq=current.get("seq"))
        mark = state["in_progress"].get(node)
        if mark and now < mark["expires"]:
            mark["pending"] = mark.get("pending", 0) + 1
            return None, _result(event, "coalesced", in_progress_since=mark["since"])
        token = uuid.uuid4().hex
        state["in_progress"][node] = {"token": token, "since": now, "expires": now + _lease(cfg), "pending": 0}
    return token, None


def _let_go(cfg, node, token, again):
    """
    Release the node, unless ``again`` and FAULTs came in meanwhile: then keep it (renewed) and
    return True, so the worker checks once more. False once released (or lost after expiry).
    """
    with _state(cfg) as state:
        mark = state["in_progress"].get(node)
        if not mark or mark["token"] != token:
            return False
        if again and mark.get("pending"):
            mark["pending"] = 0
            mark["expires"] = time.time() + _lease(cfg)
            return True
        del state["in_progress"][node]
    return False


def _on_fault(event, cfg, late):
    token, answered = _take(cfg, event)
    if token is None:
        return answered
    node = event["node"]
    check = bool(cfg["check_before_restart"]) or bool(late)
    rounds = []
    try:
        for _ in range(int(cfg["restart_limit"]) + 2):
            rounds.append(_heal(event, cfg, check))
            healthy_now = rounds[-1]["action"] in ("already-healthy", "restarted")
            if not _let_go(cfg, node, token, again=healthy_now):
                token = None
                break
            check = True  # FAULTs arrived while healing: a new failure gets a restart of its own
    finally:
        if token is not None:
            _let_go(cfg, node, token, again=False)
    # What was done: the last round, unless it only found nginx healthy again after a restart.
    ret = ([r for r in rounds if r["action"] != "already-healthy"] or rounds)[-1]
    if len(rounds) > 1:
        ret["rounds"] = [r["action"] for r in rounds]
    if late:
        ret["late"] = late
    return ret


def _on_stop(event, cfg, late):
    if late:
        return _result(event, "late", late=late)
    _alert(cfg, "warning", f"{event['instance']}: keepalived stopped on {event['node']}", instance=event["instance"], node=event["node"])
    return _result(event, "alerted")


def _on_backup(event, cfg, late):  # pylint: disable=unused-argument
    return _result(event, "late", late=late) if late else _result(event, "recorded")


# ---------------------------------------------------------------------------------------------
# Several masters: claims on the node (nginx_ha.claim), so each event is acted on once
# ---------------------------------------------------------------------------------------------


def _claims_on(cfg):
    return bool((cfg.get("multi_master") or {}).get("claims"))


def _holder(cfg):
    """This master's name in claims: ``multi_master:holder``, else the master's id."""
    return str((cfg.get("multi_master") or {}).get("holder") or __opts__.get("id") or "master")


def _claim_key(event):
    """The event's claim key on its node: ``vrrp|<instance>|<boot or ->|<seq>`` (None without a seq)."""
    if event.get("seq") is None:
        return None
    return f"vrrp|{event['instance']}|{event.get('boot') or '-'}|{event['seq']}"


def _claim_lease(cfg):
    return float((cfg.get("multi_master") or {}).get("lease") or _lease(cfg))


def _claim_event(event, cfg, late):
    """
    With ``multi_master:claims``: claim the event on its node (``nginx_ha.claim``) before acting.
    Returns None to act (claim won, or claims off, or nothing to act on), else the decision
    ``claimed-elsewhere`` (another master holds or handled it: nothing else is done here). When
    the node cannot be asked, this master acts (logged): an event is never dropped for a claim.
    """
    if not _claims_on(cfg) or event["state"] == "BACKUP" or (late and event["state"] != "FAULT"):
        return None
    key = _claim_key(event)
    if key is None:
        log.warning("nginx_ha_reactor: %s's %s event has no seq to claim; acting without a claim", event["node"], event["state"])
        return None
    info = {k: event[k] for k in ("instance", "state", "seq", "boot")}
    action = {"fun": "nginx_ha.claim", "arg": [key, _holder(cfg)], "kwarg": {"lease": _claim_lease(cfg), "info": info}}
    ok, ret = _call(event["node"], action, cfg["timeout"])
    if not ok or not isinstance(ret, dict):
        log.warning("nginx_ha_reactor: cannot claim %s on %s (%s); acting without a claim", key, event["node"], str(ret)[:200])
        return None
    if ret.get("won"):
        if ret.get("taken_over"):
            log.warning("nginx_ha_reactor: claim %s of %s had expired unfinished; taken over", key, ret["taken_over"])
        event["claim"] = key
        return None
    log.info("nginx_ha_reactor: %s is handled by %s (%s)", key, ret.get("holder"), ret.get("state"))
    return _result(event, "claimed-elsewhere", holder=ret.get("holder"), claim=ret.get("state"), expires_in=ret.get("expires_in"))


def _claim_finish(event, cfg, ret):
    """Mark the event's claim done with what was decided (a failure is logged: the lease then expires)."""
    key = event.get("claim")
    if not key:
        return
    action = {"fun": "nginx_ha.claim_done", "arg": [key, _holder(cfg)], "kwarg": {"result": str((ret or {}).get("action"))}}
    ok, answer = _call(event["node"], action, cfg["timeout"])
    if not ok or not isinstance(answer, dict) or not answer.get("done"):
        log.error("nginx_ha_reactor: cannot mark %s done on %s: %s", key, event["node"], str(answer)[:200])


def _fleet_nodes(view):
    """The nodes that answered the fleet view, sorted (where fleet claims are kept)."""
    nodes = set()
    for group in (view.get("clusters") or {}).values():
        nodes.update(group.get("nodes") or [])
    gone = set(view.get("unreachable") or []) | set(view.get("errors") or [])
    return sorted(n for n in nodes if n not in gone)


def _fleet_alerter(cfg, view):
    """
    Which master sends the fleet check's alerts: the holder of the ``fleet-alerter`` claim (lease
    ``multi_master:fleet_lease``, renewed by every check of its holder) on the first node that
    answers. When its holder stops checking (it died), the lease runs out and another master
    takes it over. With no node to ask, this master alerts (each master may then alert).
    """
    me = _holder(cfg)
    if not _claims_on(cfg):
        return {"alerts": True, "holder": me}
    lease = float(cfg["multi_master"].get("fleet_lease") or 180)
    for node in _fleet_nodes(view)[:3]:
        action = {"fun": "nginx_ha.claim", "arg": ["fleet-alerter", me], "kwarg": {"lease": lease}}
        ok, ret = _call(node, action, cfg["timeout"])
        if ok and isinstance(ret, dict):
            if ret.get("taken_over"):
                log.warning("nginx_ha_reactor: %s takes the fleet alerts over from %s (its lease ran out)", me, ret["taken_over"])
            return {"alerts": bool(ret.get("won")), "holder": ret.get("holder"), "on": node}
    log.warning("nginx_ha_reactor: no node to keep the fleet-alerter claim on; %s alerts", me)
    return {"alerts": True, "holder": me, "on": None}


def _take_over_expired(cfg, view):
    """
    Claims on the nodes whose lease ran out unfinished (the master that claimed the event died or
    hangs): take each over, say so (warning), and do what that master did not: a FAULT is
    healed (health check first); for MASTER and STOP the alert is sent. Returns what was done.
    """
    if not _claims_on(cfg):
        return []
    done = []
    for node in _fleet_nodes(view):
        ok, expired = _call(node, {"fun": "nginx_ha.claims", "kwarg": {"expired": True}}, cfg["timeout"])
        if not ok or not isinstance(expired, list):
            continue
        for old in expired:
            info = old.get("info") or {}
            if not str(old.get("key", "")).startswith("vrrp|") or info.get("state") not in ("FAULT", "MASTER", "STOP"):
                continue
            event = {"node": node, "instance": str(info.get("instance")), "state": info["state"], "seq": info.get("seq"), "boot": info.get("boot"), "vips": []}
            action = {"fun": "nginx_ha.claim", "arg": [old["key"], _holder(cfg)], "kwarg": {"lease": _claim_lease(cfg), "info": info}}
            ok, won = _call(node, action, cfg["timeout"])
            if not ok or not isinstance(won, dict) or not won.get("won"):
                continue
            event["claim"] = old["key"]
            _alert(
                cfg, "warning",
                f"{event['instance']}: master {won.get('taken_over') or old.get('holder')} claimed {node}'s {event['state']} event "
                f"(seq {event['seq']}) and did not finish (it died or hangs); {_holder(cfg)} takes it over",
                instance=event["instance"], node=node, check="claims",
            )
            try:
                if event["state"] == "FAULT":
                    ret = _heal(event, cfg, True)
                else:
                    what = "became MASTER" if event["state"] == "MASTER" else "stopped keepalived"
                    _alert(cfg, "warning", f"{event['instance']}: {node} {what} (event taken over)", instance=event["instance"], node=node)
                    ret = _result(event, "alerted")
            except Exception as exc:  # pylint: disable=broad-except
                ret = _failed(cfg, f"claim {old['key']}", {"id": node}, exc, event)
            _claim_finish(event, cfg, ret)
            done.append({"node": node, "key": old["key"], "from": old.get("holder"), "action": ret.get("action")})
    return done


def _react(event, cfg):
    now = time.time()
    with _state(cfg) as state:
        admitted, due = _admit(state, event, cfg, now)
    event["decided"] = time.time()  # admitted and recorded: the actions follow (see _timing)
    _send(due)
    corrected = admitted.get("owner_corrected")
    if corrected and not admitted["late"]:  # a late one is in the backlog summary
        old, new = corrected
        _alert(
            cfg, "info",
            f"{event['instance']}: {old} reported {event['state']} after its MASTER event; {new} is the owner (its MASTER is the newest)",
            instance=event["instance"], old_owner=old, new_owner=new, node=event["node"],
        )
    if admitted["action"]:
        if admitted["action"] == "replay":
            log.warning("nginx_ha_reactor: replay rejected: %s", admitted["reason"])
        return _result(event, admitted["action"], ok=admitted["action"] == "duplicate", reason=admitted["reason"])
    handler = {"MASTER": _on_master, "FAULT": _on_fault, "STOP": _on_stop, "BACKUP": _on_backup}[event["state"]]
    lost = _claim_event(event, cfg, admitted["late"])  # several masters: the one that claims it acts
    if lost is not None:
        if event["state"] == "MASTER":  # record the owner as the winner does; the alert is the winner's
            handler(event, dict(cfg, quiet=True), admitted["late"])
        return lost
    ret = handler(event, cfg, admitted["late"])
    _claim_finish(event, cfg, ret)
    return ret


def _failed(cfg, tag, data, exc, event=None):
    """An error while handling an event: logged, and a critical alert (never a silent loss)."""
    node = event["node"] if event else str((data or {}).get("id") if isinstance(data, dict) else None)[:128]
    log.error("nginx_ha_reactor: error handling %s from %s", tag, node, exc_info=True)
    message = (
        f"the reactor could not handle {str(tag)[:160]} from {node}: {type(exc).__name__}: {str(exc)[:300]}; "
        f"the event was NOT acted upon: check `salt {node} nginx_ha.health` and the master log"
    )
    try:
        _alert(cfg, "critical", message, node=node, check="reactor")
    except Exception:  # pylint: disable=broad-except
        log.exception("nginx_ha_reactor: cannot alert about the error")
    ret = {"result": False, "action": "error", "error": f"{type(exc).__name__}: {exc}"[:500], "tag": str(tag)[:200]}
    if event:
        ret.update(node=event["node"], instance=event["instance"], state=event["state"], seq=event["seq"])
    return ret


def _timing(event, started, now=None):
    """
    The decision's timing record, ``timing`` in :py:func:`vrrp_event`'s return (seconds, on the
    master's clock, after ``recv``: the master's receive time of the event, its ``_stamp``):
    ``start`` the runner began, ``decided`` the event admitted and recorded (its first action
    follows), ``done`` the runner returned. bench/scale.py reads it from the job returns.
    """
    now = time.time() if now is None else now
    recv = event["recv"]

    def after(t):
        return None if t is None else round(t - recv, 4)

    return {"recv": recv, "start": after(started), "decided": after(event.get("decided")), "done": after(now)}


def vrrp_event(tag, data, **kwargs):  # pylint: disable=unused-argument
    """
    React to one ``nginx_ha/vrrp/<instance>/<state>`` event (called by ``reactor/vrrp.sls`` with
    the event's ``tag`` and ``data``). Returns what was decided: ``{result, action, node,
    instance, state, ...}``; ``action`` is ``rejected`` (with ``reason``) for an event that is not
    acted upon, ``duplicate`` or ``replay`` for a repeated or older event, ``late`` for a late
    event that was only recorded, ``error`` (after a critical alert) when handling failed.

    CLI Example:

    .. code-block:: bash

        salt-run nginx_ha_reactor.vrrp_event tag=nginx_ha/vrrp/VI_web/master data='{...}'
    """
    cfg = _config()
    event = None
    started = time.time()
    try:
        event = parse_event(tag, data, require_signature=bool(cfg["require_signature"]))
        pillar, _ = _membership(event["node"], event["instance"])
        event["cluster"], event["members"] = cluster_scope(pillar, event["node"], event["instance"])
        event["checked"] = time.time() - started  # sender, signature, membership: before anything is acted on
        ret = _react(event, cfg)
        ret["timing"] = _timing(event, started)
        return ret
    except Rejected as exc:
        log.warning("nginx_ha_reactor: ignoring %s: %s", tag, exc)
        ret = {"result": False, "action": "rejected", "reason": str(exc), "tag": str(tag)[:200]}
        if event:  # parsed (signature and sender verified): who sent what, for whoever counts decisions
            ret.update(node=event["node"], instance=event["instance"], state=event["state"], seq=event["seq"])
            ret["timing"] = _timing(event, started)
        return ret
    except Exception as exc:  # pylint: disable=broad-except
        return _failed(cfg, tag, data, exc, event)


# ---------------------------------------------------------------------------------------------
# Fleet check, state
# ---------------------------------------------------------------------------------------------

_WARNING_KINDS = ("NO-ANSWER", "NO-ROLE", "ERROR", "MAINTENANCE")


def _fleet_view(tgt, tgt_type, timeout):
    try:
        return __salt__["nginx_ha.status"](tgt=tgt, tgt_type=tgt_type, timeout=timeout)
    except Exception as exc:  # pylint: disable=broad-except
        log.error("nginx_ha_reactor: nginx_ha.status failed", exc_info=True)
        problem = f"FLEET-CHECK-FAILED: nginx_ha.status raised {type(exc).__name__}: {str(exc)[:200]}"
        return {"problems": [problem], "problem_info": {problem: {"kind": "FLEET-CHECK-FAILED", "severity": "critical"}}}


def _router_ids(tgt, tgt_type, timeout):
    """The problems of ``nginx_ha.check_router_ids`` (router ids or cluster names reused across
    clusters), as ``(problems, problem_info)``; its own failure is one critical problem."""
    if "nginx_ha.check_router_ids" not in __salt__:
        # it ships in the same runner file as nginx_ha.status: absent only beside an older copy of it
        log.warning("nginx_ha_reactor: no nginx_ha.check_router_ids runner here (an older _runners/nginx_ha.py?); router ids not checked")
        return [], {}
    try:
        ret = __salt__["nginx_ha.check_router_ids"](tgt=tgt, tgt_type=tgt_type, timeout=timeout)
    except Exception as exc:  # pylint: disable=broad-except
        log.error("nginx_ha_reactor: nginx_ha.check_router_ids failed", exc_info=True)
        problem = f"ROUTER-ID-CHECK-FAILED: nginx_ha.check_router_ids raised {type(exc).__name__}: {str(exc)[:200]}"
        return [problem], {problem: {"kind": "ROUTER-ID-CHECK-FAILED", "severity": "critical"}}
    return list(ret.get("problems") or []), dict(ret.get("problem_info") or {})


def check_fleet(tgt="I@nginx_ha:vrrp_instances", tgt_type="compound", timeout=5):
    """
    Run ``nginx_ha.status`` (the fleet view) and alert on each of its problems:

    * critical: SPLIT-BRAIN, NO-OWNER, NO-NODES (the target matched no minion: nothing is
      watched), FLEET-CHECK-FAILED (the fleet view itself failed); FAULT and UNHEALTHY when the
      node's instance is left without a healthy standby (fewer than two of its nodes are
      answering, healthy, MASTER or BACKUP and not in maintenance);
    * warning: FAULT and UNHEALTHY otherwise, MAINTENANCE, NO-ROLE (a minion with the pillar but
      no role in any instance), ERROR (a minion answered with an error), NO-ANSWER (a minion did
      not answer at all).
    * from ``nginx_ha.check_router_ids`` (several clusters on one master), critical:
      ROUTER-ID-CONFLICT (one virtual_router_id used by two clusters on one network and address
      family), CLUSTER-NAME-REUSED (one ``nginx_ha:cluster`` name for two clusters); warning:
      PILLAR-ERROR.

    The fleet view judges owners, SPLIT-BRAIN, NO-OWNER and standbys per cluster.

    An unchanged problem is repeated at most every ``fleet:realert`` seconds, and its end is
    announced (info). Also sends what is due from the reactor: summaries of late events, of
    rate-limited alerts, and a critical alert for a node whose healing worker died. ``salt-run``
    exits 1 while there is a problem. Schedule it on the master::

        schedule:
          nginx_ha_fleet_check:
            function: nginx_ha_reactor.check_fleet
            seconds: 60

    CLI Example:

    .. code-block:: bash

        salt-run nginx_ha_reactor.check_fleet
        salt-run nginx_ha_reactor.check_fleet tgt='web-*' tgt_type=glob
    """
    cfg = _config()
    view = _fleet_view(tgt, tgt_type, timeout)
    problems = list(view.get("problems") or [])
    info = dict(view.get("problem_info") or {})
    id_problems, id_info = _router_ids(tgt, tgt_type, timeout)
    problems += [p for p in id_problems if p not in problems]
    info.update(id_info)
    now = time.time()
    realert = float(cfg["fleet"].get("realert", 600))
    to_alert, resolved = [], []
    with _state(cfg) as state:
        due = _housekeeping(state, cfg, now)
        known = state["fleet"]
        for problem in problems:
            entry = known.setdefault(problem, {"first": now, "alerted": None})
            if entry["alerted"] is None or now - entry["alerted"] >= realert:
                entry["alerted"] = now
                to_alert.append(problem)
        for problem in [p for p in known if p not in problems]:
            resolved.append(problem)
            del known[problem]
    _send(due)
    alerter = _fleet_alerter(cfg, view)  # several masters: one alerts, the others only record
    taken = _take_over_expired(cfg, view)
    if not alerter["alerts"]:
        to_alert, resolved = [], []
    for problem in to_alert:
        details = info.get(problem) or {}
        kind = details.get("kind") or problem.split(":", 1)[0]
        severity = details.get("severity") or ("warning" if kind in _WARNING_KINDS else "critical")
        where = {k: details[k] for k in ("node", "instance", "cluster") if details.get(k)}
        _alert(cfg, severity, problem, check="fleet", problem=kind, **where)
    for problem in resolved:
        _alert(cfg, "info", f"resolved: {problem}", check="fleet", problem=problem.split(":", 1)[0])
    if problems:
        __context__["retcode"] = 1  # the job's success flag
    # salt-run takes its exit code from a "retcode" key of the return (Salt 3008).
    ret = {"ok": not problems, "problems": problems, "alerted": to_alert, "resolved": resolved, "retcode": 1 if problems else 0}
    if _claims_on(cfg):
        ret.update(alerter=alerter, taken_over=taken)
    return ret


def show_state():
    """
    Show what the reactor remembers: restarts per node in the window, owners, nodes it put in
    maintenance, nodes being healed, boots and last sequence numbers, last state per node and
    instance, late events not yet summarized, open fleet problems.

    CLI Example:

    .. code-block:: bash

        salt-run nginx_ha_reactor.show_state
    """
    cfg = _config()
    with _state(cfg) as state:
        return {k: v for k, v in state.items() if k not in ("seen", "clocks", "alerts")}


def reset(node):
    """
    Forget ``node``'s restart history, maintenance mark and in-progress mark (after nginx is
    fixed and ``nginx_ha.maintenance off`` was run there), so FAULTs are handled again; its alerts
    are no longer deduplicated against those sent before.

    CLI Example:

    .. code-block:: bash

        salt-run nginx_ha_reactor.reset web-a
    """
    cfg = _config()
    with _state(cfg) as state:
        had = {
            "restarts": state["restarts"].pop(node, []),
            "maintenance": state["maintenance"].pop(node, None),
            "in_progress": state["in_progress"].pop(node, None),
        }
        recent = state["alerts"].get("recent") or {}
        for key in [k for k, sent in recent.items() if sent.get("subject") == node]:
            del recent[key]
    return {"node": node, "forgotten": had}
