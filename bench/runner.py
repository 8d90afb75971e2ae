"""
Runs the benchmark on one lab: trials of every scenario for every profile, then state.apply timings.

Each fault trial: wait for the steady state (web-a holds the VIP and answers, web-b is ready),
start the client poller, inject the fault on web-a, watch until the client has seen answers
again for ``settle`` seconds (or the scenario's window ends: not recovered), repair web-a, watch
the VIP come back (failback), stop the poller and keep its samples.
"""

import os
import secrets
import sys
import time

from . import profiles, scenarios, stats
from .report import duration

POLL_INTERVAL = 0.02
POLL_TIMEOUT = 0.25
MIN_WINDOW = 3.0  # seconds after a fault a trial watches at least (late flaps show up)
SETTLE = 2.0  # seconds of uninterrupted answers that end the fault phase
FAILBACK_SETTLE = 1.5  # seconds of answers by web-a (with the VIP on web-a only) that end a trial
STEADY_TIMEOUT = 60.0
PYTHON = "/usr/bin/python3"
POLLER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "poller.py")


class BenchError(RuntimeError):
    pass


class Poller:
    """The client poller (bench/poller.py) running in the lab's client host."""

    def __init__(self, lab, tag, max_seconds=120, url=None, sequential=False):
        self.lab = lab
        name = f"/tmp/bench-poll-{tag}{'-seq' if sequential else ''}-{secrets.token_hex(3)}"
        self.out, self.stop_file = name + ".txt", name + ".stop"
        cmd = (f"{PYTHON} {POLLER} --url {url or f'http://{profiles.VIP}/'} --out {self.out} --stop-file {self.stop_file} "
               f"--interval {POLL_INTERVAL} --timeout {POLL_TIMEOUT} --nodes {','.join(profiles.NODES)} "
               f"--max-seconds {max_seconds} --max-requests {int(max_seconds / POLL_INTERVAL) + 10}"
               f"{' --sequential' if sequential else ''}")
        self.pid = lab.client.spawn(cmd, log_path=name + ".log")
        self.stopped = False

    def samples(self):
        return stats.parse(self.lab.client.read_file(self.out, missing_ok=True) or "")

    def stop(self):
        if not self.stopped:
            self.lab.client.run(f"touch {self.stop_file}; for i in $(seq 50); do kill -0 {self.pid} 2>/dev/null || break; "
                                f"sleep 0.02; done; kill {self.pid} 2>/dev/null; true", timeout=30)
            self.stopped = True
        samples = self.samples()
        self.lab.client.run(f"rm -f {self.out} {self.stop_file}", timeout=30)
        return samples


