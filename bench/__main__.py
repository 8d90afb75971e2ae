"""
`make bench`: client-visible failover of our defaults against the tutorial's setup, in one run on
the same lab hosts.

    .venv/bin/python -m bench                       # 5 trials per scenario and profile, ~10-12 min
    .venv/bin/python -m bench --trials 18           # more trials (BENCH_TRIALS=18 works too)
    .venv/bin/python -m bench --scenarios crash,hang --profiles ours --apply-sizes ''

Builds a lab (Salt master, web-a, web-b, client), installs the baseline profile (the tutorial's
keepalived.conf and check script, no Salt) and runs its trials, removes it, applies the nginx_ha
formula through Salt with its defaults and runs our trials, then times state.apply with 1, 10 and
50 VRRP instances. Prints a table, writes bench-results/results.json and one PNG timeline per
scenario. The lab is torn down at the end, also on failure or Ctrl-C.
"""

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time

from . import plot, profiles, report, scenarios
from .runner import Bench, event_latency_hook

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv):
    env_trials = int(os.environ.get("BENCH_TRIALS", "5"))
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=env_trials, help="trials per scenario and profile (default 5, env BENCH_TRIALS)")
    p.add_argument("--baseline-trials", type=int, default=None, help="trials per baseline scenario (default: --trials)")
    p.add_argument("--scenarios", default=",".join(s.name for s in scenarios.ALL),
                   help="comma list of: " + ", ".join(s.name for s in scenarios.ALL) + " (failback is measured in every repair)")
    p.add_argument("--profiles", default="baseline,ours", help="comma list of: baseline, ours")
    p.add_argument("--apply-sizes", default=os.environ.get("BENCH_APPLY_SIZES", "1,10,50"),
                   help="VRRP instance counts to time state.apply with ('' to skip)")
    p.add_argument("--out", default=os.path.join(REPO, "bench-results"), help="results directory")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--budget", type=float, default=float(os.environ.get("BENCH_BUDGET", "1080")),
                   help="seconds after which remaining trials are skipped (default 1080 = 18 min)")
    args = p.parse_args(argv)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in args.scenarios if s not in scenarios.BY_NAME]
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(unknown)}")
    args.profiles = [s for s in args.profiles.split(",") if s]
    if any(pr not in ("baseline", "ours") for pr in args.profiles):
        p.error("profiles are baseline and ours")
    args.apply_sizes = [int(n) for n in args.apply_sizes.split(",") if n.strip()]
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


def apply_timings(bench, lab, sizes, first_install, restart_cmd):
    """state.apply on web-a with N instances: first run after the pillar change, then the idempotent run."""
    out = []
    for n in sizes:
        if bench.over_budget():
            bench.say(f"state.apply with {n} instance(s): skipped (time budget spent)")
            continue
        if n == 1 and first_install is not None:
            first = first_install
        else:
            profiles.write_pillar(lab.pillar_dir, profiles.ours_pillar(n, restart_cmd))
            lab.salt(profiles.MASTER, "saltutil.refresh_pillar", "wait=True", timeout=60)
            first = profiles.apply(lab, profiles.MASTER)
        idem = profiles.apply(lab, profiles.MASTER)
        out.append({"instances": n, "first": first, "idempotent": idem})
        bench.say(f"state.apply with {n:2d} instance(s) on web-a: first {first['wall']:.1f} s "
                  f"({len(first['changed'])} changed), idempotent {idem['wall']:.1f} s ({len(idem['changed'])} changed"
                  f"{', FAILED: ' + ', '.join(idem['failed']) if idem['failed'] else ''})")
    return out


