"""
The events phase of `make bench`: VRRP transition -> event on the master's bus, for each delivery
path, and the reactor's heal time. Runs on our profile after the failover trials.

Set-up: our pillar with ``events:notify_script: true`` as well (both delivery paths report the
same transitions: the ``nginx_ha_events`` engine reading keepalived's notify FIFO, the default;
and the notify script running ``salt-call event.send``), applied on both nodes; the salt-master
restarted with the shipped reactor (``conf/master.d/nginx_ha_reactor.conf``: reactor/vrrp.sls ->
nginx_ha_reactor runner, default budget and health delay, no webhook) and the lab's bus recorder.

Each trial: from the steady state (web-a MASTER, both healthy, the reactor idle and reset),
SIGKILL nginx on web-a and nothing else: the watcher puts web-a in FAULT, web-b takes the VIP, the
reactor restarts nginx on web-a, web-a becomes MASTER again. A poller on the client requests
web-a's own address (not the VIP) every 20 ms.

* **transition -> master bus**: the transition's time is keepalived's own log line ``(VI_web)
  Entering <STATE> STATE`` as the host's syslog received it (the lab stamps syslog lines with
  microseconds; keepalived logs before it writes the FIFO or runs the notify script); the
  event's time is the master's ``_stamp`` when the event was on its bus. Every transition of
  both nodes in the phase is matched to the first event of the same node and state on each path.
* **reactor heal**: SIGKILL -> first answer of web-a's nginx (restarted by the reactor); also
  SIGKILL -> web-a in FAULT and -> web-a MASTER again, from the same log lines.
"""

import os
import re
import time

import yaml

from lab import bus as lab_bus
from lab.common import wait_for

from . import profiles, stats
from .report import duration
from .runner import Poller

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTANCE = "VI_web"
REACTOR_FUN = "runner.nginx_ha_reactor.vrrp_event"
PATHS = ("engine", "notify_script")
PATH_TEXT = {"engine": "engine (notify FIFO, default)", "notify_script": "notify script (salt-call event.send)"}
HEAL_TIMEOUT = 45.0
# keepalived's transition lines, as the lab's syslog writes them (lab.init._syslog_line)
_ENTERING = re.compile(r"^(?P<stamp>\d{4}-\d\d-\d\dT\S+) \S*[Kk]eepalived\S*: \((?P<instance>[^)]+)\) "
                       r"Entering (?P<state>MASTER|BACKUP|FAULT) STATE")


# ---------------------------------------------------------------------------------------------
# Pure parts (unit-tested): transitions from syslog, events by path, matching
# ---------------------------------------------------------------------------------------------


def transitions(syslog_text, instance=INSTANCE, after=0.0):
    """keepalived's transitions of ``instance`` in a lab syslog: [(epoch seconds, STATE)] in order."""
    out = []
    for line in syslog_text.splitlines():
        m = _ENTERING.match(line)
        if not m or m["instance"] != instance:
            continue
        t = lab_bus.epoch(m["stamp"])
        if t is not None and t >= after:
            out.append((t, m["state"]))
    return out


def path_of(event):
    """Which delivery path sent a VRRP event: "engine" (signed, sequenced), "notify_script", or None."""
    payload = event["data"].get("data")
    if not isinstance(payload, dict):
        return None
    if payload.get("source") == "notify_script":
        return "notify_script"
    if payload.get("sig") and payload.get("seq") is not None:
        return "engine"
    return None


def match(node_transitions, node_events):
    """
    Latency of each transition of one node on one path: for each (t, STATE), the first unused event
    of that state stamped after t (less 50 ms for the syslog reader's own delay) and before the
    node's next transition into the same state. Returns [(t, STATE, latency or None)].
    """
    used = set()
    out = []
    for i, (t, state) in enumerate(node_transitions):
        nxt = next((t2 for t2, s2 in node_transitions[i + 1:] if s2 == state), float("inf"))
        latency = None
        for j, (stamp, s) in enumerate(node_events):
            if j in used or s != state or stamp < t - 0.05 or stamp >= nxt:
                continue
            used.add(j)
            latency = stamp - t
            break
        out.append((t, state, latency))
    return out


