"""
Control-plane scale (issue 12): the fleet view and the reactor with up to 20 minions (10 pairs) on one
master, in one lab.

    .venv/bin/python -m bench.scale                 # the table; bench-results/scale.json
    .venv/bin/python -m bench.scale --sizes 2,6     # a smaller run

The lab: ``max(sizes)`` minions ``web-01`` ... ``web-20``, one salt-master (the lab's 3 worker
threads), no client host. Pair k (``web-<2k-1>`` MASTER, ``web-<2k>`` BACKUP) is a cluster of its own
(``nginx_ha:cluster: pair<k>``, one pillar file per pair, matched by a list in top.sls) with its own
VRRP instance ``VI_pair<k>``, router id 100+k and VIP 203.0.113.(100+k) on the service network (the
hosts are .11-.30). The formula's defaults otherwise (``pkg_refresh: false``, the lab's minion
restart command), except the nodes' own check timing (:data:`NODE_SETTINGS`: 20 nodes share the
lab machine's cores). The master runs the shipped reactor (``conf/master.d/nginx_ha_reactor.conf``:
restart budget 3 per 300 s per node, alerts deduplicated for 300 s and at most 10 per node per 300 s;
no fleet-check schedule) with its webhook pointed at a receiver on the master host
(:func:`serve_hook`, ``python -m bench.scale --hook``), and the lab's bus recorder.

What is measured:

* **fleet view**: wall time of ``salt-run nginx_ha.status tgt=<the first n minions> tgt_type=list``
  (what an operator waits for, salt-run's own start included) for each size n, ``reps`` times; for
  the attribution, the same size's two rounds the runner makes, as ``salt -L`` calls
  (``nginx_ha.vip_status``, ``nginx_ha.health``), ``salt-run test.arg`` (salt-run's fixed cost) and
  ``salt-run nginx_ha.check_router_ids`` (the other half of the scheduled ``check_fleet``, one
  ``pillar.show_pillar`` per minion); at the largest size also the default target
  (``I@nginx_ha:vrrp_instances``).
* **reactor decision time**: a kill round per size, nginx SIGKILLed on the first n minions at once;
  every ``nginx_ha_reactor.vrrp_event`` return carries ``timing`` (seconds after the event's
  receive time on the master, its ``_stamp``): ``start`` (the runner began: the reactor's queue),
  ``decided`` (the event admitted and recorded: its first action follows) and ``done``. Also the
  time until the fleet view of those n minions is OK again. The reactor's memory of the round's
  nodes (restart budget) is reset afterwards (``nginx_ha_reactor.reset``).
* **event storm**: every node flaps: its nginx is SIGKILLed, and again as soon as keepalived has
  left FAULT after the reactor's restart, ``flaps`` times (default: the restart budget, 3); then one
  more kill on every node (over the budget). Restarts are counted on the nodes (each node's nginx
  master PID, sampled every 0.25 s: a new PID is a start), alerts at the webhook (and the reactor's
  rate-limit / dedupe counters in its state file), the time until the fleet view is OK again after
  the last flap, and for the over-budget kill the time until every node is decided (kept out).
"""

import argparse
import concurrent.futures
import datetime
import http.server
import json
import math
import os
import sys
import threading
import time

import yaml

from lab import bus as lab_bus
from lab.common import wait_for

from . import stats
from .report import duration

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = (2, 6, 10, 20)
REACTOR_FUN = "runner.nginx_ha_reactor.vrrp_event"
HOOK_PORT = 8765
HOOK_LOG = "/var/log/salt/nginx_ha_scale_hook.jsonl"  # in the master host
PID_LOG = "/var/log/nginx_ha_scale_pids.log"  # in each node: "<epoch> <nginx master pid>" per new PID
FLAP_LOG = "/var/log/nginx_ha_scale_flaps.log"  # in each node: "<epoch> kill|back|up|timeout ..."
STATE_FILE = "/var/cache/salt/master/nginx_ha_reactor/state.json"  # the reactor's, in the master host
FIRST = 100  # pair k: router id FIRST + k, VIP 203.0.113.(FIRST + k)
# The nodes' own checks, relaxed for 20 nodes sharing the lab machine's 2 cores: with the defaults
# (keepalived's check, a python3 start every second with a 1 s timeout; the watcher probing nginx
# every 50 ms with a 100 ms timeout; adverts every 100 ms) 20 nodes load 2 cores so much (load 20-70)
# that checks time out, nodes go FAULT on their own, and every transition is one more reactor run:
# the fleet never settles (measured in the first run). A real node has its own CPU; what this phase
# measures is the master's side.
NODE_SETTINGS = {
    "instance_defaults": {"advert_int": 1},
    "check": {"interval": 3, "timeout": 3, "watcher": {"interval": 0.5, "timeout": 1}},
}
DECIDED = ("restarted", "already-healthy", "coalesced", "maintenance", "maintenance-failed", "in-maintenance")


# ---------------------------------------------------------------------------------------------
# Pure parts (unit-tested): names, pillar, growth, summaries, the table
# ---------------------------------------------------------------------------------------------


def names(count):
    """The lab's minions: web-01 ... (an even count: pairs)."""
    if count < 2 or count % 2:
        raise ValueError(f"{count} minions: an even number, at least 2 (pairs)")
    return [f"web-{i:02d}" for i in range(1, count + 1)]


