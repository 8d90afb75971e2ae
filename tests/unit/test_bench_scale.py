"""Pure parts of bench/scale.py: names and pillar of the pairs, growth summary, decisions, alerts, the table."""

import json

import pytest
import yaml

from bench import scale


def test_names_are_pairs():
    assert scale.names(4) == ["web-01", "web-02", "web-03", "web-04"]
    assert scale.pairs(scale.names(4)) == [(1, "web-01", "web-02"), (2, "web-03", "web-04")]
    for bad in (0, 1, 3):
        with pytest.raises(ValueError):
            scale.names(bad)


def test_pillar_files_give_each_pair_its_own_cluster_instance_vip_and_router_id():
    files = scale.pillar_files(scale.names(20), ["restart", "me"])
    top = yaml.safe_load(files["top.sls"])["base"]
    assert top["web-19,web-20"] == [{"match": "list"}, "pair10"]
    assert len(top) == 10
    vips, vrids, clusters = set(), set(), set()
    for k in range(1, 11):
        config = yaml.safe_load(files[f"pair{k:02d}.sls"])["nginx_ha"]
        (name, inst), = config["vrrp_instances"].items()
        assert name == f"VI_pair{k:02d}"
        assert config["events"] == {"minion_restart_cmd": ["restart", "me"]}
        assert config["pkg_refresh"] is False
        vips.update(inst["virtual_ipaddress"])
        vrids.add(inst["virtual_router_id"])
        clusters.add(config["cluster"])
        assert sorted(inst["nodes"]) == [f"web-{2 * k - 1:02d}", f"web-{2 * k:02d}"]
    assert len(vips) == len(vrids) == len(clusters) == 10
    # the VIPs stay clear of the lab's hosts (.2, .11-.49, .50)
    octets = {int(v.split("/")[0].rsplit(".", 1)[1]) for v in vips}
    assert min(octets) > 50


def test_pillar_without_restart_cmd_has_no_events_key():
    assert "events" not in scale.pair_pillar(1, "web-01", "web-02")["nginx_ha"]
    with pytest.raises(ValueError):
        scale.pair_pillar(151, "a", "b")


def test_growth_linear_and_flat():
    g = scale.growth({2: 2.0, 6: 6.0, 10: 10.0, 20: 20.0})
    assert g["ratio"] == pytest.approx(10.0)
    assert g["per_minion"] == pytest.approx(1.0)
    assert g["base"] == pytest.approx(0.0, abs=1e-9)
    assert g["exponent"] == pytest.approx(1.0)
    assert g["shape"] == "linear"
    assert g["at_100"] == pytest.approx(100.0)
    flat = scale.growth({2: 1.5, 20: 1.6})
    assert flat["shape"] == "flat" and flat["per_minion"] == pytest.approx(0.1 / 18)
    assert scale.growth({2: 1.0, 20: 4.0})["shape"] == "sublinear"
    assert scale.growth({2: 1.0, 20: 100.0})["shape"] == "superlinear"


def test_growth_with_too_few_points_or_none():
    assert scale.growth({2: 1.0})["ratio"] is None
    assert scale.growth({2: None, 20: 3.0})["per_minion"] is None
    assert scale.growth_text(scale.growth({})) == "-"
    assert scale.growth_text(scale.growth({2: 1.0, 20: 2.0})).startswith("x2.0 (+56 ms/minion, ~n^0.30, sublinear)")


def _ret(node, state, action, recv, start, decided, done, stamp=None):
    return {"tag": "salt/run/1/ret", "stamp": stamp or recv + done,
            "data": {"fun": scale.REACTOR_FUN, "return": {"node": node, "instance": "VI_pair01", "state": state, "action": action,
                                                          "timing": {"recv": recv, "start": start, "decided": decided, "done": done}}}}


def test_decisions_and_their_summary():
    events = [
        _ret("web-01", "FAULT", "restarted", 100.0, 0.5, 0.8, 3.0),
        _ret("web-02", "MASTER", "owner-changed", 100.2, 0.4, 0.6, 0.9),
        _ret("web-02", "FAULT", "coalesced", 100.3, 1.0, 1.2, 1.3),
        {"tag": "salt/run/2/ret", "stamp": 1.0, "data": {"fun": "runner.other", "return": {}}},
    ]
    rows = scale.decisions(events)
    assert [r["action"] for r in rows] == ["restarted", "owner-changed", "coalesced"]
    s = scale.decision_summary(rows)
    assert s["events"] == 3
    assert s["actions"] == {"coalesced": 1, "owner-changed": 1, "restarted": 1}
    assert s["decided"]["median"] == pytest.approx(0.8)
    assert s["start"]["max"] == pytest.approx(1.0)
    assert s["fault_done"]["n"] == 2 and s["fault_done"]["max"] == pytest.approx(3.0)


