"""The benchmark's events phase, pure parts: keepalived's transitions from the lab syslog, which
delivery path sent an event, and transition -> master-bus latencies."""

import json

import pytest

from bench import event_latency as ev
from bench import report
from lab import bus
from lab.init import _syslog_line

T0 = 1_800_000_000.0


def syslog(*entries):
    """Lab syslog text from (seconds after T0, message) pairs, written the way lab.init writes them."""
    return "".join(_syslog_line(f"<30>Nov 29 00:12:34 {msg}".encode(), T0 + t) for t, msg in entries)


def event(node, t, state, path="engine"):
    payload = {"instance": "VI_web", "state": state}
    if path == "engine":
        payload.update(seq=int(t * 1e6), sig="c2ln", time=T0 + t - 0.001)
    else:
        payload.update(source="notify_script", priority="100")
    return {"tag": f"nginx_ha/vrrp/VI_web/{state.lower()}", "stamp": T0 + t, "data": {"id": node, "data": payload}}


def test_lab_syslog_lines_carry_the_reception_time_with_microseconds():
    line = _syslog_line(b"<30>Nov 29 00:12:34 Keepalived_vrrp[42]: (VI_web) Entering MASTER STATE\n", T0 + 0.123456)
    assert line == "2027-01-15T08:00:00.123456+00:00 Keepalived_vrrp[42]: (VI_web) Entering MASTER STATE\n"
    assert _syslog_line(b"<13>labtest: probe", T0).endswith(" labtest: probe\n")  # no BSD stamp to strip


def test_transitions_are_keepalived_entering_lines_of_the_instance_in_order():
    text = syslog(
        (0.0, "Keepalived_vrrp[42]: (VI_web) Entering BACKUP STATE (init)"),
        (1.0, "Keepalived_vrrp[42]: (VI_web) Entering MASTER STATE"),
        (1.5, "Keepalived_vrrp[42]: (VI_other) Entering FAULT STATE"),
        (2.0, "Keepalived_vrrp[42]: VRRP_Script(check) failed"),
        (3.0, "Keepalived_vrrp[42]: (VI_web) Entering FAULT STATE"),
    ) + "Nov 29 00:12:34 old-format line (VI_web) Entering MASTER STATE\n"
    got = ev.transitions(text)
    assert [s for _, s in got] == ["BACKUP", "MASTER", "FAULT"]
    assert got[1][0] == pytest.approx(T0 + 1.0, abs=1e-5)
    assert [s for _, s in ev.transitions(text, after=T0 + 0.5)] == ["MASTER", "FAULT"]


def test_the_delivery_path_of_an_event():
    assert ev.path_of(event("web-a", 1, "MASTER")) == "engine"
    assert ev.path_of(event("web-a", 1, "MASTER", "notify_script")) == "notify_script"
    assert ev.path_of({"data": {"id": "web-a", "data": {"state": "MASTER"}}}) is None  # unsigned, no source
    assert ev.path_of({"data": {"id": "web-a", "data": "MASTER"}}) is None


def test_each_transition_is_matched_to_the_first_later_event_of_its_state():
    trans = [(T0 + 1.0, "FAULT"), (T0 + 2.0, "BACKUP"), (T0 + 5.0, "MASTER"), (T0 + 9.0, "FAULT")]
    events = [(T0 + 1.004, "FAULT"), (T0 + 5.9, "MASTER"), (T0 + 2.01, "BACKUP"), (T0 + 1.0, "MASTER")]
    got = ev.match(trans, events)
    lat = [None if x is None else round(x, 3) for _, _, x in got]
    # FAULT 4 ms; BACKUP 10 ms; MASTER: the event before the transition is not its event; the
    # second FAULT has none (the first FAULT event is used up)
    assert lat == [0.004, 0.01, 0.9, None]


