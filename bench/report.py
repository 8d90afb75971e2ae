"""Summaries, targets, the printed table and results.json of the failover benchmark."""

import json
import os

from . import scenarios, stats

PROFILES = ("ours", "baseline")
# Targets for our defaults (issue 12): (scenario, statistic, limit, text). Outage targets are p95
# over at least MIN_TRIALS trials of the client's view (one request every 20 ms, 250 ms deadline).
MIN_TRIALS = 10
TARGETS = (
    ("crash", "outage_p95", 0.1, "crash: outage p95 < 100 ms"),
    ("hang", "outage_p95", 0.4, "hang: outage p95 < 400 ms"),
    ("broken", "outage_p95", 0.1, "broken: outage p95 < 100 ms"),
    ("host_death", "outage_p95", 0.3, "host death: outage p95 < 300 ms"),
    ("load", "false_failovers", 0, "load: 0 false failovers"),
    ("failback", "failed_total", 0, "failback: 0 failed requests"),
    ("maintenance", "failed_total", 0, "planned switchover: 0 failed requests"),
    ("apply", "idempotent_minus_ping", 1.0, "idempotent state.apply (1 instance) minus test.ping < 1.0 s"),
    ("events", "median", 0.1, "transition -> event on the master bus (default path): median < 100 ms"),
    ("heal", "nginx_back", 1.5, "reactor heal: nginx serving again < 1.5 s (median)"),
    ("heal", "master_again", 2.5, "reactor heal: the old MASTER holds the VIP again < 2.5 s (median)"),
)
EVENT_SLOT = "transition_to_master_event"  # results.json key of the event-latency slot


def failback_trials(trials):
    """The failback 'trials': repair phases of fault trials in which the VIP had moved to web-b."""
    out = []
    for t in trials:
        fb = t.get("failback")
        if t["scenario"] in ("crash", "hang", "broken", "host_death") and fb and fb.get("moved"):
            out.append({"profile": t["profile"], "from": t["scenario"], "trial": t["trial"], "failed": fb["failed"],
                        "outage": None, "seconds": fb["seconds"], "recovered": fb["completed"]})
    return out


def summarize(results):
    trials = results["trials"]
    summary = {}
    for name in scenarios.ORDER:
        summary[name] = {}
        for profile in PROFILES:
            if name == scenarios.FAILBACK:
                chosen = [t for t in failback_trials(trials) if t["profile"] == profile]
                if not chosen:
                    summary[name][profile] = None
                    continue
                s = stats.summarize_trials(chosen)
                s["failback_seconds"] = stats.summarize([t["seconds"] for t in chosen])
                s["from"] = sorted({t["from"] for t in chosen})
            else:
                chosen = [t for t in trials if t["profile"] == profile and t["scenario"] == name]
                if not chosen:
                    summary[name][profile] = None
                    continue
                s = stats.summarize_trials(chosen)
                if name == "maintenance":
                    s["switch_seconds"] = stats.summarize([t["switch_seconds"] for t in chosen])
                    s["back_seconds"] = stats.summarize([t["back_seconds"] for t in chosen])
                elif name == "load":
                    s["vip_moves"] = sum(t.get("vip_moves", 0) for t in chosen)
                    s["keepalived_transitions"] = sum(t.get("keepalived_transitions", 0) for t in chosen)
                    s["requests"] = sum(t.get("requests", 0) for t in chosen)
                    s["flood"] = {k: sum((t.get("load") or {}).get(k, {}).get("requests", 0) for t in chosen)
                                  for k in ("loop-1", "loop-2", "stream", "slow")}
                else:
                    s["failed_over"] = sum(1 for t in chosen if t.get("failed_over"))
                    one = [t["sequential"] for t in chosen if t.get("sequential")]
                    if one:
                        s["sequential"] = stats.summarize([o["outage"] for o in one])
                if name == "heal":
                    s["after_heal_failed"] = stats.summarize([t["failback"]["failed"] for t in chosen])
                    s["after_heal_failed_total"] = sum(t["failback"]["failed"] for t in chosen)
                    s["after_heal_outage"] = stats.summarize([t.get("heal_outage") for t in chosen])
                    s["after_heal_not_recovered"] = sum(1 for t in chosen if t.get("heal_recovered") is False)
            summary[name][profile] = s
    return summary