def latencies(per_node_transitions, bus_events):
    """{path: [(node, t, STATE, latency or None)]} over every node's transitions."""
    out = {p: [] for p in PATHS}
    for node, trans in per_node_transitions.items():
        for path in PATHS:
            evs = [(e["stamp"], str(e["data"]["data"].get("state", "")).upper()) for e in bus_events
                   if e["data"].get("id") == node and path_of(e) == path]
            out[path].extend((node, t, s, lat) for t, s, lat in match(trans, evs))
    return out


def summarize_paths(matched):
    """{path: {n, missing, median, p95, max, by_state}} (seconds)."""
    out = {}
    for path, rows in matched.items():
        values = [lat for _, _, _, lat in rows if lat is not None]
        s = stats.summarize(values)
        s["transitions"] = len(rows)
        s["missing"] = sum(1 for row in rows if row[3] is None)
        s["by_state"] = {state: stats.summarize([lat for _, _, st, lat in rows if st == state and lat is not None])
                         for state in sorted({row[2] for row in rows})}
        s["what"] = PATH_TEXT[path]
        out[path] = s
    return out


_LINE = re.compile(r"^(?P<stamp>\d{4}-\d\d-\d\dT\S+) (?P<text>.*)$")
# what else of the heal the node's syslog shows: the watcher's flips, keepalived's check script
_NODE_STEPS = (
    ("watcher_unhealthy", re.compile(r"nginx_ha_watch\S*: nginx unhealthy")),
    ("watcher_healthy", re.compile(r"nginx_ha_watch\S*: nginx healthy again")),
    ("script_failed", re.compile(r"VRRP_Script\(\S+\) failed")),
    ("script_ok", re.compile(r"VRRP_Script\(\S+\) succeeded")),
)


def heal_steps(t_fault, syslog_text, bus_events, node):
    """
    Where the heal's time goes, seconds after the SIGKILL (first occurrence of each step, None when
    absent): from ``node``'s syslog the watcher's flips and keepalived's check script results; from
    the master's bus (``salt/job/*``, ``salt/run/*``, ``nginx_ha/vrrp/*``) the FAULT event, the
    reactor's runner start and return, and each minion job on ``node`` (``jobs``: [fun, published,
    returned]).
    """
    out = {name: None for name, _ in _NODE_STEPS}
    for line in syslog_text.splitlines():
        m = _LINE.match(line)
        t = lab_bus.epoch(m["stamp"]) if m else None
        if t is None or t < t_fault:
            continue
        for name, rx in _NODE_STEPS:
            if out[name] is None and rx.search(m["text"]):
                out[name] = round(t - t_fault, 4)
    out.update(fault_on_bus=None, reactor_start=None, reactor_done=None)
    jobs, rets = {}, {}
    for e in sorted(bus_events, key=lambda e: e["stamp"]):
        tag, data, t = e["tag"], e["data"], round(e["stamp"] - t_fault, 4)
        if t < 0:
            continue
        if tag.startswith("nginx_ha/vrrp/") and tag.endswith("/fault") and data.get("id") == node and path_of(e) == "engine":
            out["fault_on_bus"] = t if out["fault_on_bus"] is None else out["fault_on_bus"]
        elif tag.startswith("salt/run/") and data.get("fun") == REACTOR_FUN:
            if tag.endswith("/new") and out["reactor_start"] is None:
                out["reactor_start"] = t
            elif tag.endswith("/ret") and (data.get("return") or {}).get("state") == "FAULT" and out["reactor_done"] is None:
                out["reactor_done"] = t
                out["reactor_took"] = data["return"].get("took")  # its own phases: checks, restart call, verification
        elif tag.startswith("salt/job/") and tag.endswith("/new") and node in (data.get("minions") or []):
            jobs[data.get("jid")] = [data.get("fun"), t, None]
        elif tag.startswith("salt/job/") and tag.endswith("/ret/" + node):
            rets.setdefault(data.get("jid"), t)
    out["jobs"] = [[fun, new, rets.get(jid)] for jid, (fun, new, _) in jobs.items()
                   if not str(fun).startswith(("saltutil.", "test.", "state.", "nginx_ha.vip_status"))]
    return out