def test_an_event_after_the_next_transition_into_the_same_state_belongs_to_that_one():
    trans = [(T0 + 1.0, "MASTER"), (T0 + 3.0, "MASTER")]
    got = ev.match(trans, [(T0 + 3.2, "MASTER")])
    assert [x for _, _, x in got] == [None, pytest.approx(0.2, abs=1e-5)]


def test_latencies_per_path_and_their_summary():
    trans = {"web-a": [(T0 + 1.0, "FAULT"), (T0 + 4.0, "MASTER")], "web-b": [(T0 + 1.2, "MASTER")]}
    events = [
        event("web-a", 1.005, "FAULT"), event("web-a", 1.9, "FAULT", "notify_script"),
        event("web-b", 1.207, "MASTER"), event("web-b", 2.1, "MASTER", "notify_script"),
        event("web-a", 4.006, "MASTER"),  # web-a's MASTER by the notify script never arrived
        event("web-b", 4.001, "MASTER"),  # another node's event does not count for web-a
    ]
    paths = ev.summarize_paths(ev.latencies(trans, events))
    assert paths["engine"]["n"] == 3 and paths["engine"]["missing"] == 0
    assert paths["engine"]["median"] == pytest.approx(0.006, abs=1e-5)
    assert paths["notify_script"]["n"] == 2 and paths["notify_script"]["missing"] == 1
    assert paths["notify_script"]["max"] == pytest.approx(0.9, abs=1e-5)
    assert paths["engine"]["by_state"]["FAULT"]["n"] == 1
    lines = "\n".join(report.event_lines({"paths": paths, "reactor_heal": {"trials": 0}}))
    assert "engine (notify FIFO, default)" in lines and "1 of 3 transitions without an event" in lines


def test_heal_times_from_the_kill():
    trans = [(T0 - 5, "MASTER"), (T0 + 0.2, "FAULT"), (T0 + 2.0, "BACKUP"), (T0 + 3.5, "MASTER")]
    assert ev.heal_trial_times(T0, trans, T0 + 1.8) == pytest.approx({"fault": 0.2, "nginx_back": 1.8, "master_again": 3.5}, abs=1e-5)
    assert ev.heal_trial_times(T0, trans[:2], None) == {"fault": pytest.approx(0.2, abs=1e-5), "nginx_back": None, "master_again": None}


def test_the_event_target_is_checked_on_the_default_path():
    targets = {t["target"]: t for t in report.check_targets({}, [], {"median": 0.006})}
    assert targets["transition -> event on the master bus (default path): median < 100 ms"]["met"] is True
    targets = {t["target"]: t for t in report.check_targets({}, [], {"status": "n/a"})}
    assert targets["transition -> event on the master bus (default path): median < 100 ms"]["met"] is None


def test_the_reactor_config_is_the_shipped_one_without_a_webhook():
    cfg = ev.reactor_config()
    assert cfg["reactor"][0]["nginx_ha/vrrp/*"][0].endswith("reactor/vrrp.sls")
    assert cfg["nginx_ha_reactor"]["webhook"]["url"] is None
    assert cfg["nginx_ha_reactor"]["restart_limit"] == 3 and cfg["event_return"] == "rawfile_json"


def test_the_bus_recorder_file_is_parsed_by_tag_and_time():
    lines = [
        {"tag": "nginx_ha/vrrp/VI_web/master", "data": {"_stamp": "2027-01-15T08:00:01.000000", "id": "web-a"}},
        {"tag": "salt/run/1/ret", "data": {"_stamp": "2027-01-15T08:00:02.000000", "fun": "x"}},
        {"tag": "nginx_ha/vrrp/VI_web/fault", "data": {"_stamp": "2027-01-15T07:59:59.000000", "id": "web-b"}},
    ]
    text = "\n".join(json.dumps(x) for x in lines) + "\nnot json\n"
    got = bus.parse(text, "nginx_ha/vrrp/*", after=T0)
    assert [e["data"]["id"] for e in got] == ["web-a"] and got[0]["stamp"] == pytest.approx(T0 + 1, abs=1e-5)
    assert len(bus.parse(text)) == 3
