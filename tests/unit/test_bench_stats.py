"""The benchmark's statistics: outages and failed requests computed from client samples."""

import pytest

from bench import report, stats
from bench.stats import Sample


def run(*spec, start=100.0, step=0.02, dt=0.001):
    """Samples from a compact spec: each item is 'a'/'b' (answered by web-a/web-b), 'x' (fast
    failure) or 'T' (failure at the 0.25 s timeout); requests are sequential, one per step."""
    out, t = [], start
    for item in spec:
        if item == "T":
            out.append(Sample(t, 0.25, False, None))
            t += 0.25
            continue
        ok = item in "ab"
        out.append(Sample(t, dt, ok, {"a": "web-a", "b": "web-b"}.get(item)))
        t += step
    return out


def test_no_failure_is_no_outage():
    samples = run(*"aaaaabbbbb")
    o = stats.outage(samples, t_fault=100.05)
    assert o.seconds == 0.0 and o.failed == 0 and o.recovered


def test_outage_ends_with_the_first_success_after_the_last_failure():
    # fault at 100.03; fast failures at 100.04, .06, .08, a 0.25 s timeout from 100.10; web-b answers at 100.35
    samples = run("a", "a", "x", "x", "x", "T", "b", "b", "b")
    o = stats.outage(samples, t_fault=100.03)
    assert o.failed == 4
    assert o.recovered
    assert o.seconds == pytest.approx(100.35 + 0.001 - 100.03)


def test_flap_after_a_success_extends_the_outage_to_the_last_failure():
    samples = run("a", "x", "b", "b", "x", "x", "a", "a")
    o = stats.outage(samples, t_fault=100.01)
    assert o.failed == 3
    assert o.seconds == pytest.approx(100.12 + 0.001 - 100.01)


def test_request_in_flight_at_the_fault_that_then_fails_counts():
    samples = [Sample(99.99, 0.25, False, None), Sample(100.24, 0.001, True, "web-b")]
    o = stats.outage(samples, t_fault=100.0)
    assert o.failed == 1 and o.seconds == pytest.approx(0.241)


def test_failures_before_the_fault_are_not_the_faults():
    samples = run("x", "a", "a", "a")
    assert stats.outage(samples, t_fault=100.01).failed == 0


def test_never_recovered_is_censored_at_the_window_end():
    samples = run("a", "T", "T", "T")
    o = stats.outage(samples, t_fault=100.01, until=101.0)
    assert not o.recovered and o.failed == 3
    assert o.seconds == pytest.approx(0.99)


def test_window_bounds_the_failure_count():
    samples = run("a", "x", "x", "b", "x", "a")  # the last failure is after `until`
    assert stats.failed_count(samples, 100.01, until=100.07) == 2
    assert stats.outage(samples, 100.01, until=100.07).failed == 2


def test_success_streak_and_first_answer():
    samples = run("a", "x", "b", "b", "b", "a", "a")
    assert stats.success_streak(samples) == pytest.approx(100.12 + 0.001 - 100.04)
    assert stats.success_streak(samples, "web-a") == pytest.approx(100.12 + 0.001 - 100.10)
    assert stats.first_answer_by(samples, "web-b", since=100.0) == pytest.approx(100.041)
    assert stats.first_answer_by(samples, "web-c", since=100.0) is None
    assert stats.transitions(samples) == [(100.0, "web-a"), (pytest.approx(100.04), "web-b"), (pytest.approx(100.10), "web-a")]


def test_percentiles_interpolate_like_numpy():
    assert stats.percentile([1, 2, 3, 4, 5], 50) == 3
    assert stats.percentile([1, 2, 3, 4, 5], 95) == pytest.approx(4.8)
    assert stats.percentile([0.2], 95) == 0.2
    assert stats.percentile([], 95) is None
    s = stats.summarize([0.3, None, 0.1, 0.2])
    assert s["n"] == 3 and s["median"] == pytest.approx(0.2) and s["max"] == 0.3


def test_parse_poller_lines():
    text = "100.000000 0.000300 1 web-a\n100.020000 0.250100 0 -\ngarbage\n"
    assert stats.parse(text) == [Sample(100.0, 0.0003, True, "web-a"), Sample(100.02, 0.2501, False, None)]