def heal_trial_times(t_fault, node_transitions, first_answer):
    """SIGKILL -> FAULT, -> nginx answering again, -> MASTER again (seconds or None) for web-a."""
    fault = next((t for t, s in node_transitions if t >= t_fault and s == "FAULT"), None)
    master = next((t for t, s in node_transitions if fault is not None and t > fault and s == "MASTER"), None)
    return {
        "fault": None if fault is None else fault - t_fault,
        "nginx_back": None if first_answer is None else first_answer - t_fault,
        "master_again": None if master is None else master - t_fault,
    }


# ---------------------------------------------------------------------------------------------
# The phase on the lab
# ---------------------------------------------------------------------------------------------


def reactor_config():
    """The shipped reactor configuration (conf/master.d/nginx_ha_reactor.conf) for the lab: repo paths, no webhook."""
    with open(os.path.join(REPO, "conf", "master.d", "nginx_ha_reactor.conf")) as fh:
        shipped = yaml.safe_load(fh)
    cfg = dict(shipped["nginx_ha_reactor"])
    cfg["webhook"] = dict(cfg.get("webhook") or {}, url=None)
    return {
        "runner_dirs": [os.path.join(REPO, "_runners")],
        "reactor": [{"nginx_ha/vrrp/*": [os.path.join(REPO, "reactor", "vrrp.sls")]}],
        "nginx_ha_reactor": cfg,
        **lab_bus.recorder(["nginx_ha/*", "salt/run/*/ret", "salt/run/*/new", "salt/job/*"]),
    }


def syslog_transitions(lab, after):
    return {node: transitions(lab.host(node).read_file("/var/log/syslog", missing_ok=True) or "", after=after)
            for node in profiles.NODES}


def reactor_returns(lab, after):
    """The reactor's decisions (returns of nginx_ha_reactor.vrrp_event) since ``after``, as bus events."""
    return lab_bus.events(lab, "salt/run/*/ret", after, where=lambda e: e["data"].get("fun") == REACTOR_FUN
                          and isinstance(e["data"].get("return"), dict))


def reactor_idle(lab, after, quiet=2.0):
    """Every engine event since ``after`` has its reactor decision, and none came for ``quiet`` s."""
    events = [e for e in lab_bus.events(lab, "nginx_ha/vrrp/*", after) if path_of(e) == "engine"]
    # decisions on engine events carry its seq; the notify script's (unsigned) ones are rejected without
    decided = [e for e in reactor_returns(lab, after) if e["data"]["return"].get("seq") is not None]
    last = max([e["stamp"] for e in events + decided] or [0.0])
    return len(decided) >= len(events) and time.time() - last >= quiet


def _wait(check, timeout, what):
    if not wait_for(check, timeout, 0.3):
        raise RuntimeError(f"events phase: {what} not within {timeout:.0f}s")


def setup(bench, lab, restart_cmd, extra):
    """Both delivery paths on both nodes, the reactor and the bus recorder on the master."""
    events = {"events": {"notify_script": True, "salt_call": lab.salt_call}}
    pillar = profiles.ours_pillar(1, restart_cmd, profiles.merge(extra, events))
    profiles.write_pillar(lab.pillar_dir, pillar)
    for node in profiles.NODES:
        lab.salt(node, "saltutil.refresh_pillar", "wait=True", timeout=60)
    for node in (profiles.BACKUP, profiles.MASTER):
        res = profiles.apply(lab, node)
        if res["failed"]:
            raise RuntimeError(f"state.apply nginx_ha (notify script on) failed on {node}: {res['failed']}")
    t0 = time.monotonic()
    lab.restart_master(reactor_config())
    bench.say(f"events: notify script on, salt-master restarted with the reactor and the bus recorder "
              f"({time.monotonic() - t0:.1f} s)")