def pairs(nodes):
    """[(k, MASTER node, BACKUP node)] for k = 1, 2, ..."""
    return [(i // 2 + 1, nodes[i], nodes[i + 1]) for i in range(0, len(nodes) - 1, 2)]


def pair_pillar(k, master, backup, restart_cmd=None):
    """Pair k's nginx_ha pillar: cluster pair<k>, instance VI_pair<k>, router id and VIP FIRST + k."""
    if not 1 <= k <= 150:
        raise ValueError(f"pair {k}: 1 to 150 (router id and VIP 100 + k)")
    pillar = {
        "cluster": f"pair{k:02d}",
        "pkg_refresh": False,
        "vrrp_instances": {
            f"VI_pair{k:02d}": {
                "interface": "eth0",
                "virtual_router_id": FIRST + k,
                "virtual_ipaddress": [f"203.0.113.{FIRST + k}/24"],
                "nodes": {master: {"state": "MASTER", "priority": 100}, backup: {"state": "BACKUP", "priority": 99}},
            }
        },
    }
    if restart_cmd:
        pillar["events"] = {"minion_restart_cmd": list(restart_cmd)}
    pillar.update(json.loads(json.dumps(NODE_SETTINGS)))
    return {"nginx_ha": pillar}


def pillar_files(nodes, restart_cmd=None):
    """{relative path: text} of the lab's pillar root: top.sls (one list match per pair) and pairNN.sls."""
    top, files = {}, {}
    for k, master, backup in pairs(nodes):
        top[f"{master},{backup}"] = [{"match": "list"}, f"pair{k:02d}"]
        files[f"pair{k:02d}.sls"] = yaml.safe_dump(pair_pillar(k, master, backup, restart_cmd))
    files["top.sls"] = yaml.safe_dump({"base": top})
    return files


def growth(points):
    """
    How a figure grows with the number of minions: ``points`` {minions: seconds} (None values are
    left out). Returns {first, last, ratio (last / first value), per_minion (least-squares slope,
    s per minion), base (its intercept), exponent (b of value ~ minions^b between the first and
    last point), shape (flat / sublinear / linear / superlinear), at_100 (the linear fit at 100
    minions)}; None values when fewer than two points.
    """
    pts = sorted((int(n), float(v)) for n, v in points.items() if v is not None)
    out = {"first": None, "last": None, "ratio": None, "per_minion": None, "base": None, "exponent": None,
           "shape": None, "at_100": None}
    if len(pts) < 2:
        return out
    (n0, v0), (n1, v1) = pts[0], pts[-1]
    mean_n = sum(n for n, _ in pts) / len(pts)
    mean_v = sum(v for _, v in pts) / len(pts)
    var = sum((n - mean_n) ** 2 for n, _ in pts)
    slope = sum((n - mean_n) * (v - mean_v) for n, v in pts) / var if var else 0.0
    base = mean_v - slope * mean_n
    out.update(first=v0, last=v1, per_minion=slope, base=base, at_100=base + slope * 100)
    if v0 > 0 and v1 > 0 and n1 > n0:
        out["ratio"] = v1 / v0
        b = math.log(v1 / v0) / math.log(n1 / n0)
        out["exponent"] = b
        out["shape"] = "flat" if b < 0.2 else "sublinear" if b < 0.8 else "linear" if b <= 1.2 else "superlinear"
    return out


def growth_text(g):
    """'x1.6 (+0.07 s/minion, ~n^0.21, sublinear)' or '-'."""
    if not g or g.get("ratio") is None:
        return "-"
    return f"x{g['ratio']:.1f} ({g['per_minion'] * 1000:+.0f} ms/minion, ~n^{g['exponent']:.2f}, {g['shape']})"


def median(values):
    return stats.percentile([v for v in values if v is not None], 50)


def _event_of(ret_data):
    """The vrrp event a vrrp_event job was given (its ``fun_args``: [{tag, data}]): (node, instance,
    state, master receive time) as far as known, else Nones."""
    args = ret_data.get("fun_args") or []
    kwargs = args[-1] if args and isinstance(args[-1], dict) else {}
    event = kwargs.get("data") if isinstance(kwargs.get("data"), dict) else {}
    payload = event.get("data") if isinstance(event.get("data"), dict) else {}
    state = payload.get("state")
    return (event.get("id"), payload.get("instance"), state if isinstance(state, str) else None,
            lab_bus.epoch(event.get("_stamp")))


def decisions(ret_events):
    """The reactor's decisions from the bus recorder's ``salt/run/*/ret`` events of vrrp_event:
    [{node, instance, state, action, recv, start, decided, done}] (timing in seconds after recv).
    Every return counts: one without the runner's own fields (a rejection, or Salt's traceback text
    when the runner raised: action ``error``) is attributed to the event it was given."""
    out = []
    for e in ret_events:
        if e["data"].get("fun") != REACTOR_FUN:
            continue
        ret = e["data"].get("return")
        if not isinstance(ret, dict):
            ret = {"action": "error", "error": str(ret)[:500]}
        node, instance, state, recv = _event_of(e["data"])
        timing = ret.get("timing") or {}
        out.append({"node": ret.get("node") or node, "instance": ret.get("instance") or instance,
                    "state": ret.get("state") or state, "action": ret.get("action"),
                    "recv": timing.get("recv") or recv, "start": timing.get("start"),
                    "decided": timing.get("decided"), "done": timing.get("done"), "stamp": e["stamp"]})
    return out


def undecided(vrrp_events, rows):
    """The vrrp events (bus recorder) without a decision in ``rows``: [(node, tag, receive time)].
    Matched per node and tag, in order: n events of one node and tag need n decisions."""
    done = {}
    for r in rows:
        key = (r["node"], r["instance"], (r["state"] or "").lower())
        done[key] = done.get(key, 0) + 1
    out = []
    for e in vrrp_events:
        parts = e["tag"].split("/")
        key = (e["data"].get("id"), parts[2] if len(parts) > 3 else None, parts[3] if len(parts) > 3 else None)
        if done.get(key):
            done[key] -= 1
        else:
            out.append((key[0], e["tag"], e["stamp"]))
    return out


def decision_summary(rows):
    """{events, actions {action: count}, start, decided, done (stats), fault_done (FAULTs only)}."""
    actions = {}
    for r in rows:
        actions[r["action"]] = actions.get(r["action"], 0) + 1
    return {
        "events": len(rows),
        "actions": dict(sorted(actions.items())),
        "start": stats.summarize([r["start"] for r in rows]),
        "decided": stats.summarize([r["decided"] for r in rows]),
        "done": stats.summarize([r["done"] for r in rows]),
        "fault_done": stats.summarize([r["done"] for r in rows if r["state"] == "FAULT"]),
    }


def pid_starts(text, since, until=None):
    """nginx starts in a node's PID log (lines "<epoch> <pid>", one per new master PID) within [since, until]."""
    count = 0
    for line in (text or "").splitlines():
        parts = line.split()
        try:
            t = float(parts[0])
        except (IndexError, ValueError):
            continue
        if t >= since and (until is None or t <= until):
            count += 1
    return count


def alert_summary(requests, since, until=None):
    """
    The webhook's alerts (receiver lines {t, body}) within [since, until]: {total, by_severity,
    per_node (alerts per node), max_per_node, rate_limit_summaries}.
    """
    by_sev, per_node, summaries, total = {}, {}, 0, 0
    for req in requests:
        if req.get("t", 0) < since or (until is not None and req["t"] > until):
            continue
        info = (req.get("body") or {}).get("nginx_ha") or {}
        sev = info.get("severity") or "?"
        total += 1
        by_sev[sev] = by_sev.get(sev, 0) + 1
        if info.get("check") == "rate-limit":
            summaries += 1
        node = info.get("node") or info.get("subject")
        if node:
            per_node[node] = per_node.get(node, 0) + 1
    return {"total": total, "by_severity": dict(sorted(by_sev.items())), "per_node": dict(sorted(per_node.items())),
            "max_per_node": max(per_node.values(), default=0), "rate_limit_summaries": summaries}


def _cell(value):
    return duration(value) if isinstance(value, (int, float)) else (value if isinstance(value, str) else "-")


def lines(results):
    """The table the benchmark prints (a list of lines)."""
    if not results or results.get("status"):
        return [f"control-plane scale: {(results or {}).get('status', 'n/a')}"]
    sizes = results.get("sizes") or []
    fleet = results.get("fleet") or {}
    reactor = results.get("reactor") or {}
    width = 44
    out = [f"control-plane scale: {max(sizes, default=0)} minions ({max(sizes, default=0) // 2} pairs, each its own "
           f"cluster/VRRP instance) on one master, {results.get('cores', '?')} cores"]
    out.append(f"{'minions':<{width}}" + "".join(f"{n:>10}" for n in sizes) + "   growth (first -> last size)")

    def row(label, getter, key=None):
        vals = [getter(str(n)) for n in sizes]
        g = (results.get("growth") or {}).get(key) if key else None
        out.append(f"{label:<{width}}" + "".join(f"{_cell(v):>10}" for v in vals) + (f"   {growth_text(g)}" if key else ""))

    def f(section, name, field="median"):
        return lambda n: ((section.get(n) or {}).get(name) or {}).get(field) if isinstance((section.get(n) or {}).get(name), dict) else None

    row("fleet view: salt-run nginx_ha.status", f(fleet, "status"), "fleet_status")
    row("  its vip_status round (salt -L)", lambda n: (fleet.get(n) or {}).get("vip_status"), "vip_status")
    row("  its health round (salt -L)", lambda n: (fleet.get(n) or {}).get("health"), "health")
    row("salt-run nginx_ha.check_router_ids", lambda n: (fleet.get(n) or {}).get("check_router_ids"), "check_router_ids")
    row("reactor: receive -> decided, median", f(reactor, "decided"), "decided_median")
    row("reactor: receive -> decided, p95", f(reactor, "decided", "p95"), "decided_p95")
    row("reactor: receive -> runner start, median", f(reactor, "start"), "start_median")
    row("reactor: FAULT receive -> done, median", f(reactor, "fault_done"), "fault_done_median")
    row("kill round: fleet view OK again after", lambda n: (reactor.get(n) or {}).get("fleet_ok_after"), "fleet_ok_after")
    base = results.get("salt_run_base")
    default = results.get("fleet_default_target")
    notes = []
    if base is not None:
        notes.append(f"salt-run's own start (test.arg): {duration(base)}")
    if default is not None:
        notes.append(f"status with the default target (I@nginx_ha:vrrp_instances) at {max(sizes)}: {duration(default)}")
    if notes:
        out.append("  " + "; ".join(notes))
    events = [str((reactor.get(str(n)) or {}).get("decided", {}).get("n", "-")) for n in sizes]
    out.append(f"  reactor decisions per kill round: {', '.join(events)} (events of the n SIGKILLed nodes and their peers)")
    storm = results.get("storm") or {}
    if storm.get("status"):
        out.append(f"storm: {storm['status']}")
    elif storm:
        a = storm.get("alerts") or {}
        sev = ", ".join(f"{v} {k}" for k, v in (a.get("by_severity") or {}).items()) or "none"
        budget = storm.get("budget") or {}
        out.append(f"storm: {storm.get('nodes')} nodes x {storm.get('flaps')} flaps (nginx SIGKILLed again as soon as "
                   f"keepalived left FAULT), {storm.get('kills')} kills in {_cell(storm.get('window'))}:")
        out.append(f"  restarts (nodes' nginx PIDs): {storm.get('restarts')} in all, at most {storm.get('max_restarts_per_node')} "
                   f"per node (budget {budget.get('restart_limit')} per {budget.get('restart_window')} s)")
        out.append(f"  alerts at the webhook: {a.get('total')} ({sev}), at most {a.get('max_per_node')} per node "
                   f"(limit {budget.get('alerts_limit')} per {budget.get('alerts_window')} s); rate-limited "
                   f"{storm.get('rate_limited')}, deduplicated {storm.get('deduplicated')}")
        d = storm.get("decisions") or {}
        out.append(f"  reactor: {d.get('events')} decisions ({', '.join(f'{k} {v}' for k, v in (d.get('actions') or {}).items())}); "
                   f"receive -> decided median {_cell((d.get('decided') or {}).get('median'))}, p95 "
                   f"{_cell((d.get('decided') or {}).get('p95'))}, max {_cell((d.get('decided') or {}).get('max'))}; "
                   f"runner start median {_cell((d.get('start') or {}).get('median'))}, max {_cell((d.get('start') or {}).get('max'))}")
        out.append(f"  fleet view OK again {_cell(storm.get('fleet_ok_after'))} after the last flap's kill "
                   f"({_cell(storm.get('fleet_ok_since_start'))} after the storm began); reactor settled "
                   f"{_cell(storm.get('settled_after'))} after the last kill")
        over = storm.get("over_budget") or {}
        if over:
            oa = over.get("alerts") or {}
            out.append(f"  one more kill on every node (over the budget): {over.get('restarts')} restarts, "
                       f"{(oa.get('by_severity') or {}).get('critical', 0)} critical alerts, {over.get('in_maintenance')} "
                       f"nodes kept out (maintenance), all decided {_cell(over.get('decided_after'))} after the kill")
    for err in results.get("errors") or []:
        out.append(f"  ERROR in {err.get('phase')}: {str(err.get('error'))[:300]}")
    return out


def summarize_growth(results):
    """{figure: growth(...)} over the sizes measured (the ``growth`` slot of the results)."""
    sizes = [str(n) for n in results.get("sizes") or []]
    fleet, reactor = results.get("fleet") or {}, results.get("reactor") or {}

    def pick(section, fn):
        out = {}
        for n in sizes:
            try:
                out[int(n)] = fn(section.get(n) or {})
            except (AttributeError, TypeError, KeyError):
                out[int(n)] = None
        return growth(out)

    return {
        "fleet_status": pick(fleet, lambda s: s["status"]["median"]),
        "vip_status": pick(fleet, lambda s: s.get("vip_status")),
        "health": pick(fleet, lambda s: s.get("health")),
        "check_router_ids": pick(fleet, lambda s: s.get("check_router_ids")),
        "decided_median": pick(reactor, lambda s: s["decided"]["median"]),
        "decided_p95": pick(reactor, lambda s: s["decided"]["p95"]),
        "start_median": pick(reactor, lambda s: s["start"]["median"]),
        "fault_done_median": pick(reactor, lambda s: s["fault_done"]["median"]),
        "fleet_ok_after": pick(reactor, lambda s: s.get("fleet_ok_after")),
    }


# ---------------------------------------------------------------------------------------------
# The webhook receiver (runs in the master host: python -m bench.scale --hook PORT PATH)
# ---------------------------------------------------------------------------------------------


def serve_hook(port, path):
    """Record every POSTed JSON body as a line {t, body} in ``path`` (as tests/support/webhook.py, in a host)."""
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                data = json.loads(body)
            except ValueError:
                data = {"raw": body.decode(errors="replace")[:500]}
            with lock, open(path, "a") as fh:
                fh.write(json.dumps({"t": time.time(), "body": data}) + "\n")
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever(poll_interval=0.2)


# ---------------------------------------------------------------------------------------------
# The phase on the lab
# ---------------------------------------------------------------------------------------------


def reactor_master_config(hook_url):
    """The shipped reactor configuration for the lab (repo paths, the webhook at ``hook_url``, no schedule)."""
    with open(os.path.join(REPO, "conf", "master.d", "nginx_ha_reactor.conf")) as fh:
        shipped = yaml.safe_load(fh)
    cfg = dict(shipped["nginx_ha_reactor"])
    cfg["webhook"] = dict(cfg.get("webhook") or {}, url=hook_url)
    return {
        "runner_dirs": [os.path.join(REPO, "_runners")],
        "reactor": [{"nginx_ha/vrrp/*": [os.path.join(REPO, "reactor", "vrrp.sls")]}],
        "nginx_ha_reactor": cfg,
        "peer": {".*": ["nginx_ha.health"]},  # conf/master.d/nginx_ha.conf's rule for maintenance
        **lab_bus.recorder(["nginx_ha/*", "salt/run/*/ret"]),
    }


_PID_SAMPLER = (
    "last=; while :; do p=; [ -r /run/nginx.pid ] && read p < /run/nginx.pid; "
    "if [ -n \"$p\" ] && [ \"$p\" != \"$last\" ]; then echo \"$(date +%s.%N) $p\" >> {log}; last=$p; fi; sleep 0.25; done"
)

# One node's flapping: SIGKILL nginx; wait for a new live nginx master (the reactor's restart) and
# for keepalived to leave FAULT (a new "Entering BACKUP/MASTER" line), then again, FLAPS times.
_FLAPPER = (
    "log={log}; n=0; while [ $n -lt {flaps} ]; do "
    "p=; [ -r /run/nginx.pid ] && read p < /run/nginx.pid; "
    "ok=$(grep -c 'Entering \\(BACKUP\\|MASTER\\) STATE' /var/log/syslog); "
    "echo \"$(date +%s.%N) kill $p\" >> $log; pkill -KILL -x nginx; i=0; state=timeout; "
    "while [ $i -lt {ticks} ]; do q=; [ -r /run/nginx.pid ] && read q < /run/nginx.pid; "
    "if [ -n \"$q\" ] && [ \"$q\" != \"$p\" ] && kill -0 \"$q\" 2>/dev/null && "
    "[ $(grep -c 'Entering \\(BACKUP\\|MASTER\\) STATE' /var/log/syslog) -gt $ok ]; then state=up; break; fi; "
    "sleep 0.2; i=$((i+1)); done; "
    "echo \"$(date +%s.%N) $state $q\" >> $log; sleep {gap}; n=$((n+1)); done; echo \"$(date +%s.%N) end\" >> $log"
)


class Scale:
    def __init__(self, lab, nodes, say):
        self.lab, self.nodes, self.say = lab, nodes, say
        self.pool = concurrent.futures.ThreadPoolExecutor(max(4, min(len(nodes), 20)))

    # -- helpers ---------------------------------------------------------------------------
    def each(self, fn, nodes=None):
        """fn(node) on every node (threads), {node: result}."""
        nodes = list(nodes or self.nodes)
        return dict(zip(nodes, self.pool.map(fn, nodes)))

    def salt_list(self, nodes, fun, *args, timeout=600, job_timeout=300):
        ret = self.lab.salt(",".join(nodes), fun, *args, tgt_type="list", timeout=timeout, job_timeout=job_timeout)
        missing = sorted(set(nodes) - set(ret or {}))
        if missing:
            raise RuntimeError(f"{fun}: no return from {', '.join(missing)}")
        return ret

    def status(self, nodes=None, timeout=5):
        nodes = nodes or self.nodes
        t0 = time.monotonic()
        # the runner's own timeout as an argument string (salt_run's timeout= bounds the command)
        code, view = self.lab.salt_run("nginx_ha.status", f"tgt={','.join(nodes)}", "tgt_type=list", f"timeout={timeout}", timeout=120)
        return time.monotonic() - t0, code, view

    def fleet_ok(self, nodes=None):
        _, code, view = self.status(nodes)
        return isinstance(view, dict) and view.get("ok") is True and code == 0

    def wait_fleet_ok(self, nodes, since, timeout):
        """Epoch seconds when the fleet view of ``nodes`` first said OK (polled), else None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            t_ask = time.time()
            if self.fleet_ok(nodes):
                return t_ask  # the view reflects the nodes' answers of this call: its start bounds it
            time.sleep(0.5)
        return None

    def bus(self, pattern, after):
        return lab_bus.events(self.lab, pattern, after)

    def reactor_idle(self, after, quiet=2.0, expect_nodes=None):
        """Every vrrp event since ``after`` has its decision, and nothing came for ``quiet`` s."""
        events = self.bus("nginx_ha/vrrp/*", after)
        decided = decisions(self.bus("salt/run/*/ret", after))
        if expect_nodes and not set(expect_nodes) <= {d["node"] for d in decided if d["state"] == "FAULT"}:
            return False
        last = max([e["stamp"] for e in events] + [d["stamp"] for d in decided] or [0.0])
        return len(decided) >= len(events) and time.time() - last >= quiet

    def reset(self, nodes):
        """nginx_ha_reactor.reset for ``nodes`` in one runner process on the master (its loader once)."""
        code = ("import json,sys,salt.config,salt.runner; o=salt.config.master_config('/etc/salt/master'); "
                "r=salt.runner.RunnerClient(o); "
                "print(json.dumps([r.cmd('nginx_ha_reactor.reset',[n],print_event=False) for n in sys.argv[1:]]))")
        res = self.lab.master.run([os.path.join(self.lab.venv, "bin", "python"), "-c", code, *nodes], timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"nginx_ha_reactor.reset failed: {res.stderr[-2000:]}")

    def pid_logs(self):
        return self.each(lambda n: self.lab.host(n).read_file(PID_LOG, missing_ok=True) or "")

    def hook_requests(self):
        text = self.lab.master.read_file(HOOK_LOG, missing_ok=True) or ""
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def reactor_state(self):
        text = self.lab.master.read_file(STATE_FILE, missing_ok=True) or "{}"
        try:
            return json.loads(text)
        except ValueError:
            return {}

    def kill_nginx(self, nodes):
        """SIGKILL nginx on ``nodes`` at once; the epoch before the first kill."""
        t0 = time.time()
        self.each(lambda n: self.lab.host(n).run("pkill -KILL -x nginx", timeout=30), nodes)
        return t0

    # -- bring-up ------------------------------------------------------------------------
    def bring_up(self, batch=10):
        lab = self.lab
        out = {"lab_start": lab.timings.get("start")}
        lab.master.spawn(f"cd {REPO} && exec {lab.venv}/bin/python -m bench.scale --hook {HOOK_PORT} {HOOK_LOG}")
        t0 = time.monotonic()
        ret = lab.salt("*", "saltutil.sync_all", timeout=600, job_timeout=300)
        missing = sorted(set(self.nodes) - set(ret or {}))
        if missing:
            raise RuntimeError(f"saltutil.sync_all: no return from {', '.join(missing)}")
        out["sync_all"] = time.monotonic() - t0
        self.say(f"scale: {len(self.nodes)} minions up ({_cell(out['lab_start'])}), saltutil.sync_all on all "
                 f"{_cell(out['sync_all'])}")
        pids = self.each(lab.minion_pid)
        backups = [b for _, _, b in pairs(self.nodes)]
        masters = [m for _, m, _ in pairs(self.nodes)]
        t0 = time.monotonic()
        restarted = []
        for group in (backups, masters):
            for i in range(0, len(group), batch):
                part = group[i:i + batch]
                t1 = time.monotonic()
                ret = self.salt_list(part, "state.apply", "nginx_ha", timeout=900, job_timeout=600)
                for node in part:
                    res = ret[node]
                    if not isinstance(res, dict):
                        raise RuntimeError(f"state.apply nginx_ha on {node} failed to render: {str(res)[:2000]}")
                    failed = {v.get("__id__", k): v.get("comment") for k, v in res.items() if v.get("result") is False}
                    if failed:
                        raise RuntimeError(f"state.apply nginx_ha on {node}: failed states {json.dumps(failed)[:2000]}")
                    if any(v.get("__id__") == "nginx_ha_events_minion_restart" and v.get("changes") for v in res.values()):
                        restarted.append(node)
                self.say(f"scale: state.apply nginx_ha on {', '.join(part)}: {time.monotonic() - t1:.1f} s")
        out["apply"] = time.monotonic() - t0
        t0 = time.monotonic()
        for node in restarted:
            lab.wait_minion_restart(node, pids[node], timeout=180)
        out["minion_restarts"] = time.monotonic() - t0
        t0 = time.monotonic()
        if not wait_for(lambda: self.fleet_ok(), 180, 1.0):
            _, code, view = self.status()
            raise RuntimeError(f"the fleet view is not OK after the first apply: {json.dumps((view or {}).get('problems'))[:2000]}")
        out["fleet_ok"] = time.monotonic() - t0
        self.each(lambda n: self.lab.host(n).spawn(_PID_SAMPLER.format(log=PID_LOG), log_path="/dev/null"))
        self.say(f"scale: formula applied on {len(self.nodes)} minions in {out['apply']:.1f} s (batches of {batch}), "
                 f"minion restarts {out['minion_restarts']:.1f} s, fleet view OK after {out['fleet_ok']:.1f} s")
        return out

    # -- fleet view ---------------------------------------------------------------------
    def fleet(self, sizes, reps):
        out = {}
        base = []
        for _ in range(reps):
            t0 = time.monotonic()
            self.lab.salt_run("test.arg", "x", timeout=120)
            base.append(time.monotonic() - t0)
        for n in sizes:
            nodes = self.nodes[:n]
            walls, problems = [], []
            for _ in range(reps):
                wall, code, view = self.status(nodes)
                walls.append(wall)
                if not (isinstance(view, dict) and view.get("ok")):
                    problems.append((view or {}).get("problems") if isinstance(view, dict) else str(view)[:300])
                vips = len((view or {}).get("vips") or {}) if isinstance(view, dict) else 0
            direct = {}
            for fun in ("nginx_ha.vip_status", "nginx_ha.health"):
                t0 = time.monotonic()
                self.salt_list(nodes, fun, timeout=120, job_timeout=30)
                direct[fun] = time.monotonic() - t0
            t0 = time.monotonic()
            code, ids = self.lab.salt_run("nginx_ha.check_router_ids", f"tgt={','.join(nodes)}", "tgt_type=list", timeout=300)
            ids_wall = time.monotonic() - t0
            out[str(n)] = {"status": stats.summarize(walls), "status_walls": walls, "vips": vips, "problems": problems,
                           "vip_status": direct["nginx_ha.vip_status"], "health": direct["nginx_ha.health"],
                           "check_router_ids": ids_wall, "check_router_ids_ok": bool(isinstance(ids, dict) and ids.get("ok"))}
            self.say(f"scale: {n:>2} minions: nginx_ha.status median {_cell(median(walls))} ({', '.join(_cell(w) for w in walls)}), "
                     f"{vips} VIPs; salt -L vip_status {_cell(direct['nginx_ha.vip_status'])}, health "
                     f"{_cell(direct['nginx_ha.health'])}; check_router_ids {_cell(ids_wall)}")
        default = []
        for _ in range(reps):
            t0 = time.monotonic()
            self.lab.salt_run("nginx_ha.status", timeout=120)
            default.append(time.monotonic() - t0)
        return out, median(base), median(default)

    # -- reactor: a kill round per size -----------------------------------------------
    def kill_round(self, n, timeout=180):
        nodes = self.nodes[:n]
        t0 = self.kill_nginx(nodes)
        ok_at = self.wait_fleet_ok(nodes, t0, timeout)
        if not wait_for(lambda: self.reactor_idle(t0, expect_nodes=nodes), 120, 0.5):
            rows = [d for d in decisions(self.bus("salt/run/*/ret", t0)) if d["recv"] and d["recv"] >= t0]
            missing = undecided(self.bus("nginx_ha/vrrp/*", t0), rows)
            self.say(f"scale: {n} minions: the reactor did not settle within 120 s; no decision for "
                     f"{', '.join(f'{node} {tag} (received {stamp - t0:.1f} s after the kill)' for node, tag, stamp in missing) or '-'}")
        rows = [d for d in decisions(self.bus("salt/run/*/ret", t0)) if d["recv"] and d["recv"] >= t0]
        summary = decision_summary(rows)
        summary["fleet_ok_after"] = None if ok_at is None else ok_at - t0
        logs = self.pid_logs()
        summary["restarts"] = sum(pid_starts(logs[m], t0) for m in nodes)
        summary["rows"] = rows
        self.reset(nodes)
        self.say(f"scale: kill round on {n:>2} minions: {summary['events']} decisions "
                 f"({', '.join(f'{k} {v}' for k, v in summary['actions'].items())}), receive -> decided median "
                 f"{_cell(summary['decided']['median'])}, p95 {_cell(summary['decided']['p95'])}, runner start median "
                 f"{_cell(summary['start']['median'])}; FAULT -> done median {_cell(summary['fault_done']['median'])}; "
                 f"{summary['restarts']} restarts; fleet OK again after {_cell(summary['fleet_ok_after'])}")
        return summary

    # -- the storm --------------------------------------------------------------------
    def storm(self, flaps, budget, gap=0.5, timeout=240):
        lab, nodes = self.lab, self.nodes
        wait_for(lambda: self.reactor_idle(time.time() - 600), 60, 0.5)
        before = self._alert_counters()
        t0 = time.time()
        script = _FLAPPER.format(log=FLAP_LOG, flaps=flaps, ticks=int(60 / 0.2), gap=gap)
        self.each(lambda n: lab.host(n).spawn(script, log_path="/dev/null"))

        def flap_log(node):
            return lab.host(node).read_file(FLAP_LOG, missing_ok=True) or ""

        if not wait_for(lambda: all(" end" in t for t in self.each(flap_log).values()), timeout, 1.0):
            self.say(f"scale: storm: not every node finished its {flaps} flaps within {timeout} s")
        logs = self.each(flap_log)
        kills = {n: [float(line.split()[0]) for line in t.splitlines() if " kill " in line or line.endswith(" kill")]
                 for n, t in logs.items()}
        timeouts = sum(t.count(" timeout") for t in logs.values())
        last_kill = max((k for ks in kills.values() for k in ks), default=t0)
        ok_at = self.wait_fleet_ok(nodes, last_kill, 180)
        wait_for(lambda: self.reactor_idle(t0), 120, 0.5)
        rows = [d for d in decisions(self.bus("salt/run/*/ret", t0)) if d["recv"] and d["recv"] >= t0]
        settled = max((d["stamp"] for d in rows), default=None)
        t_end = time.time()
        pid_logs = self.pid_logs()
        per_node = {n: pid_starts(pid_logs[n], t0, t_end) for n in nodes}
        after = self._alert_counters()
        out = {
            "nodes": len(nodes), "flaps": flaps, "gap": gap, "kills": sum(len(k) for k in kills.values()),
            "flap_timeouts": timeouts, "window": last_kill - t0,
            "restarts": sum(per_node.values()), "restarts_per_node": per_node,
            "max_restarts_per_node": max(per_node.values(), default=0),
            "alerts": alert_summary(self.hook_requests(), t0, t_end),
            # the reactor's counters (its state file), the storm's share: after minus before
            "rate_limited": max(0, after["suppressed"] - before["suppressed"]),
            "deduplicated": max(0, after["deduplicated"] - before["deduplicated"]),
            "decisions": decision_summary(rows), "budget": budget,
            "fleet_ok_after": None if ok_at is None else ok_at - last_kill,
            "fleet_ok_since_start": None if ok_at is None else ok_at - t0,
            "settled_after": None if settled is None else settled - last_kill,
        }
        self.say(f"scale: storm: {out['kills']} kills on {len(nodes)} nodes in {out['window']:.1f} s: {out['restarts']} "
                 f"restarts (max {out['max_restarts_per_node']}/node), {out['alerts']['total']} alerts "
                 f"{out['alerts']['by_severity']} (max {out['alerts']['max_per_node']}/node), rate-limited "
                 f"{out['rate_limited']}, fleet OK again {_cell(out['fleet_ok_after'])} after the last kill")
        # Over the budget: one more kill on every node (its restart budget is spent)
        wait_for(lambda: self.reactor_idle(t0), 60, 0.5)
        t1 = self.kill_nginx(nodes)
        decided_all = wait_for(lambda: self._all_decided(t1, nodes), 180, 1.0)
        t_done = time.time()
        rows = [d for d in decisions(self.bus("salt/run/*/ret", t1)) if d["recv"] and d["recv"] >= t1]
        faults = [d for d in rows if d["state"] == "FAULT"]
        last = max((d["stamp"] for d in faults), default=None)
        pid_logs = self.pid_logs()
        state = self.reactor_state()
        out["over_budget"] = {
            "restarts": sum(pid_starts(pid_logs[n], t1, t_done) for n in nodes),
            "alerts": alert_summary(self.hook_requests(), t1, t_done),
            "in_maintenance": len(set(state.get("maintenance") or {}) & set(nodes)),
            "decisions": decision_summary(rows),
            "decided_after": None if (last is None or not decided_all) else last - t1,
        }
        self.say(f"scale: over the budget: {out['over_budget']['restarts']} restarts, alerts "
                 f"{out['over_budget']['alerts']['by_severity']}, {out['over_budget']['in_maintenance']} nodes kept out, "
                 f"decided {_cell(out['over_budget']['decided_after'])} after the kill")
        return out

    def _alert_counters(self):
        """The reactor's alert counters: suppressed by the rate limit (open windows), deduplicated (all time)."""
        book = self.reactor_state().get("alerts") or {}
        return {"suppressed": sum(int(s.get("suppressed") or 0) for s in (book.get("limits") or {}).values()),
                "deduplicated": int(book.get("deduplicated") or 0)}

    def _all_decided(self, since, nodes):
        rows = [d for d in decisions(self.bus("salt/run/*/ret", since)) if d["recv"] and d["recv"] >= since]
        return set(nodes) <= {d["node"] for d in rows if d["state"] == "FAULT" and d["action"] in DECIDED}


def run(say, out_dir, sizes=SIZES, reps=3, flaps=None, batch=10):
    """
    The scale phase: builds a lab of ``max(sizes)`` minions, measures, tears it down. Returns the
    JSON-able results (also written to ``<out_dir>/scale.json``).
    """
    from lab import Lab, minion_restart_cmd  # pylint: disable=import-outside-toplevel

    sizes = sorted({int(n) for n in sizes})
    nodes = names(max(sizes))
    for n in sizes:
        names(n)  # even, at least 2
    master_extra = reactor_master_config(f"http://127.0.0.1:{HOOK_PORT}/hook")
    cfg = master_extra["nginx_ha_reactor"]
    budget = {"restart_limit": cfg["restart_limit"], "restart_window": cfg["restart_window"],
              "alerts_limit": cfg["alerts"]["limit"], "alerts_window": cfg["alerts"]["window"],
              "alerts_dedupe": cfg["alerts"]["dedupe"]}
    flaps = int(flaps or cfg["restart_limit"])
    results = {"sizes": sizes, "reps": reps, "cores": os.cpu_count(), "budget": budget,
               "started": datetime.datetime.now(datetime.timezone.utc).isoformat(), "errors": []}
    t_phase = time.monotonic()
    try:
        with Lab(minions=nodes, pillar_dir=pillar_files(nodes, minion_restart_cmd()), client=False,
                 file_roots=[os.path.join(REPO, "salt")], master_extra=master_extra, salt_timeout=240) as lab:
            scale = Scale(lab, nodes, say)
            try:
                results["bringup"] = scale.bring_up(batch)
                fleet, base, default = scale.fleet(sizes, reps)
                results.update(fleet=fleet, salt_run_base=base, fleet_default_target=default)
                results["reactor"] = {}
                for n in sizes:
                    results["reactor"][str(n)] = scale.kill_round(n)
                try:
                    results["storm"] = scale.storm(flaps, budget)
                except Exception as exc:  # noqa: BLE001 - keep the rest
                    results["errors"].append({"phase": "storm", "error": repr(exc)[:2000]})
                    results["storm"] = {"status": f"n/a (failed: {exc!r:.200})"}
            finally:
                scale.pool.shutdown(wait=False)
    except Exception as exc:  # noqa: BLE001 - report what was measured
        results["errors"].append({"phase": "scale", "error": repr(exc)[:4000]})
        say(f"scale: ERROR {exc!r:.1000}")
    results["seconds"] = time.monotonic() - t_phase
    results["growth"] = summarize_growth(results)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "scale.json"), "w") as fh:
            json.dump(results, fh, indent=1, sort_keys=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="minion counts (even), default 2,6,10,20")
    parser.add_argument("--reps", type=int, default=3, help="nginx_ha.status runs per size (default 3)")
    parser.add_argument("--flaps", type=int, default=None, help="storm flaps per node (default: the restart budget)")
    parser.add_argument("--out", default=os.path.join(REPO, "bench-results"), help="directory for scale.json")
    parser.add_argument("--hook", nargs=2, metavar=("PORT", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.hook:
        serve_hook(int(args.hook[0]), args.hook[1])
        return 0
    t0 = time.monotonic()

    def say(text):
        print(f"[{time.monotonic() - t0:6.1f}s] {text}", flush=True)

    results = run(say, args.out, sizes=[int(s) for s in args.sizes.split(",") if s.strip()], reps=args.reps,
                  flaps=args.flaps)
    print("\n" + "\n".join(lines(results)))
    print(f"\nresults: {os.path.join(args.out, 'scale.json')} ({results['seconds']:.0f} s)")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
