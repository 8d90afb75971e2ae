"""
`make bench`: client-visible failover of our defaults against the tutorial's setup, in one run on
the same lab hosts.

    .venv/bin/python -m bench                       # 10 trials per scenario (ours), 5 (baseline), ~22 min
    .venv/bin/python -m bench --trials 18           # more trials (BENCH_TRIALS=18 works too)
    .venv/bin/python -m bench --scenarios crash,hang --profiles ours --apply-sizes ''
    .venv/bin/python -m bench --quick                # smoke run, ~3 min (make bench-quick)

Builds a lab (Salt master, web-a, web-b, client), installs the baseline profile (the tutorial's
keepalived.conf and check script, no Salt) and runs its trials, removes it, applies the nginx_ha
formula through Salt with its defaults and runs our trials, times state.apply with 1, 10 and
50 VRRP instances. Prints a table, writes bench-results/results.json and one PNG timeline per
scenario. Then the events phase (bench/event_latency.py): VRRP transition -> event on the master's
bus for each delivery path, and the reactor's heal time. The lab is torn down at the end, also on
failure or Ctrl-C.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback

from . import event_latency, plot, profiles, report, scale, scenarios
from .runner import Bench, trial_count

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv):
    env_trials = int(os.environ.get("BENCH_TRIALS", "10"))
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=env_trials, help="trials per scenario and profile (default 10: the targets are p95 over at least 10; env BENCH_TRIALS)")
    p.add_argument("--baseline-trials", type=int, default=os.environ.get("BENCH_BASELINE_TRIALS"),
                   help="trials per baseline scenario (default 5, or --trials when that is smaller; env BENCH_BASELINE_TRIALS)")
    p.add_argument("--scenarios", default=",".join(s.name for s in scenarios.ALL),
                   help="comma list of: " + ", ".join(s.name for s in scenarios.ALL) + " (failback is measured in every repair)")
    p.add_argument("--profiles", default="baseline,ours", help="comma list of: baseline, ours")
    p.add_argument("--apply-sizes", default=os.environ.get("BENCH_APPLY_SIZES", "1,10"),
                   help="VRRP instance counts to time state.apply with ('' to skip)")
    p.add_argument("--event-trials", type=int, default=int(os.environ.get("BENCH_EVENT_TRIALS", "5")),
                   help="reactor heal trials of the events phase (transition -> master bus per delivery path; "
                        "0 skips the phase; default 5, env BENCH_EVENT_TRIALS)")
    p.add_argument("--ours-pillar", default=os.environ.get("BENCH_OURS_PILLAR", ""),
                   help="JSON merged into our nginx_ha pillar, to measure other settings than the defaults, e.g. "
                        "'{\"check\": {\"watcher\": {\"timeout\": 0.1}}}' (default: none, the defaults are measured)")
    p.add_argument("--scale-sizes", default=os.environ.get("BENCH_SCALE_SIZES", "2,6,10,20"),
                   help="the control-plane scale phase (bench/scale.py, its own lab of up to 20 minions): minion "
                        "counts to measure ('' skips it; --quick: 2)")
    p.add_argument("--out", default=os.path.join(REPO, "bench-results"), help="results directory")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--budget", type=float, default=float(os.environ.get("BENCH_BUDGET", "1080")),
                   help="seconds after which remaining trials are skipped (default 1080 = 18 min; the scale phase comes after)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run (~3 min): 1 trial per scenario and profile, state.apply with 1 instance, 1 reactor "
                        "heal trial; the README's figure is not replaced")
    p.add_argument("--figure", default=os.path.join(REPO, "docs", "failover.png"),
                   help="the README's overview figure, replaced by a full run of both profiles (default docs/failover.png)")
    args = p.parse_args(argv)
    args.baseline_trials = min(args.trials, 5) if args.baseline_trials is None else int(args.baseline_trials)
    if args.quick:
        args.trials, args.baseline_trials, args.apply_sizes, args.event_trials = 1, 1, "1", 1
        args.scale_sizes = "2" if args.scale_sizes else ""
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in args.scenarios if s not in scenarios.BY_NAME]
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(unknown)}")
    args.profiles = [s for s in args.profiles.split(",") if s]
    if any(pr not in ("baseline", "ours") for pr in args.profiles):
        p.error("profiles are baseline and ours")
    args.apply_sizes = [int(n) for n in args.apply_sizes.split(",") if n.strip()]
    args.scale_sizes = [int(n) for n in args.scale_sizes.split(",") if n.strip()]
    try:
        args.ours_pillar = json.loads(args.ours_pillar) if args.ours_pillar.strip() else {}
    except ValueError as exc:
        p.error(f"--ours-pillar is not JSON: {exc}")
    if not isinstance(args.ours_pillar, dict):
        p.error("--ours-pillar must be a JSON object")
    return args


def versions():
    def out(cmd):
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            return (res.stdout + res.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return None

    return {"keepalived": out(["keepalived", "--version"]), "nginx": out(["nginx", "-v"]),
            "salt": out([os.path.join(REPO, ".venv", "bin", "salt-call"), "--version"]),
            "kernel": platform.release(), "cpus": os.cpu_count(),
            "commit": out(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])}


OVERHEAD_PROBE = r"""
import json, os
hz = os.sysconf("SC_CLK_TCK")
uptime = float(open("/proc/uptime").read().split()[0])
out = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    name = "health_watch" if "health_watch.py" in cmd else "keepalived" if cmd.startswith("/usr/sbin/keepalived") else None
    if name:
        agg = out.setdefault(name, {"cpu_seconds": 0.0, "elapsed_seconds": 0.0})
        agg["cpu_seconds"] += (int(stat[11]) + int(stat[12])) / hz
        agg["elapsed_seconds"] = max(agg["elapsed_seconds"], uptime - int(stat[19]) / hz)