def check_targets(summary, apply_results, events=None, calibration=None, heal=None):
    out = []
    for scenario, stat, limit, text in TARGETS:
        value, note = None, None
        if scenario == "events":
            value = (events or {}).get("median")
            met = None if value is None else value < limit
        elif scenario == "heal":
            value = ((heal or {}).get(stat) or {}).get("median")
            met = None if value is None else value < limit
        elif scenario == "apply":
            one = next((a for a in apply_results or [] if a["instances"] == 1), None)
            ping = (calibration or {}).get("salt_cli_test_ping_seconds")
            if one and one.get("idempotent", {}).get("minus_ping") is not None:
                value = one["idempotent"]["minus_ping"]  # median of test.ping/apply pairs
            elif one and one.get("idempotent") and ping is not None:
                value = one["idempotent"]["wall"] - ping
            met = None if value is None else value < limit
        else:
            s = (summary.get(scenario) or {}).get("ours")
            if s is None:
                met = None
            elif stat == "outage_p95":
                value = s["outage"]["p95"]
                met = value is not None and value < limit and s["not_recovered"] == 0
                if s["trials"] < MIN_TRIALS:
                    note = f"only {s['trials']} trials, the target needs {MIN_TRIALS}"
                    met = None if met else met
            elif stat == "false_failovers":
                value = s.get("vip_moves", 0) + s.get("keepalived_transitions", 0)
                met = value == limit
            else:
                value = s["failed_total"]
                met = value == limit
        entry = {"target": text, "value": value, "met": met}
        if note:
            entry["note"] = note
        out.append(entry)
    return out


def duration(seconds):
    """'-', '268 ms' or '12.3 s': how the benchmark prints a time."""
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"



def _outage_cells(s):
    if s is None:
        return ["n/a"] * 4
    o = s["outage"]
    nr = s["not_recovered"]
    cells = [duration(o["median"]), duration(o["p95"]), duration(o["max"])]
    if nr:
        cells = [f">={c}" if c != "-" else c for c in cells]
    f = s["failed"]
    cells.append(f"{f['median']:.0f} / {f['max']:.0f}" if f["n"] else "-")
    return cells