class Bench:
    def __init__(self, lab, trials, out=sys.stdout, budget=None):
        self.lab = lab
        self.trials = trials  # {profile: n}
        self.out = out
        self.t0 = time.monotonic()
        self.budget = budget
        self.done = 0
        self.total = 0
        self.results = {"trials": [], "skipped": []}

    # -- progress ------------------------------------------------------------------------
    def elapsed(self):
        return time.monotonic() - self.t0

    def say(self, text):
        m, s = divmod(int(self.elapsed()), 60)
        print(f"[{m:2d}:{s:02d}] {text}", file=self.out, flush=True)

    def over_budget(self):
        return self.budget is not None and self.elapsed() > self.budget

    # -- state of the cluster ----------------------------------------------------------------
    def node_status(self, node, profile):
        host = self.lab.host(node)
        if not host.running:
            return {"running": False}
        cmd = (f"ip -4 -o addr show dev eth0 | grep -q ' {profiles.VIP}/' && echo vip=1 || echo vip=0; "
               "curl -s -o /dev/null -m 1 -w 'http=%{http_code}\\n' http://127.0.0.1/; "
               "pgrep -x keepalived >/dev/null && echo ka=1 || echo ka=0; "
               "echo health=$(cat /run/nginx_ha_health 2>/dev/null || echo -)")
        res = host.run(cmd, timeout=30)
        out = dict(line.split("=", 1) for line in res.stdout.split() if "=" in line)
        return {"running": True, "vip": out.get("vip") == "1", "http": out.get("http") == "200",
                "keepalived": out.get("ka") == "1", "health": out.get("health")}

    def steady(self, profile, timeout=STEADY_TIMEOUT):
        """Wait until web-a alone holds the VIP, both nodes serve and run keepalived (ours: both healthy)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            a = self.node_status(profiles.MASTER, profile)
            b = self.node_status(profiles.BACKUP, profile)
            last = (a, b)
            ok = (a.get("running") and b.get("running") and a["vip"] and not b["vip"] and a["http"] and b["http"]
                  and a["keepalived"] and b["keepalived"])
            if ok and profile == "ours":
                ok = a["health"] == "0" and b["health"] == "0"
            if ok:
                return
            time.sleep(0.2)
        raise BenchError(f"{profile}: no steady state after {timeout}s (web-a, web-b): {last}\n{self.lab.logs(lines=15)}")

    def vip_only_on_master(self):
        a = self.node_status(profiles.MASTER, None)
        b = self.node_status(profiles.BACKUP, None)
        return a.get("vip") and not b.get("vip")

    def wait_streak(self, poller, node, seconds, since, timeout, extra=None):
        """Wait until the client got answers from ``node`` for ``seconds`` (streak starting after ``since``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            samples = [s for s in poller.samples() if s.t >= since]
            if stats.success_streak(samples, node) >= seconds and (extra is None or extra()):
                return True
            time.sleep(0.25)
        return False

    # -- trials ----------------------------------------------------------------------------
    def fault_trial(self, profile, scenario, k):
        lab = self.lab
        self.steady(profile)
        poller = Poller(lab, f"{profile}-{scenario.name}-{k}")
        # the same requests from one user who waits for each answer (see bench/poller.py)
        single = Poller(lab, f"{profile}-{scenario.name}-{k}", sequential=True)
        try:
            start = time.time()
            if not self.wait_streak(poller, profiles.MASTER, 0.5, start, 15):
                raise BenchError(f"{profile} {scenario.name}: the client does not get web-a's page before the fault")
            t_fault = scenario.inject(self, profile)
            recovered = False
            while True:
                time.sleep(0.25)
                now = time.time()
                samples = poller.samples()
                after = [s for s in samples if stats.end(s) >= t_fault]
                streak = stats.success_streak(after)
                if now - t_fault >= MIN_WINDOW and streak >= SETTLE:
                    recovered = True
                    break
                if now - t_fault >= scenario.window:
                    break
            t_repair = time.time()
            scenario.repair(self, profile)
            back = self.wait_streak(poller, profiles.MASTER, FAILBACK_SETTLE, t_repair, scenario.failback_window,
                                    extra=self.vip_only_on_master)
            t_end = time.time()
        finally:
            samples = poller.stop()
            single_samples = single.stop()
        scenario.cleanup(self, profile, back)
        trial = self.record_fault(profile, scenario, k, samples, t_fault, t_repair, t_end, recovered, back)
        o1 = stats.outage(single_samples, t_fault, until=t_repair)
        trial["sequential"] = {"outage": o1.seconds, "failed": o1.failed, "recovered": o1.recovered,
                               "failback_failed": stats.failed_count(single_samples, t_repair, t_end)}
        return trial

    def record_fault(self, profile, scenario, k, samples, t_fault, t_repair, t_end, recovered, back):
        o = stats.outage(samples, t_fault, until=t_repair)
        fault_phase = stats.window(samples, t_fault, t_repair)
        moved = any(s.ok and s.node == profiles.BACKUP for s in fault_phase)
        failback_samples = stats.window(samples, t_repair, t_end)
        first_a = stats.first_answer_by(samples, profiles.MASTER, t_repair, t_end)
        trial = {
            "profile": profile,
            "scenario": scenario.name,
            "trial": k,
            "t_fault": t_fault,
            "t_repair": t_repair,
            "t_end": t_end,
            "outage": o.seconds,
            "failed": o.failed,
            "recovered": o.recovered and recovered,
            "failed_over": moved,
            "pre_fault_failures": sum(1 for s in samples if stats.end(s) < t_fault and not s.ok),
            "failback": {
                "moved": moved,
                "completed": back,
                "failed": sum(1 for s in failback_samples if not s.ok),
                "seconds": (first_a - t_repair) if first_a is not None else None,
            },
            "transitions": [(round(t - t_fault, 4), n) for t, n in stats.transitions(samples)],
            "samples": [(round(s.t - t_fault, 4), round(s.dt, 4), int(s.ok), s.node) for s in samples],
        }
        if not o.recovered or not recovered:
            trial["outage_censored"] = True
        if scenario.name == "heal":
            healed = stats.outage(samples, t_repair, until=t_end)
            trial["heal_outage"] = healed.seconds
            trial["heal_recovered"] = healed.recovered and back
        return trial

    def maintenance_trial(self, k):
        lab = self.lab
        if k == 1:
            lab.wait_minions()  # web-a's minion after the power cycles of host_death
        self.steady("ours")
        poller = Poller(lab, f"ours-maintenance-{k}")
        try:
            start = time.time()
            if not self.wait_streak(poller, profiles.MASTER, 0.5, start, 15):
                raise BenchError("maintenance: the client does not get web-a's page first")
            t_on = time.time()
            on = lab.salt(profiles.MASTER, "nginx_ha.maintenance", "on", timeout=120)
            cli_on = time.time() - t_on
            moved = self.wait_streak(poller, profiles.BACKUP, 1.0, t_on, 20)
            t_off = time.time()
            off = lab.salt(profiles.MASTER, "nginx_ha.maintenance", "off", timeout=120)
            cli_off = time.time() - t_off
            back = self.wait_streak(poller, profiles.MASTER, FAILBACK_SETTLE, t_off, 20, extra=self.vip_only_on_master)
            t_end = time.time()
        finally:
            samples = poller.stop()
        first_b = stats.first_answer_by(samples, profiles.BACKUP, t_on, t_off)
        first_a = stats.first_answer_by(samples, profiles.MASTER, t_off, t_end)
        failed_on = stats.failed_count(samples, t_on, t_off)
        failed_off = stats.failed_count(samples, t_off, t_end)
        return {
            "profile": "ours",
            "scenario": "maintenance",
            "trial": k,
            "t_fault": t_on,
            "t_repair": t_off,
            "t_end": t_end,
            "failed": failed_on + failed_off,
            "failed_on": failed_on,
            "failed_off": failed_off,
            "outage": stats.outage(samples, t_on, until=t_end).seconds,
            "recovered": bool(moved and back),
            "switch_seconds": (first_b - t_on) if first_b else None,
            "back_seconds": (first_a - t_off) if first_a else None,
            "cli_seconds": {"on": cli_on, "off": cli_off},
            "settled": {"on": isinstance(on, dict) and on.get("settled"), "off": isinstance(off, dict) and off.get("settled")},
            "transitions": [(round(t - t_on, 4), n) for t, n in stats.transitions(samples)],
            "samples": [(round(s.t - t_on, 4), round(s.dt, 4), int(s.ok), s.node) for s in samples],
        }

    def transitions_logged(self):
        """keepalived state transitions logged so far on web-a and web-b (syslog 'Entering ... STATE')."""
        count = 0
        for node in profiles.NODES:
            res = self.lab.host(node).run("grep -c 'Entering .* STATE' /var/log/syslog || true", timeout=30)
            count += int((res.stdout.strip() or "0").splitlines()[-1])
        return count

    def slow_upstream(self, on):
        """Start (``on``) or remove the load scenario's slow upstream and its nginx port on both nodes."""
        upstream = os.path.join(os.path.dirname(POLLER), "slow_upstream.py")
        for node in profiles.NODES:
            host = self.lab.host(node)
            if on:
                host.write_file(scenarios.SLOW_SITE, scenarios.SLOW_SITE_TEXT)
                host.spawn(f"{PYTHON} {upstream} --port {scenarios.SLOW_UPSTREAM_PORT} "
                           f"--delay {scenarios.BY_NAME['load'].slow_delay} --max-seconds {scenarios.BY_NAME['load'].seconds + 60}",
                           log_path="/dev/null")
            else:
                host.run(f"rm -f {scenarios.SLOW_SITE}; pkill -f slow_upstream.py; true", timeout=30)
            host.run("nginx -t -q && nginx -s reload", check=True, timeout=30)
        if on:  # the port answers through nginx on both nodes before the load starts
            for node in profiles.NODES:
                url = f"http://127.0.0.1:{scenarios.SLOW_PORT}/"
                self.lab.host(node).run(f"for i in $(seq 50); do curl -sf -m 2 -o /dev/null {url} && exit 0; sleep 0.1; done; exit 1",
                                        check=True, timeout=60)

    def load_trial(self, profile, k):
        lab, scenario = self.lab, scenarios.BY_NAME["load"]
        seconds = scenario.seconds
        self.steady(profile)
        self.slow_upstream(True)
        try:
            return self._load_trial(profile, k, lab, scenario, seconds)
        finally:
            self.slow_upstream(False)

    def _load_trial(self, profile, k, lab, scenario, seconds):
        self.steady(profile)
        before = self.transitions_logged()
        poller = Poller(lab, f"{profile}-load-{k}", max_seconds=seconds + 60)
        try:
            start = time.time()
            if not self.wait_streak(poller, profiles.MASTER, 0.5, start, 15):
                raise BenchError(f"{profile} load: the client does not get web-a's page first")
            t0 = time.time()
            for node in profiles.NODES:  # both cores saturated, whichever host runs (bounded by timeout(1))
                for _ in range((os.cpu_count() or 2) + 1):
                    lab.host(node).spawn(f"timeout {seconds} sh -c 'while :; do :; done'", log_path="/dev/null")
            flood = f"{PYTHON} {POLLER} --stop-file /tmp/bench-flood.stop --max-seconds {seconds}"
            floods = {"loop-1": f"--url http://{profiles.VIP}/ --sequential --interval 0 --timeout 1 --max-requests 1000000",
                      "loop-2": f"--url http://{profiles.VIP}/ --sequential --interval 0 --timeout 1 --max-requests 1000000",
                      "stream": f"--url http://{profiles.VIP}/ --interval {1 / scenario.flood_rate:.4f} --timeout 1 "
                                "--max-requests 1000000",
                      "slow": f"--url http://{profiles.VIP}:{scenarios.SLOW_PORT}/ --interval {1 / scenario.slow_rate:.4f} "
                              "--timeout 5 --max-inflight 400 --max-requests 1000000"}
            lab.client.run("rm -f /tmp/bench-flood-*.txt", timeout=30)
            for name, opts in floods.items():
                lab.client.spawn(f"{flood} --out /tmp/bench-flood-{name}.txt {opts}", log_path="/dev/null")
            time.sleep(seconds + 1)
            t1 = time.time()
            self.wait_streak(poller, None, 1.0, t1 - 1.0, 10)
            t_end = time.time()
            load = {}
            for name in floods:
                flood_samples = stats.parse(lab.client.read_file(f"/tmp/bench-flood-{name}.txt", missing_ok=True) or "")
                load[name] = {"requests": len(flood_samples), "ok": sum(1 for x in flood_samples if x.ok)}
            load["loadavg"] = open("/proc/loadavg").read().split()[:3]  # the machine's: every lab host shares it
        finally:
            samples = poller.stop()
        after = self.transitions_logged()
        moves = [n for t, n in stats.transitions(samples) if t >= t0]
        return {
            "profile": profile,
            "scenario": "load",
            "trial": k,
            "t_fault": t0,
            "t_repair": t1,
            "t_end": t_end,
            "outage": stats.outage(samples, t0, until=t_end).seconds,
            "failed": stats.failed_count(samples, t0, t_end),
            "recovered": True,
            "vip_moves": max(0, len(moves) - 1) if moves and moves[0] == profiles.MASTER else len(moves),
            "keepalived_transitions": after - before,
            "requests": len(stats.window(samples, t0, t1)),
            "load": load,
            "transitions": [(round(t - t0, 4), n) for t, n in stats.transitions(samples)],
            "samples": [(round(s.t - t0, 4), round(s.dt, 4), int(s.ok), s.node) for s in samples],
        }

    def run_profile(self, profile, names):
        chosen = [scenarios.BY_NAME[n] for n in names if n in scenarios.BY_NAME and profile in scenarios.BY_NAME[n].profiles]
        for scenario in chosen:
            n = trial_count(scenario, self.trials[profile])
            for k in range(1, n + 1):
                label = f"{profile:8s} {scenario.name:11s} trial {k}/{n}"
                if self.over_budget():
                    self.results["skipped"].append({"profile": profile, "scenario": scenario.name, "trial": k})
                    self.say(f"{label}: skipped (time budget of {self.budget:.0f}s spent)")
                    self.done += 1
                    continue
                t0 = time.monotonic()
                try:
                    trial, detail = self.run_trial(profile, scenario, k)
                except Exception as exc:  # noqa: BLE001 - record, leave this profile's remaining trials
                    self.results.setdefault("errors", []).append(
                        {"phase": f"{profile} {scenario.name} trial {k}", "error": repr(exc)[:4000]})
                    self.say(f"{label}: ERROR {exc!r:.500}; skipping the rest of {profile}")
                    return
                self.results["trials"].append(trial)
                self.done += 1
                rate = self.elapsed() / max(1, self.done)
                eta = rate * (self.total - self.done)
                self.say(f"{label}: {detail}  [{time.monotonic() - t0:.1f}s, {self.done}/{self.total}, "
                         f"~{eta / 60:.1f} min left]")

    def run_trial(self, profile, scenario, k):
        if scenario.name == "load":
            trial = self.load_trial(profile, k)
            flood = ", ".join(f"{k} {v['ok']}/{v['requests']}" for k, v in trial["load"].items() if isinstance(v, dict))
            detail = (f"load: {flood} answered, load average {' '.join(trial['load']['loadavg'])}; "
                      f"{trial['requests']} requests, failed {trial['failed']}, VIP moves {trial['vip_moves']}, "
                      f"keepalived transitions {trial['keepalived_transitions']}")
        elif scenario.name == "maintenance":
            trial = self.maintenance_trial(k)
            detail = (f"failed {trial['failed']} (on {trial['failed_on']}, off {trial['failed_off']}), "
                      f"switch {duration(trial['switch_seconds'])}, back {duration(trial['back_seconds'])}")
        else:
            trial = self.fault_trial(profile, scenario, k)
            fb = trial["failback"]
            detail = (f"outage {duration(trial['outage'])}{' (not recovered)' if trial.get('outage_censored') else ''}, "
                      f"failed {trial['failed']}, "
                      f"{'failed over' if trial['failed_over'] else 'stayed on web-a'}; "
                      f"failback: failed {fb['failed']}{'' if fb['completed'] else ' (web-a not back in time)'}")
        return trial, detail


def trial_count(scenario, trials):
    """Trials of ``scenario``: at most its ``max_trials`` (the load scenario is one long trial)."""
    return min(trials, scenario.max_trials) if scenario.max_trials else trials