def test_summary_counts_unrecovered_trials_and_failbacks():
    trials = [
        {"profile": "ours", "scenario": "crash", "trial": 1, "outage": 0.2, "failed": 2, "recovered": True,
         "failed_over": True, "failback": {"moved": True, "completed": True, "failed": 0, "seconds": 1.2}},
        {"profile": "ours", "scenario": "crash", "trial": 2, "outage": 0.3, "failed": 3, "recovered": True,
         "failed_over": True, "failback": {"moved": True, "completed": True, "failed": 1, "seconds": 1.4}},
        {"profile": "baseline", "scenario": "hang", "trial": 1, "outage": 8.0, "failed": 32, "recovered": False,
         "failed_over": False, "failback": {"moved": False, "completed": True, "failed": 0, "seconds": 0.1}},
    ]
    summary = report.summarize({"trials": trials})
    crash = summary["crash"]["ours"]
    assert crash["outage"]["median"] == pytest.approx(0.25) and crash["failed_total"] == 5 and crash["failed_over"] == 2
    assert summary["hang"]["baseline"]["not_recovered"] == 1
    assert summary["failback"]["ours"]["failed_total"] == 1 and summary["failback"]["ours"]["trials"] == 2
    assert summary["failback"]["baseline"] is None  # the VIP never moved: nothing failed back
    targets = {t["target"]: t for t in report.check_targets(summary, [])}
    # 2 trials: the p95 targets need 10, so a value under the limit is "not measured", one over it missed
    crash_target = targets["crash: outage p95 < 100 ms"]
    assert crash_target["met"] is False and "only 2 trials" in crash_target["note"]
    assert targets["failback: 0 failed requests"]["met"] is False
    assert targets["hang: outage p95 < 400 ms"]["met"] is None
    assert "hang" in report.table({"summary": summary, "trials": trials})


def test_targets_need_ten_trials_and_subtract_test_ping_from_the_apply_time():
    fast = [{"profile": "ours", "scenario": "crash", "trial": k, "outage": 0.05, "failed": 1, "recovered": True,
             "failed_over": True, "sequential": {"outage": 0.3},
             "failback": {"moved": True, "completed": True, "failed": 0, "seconds": 1.0}} for k in range(1, 11)]
    summary = report.summarize({"trials": fast})
    assert summary["crash"]["ours"]["sequential"]["p95"] == pytest.approx(0.3)
    apply = [{"instances": 1, "idempotent": {"wall": 2.2}}]
    heal = {"nginx_back": {"median": 1.2}, "master_again": {"median": 2.7}}
    targets = {t["target"]: t for t in report.check_targets(summary, apply, None, {"salt_cli_test_ping_seconds": 1.5}, heal)}
    assert targets["crash: outage p95 < 100 ms"]["met"] is True
    assert targets["idempotent state.apply (1 instance) minus test.ping < 1.0 s"]["value"] == pytest.approx(0.7)
    assert targets["idempotent state.apply (1 instance) minus test.ping < 1.0 s"]["met"] is True
    assert targets["reactor heal: nginx serving again < 1.5 s (median)"]["met"] is True
    assert targets["reactor heal: the old MASTER holds the VIP again < 2.5 s (median)"]["met"] is False


def test_the_apply_target_uses_the_median_of_the_ping_apply_pairs():
    apply = [{"instances": 1, "idempotent": {"wall": 2.2, "minus_ping": 0.8, "pairs": [[1.0, 1.8]] * 5}}]
    targets = {t["target"]: t for t in report.check_targets({}, apply, None, {"salt_cli_test_ping_seconds": 0.5}, None)}
    assert targets["idempotent state.apply (1 instance) minus test.ping < 1.0 s"]["value"] == pytest.approx(0.8)


def test_idempotent_apply_skips_settling_runs_and_takes_the_median_pair(monkeypatch):
    import bench.__main__ as bench_main

    runs = iter([
        {"wall": 3.0, "changed": ["nginx_ha_sysctl_ip_nonlocal_bind"]},  # after a power cut: settling
        {"wall": 2.0, "changed": []}, {"wall": 2.5, "changed": []}, {"wall": 1.9, "changed": []},
    ])
    monkeypatch.setattr(bench_main.profiles, "apply", lambda lab, node: dict(next(runs), states=0.2, failed={}))

    class Lab:
        def salt(self, *args, **kwargs):
            return True

    clock = iter([0.0, 1.0, 10.0, 11.0, 20.0, 21.0, 30.0, 31.0])  # every test.ping takes 1 s
    monkeypatch.setattr(bench_main.time, "monotonic", lambda: next(clock))
    idem = bench_main.idempotent_apply(Lab(), pairs=3)
    assert idem["settling"] == [["nginx_ha_sysctl_ip_nonlocal_bind"]]
    assert idem["minus_ping"] == pytest.approx(1.0) and idem["wall"] == 2.0
    assert sorted(idem["pairs"]) == [[1.0, 1.9], [1.0, 2.0], [1.0, 2.5]]