def main(argv=None):
    args = parse_args(argv)
    from lab import Lab

    restart_cmd = None
    try:
        from lab import MINION_RESTART_CMD as restart_cmd  # noqa: N811
    except ImportError:
        pass
    trials = {"ours": args.trials, "baseline": args.baseline_trials if args.baseline_trials is not None else args.trials}
    started = datetime.datetime.now(datetime.timezone.utc)
    results = {
        "meta": {"started": started.isoformat(), "versions": versions(), "argv": sys.argv[1:]},
        "config": {"trials": trials, "scenarios": args.scenarios, "profiles": args.profiles,
                   "poll_interval": 0.02, "poll_timeout": 0.25, "apply_sizes": args.apply_sizes,
                   "vip": profiles.VIP, "ours_pillar": profiles.ours_pillar(1)},
    }
    pillar = profiles.ours_pillar(1, restart_cmd)
    import yaml

    files = {"top.sls": "base:\n  'web-*':\n    - nginx_ha\n", "nginx_ha.sls": yaml.safe_dump(pillar)}
    master_extra = {"peer": {".*": ["nginx_ha.health"]}}  # conf/master.d/nginx_ha.conf's rule for maintenance
    print(f"nginx-ha failover benchmark: {trials['ours']} trials per scenario (ours), {trials['baseline']} (baseline); "
          f"scenarios {', '.join(args.scenarios)}", flush=True)
    with Lab(minions=profiles.NODES, pillar_dir=files, file_roots=[os.path.join(REPO, "salt")],
             master_extra=master_extra) as lab:
        bench = Bench(lab, trials, budget=args.budget)
        per_profile = {p: sum(1 for s in args.scenarios if p in scenarios.BY_NAME[s].profiles) * trials[p] for p in args.profiles}
        bench.total = sum(per_profile.values())
        bench.say(f"lab up ({lab.timings.get('start', 0):.1f}s); {bench.total} trials to run")
        if "baseline" in args.profiles:
            bench.say("baseline: installing the tutorial's keepalived.conf and check script on web-a/web-b (no Salt)")
            profiles.install_baseline(lab)
            bench.run_profile("baseline", args.scenarios)
            profiles.remove_baseline(lab)
        first_install = None
        hook = event_latency_hook()
        if "ours" in args.profiles or args.apply_sizes:
            bench.say("ours: saltutil.sync_all and state.apply nginx_ha (defaults, minimal pillar) on web-b, web-a")
            for node in profiles.NODES:
                lab.salt(node, "saltutil.sync_all", timeout=120)
            for node in (profiles.BACKUP, profiles.MASTER):
                res = profiles.apply(lab, node)
                if res["failed"]:
                    raise SystemExit(f"bench: state.apply nginx_ha failed on {node}: {res['failed']}")
                if node == profiles.MASTER:
                    first_install = res
                bench.say(f"  {node}: first state.apply {res['wall']:.1f} s, {len(res['changed'])} states changed")
            if "ours" in args.profiles:
                if hook is not None and hasattr(hook, "begin"):
                    hook.begin(lab)
                bench.run_profile("ours", args.scenarios)
        if hook is not None and hasattr(hook, "measure"):
            ours = [t for t in bench.results["trials"] if t["profile"] == "ours" and t["scenario"] != "maintenance"]
            results[report.EVENT_SLOT] = hook.measure(lab, ours) or {"status": "n/a (measure() returned nothing)"}
        else:
            results[report.EVENT_SLOT] = {"status": "n/a (no bench.event_latency hook yet)"}
        results["apply"] = apply_timings(bench, lab, args.apply_sizes, first_install, restart_cmd)
        results["trials"] = bench.results["trials"]
        results["skipped"] = bench.results["skipped"]
        results["meta"]["lab_seconds"] = bench.elapsed()
    results["summary"] = report.summarize(results)
    results["targets"] = report.check_targets(results["summary"], results.get("apply"))
    results["meta"]["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    path = os.path.join(args.out, "results.json")
    report.write_json(results, path)
    print("\n" + report.table(results), flush=True)
    print(f"\nresults: {path}")
    if not args.no_plots:
        for png in plot.draw(results, args.out):
            print(f"timeline: {png}")
    return 0


if __name__ == "__main__":
    t0 = time.monotonic()
    code = main()
    print(f"bench: done in {(time.monotonic() - t0) / 60:.1f} min", flush=True)
    sys.exit(code)