def table(results):
    summary = results["summary"]
    lines = []
    head = ("scenario", "profile", "trials", "outage median", "p95", "max", "failed req med / max",
            "one user p95", "notes")
    rows = [head]
    for name in scenarios.ORDER:
        for profile in PROFILES:
            s = summary[name].get(profile)
            if name == "maintenance" and profile == "baseline":
                rows.append((name, profile, "-", "n/a", "n/a", "n/a", "n/a", "n/a", "the tutorial has no planned switchover"))
                continue
            if s is None:
                rows.append((name, profile, "0", "-", "-", "-", "-", "-", "not run"))
                continue
            notes = []
            if s["not_recovered"]:
                notes.append(f"{s['not_recovered']}/{s['trials']} never recovered (censored at the window)")
            if name == scenarios.FAILBACK:
                notes.append(f"VIP back after {duration(s['failback_seconds']['median'])} (median), from {', '.join(s['from'])}")
                notes.append(f"total failed {s['failed_total']}")
            elif name == "load":
                notes.append(f"false failovers: VIP moved {s['vip_moves']} times, {s['keepalived_transitions']} keepalived "
                             f"transitions; {s['requests']} requests by the poller; total failed {s['failed_total']}"
                             + ("; flood requests " + ", ".join(f"{k} {v}" for k, v in s["flood"].items())
                                if any((s.get("flood") or {}).values()) else ""))
            elif name == "maintenance":
                notes.append(f"switch {duration(s['switch_seconds']['median'])}, back {duration(s['back_seconds']['median'])} "
                             f"(incl. salt CLI); total failed {s['failed_total']}")
            else:
                notes.append(f"VIP moved in {s['failed_over']}/{s['trials']}")
            if name == "heal":
                censored = ">=" if s["after_heal_not_recovered"] else ""
                notes.append(f"AFTER THE HEAL: failed {s['after_heal_failed_total']} in total, outage median "
                             f"{censored}{duration(s['after_heal_outage']['median'])}, max {censored}{duration(s['after_heal_outage']['max'])}"
                             + (f" ({s['after_heal_not_recovered']} not recovered within the window)"
                                if s["after_heal_not_recovered"] else ""))
            cells = _outage_cells(s)
            if name == scenarios.FAILBACK:
                cells[:3] = ["-", "-", "-"]
            cells.append(duration((s.get("sequential") or {}).get("p95")))
            rows.append((name, profile, str(s["trials"]), *cells, "; ".join(notes)))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head) - 1)]
    for i, r in enumerate(rows):
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 5)
    lines.extend(event_lines(results.get(EVENT_SLOT) or {}))
    if results.get("apply"):
        lines.append("\nstate.apply nginx_ha on web-a, wall time of `salt web-a state.apply` (time the states took):")
        cal = (results.get("meta") or {}).get("calibration")
        if cal:
            lines.append(f"  (this machine: `salt web-a test.ping` {cal['salt_cli_test_ping_seconds']:.2f} s, "
                         f"a 10^7-step Python loop {cal['python_loop_1e7_seconds']:.2f} s)")
        lines.append("  instances  first run                                              idempotent run")
        for a in results["apply"]:
            first = a.get("first") or {}
            idem = a.get("idempotent") or {}
            lines.append(f"  {a['instances']:>9}  {_s(first):53s}  {_s(idem)}")
    if results.get("queries"):
        q = results["queries"]
        lines.append("\nminion queries on web-a, median wall time (a query must cost what test.ping costs; on the node it needs no master):")
        for where, what in (("master", "salt web-a <fun>     "), ("local", "salt-call --local <fun>")):
            lines.append(f"  {what}  " + "  ".join(f"{f} {duration(v)}" for f, v in (q.get(where) or {}).items()))
    if results.get("overhead"):
        lines.append("\nCPU of our profile's daemons (share of one core over each process's lifetime):")
        for node, procs in results["overhead"].items():
            parts = [f"{name} {p['cpu_percent']}% ({p['cpu_seconds']} s in {p['elapsed_seconds']} s)"
                     for name, p in sorted(procs.items()) if p.get("cpu_percent") is not None]
            lines.append(f"  {node}: " + ", ".join(parts))
    if results.get("targets"):
        lines.append("\ntargets for our defaults:")
        for t in results["targets"]:
            mark = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
            value = t["value"]
            shown = "-" if value is None else (f"{value}" if isinstance(value, int) else duration(value))
            note = f"; {t['note']}" if t.get("note") else ""
            lines.append(f"  [{mark:^12s}] {t['target']} (measured: {shown}{note})")
    return "\n".join(lines)


def event_lines(ev):
    """The events phase: transition -> master bus per delivery path, and the reactor's heal time."""
    if not ev.get("paths"):
        return [f"\ntransition -> event on the master bus (ours): {ev.get('status', 'n/a')}"]
    lines = ["\nVRRP transition (keepalived's log line) -> event on the master bus, per delivery path "
             "(same transitions, both paths on):"]
    for p in ev["paths"].values():
        missing = f", {p['missing']} of {p['transitions']} transitions without an event" if p.get("missing") else ""
        lines.append(f"  {p['what']:40s} median {duration(p['median']):>7s}  p95 {duration(p['p95']):>7s}  max {duration(p['max']):>7s}"
                     f"  (n={p['n']}{missing})")
    heal = ev.get("reactor_heal") or {}
    if heal.get("trials"):
        lines.append(f"reactor heal, nginx SIGKILLed on the MASTER, nothing else done ({heal['healed']}/{heal['trials']} healed; "
                     "median / max after the kill):")
        for key, text in (("fault", "web-a in FAULT (watcher)"), ("nginx_back", "nginx answering again (reactor restart)"),
                          ("master_again", "web-a MASTER again")):
            s = heal.get(key) or {}
            lines.append(f"  {text:40s} {duration(s.get('median')):>7s} / {duration(s.get('max'))}")
    return lines


def _s(a):
    if not a:
        return "-"
    slow = a.get("slowest") or {}
    slowest = f", slowest {slow['id']} {slow['seconds']:.1f} s" if slow.get("id") else ""
    minus = f"; minus test.ping {a['minus_ping']:.2f} s, median of {len(a.get('pairs') or [])}" if a.get("minus_ping") is not None else ""
    return f"{a['wall']:.1f} s ({a['states']:.1f} s{slowest}{minus})"


def write_json(results, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(results, fh, indent=1, default=str)
