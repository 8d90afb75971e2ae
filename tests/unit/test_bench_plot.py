"""bench/plot.py's overview figure (the README's PNG): drawn from the trials, median trial per profile."""

from bench import plot


def trial(profile, scenario, outage, n=1):
    samples = [(i * 0.02 - 1.0, 0.001, not (0 <= i * 0.02 - 1.0 < outage), "web-a" if i * 0.02 < 1.0 else "web-b")
               for i in range(200)]
    return {"profile": profile, "scenario": scenario, "trial": n, "t_fault": 100.0, "outage": outage,
            "recovered": True, "samples": samples}


def test_representative_is_the_median_outage_and_unrecovered_count_longest():
    trials = [trial("ours", "crash", x, i) for i, x in enumerate((0.3, 0.1, 0.2))]
    assert plot._representative(trials)["outage"] == 0.2
    trials.append(dict(trial("ours", "crash", 0.05, 9), recovered=False))
    assert plot._representative(trials)["outage"] == 0.3
    assert plot._representative([]) is None


def test_overview_writes_one_png_with_both_profiles(tmp_path):
    results = {"trials": [trial("ours", "crash", 0.08), trial("baseline", "crash", 1.2), trial("ours", "hang", 0.7)]}
    path = plot.overview(results, str(tmp_path / "docs" / "failover.png"))
    data = (tmp_path / "docs" / "failover.png").read_bytes()
    assert path and data.startswith(b"\x89PNG") and len(data) > 5000


def test_overview_without_trials_writes_nothing(tmp_path):
    assert plot.overview({"trials": []}, str(tmp_path / "f.png")) is None
    assert not (tmp_path / "f.png").exists()
