"""
Pure statistics of the failover benchmark: from the client's request samples to outages.

A *sample* is one request the client made to the VIP: start time ``t`` (wall clock, seconds),
duration ``dt``, success ``ok`` (HTTP 200 in time) and the ``node`` that answered (None when it
failed). Times of faults and repairs are wall-clock seconds too (all hosts share the clock).

Definitions (the README quotes them):

* **outage** of a trial: from the fault injection to the *completion* of the first successful
  request after the last failed one. A request counts as "after the fault" when it *ended* after
  the fault (a request in flight when nginx hung fails at its timeout, after the fault). No failed
  request: outage 0. A last request that failed (nothing succeeded afterwards within the window):
  not recovered, the outage is censored at the window's end (``recovered`` False).
* **failed requests**: requests that ended after the fault (and before ``until``) without success.
"""

import collections
import math

Sample = collections.namedtuple("Sample", "t dt ok node")


class Outage(collections.namedtuple("Outage", "seconds failed recovered first_failure last_failure")):
    """seconds: outage (censored at the window end when not recovered); failed: failed requests."""


def parse_line(line):
    """One poller output line ``<t> <dt> <ok 0|1> <node|->`` -> Sample (None for junk)."""
    parts = line.split()
    if len(parts) < 4:
        return None
    try:
        t, dt, ok = float(parts[0]), float(parts[1]), parts[2] == "1"
    except ValueError:
        return None
    node = parts[3] if parts[3] != "-" else None
    return Sample(t, dt, ok, node)


def parse(text):
    return [s for s in (parse_line(line) for line in (text or "").splitlines()) if s is not None]


def end(sample):
    return sample.t + sample.dt


def window(samples, since, until=None):
    """Samples that ended at or after ``since`` and started before ``until`` (None: no bound)."""
    return [s for s in samples if end(s) >= since and (until is None or s.t < until)]


def outage(samples, t_fault, until=None):
    """The client-visible outage caused by a fault at ``t_fault`` (see the module docstring)."""
    after = sorted(window(samples, t_fault, until), key=lambda s: s.t)
    failures = [s for s in after if not s.ok]
    if not failures:
        return Outage(0.0, 0, True, None, None)
    last = failures[-1]
    recovered_by = next((s for s in after if s.ok and s.t >= last.t), None)
    if recovered_by is None:
        horizon = until if until is not None else max(end(s) for s in after)
        return Outage(max(0.0, horizon - t_fault), len(failures), False, failures[0].t, last.t)
    return Outage(end(recovered_by) - t_fault, len(failures), True, failures[0].t, last.t)


def failed_count(samples, since, until=None):
    return sum(1 for s in window(samples, since, until) if not s.ok)


def first_answer_by(samples, node, since, until=None):
    """Completion time of the first successful request answered by ``node`` (None: none)."""
    for s in sorted(window(samples, since, until), key=lambda s: s.t):
        if s.ok and s.node == node:
            return end(s)
    return None


def success_streak(samples, node=None):
    """Seconds covered by the trailing run of successful requests (answered by ``node`` if given)."""
    run = []
    for s in sorted(samples, key=lambda s: s.t):
        if s.ok and (node is None or s.node == node):
            run.append(s)
        else:
            run = []
    if not run:
        return 0.0
    return end(run[-1]) - run[0].t


def transitions(samples):
    """[(t, node)] each time the answering node changes (failures are skipped)."""
    out = []
    for s in sorted(samples, key=lambda s: s.t):
        if s.ok and (not out or out[-1][1] != s.node):
            out.append((s.t, s.node))
    return out


def percentile(values, q):
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    pos = (len(values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(values[lo] + (values[hi] - values[lo]) * (pos - lo))


def summarize(values):
    """{n, median, p95, max, min, mean} of the non-None values (None fields when there are none)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"n": 0, "median": None, "p95": None, "max": None, "min": None, "mean": None}
    return {
        "n": len(vals),
        "median": percentile(vals, 50),
        "p95": percentile(vals, 95),
        "max": float(max(vals)),
        "min": float(min(vals)),
        "mean": float(sum(vals) / len(vals)),
    }


def summarize_trials(trials, key="outage", failed_key="failed"):
    """
    Summary of one scenario for one profile from its trial dicts (``outage``, ``failed``,
    ``recovered``): outage statistics, failed-request statistics, and how many trials did not
    recover (their censored outage still enters the statistics, as a lower bound).
    """
    outages = [t.get(key) for t in trials]
    failed = [t.get(failed_key) for t in trials]
    out = {"trials": len(trials), key: summarize(outages), failed_key: summarize(failed)}
    out["not_recovered"] = sum(1 for t in trials if t.get("recovered") is False)
    out["failed_total"] = sum(f for f in failed if f is not None)
    return out
