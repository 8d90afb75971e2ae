"""
Stall tolerance: how long may nginx or keepalived on the MASTER freeze before the VIP moves?

    .venv/bin/python -m bench.stall            # both profiles, ~4 min; prints a table, writes bench-results/stall.json

The price of fast failover is a shorter stall a node survives without a (false) failover. This
freezes nginx (SIGSTOP, then SIGCONT after N ms) or keepalived on web-a for increasing durations
and records whether the VIP moved and how many client requests failed. Same lab, profiles and
client as ``python -m bench``.
"""

import argparse
import json
import os
import sys
import time

import yaml

from . import profiles, stats
from .runner import Bench, Poller

NGINX_STALLS = (0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 1.5, 3.0)
KEEPALIVED_STALLS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 3.0, 4.0)


def stall_trial(bench, profile, what, seconds):
    lab = bench.lab
    bench.steady(profile)
    poller = Poller(lab, f"{profile}-stall-{what}")
    try:
        start = time.time()
        bench.wait_streak(poller, profiles.MASTER, 0.5, start, 15)
        res = lab.host(profiles.MASTER).run(
            f"date +%s.%N; pkill -STOP -x {what}; sleep {seconds}; pkill -CONT -x {what}", timeout=60)
        t0 = float(res.stdout.split()[0])
        time.sleep(2.5)  # a move caused by the stall shows within this
        moved_to_b = any(s.ok and s.node == profiles.BACKUP for s in poller.samples() if s.t >= t0)
        bench.wait_streak(poller, profiles.MASTER, 1.0, t0, 30, extra=bench.vip_only_on_master)
    finally:
        samples = poller.stop()
    return {"profile": profile, "process": what, "stall": seconds, "vip_moved": moved_to_b,
            "failed": stats.failed_count(samples, t0), "outage": stats.outage(samples, t0).seconds}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.stall", description=__doc__.split("\n\n")[0])
    p.add_argument("--profiles", default="baseline,ours")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench-results"))
    args = p.parse_args(argv)
    chosen = [x for x in args.profiles.split(",") if x]
    from lab import Lab

    try:
        from lab import minion_restart_cmd

        restart_cmd = minion_restart_cmd()
    except ImportError:
        restart_cmd = None
    files = {"top.sls": "base:\n  'web-*':\n    - nginx_ha\n",
             "nginx_ha.sls": yaml.safe_dump(profiles.ours_pillar(1, restart_cmd))}
    rows = []
    with Lab(minions=profiles.NODES, pillar_dir=files, file_roots=[os.path.join(profiles.HERE, "..", "salt")]) as lab:
        bench = Bench(lab, {})
        for profile in ("baseline", "ours"):
            if profile not in chosen:
                continue
            if profile == "baseline":
                profiles.install_baseline(lab)
            else:
                if "baseline" in chosen:
                    profiles.remove_baseline(lab)
                for node in profiles.NODES:
                    lab.salt(node, "saltutil.sync_all", timeout=120)
                for node in (profiles.BACKUP, profiles.MASTER):
                    profiles.apply(lab, node)
            for what, stalls in (("nginx", NGINX_STALLS), ("keepalived", KEEPALIVED_STALLS)):
                for seconds in stalls:
                    row = stall_trial(bench, profile, what, seconds)
                    rows.append(row)
                    bench.say(f"{profile:8s} {what:10s} frozen {seconds * 1000:5.0f} ms: "
                              f"{'VIP MOVED' if row['vip_moved'] else 'no failover'}, failed {row['failed']}, "
                              f"outage {row['outage'] * 1000:.0f} ms")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "stall.json"), "w") as fh:
        json.dump(rows, fh, indent=1)
    print("\nlongest freeze without a failover / shortest freeze with one:")
    for profile in chosen:
        for what in ("nginx", "keepalived"):
            mine = [r for r in rows if r["profile"] == profile and r["process"] == what]
            ok = [r["stall"] for r in mine if not r["vip_moved"]]
            bad = [r["stall"] for r in mine if r["vip_moved"]]
            print(f"  {profile:8s} {what:10s} survives {max(ok) * 1000 if ok else 0:.0f} ms; "
                  f"fails over at {min(bad) * 1000:.0f} ms" if bad else
                  f"  {profile:8s} {what:10s} survives {max(ok) * 1000:.0f} ms; no failover at any tested freeze")
    return 0


if __name__ == "__main__":
    sys.exit(main())