def _job_args(node, instance, state, stamp):
    """A vrrp_event job's fun_args as Salt's RunnerClient records them: [{tag, data: the event}]."""
    tag = f"nginx_ha/vrrp/{instance}/{state.lower()}"
    return [{"tag": tag, "data": {"id": node, "cmd": "_minion_event", "tag": tag, "_stamp": stamp,
                                  "data": {"instance": instance, "state": state, "seq": 1}}}]


def test_a_return_without_the_runners_fields_counts_for_the_event_it_was_given():
    """A rejection without node fields, or Salt's traceback text when the runner raised: still a
    decision, attributed to the sender of the event in the job's arguments (a FAULT never
    disappears from the count)."""
    events = [
        {"tag": "salt/run/3/ret", "stamp": 1.0, "data": {"fun": scale.REACTOR_FUN, "return": "Exception occurred in runner ...",
                                                           "fun_args": _job_args("web-07", "VI_pair04", "FAULT", "2026-01-01T00:00:00+00:00")}},
        {"tag": "salt/run/4/ret", "stamp": 2.0, "data": {"fun": scale.REACTOR_FUN, "return": {"action": "rejected", "reason": "x"},
                                                           "fun_args": _job_args("web-06", "VI_pair03", "BACKUP", "2026-01-01T00:00:01+00:00")}},
        {"tag": "salt/run/5/ret", "stamp": 3.0, "data": {"fun": scale.REACTOR_FUN, "return": "no arguments recorded"}},
    ]
    rows = scale.decisions(events)
    assert [(r["node"], r["instance"], r["state"], r["action"]) for r in rows] == [
        ("web-07", "VI_pair04", "FAULT", "error"), ("web-06", "VI_pair03", "BACKUP", "rejected"), (None, None, None, "error")]
    assert rows[0]["recv"] == pytest.approx(1767225600.0) and rows[1]["recv"] == pytest.approx(1767225601.0)


def test_undecided_names_each_event_without_a_decision():
    def vrrp(node, instance, state, stamp):
        return {"tag": f"nginx_ha/vrrp/{instance}/{state}", "stamp": stamp, "data": {"id": node}}

    events = [vrrp("web-07", "VI_pair04", "fault", 1.0), vrrp("web-08", "VI_pair04", "master", 1.5),
              vrrp("web-07", "VI_pair04", "fault", 2.0), vrrp("web-01", "VI_pair01", "fault", 3.0)]
    rows = scale.decisions([_ret("web-07", "FAULT", "restarted", 1.0, 0.1, 0.2, 0.3), _ret("web-01", "FAULT", "coalesced", 3.0, 0.1, 0.2, 0.3)])
    rows[0]["instance"] = "VI_pair04"
    # web-01's decision names VI_pair01 (as _ret does): web-08's MASTER and web-07's second FAULT have none
    assert scale.undecided(events, rows) == [("web-08", "nginx_ha/vrrp/VI_pair04/master", 1.5), ("web-07", "nginx_ha/vrrp/VI_pair04/fault", 2.0)]
    assert scale.undecided([], rows) == []


def test_decisions_without_timing_count_with_none():
    event = {"tag": "t", "stamp": 5.0, "data": {"fun": scale.REACTOR_FUN, "return": {"action": "rejected"}}}
    (row,) = scale.decisions([event])
    assert row["decided"] is None
    assert scale.decision_summary([row])["decided"]["n"] == 0


def test_pid_starts_counts_new_pids_in_the_window():
    text = "10.0 100\n20.5 200\njunk\n30.0 300\n"
    assert scale.pid_starts(text, 0) == 3
    assert scale.pid_starts(text, 15) == 2
    assert scale.pid_starts(text, 15, 25) == 1
    assert scale.pid_starts("", 0) == 0


def test_alert_summary_by_severity_and_node():
    def req(t, severity, node=None, check=None, subject=None):
        fields = {"severity": severity, "message": "m"}
        fields.update({k: v for k, v in (("node", node), ("check", check), ("subject", subject)) if v})
        return {"t": t, "body": {"text": "x", "nginx_ha": fields}}

    reqs = [req(1, "info", "web-01"), req(5, "warning", "web-01"), req(6, "warning", "web-02"),
            req(7, "critical", "web-01"), req(8, "warning", check="rate-limit", subject="web-02"), req(50, "info", "web-03")]
    s = scale.alert_summary(reqs, since=2, until=10)
    assert s["total"] == 4
    assert s["by_severity"] == {"critical": 1, "warning": 3}
    assert s["per_node"] == {"web-01": 2, "web-02": 2}
    assert s["max_per_node"] == 2
    assert s["rate_limit_summaries"] == 1