def heal_trial(bench, lab, k):
    web_a = lab.host(profiles.MASTER)
    bench.steady("ours")
    since = time.time() - 600
    _wait(lambda: reactor_idle(lab, since), 90, "the reactor idle")
    code, ret = lab.salt_run("nginx_ha_reactor.reset", profiles.MASTER, timeout=60)
    if code != 0:
        raise RuntimeError(f"nginx_ha_reactor.reset failed: {ret}")
    poller = Poller(lab, f"events-heal-{k}", url=f"http://{web_a.addr('svc')}/")
    try:
        if not bench.wait_streak(poller, profiles.MASTER, 0.5, time.time(), 15):
            raise RuntimeError("events phase: the client does not get web-a's own page")
        t_fault = time.time()
        web_a.run("pkill -KILL -x nginx", timeout=30)
        healed = bench.wait_streak(poller, profiles.MASTER, 1.0, t_fault, HEAL_TIMEOUT)
        _wait(lambda: bench.vip_only_on_master(), 30, "the VIP back on web-a alone")
    finally:
        samples = poller.stop()
    outage = stats.outage(samples, t_fault)  # web-a's own address: from the kill to its nginx answering again
    first = t_fault + outage.seconds if healed and outage.recovered else None
    trans = syslog_transitions(lab, t_fault)
    times = heal_trial_times(t_fault, trans[profiles.MASTER], first)
    # the FAULT's decision returns only after the restart and the health delay: wait for all of them
    _wait(lambda: reactor_idle(lab, t_fault), 60, "the reactor's decisions on this trial")
    decisions = [e["data"]["return"].get("action") for e in reactor_returns(lab, t_fault)
                 if e["data"]["return"].get("node") == profiles.MASTER]
    syslog = web_a.read_file("/var/log/syslog", missing_ok=True) or ""
    steps = heal_steps(t_fault, syslog, lab_bus.events(lab, "*", t_fault), profiles.MASTER)
    return dict(trial=k, t_fault=t_fault, healed=bool(healed), reactor_actions=decisions, steps=steps, **times)


def _steps_text(steps):
    named = [f"{k} {v:.2f}" for k, v in steps.items() if k not in ("jobs", "reactor_took") and v is not None]
    jobs = [f"{fun} {new:.2f}->{'-' if ret is None else f'{ret:.2f}'}" for fun, new, ret in steps.get("jobs") or []]
    took = [f"reactor took {steps['reactor_took']}"] if steps.get("reactor_took") else []
    return ", ".join(sorted(named, key=lambda x: float(x.rsplit(' ', 1)[1])) + jobs + took)


def run(bench, lab, trials, restart_cmd=None, extra=None):
    """The events phase; returns the results.json slot (``report.EVENT_SLOT``)."""
    setup(bench, lab, restart_cmd, extra)
    t_start = time.time()
    heals = []
    for k in range(1, trials + 1):
        if bench.over_budget():
            bench.say(f"events: heal trial {k}/{trials} skipped (time budget spent)")
            continue
        t0 = time.monotonic()
        trial = heal_trial(bench, lab, k)
        heals.append(trial)
        bench.say(f"events: heal trial {k}/{trials}: web-a FAULT {duration(trial['fault'])}, nginx answering again "
                  f"{duration(trial['nginx_back'])}, MASTER again {duration(trial['master_again'])} after the SIGKILL; "
                  f"reactor: {', '.join(trial['reactor_actions']) or '-'}  [{time.monotonic() - t0:.1f}s]")
        bench.say(f"events: heal trial {k} steps (s after the SIGKILL): {_steps_text(trial['steps'])}")
    _wait(lambda: reactor_idle(lab, t_start), 60, "the reactor idle after the trials")
    trans = syslog_transitions(lab, t_start)
    bus_events = lab_bus.events(lab, "nginx_ha/vrrp/*", t_start)
    matched = latencies(trans, bus_events)
    paths = summarize_paths(matched)
    for path in PATHS:
        p = paths[path]
        bench.say(f"events: transition -> master bus, {p['what']}: median {duration(p['median'])}, p95 {duration(p['p95'])}, "
                  f"max {duration(p['max'])} over {p['n']} transitions ({p['missing']} without an event)")
    engine = paths["engine"]
    return {
        "n": engine["n"], "median": engine["median"], "p95": engine["p95"], "max": engine["max"],  # the default path
        "paths": paths,
        "reactor_heal": {
            "trials": len(heals),
            "healed": sum(1 for h in heals if h["healed"]),
            "fault": stats.summarize([h["fault"] for h in heals]),
            "nginx_back": stats.summarize([h["nginx_back"] for h in heals]),
            "master_again": stats.summarize([h["master_again"] for h in heals]),
            "reactor_config": reactor_config()["nginx_ha_reactor"],
        },
        "heal_trials": heals,
        "transitions": {path: [[node, round(t - t_start, 4), s, None if lat is None else round(lat, 6)]
                               for node, t, s, lat in rows] for path, rows in matched.items()},
    }