print(json.dumps(out))
"""


def overhead(bench, lab):
    """CPU the fast path costs: the health watcher's and keepalived's CPU time over their lifetime, per node."""
    out = {}
    for node in profiles.NODES:
        host = lab.host(node)
        if not host.running:
            continue
        res = host.run(["/usr/bin/python3", "-c", OVERHEAD_PROBE], timeout=30)
        try:
            procs = json.loads(res.stdout)
        except ValueError:
            continue
        for agg in procs.values():
            agg["cpu_percent"] = round(100.0 * agg["cpu_seconds"] / agg["elapsed_seconds"], 2) if agg["elapsed_seconds"] else None
            agg["cpu_seconds"] = round(agg["cpu_seconds"], 2)
            agg["elapsed_seconds"] = round(agg["elapsed_seconds"], 1)
        out[node] = procs
    bench.say("CPU of the fast path: " + "; ".join(
        f"{node}: " + ", ".join(f"{k} {v['cpu_percent']}%" for k, v in procs.items()) for node, procs in out.items()))
    return out


def calibration(bench, lab):
    """How fast this machine is, to compare runs: a fixed Python loop, and the floor of any salt CLI call."""
    t0 = time.perf_counter()
    total = 0
    for i in range(10**7):
        total += i
    loop = time.perf_counter() - t0
    pings = []
    for _ in range(3):
        t0 = time.monotonic()
        lab.salt(profiles.MASTER, "test.ping", timeout=60)
        pings.append(time.monotonic() - t0)
    out = {"python_loop_1e7_seconds": round(loop, 3), "salt_cli_test_ping_seconds": round(sorted(pings)[1], 3)}
    bench.say(f"machine: a 10^7-step Python loop {loop:.2f} s; `salt web-a test.ping` {out['salt_cli_test_ping_seconds']:.2f} s "
              "(the floor of every salt CLI call below)")
    return out


def query_timings(bench, lab, runs=5):
    """A minion query through the master beside test.ping, and on the node with `salt-call --local` (no master)."""

    def median(values):
        return round(sorted(values)[len(values) // 2], 3)

    def through_master(fun):
        took = []
        for _ in range(runs):
            t0 = time.monotonic()
            lab.salt(profiles.MASTER, fun, timeout=60)
            took.append(time.monotonic() - t0)
        return median(took)

    def on_node(fun):
        took = []
        for _ in range(runs):
            t0 = time.monotonic()
            lab.host(profiles.MASTER).run(["salt-call", "--local", "--out", "quiet", fun], check=True, timeout=60)
            took.append(time.monotonic() - t0)
        return median(took)

    out = {"master": {f: through_master(f) for f in ("test.ping", "nginx_ha.is_master", "nginx_ha.health")},
           "local": {f: on_node(f) for f in ("test.ping", "nginx_ha.is_master", "nginx_ha.health")}}
    for where, what in (("master", "`salt web-a <fun>` through the master"), ("local", "`salt-call --local <fun>` on web-a")):
        bench.say(f"queries, {what}: " + ", ".join(f"{f} {v:.2f} s" for f, v in out[where].items()) + f" (median of {runs})")
    return out


def idempotent_apply(lab, pairs=5, settle=2):
    """
    The idempotent run: ``pairs`` times a ``test.ping`` and then a ``state.apply`` in the same moment
    (the machine's load varies by tenths of a second over a run). A run that still changed something
    (the failover phases' power cuts reset sysctls) is a settling run, not counted (at most
    ``settle`` of them). Returns the run with the median ``apply - test.ping``, with ``minus_ping``
    (that median), ``pairs`` ([ping, apply] of each counted run) and ``settling`` (changed ids).
    """
    counted, settling = [], []
    while len(counted) < pairs:
        t0 = time.monotonic()
        lab.salt(profiles.MASTER, "test.ping", timeout=60)
        ping = time.monotonic() - t0
        run = profiles.apply(lab, profiles.MASTER)
        if run["changed"] and len(settling) < settle:
            settling.append(run["changed"])
            continue
        counted.append((run["wall"] - ping, ping, run))
    counted.sort(key=lambda c: c[0])
    minus, _, run = counted[len(counted) // 2]
    return dict(run, minus_ping=round(minus, 3), pairs=[[round(p, 3), round(r["wall"], 3)] for _, p, r in counted], settling=settling)


def apply_timings(bench, lab, sizes, first_install, restart_cmd, errors, extra=None):
    """state.apply on web-a with N instances: first run after the pillar change, then the idempotent run."""
    out = []
    for n in sizes:
        if bench.over_budget():
            bench.say(f"state.apply with {n} instance(s): skipped (time budget spent)")
            continue
        try:
            if n == 1 and first_install is not None:
                first = first_install
            else:
                profiles.write_pillar(lab.pillar_dir, profiles.ours_pillar(n, restart_cmd, extra))
                lab.salt(profiles.MASTER, "saltutil.refresh_pillar", "wait=True", timeout=60)
                first = profiles.apply(lab, profiles.MASTER)
            idem = idempotent_apply(lab)
        except Exception as exc:  # noqa: BLE001 - keep the other sizes and the trials
            errors.append({"phase": f"state.apply with {n} instances", "error": repr(exc)[:2000]})
            bench.say(f"state.apply with {n} instance(s): ERROR {exc!r:.300}")
            continue
        out.append({"instances": n, "first": first, "idempotent": idem})
        bench.say(f"state.apply with {n:2d} instance(s) on web-a: first {first['wall']:.1f} s "
                  f"({len(first['changed'])} changed), idempotent {idem['wall']:.1f} s ({len(idem['changed'])} changed"
                  f"{', FAILED: ' + ', '.join(idem['failed']) if idem['failed'] else ''}), "
                  f"minus test.ping {idem['minus_ping']:.2f} s (median of {len(idem['pairs'])} pairs"
                  f"{', after ' + str(len(idem['settling'])) + ' settling run(s)' if idem['settling'] else ''})")
    return out


def main(argv=None):
    args = parse_args(argv)
    from lab import Lab

    restart_cmd = None
    try:
        from lab import minion_restart_cmd

        restart_cmd = minion_restart_cmd()
    except ImportError:
        pass
    trials = {"ours": args.trials, "baseline": args.baseline_trials}
    started = datetime.datetime.now(datetime.timezone.utc)
    results = {
        "meta": {"started": started.isoformat(), "versions": versions(), "argv": sys.argv[1:]},
        "config": {"trials": trials, "scenarios": args.scenarios, "profiles": args.profiles,
                   "poll_interval": 0.02, "poll_timeout": 0.25, "apply_sizes": args.apply_sizes,
                   "vip": profiles.VIP, "ours_pillar": profiles.ours_pillar(1, extra=args.ours_pillar),
                   "ours_pillar_extra": args.ours_pillar},
    }
    pillar = profiles.ours_pillar(1, restart_cmd, args.ours_pillar)
    import yaml

    files = {"top.sls": "base:\n  'web-*':\n    - nginx_ha\n", "nginx_ha.sls": yaml.safe_dump(pillar)}
    master_extra = {"peer": {".*": ["nginx_ha.health"]}}  # conf/master.d/nginx_ha.conf's rule for maintenance
    print(f"nginx-ha failover benchmark: {trials['ours']} trials per scenario (ours), {trials['baseline']} (baseline); "
          f"scenarios {', '.join(args.scenarios)}", flush=True)
    errors = []
    bench = None
    interrupted = False
    try:
        with Lab(minions=profiles.NODES, pillar_dir=files, file_roots=[os.path.join(REPO, "salt")],
                 master_extra=master_extra) as lab:
            bench = Bench(lab, trials, budget=args.budget)
            run_all(bench, lab, args, trials, restart_cmd, results, errors)
    except BaseException as exc:  # noqa: B902 - write what was measured, then fail
        errors.append({"phase": "lab", "error": "".join(traceback.format_exception_only(type(exc), exc)).strip()})
        if not isinstance(exc, Exception):
            interrupted = True
            print(f"bench: interrupted ({exc!r}); writing what was measured", file=sys.stderr)
        else:
            traceback.print_exc()
    if bench is not None:
        results["trials"] = bench.results["trials"]
        results["skipped"] = bench.results["skipped"]
        results["meta"]["lab_seconds"] = bench.elapsed()
        errors.extend(bench.results.get("errors", []))
    results.setdefault("trials", [])
    results.setdefault(report.EVENT_SLOT, {"status": "n/a (not measured)"})
    if args.scale_sizes and not interrupted:  # its own lab (up to 20 minions), after the failover lab is gone
        try:
            say = bench.say if bench is not None else (lambda text: print(text, flush=True))
            results["scale"] = scale.run(say, args.out, sizes=args.scale_sizes, reps=2)
        except BaseException as exc:  # noqa: B902 - keep what the other phases measured
            errors.append({"phase": "scale", "error": "".join(traceback.format_exception_only(type(exc), exc)).strip()})
            if not isinstance(exc, Exception):
                print(f"bench: scale phase interrupted ({exc!r})", file=sys.stderr)
    results["errors"] = errors
    results["summary"] = report.summarize(results)
    results["targets"] = report.check_targets(results["summary"], results.get("apply"), results.get(report.EVENT_SLOT),
                                              (results["meta"] or {}).get("calibration"),
                                              (results.get(report.EVENT_SLOT) or {}).get("reactor_heal"))
    results["meta"]["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    path = os.path.join(args.out, "results.json")
    report.write_json(results, path)
    print("\n" + report.table(results), flush=True)
    if results.get("scale"):
        print("\n" + "\n".join(scale.lines(results["scale"])), flush=True)
    print(f"\nresults: {path}")
    if not args.no_plots and results["trials"]:
        for png in plot.draw(results, args.out):
            print(f"timeline: {png}")
        overview = plot.overview(results, os.path.join(args.out, "failover.png"))
        if overview:
            print(f"overview: {overview}")
            if not args.quick and set(args.profiles) == {"ours", "baseline"} and not errors:
                os.makedirs(os.path.dirname(args.figure), exist_ok=True)
                shutil.copyfile(overview, args.figure)
                print(f"overview figure for the README: {args.figure}")
    for err in errors:
        print(f"bench: ERROR in {err.get('phase')}: {err.get('error')}", file=sys.stderr)
    return 1 if errors else 0


def run_all(bench, lab, args, trials, restart_cmd, results, errors):
    """Everything that needs the lab; fills ``results`` as it goes."""
    per_profile = {p: sum(trial_count(scenarios.BY_NAME[s], trials[p]) for s in args.scenarios
                          if p in scenarios.BY_NAME[s].profiles) for p in args.profiles}
    bench.total = sum(per_profile.values())
    bench.say(f"lab up ({lab.timings.get('start', 0):.1f}s); {bench.total} trials to run")
    if "baseline" in args.profiles:
        bench.say("baseline: installing the tutorial's keepalived.conf and check script on web-a/web-b (no Salt)")
        profiles.install_baseline(lab)
        bench.run_profile("baseline", args.scenarios)
        profiles.remove_baseline(lab)
    first_install = None
    if "ours" in args.profiles or args.apply_sizes:
        bench.say("ours: saltutil.sync_all and state.apply nginx_ha (defaults, minimal pillar) on web-b, web-a")
        lab.wait_minions()  # a power-cycled web-a's minion may still be connecting
        for node in profiles.NODES:
            lab.salt(node, "saltutil.sync_all", timeout=120)
        for node in (profiles.BACKUP, profiles.MASTER):
            res = profiles.apply(lab, node)
            if res["failed"]:
                raise RuntimeError(f"state.apply nginx_ha failed on {node}: {res['failed']}")
            if node == profiles.MASTER:
                first_install = res
            bench.say(f"  {node}: first state.apply {res['wall']:.1f} s, {len(res['changed'])} states changed")
        if "ours" in args.profiles:
            bench.run_profile("ours", args.scenarios)
            results["overhead"] = overhead(bench, lab)
            try:
                results["queries"] = query_timings(bench, lab)
            except Exception as exc:  # noqa: BLE001 - keep what the other phases measured
                errors.append({"phase": "queries", "error": repr(exc)[:2000]})
    if args.apply_sizes:
        results["meta"]["calibration"] = calibration(bench, lab)
    results["apply"] = apply_timings(bench, lab, args.apply_sizes, first_install, restart_cmd, errors, args.ours_pillar)
    # Last: it changes the pillar (notify script on) and restarts the master with the reactor.
    if "ours" in args.profiles and args.event_trials > 0:
        try:
            results[report.EVENT_SLOT] = event_latency.run(bench, lab, args.event_trials, restart_cmd, args.ours_pillar)
        except Exception as exc:  # noqa: BLE001 - keep what the other phases measured
            errors.append({"phase": "events", "error": repr(exc)[:4000]})
            bench.say(f"events: ERROR {exc!r:.500}")
            results[report.EVENT_SLOT] = {"status": f"n/a (the events phase failed: {exc!r:.200})"}
    else:
        results[report.EVENT_SLOT] = {"status": "n/a (not run: --event-trials 0 or our profile not measured)"}

if __name__ == "__main__":
    t0 = time.monotonic()
    code = main()
    print(f"bench: done in {(time.monotonic() - t0) / 60:.1f} min", flush=True)
    sys.exit(code)