def _results():
    sizes = [2, 20]
    results = {
        "sizes": sizes, "cores": 2, "salt_run_base": 1.2, "fleet_default_target": 3.0,
        "fleet": {"2": {"status": {"median": 1.5}, "vip_status": 0.6, "health": 0.7, "check_router_ids": 2.0},
                  "20": {"status": {"median": 3.0}, "vip_status": 1.0, "health": 1.6, "check_router_ids": 12.0}},
        "reactor": {"2": {"decided": {"median": 0.5, "p95": 0.7, "n": 6}, "start": {"median": 0.3}, "fault_done": {"median": 2.0},
                          "fleet_ok_after": 4.0},
                    "20": {"decided": {"median": 2.5, "p95": 6.0, "n": 60}, "start": {"median": 2.0}, "fault_done": {"median": 9.0},
                           "fleet_ok_after": 20.0}},
        "storm": {"nodes": 20, "flaps": 3, "kills": 60, "window": 45.0, "restarts": 60, "max_restarts_per_node": 3,
                  "alerts": {"total": 90, "by_severity": {"info": 20, "warning": 70}, "max_per_node": 8},
                  "rate_limited": 0, "deduplicated": 2, "budget": {"restart_limit": 3, "restart_window": 300, "alerts_limit": 10,
                                                                  "alerts_window": 300},
                  "decisions": {"events": 150, "actions": {"restarted": 60}, "decided": {"median": 1.0, "p95": 5.0, "max": 9.0},
                                "start": {"median": 0.8, "max": 8.0}},
                  "fleet_ok_after": 15.0, "fleet_ok_since_start": 60.0, "settled_after": 12.0,
                  "over_budget": {"restarts": 0, "alerts": {"by_severity": {"critical": 20}}, "in_maintenance": 20, "decided_after": 8.0}},
    }
    results["growth"] = scale.summarize_growth(results)
    return results


def test_summarize_growth_over_the_sizes():
    g = _results()["growth"]
    assert g["fleet_status"]["ratio"] == pytest.approx(2.0)
    assert g["check_router_ids"]["per_minion"] == pytest.approx(10.0 / 18)
    assert g["decided_median"]["ratio"] == pytest.approx(5.0)
    assert g["fleet_ok_after"]["last"] == pytest.approx(20.0)


def test_summarize_growth_with_missing_sections():
    g = scale.summarize_growth({"sizes": [2, 20], "fleet": {"2": {"status": {"median": 1.0}}}})
    assert g["fleet_status"]["ratio"] is None
    assert g["decided_median"]["ratio"] is None


def test_lines_table():
    text = "\n".join(scale.lines(_results()))
    assert "20 minions (10 pairs" in text
    header = next(line for line in text.splitlines() if line.startswith("minions"))
    assert header.split()[1:3] == ["2", "20"]
    status = next(line for line in text.splitlines() if line.startswith("fleet view: salt-run nginx_ha.status"))
    assert "1500 ms" in status and "3000 ms" in status and "x2.0" in status
    assert "salt-run's own start (test.arg): 1200 ms" in text
    assert "restarts (nodes' nginx PIDs): 60 in all, at most 3 per node (budget 3 per 300 s)" in text
    assert "alerts at the webhook: 90 (20 info, 70 warning), at most 8 per node (limit 10 per 300 s)" in text
    assert "0 restarts, 20 critical alerts, 20 nodes kept out" in text
    json.dumps(_results())  # JSON-able


def test_lines_when_not_measured_or_failed():
    assert scale.lines({"status": "n/a (skipped)"}) == ["control-plane scale: n/a (skipped)"]
    assert scale.lines(None) == ["control-plane scale: n/a"]
    res = {"sizes": [2], "errors": [{"phase": "scale", "error": "LabError('x')"}], "storm": {"status": "n/a (failed)"}}
    text = "\n".join(scale.lines(res))
    assert "ERROR in scale: LabError('x')" in text and "storm: n/a (failed)" in text


def test_reactor_timing_record():
    """The runner's ``timing`` record that bench/scale.py reads (seconds after the event's receive time)."""
    import importlib.util
    import pathlib

    path = pathlib.Path(scale.REPO) / "_runners" / "nginx_ha_reactor.py"
    spec = importlib.util.spec_from_file_location("nginx_ha_reactor_for_scale_test", path)
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    event = {"recv": 1000.0, "decided": 1000.25}
    assert runner._timing(event, 1000.1, now=1002.0) == {"recv": 1000.0, "start": 0.1, "decided": 0.25, "done": 2.0}
    assert runner._timing({"recv": 5.0}, 6.0, now=7.0)["decided"] is None


def test_pair_pillar_relaxes_the_nodes_own_checks():
    config = scale.pair_pillar(3, "web-05", "web-06")["nginx_ha"]
    assert config["instance_defaults"] == {"advert_int": 1}
    assert config["check"]["interval"] == 3 and config["check"]["watcher"]["interval"] == 0.5
    config["check"]["interval"] = 99  # a copy: the module's settings stay
    assert scale.NODE_SETTINGS["check"]["interval"] == 3
