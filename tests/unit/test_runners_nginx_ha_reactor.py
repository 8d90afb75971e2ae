"""
The nginx_ha_reactor runner's decisions, with loader mocks: who is acted on, the restart budget,
alerts, the fleet check. Minion calls and the master bus are recorded, not performed; the webhook
is a real HTTP server on 127.0.0.1.
"""

import contextvars
import datetime
import multiprocessing
import threading
import time

import pytest
import hypothesis
from hypothesis import given
from hypothesis import strategies as st

from tests.support import formula
from tests.support.webhook import WebhookServer

runner = formula.load_module("_runners", "nginx_ha_reactor")
engine = formula.load_module("_engines", "nginx_ha_events")
status_runner = formula.load_module("_runners", "nginx_ha")

PILLAR = {"nginx_ha": formula.example_pillar()}  # VI_web: web-a MASTER, web-b BACKUP
VIP = "203.0.113.100"


@pytest.fixture(autouse=True, scope="module")
def _salt_logging_not_deferred():
    """Salt defers log records to stderr at exit (closed under pytest); let pytest capture them."""
    import salt._logging.impl

    salt._logging.impl.shutdown_temp_handler()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """An RSA key per minion: (private key path, public PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    out = {}
    base = tmp_path_factory.mktemp("pki")
    for minion in ("web-a", "web-b", "outsider"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path = base / f"{minion}.pem"
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
        out[minion] = (str(path), key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode())
    return out


class FakeClock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def time(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class World:
    """What the runner did: minion calls, events fired on the master bus."""

    def __init__(self):
        self.calls = []
        self.fired = []
        self.health = True  # after a restart
        self.health_before = False  # when the FAULT arrives
        self.script = []  # health answers to give first, in order (overrides the two above)
        self.restarted = False
        self.restart_ok = True
        self.escalated = False
        self.maintenance_ok = True
        self.answers = True
        self.on_restart = None  # called while the restart runs (e.g. another FAULT arrives)
        self.restart_calls = []  # restart calls that restarted (not those that found nginx healthy)

    def _health(self):
        # before a restart: as the FAULT found it; after one: as the restart left it
        healthy, self.restarted = (self.health if self.restarted else self.health_before), False
        if self.script:
            healthy = self.script.pop(0)
        return {"healthy": healthy, "maintenance": False}

    def call(self, node, action, timeout):
        kwarg = dict(action.get("kwarg") or {})
        self.calls.append((node, action["fun"], list(action.get("arg") or []), kwarg))
        if not self.answers:
            return False, f"no answer from {node} within {timeout}s"
        if action["fun"] == "nginx_ha.health":
            return True, self._health()
        if action["fun"] in ("nginx_ha.restart_nginx", "service.restart"):
            if kwarg.get("unless_healthy"):  # the module checks health itself first (the same check)
                found = self._health()
                if found["healthy"]:
                    return True, {"healthy": True, "restarted": False, "escalated": False, "killed": [], "detail": "already healthy", "health": found}
            self.restart_calls.append(self.calls[-1])
            if self.on_restart:
                self.on_restart()
            self.restarted = self.restart_ok
            if not self.restart_ok:
                return False, "ERROR: nginx_ha: nginx does not answer after the restart and the kill"
            ret = {"healthy": True, "restarted": True, "escalated": self.escalated, "killed": [], "detail": "restart: ok"}
            if kwarg.get("verify"):
                ret["health"] = self._health()
            return True, ret
        if action["fun"] == "nginx_ha.maintenance":
            if not self.maintenance_ok:
                return False, "ERROR: nginx_ha: refusing maintenance: no healthy peer for VI_web"
            return True, {"maintenance": True}
        return True, True

    def restarts(self):
        return list(self.restart_calls)

    def fire(self, tag, data):
        self.fired.append((tag, data))

    def alerts(self, severity=None):
        return [d for t, d in self.fired if t.startswith("nginx_ha/alert/") and (severity is None or t.endswith("/" + severity))]

    def targets(self):
        return sorted({c[0] for c in self.calls})


@pytest.fixture
def world(monkeypatch):
    w = World()
    monkeypatch.setattr(runner, "_call", w.call)
    monkeypatch.setattr(runner, "_fire", w.fire)
    return w


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(runner, "time", c)
    return c


@pytest.fixture
def reactor_config(tmp_path):
    return {"state_file": str(tmp_path / "state" / "reactor.json")}


@pytest.fixture
def configure_loader_modules(tmp_path, reactor_config, keys):
    return {
        runner: {
            "__opts__": {"cachedir": str(tmp_path), "pki_dir": str(tmp_path / "pki"), "sock_dir": str(tmp_path), "conf_file": "/dev/null", "nginx_ha_reactor": reactor_config},
            "__salt__": {"pillar.show_pillar": lambda minion, **kw: PILLAR},
            "__context__": {},
        }
    }


@pytest.fixture
def settings(configure_loader_modules):
    """The live nginx_ha_reactor master config the runner reads (the loader mock copies dunders)."""
    return runner.__opts__["nginx_ha_reactor"]


@pytest.fixture(autouse=True)
def accepted_keys(monkeypatch, keys):
    """The master's accepted keys: web-a, web-b, outsider (a minion that is not a cluster node)."""
    monkeypatch.setattr(runner, "_minion_public_key", lambda minion: keys[minion][1] if minion in keys else None)


def stamp(epoch):
    """The master's ``_stamp`` for an event received at ``epoch``."""
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat()


class Node:
    """A minion's engine: numbered, signed events, as they arrive in the reactor's data."""

    def __init__(self, minion_id, keys, clock=None, boot=None):
        self.id = minion_id
        self.tracker = engine.Tracker(clock=clock or time.time)
        self.signer = engine.Signer(keys[minion_id][0], minion_id)
        self.boot = boot

    def event(self, state, instance="VI_web", sender=None, payload_extra=None, sign=True, received=None):
        tag, data = self.tracker.event({"instance": instance, "state": state, "priority": 100})
        data["vips"] = [VIP]
        if self.boot is not None:
            data["boot"] = self.boot
        data.update(payload_extra or {})
        if sign:
            data["sig"] = self.signer(tag, data)
        # What the master fires for a _minion_event request: id is the authenticated sender, and
        # the master's bus stamps it (received: that stamp; else none, the runner uses its clock).
        event = {"id": sender or self.id, "cmd": "_minion_event", "tag": tag, "data": data}
        if received is not None:
            event["_stamp"] = stamp(received)
        return tag, event


@pytest.fixture
def web_a(keys, clock):
    return Node("web-a", keys, clock=clock.time)


@pytest.fixture
def web_b(keys, clock):
    return Node("web-b", keys, clock=clock.time)


# --------------------------------------------------------------------------------------------
# Who is acted on
# --------------------------------------------------------------------------------------------


def test_fault_restarts_nginx_on_the_sender_only(world, clock, web_a):
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["action"] == "restarted" and ret["node"] == "web-a" and ret["healthy"] is True
    # one minion call: the module checks health, restarts, and returns the health after it
    assert world.calls == [("web-a", "nginx_ha.restart_nginx", [], {"unless_healthy": True, "verify": True})]
    assert [a["severity"] for a in world.alerts()] == ["warning"]


def test_other_actions_check_health_in_calls_of_their_own(world, clock, web_a, settings):
    settings["actions"] = {"restart": {"fun": "service.restart", "arg": ["nginx"]}}
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["action"] == "restarted" and ret["healthy"] is True
    assert world.calls == [("web-a", "nginx_ha.health", [], {}), ("web-a", "service.restart", ["nginx"], {}), ("web-a", "nginx_ha.health", [], {})]


@pytest.mark.parametrize(
    "extra",
    [
        {"id": "web-a"},  # naming another node in the payload
        {"node": "web-a", "target": "web-a", "tgt": "*", "minion": "web-a"},
        {"priority": "100; rm -rf / #", "vips": ["$(reboot)", "`id`"]},  # shell metacharacters are just data
    ],
)
def test_payload_is_data_never_a_target(world, clock, web_b, extra):
    ret = runner.vrrp_event(*web_b.event("FAULT", payload_extra=extra))
    assert ret["node"] == "web-b" and world.targets() == ["web-b"]
    assert all(isinstance(c[0], str) and c[2] in ([], ["nginx"]) for c in world.calls)


def test_instance_with_shell_metacharacters_is_rejected_before_anything_runs(world, clock, web_a):
    for instance in ("VI_web;reboot", "VI_web$(id)", "*", "VI_web`id`"):
        ret = runner.vrrp_event(*web_a.event("FAULT", instance=instance))
        assert ret["action"] == "rejected" and "not a node of" in ret["reason"]
    assert world.calls == [] and world.fired == []


def test_a_forged_sender_id_does_not_verify(world, clock, web_b):
    """web-b (compromised) puts web-a into data['id'] through Salt's batch events path."""
    tag, data = web_b.event("FAULT", sender="web-a")
    ret = runner.vrrp_event(tag, data)
    assert ret["action"] == "rejected" and "signature" in ret["reason"]
    assert world.calls == []


def test_unsigned_events_are_rejected_unless_configured(world, clock, web_a, settings):
    tag, data = web_a.event("FAULT", sign=False)
    assert runner.vrrp_event(tag, data)["action"] == "rejected"
    settings["require_signature"] = False
    assert runner.vrrp_event(tag, data)["action"] == "restarted"


def test_sender_must_be_a_node_of_the_instance(world, clock, keys):
    outsider = Node("outsider", keys)
    ret = runner.vrrp_event(*outsider.event("FAULT"))
    assert ret["action"] == "rejected" and "outsider is not a node of VI_web" in ret["reason"]
    ret = runner.vrrp_event(*Node("web-a", keys).event("FAULT", instance="VI_other"))
    assert ret["action"] == "rejected"
    assert world.calls == []


@pytest.mark.parametrize(
    "tag, change",
    [
        ("nginx_ha/vrrp/VI_web/master", {}),  # tag says master, payload says FAULT
        ("nginx_ha/vrrp/VI_web/fault/extra", {}),
        ("nginx_ha/vrrp/VI_web/reboot", {}),
        ("nginx_ha/vrrp/VI_web/fault", {"data": "not a mapping"}),
        ("nginx_ha/vrrp/VI_web/fault", {"id": None}),
        ("nginx_ha/vrrp/VI_web/fault", {"id": "../../etc"}),
        ("nginx_ha/vrrp/VI_web/fault\n", {}),
    ],
)
def test_malformed_events_are_rejected(world, clock, web_a, tag, change):
    _, data = web_a.event("FAULT")
    data.update(change)
    assert runner.vrrp_event(tag, data)["action"] == "rejected"
    assert world.calls == []


def test_repeated_delivery_is_acted_on_once(world, clock, web_a):
    tag, data = web_a.event("FAULT")
    assert runner.vrrp_event(tag, data)["action"] == "restarted"
    assert runner.vrrp_event(tag, data)["action"] == "duplicate"
    assert len(world.restarts()) == 1


# --------------------------------------------------------------------------------------------
# Restart budget
# --------------------------------------------------------------------------------------------


def test_restart_budget_per_node_and_window(world, clock, web_a, web_b, settings):
    settings.update(restart_limit=3, restart_window=300)
    actions = []
    for _ in range(3):
        actions.append(runner.vrrp_event(*web_a.event("FAULT"))["action"])
        clock.now += 20
    assert actions == ["restarted"] * 3
    # web-b has its own budget
    assert runner.vrrp_event(*web_b.event("FAULT"))["action"] == "restarted"
    # the fourth FAULT of web-a within 300 s: no restart, critical alert, maintenance on web-a
    world.calls.clear()
    world.fired.clear()
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["action"] == "maintenance" and ret["reason"] == "budget-exhausted"
    assert world.calls == [("web-a", "nginx_ha.health", [], {}), ("web-a", "nginx_ha.maintenance", ["on"], {"force": True})]
    assert [a["severity"] for a in world.alerts()] == ["critical"] and "web-a put in maintenance" in world.alerts()[0]["message"]
    # while in maintenance, further FAULTs change nothing
    world.calls.clear()
    assert runner.vrrp_event(*web_a.event("FAULT"))["action"] == "in-maintenance" and world.calls == []
    # after reset and once the window has passed, restarts are allowed again
    runner.reset("web-a")
    clock.now += 301
    assert runner.vrrp_event(*web_a.event("FAULT"))["action"] == "restarted"


def test_window_slides(world, clock, web_a, settings):
    settings.update(restart_limit=2, restart_window=100)
    got = []
    # restarts at t=0 and t=50; at t=101 the first one has left the window, at t=111 two are inside it again
    for step in (0, 50, 51, 10):
        clock.now += step
        got.append(runner.vrrp_event(*web_a.event("FAULT"))["action"])
    assert got == ["restarted", "restarted", "restarted", "maintenance"]


def test_unhealthy_after_restart_goes_to_maintenance(world, clock, web_a):
    world.health = False
    start = clock.now
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["action"] == "maintenance" and ret["reason"] == "unhealthy-after-restart"
    funs = [c[1] for c in world.calls]
    # the health the restart returned, then nginx_ha.health polled until health_wait (10 s) passed
    assert funs[0] == "nginx_ha.restart_nginx" and funs[-1] == "nginx_ha.maintenance"
    assert set(funs[1:-1]) == {"nginx_ha.health"} and len(funs[1:-1]) > 1
    assert clock.now - start >= 10
    assert [a["severity"] for a in world.alerts()] == ["critical"]
    assert "web-a" in runner.show_state()["maintenance"]


def test_silent_node_counts_as_unhealthy(world, clock, web_a):
    """Nothing answers, not even the maintenance call: a critical alert says so, no mark."""
    world.answers = False
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["action"] == "maintenance-failed" and ret["result"] is False
    (critical,) = world.alerts("critical")
    assert "putting web-a in maintenance FAILED" in critical["message"] and "no answer from web-a" in critical["message"]
    assert "web-a" not in runner.show_state()["maintenance"]


def test_budget_is_safe_under_concurrent_workers(world, keys, settings):
    """
    Reactor workers are threads: 12 FAULTs at once (nginx keeps dying: every check before a restart
    says unhealthy) restart at most restart_limit times, one worker at a time, and end with the
    node kept out; every FAULT is answered.
    """
    settings.update(restart_limit=3, health_delay=0)
    node = Node("web-a", keys)
    events = [node.event("FAULT") for _ in range(12)]
    results = []

    def worker(event):
        results.append(runner.vrrp_event(*event)["action"])

    # Each thread runs in a copy of this context, where the loader mock's dunders live.
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(worker, e)) for e in events]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # superseded: a newer FAULT of the same node and instance was recorded, and is handled itself
    assert len(results) == 12 and set(results) <= {"restarted", "coalesced", "superseded", "maintenance", "in-maintenance"}, results
    assert 1 <= len(world.restarts()) <= 3
    state = runner.show_state()
    assert state["in_progress"] == {}  # every worker let go of the node
    # whoever handled the FAULTs last saw nginx healthy (it was restarted) or kept the node out
    assert "maintenance" in results or "restarted" in results


def _increment(state_file, times):
    cfg = {"state_file": state_file}
    for _ in range(times):
        with runner._state(cfg) as state:
            state["fleet"]["n"] = state["fleet"].get("n", 0) + 1


def test_state_file_lock_across_processes(tmp_path):
    path = str(tmp_path / "s" / "state.json")
    procs = [multiprocessing.get_context("fork").Process(target=_increment, args=(path, 50)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    with runner._state({"state_file": path}) as state:
        assert state["fleet"]["n"] == 200


# --------------------------------------------------------------------------------------------
# MASTER: who owns the VIP
# --------------------------------------------------------------------------------------------


def test_master_alerts_with_old_and_new_owner(world, clock, web_a, web_b):
    assert runner.vrrp_event(*web_a.event("MASTER"))["action"] == "owner-changed"
    first = world.alerts()[-1]
    assert first["severity"] == "info" and first["old_owner"] is None and first["new_owner"] == "web-a"
    ret = runner.vrrp_event(*web_b.event("MASTER"))
    assert ret["old_owner"] == "web-a" and ret["new_owner"] == "web-b"
    moved = world.alerts()[-1]
    assert moved["severity"] == "warning" and moved["message"] == "VI_web: MASTER moved from web-a to web-b"
    assert runner.vrrp_event(*web_b.event("MASTER"))["action"] == "owner-confirmed"
    assert world.alerts()[-1]["severity"] == "info"
    assert world.calls == []  # MASTER never runs anything on a node


def test_a_late_master_undone_by_its_senders_own_backup_gives_the_vip_back_to_the_real_owner(world, clock, web_a, web_b):
    """web-b was cut off: its MASTER (from before web-a took over) arrives after web-a's, then its own
    BACKUP. keepalived's order per node wins: web-a is the owner again, with an info alert."""
    assert runner.vrrp_event(*web_a.event("MASTER"))["action"] == "owner-changed"
    late_master = web_b.event("MASTER")
    later_backup = web_b.event("BACKUP")
    assert runner.vrrp_event(*late_master)["new_owner"] == "web-b"
    assert runner.vrrp_event(*later_backup)["action"] == "recorded"
    assert runner.show_state()["owners"]["VI_web"]["node"] == "web-a"
    last = world.alerts()[-1]
    assert last["severity"] == "info" and last["new_owner"] == "web-a" and "web-b reported BACKUP after its MASTER" in last["message"]


def test_a_master_event_overtaken_by_its_own_newer_event_changes_nothing(world, clock, web_a, web_b):
    assert runner.vrrp_event(*web_a.event("MASTER"))["action"] == "owner-changed"
    old_master = web_b.event("MASTER")
    assert runner.vrrp_event(*web_b.event("BACKUP"))["action"] == "recorded"  # admitted first
    assert runner.vrrp_event(*old_master)["action"] in ("superseded", "replay")
    assert runner.show_state()["owners"]["VI_web"]["node"] == "web-a"


def test_backup_is_recorded_and_stop_alerts(world, clock, web_a):
    assert runner.vrrp_event(*web_a.event("BACKUP"))["action"] == "recorded"
    assert world.fired == []
    assert runner.vrrp_event(*web_a.event("STOP"))["action"] == "alerted"
    assert world.alerts("warning")[0]["message"] == "VI_web: keepalived stopped on web-a"
    assert runner.show_state()["nodes"]["web-a"]["VI_web"]["state"] == "STOP"


# --------------------------------------------------------------------------------------------
# Fleet check
# --------------------------------------------------------------------------------------------


def _inst(state, holds, peers, prio=100):
    return {"VI_web": {"vips": [VIP], "vips_present": [VIP] if holds else [], "holds_vip": holds, "state": state, "role": "MASTER", "effective_priority": prio, "peers": peers}}


@pytest.fixture
def fleet(configure_loader_modules):
    views = {}

    def status(tgt, tgt_type, timeout):
        return views["now"]

    runner.__salt__["nginx_ha.status"] = status
    return views


def test_fleet_split_brain_and_no_owner_alert_critical_once_then_resolve(world, clock, fleet):
    healthy = {"web-a": {"healthy": True}, "web-b": {"healthy": True}}
    fleet["now"] = status_runner.summarize({"web-a": _inst("MASTER", True, ["web-b"]), "web-b": _inst("MASTER", True, ["web-a"], 99)}, healthy, ["web-a", "web-b"])
    ret = runner.check_fleet()
    assert not ret["ok"] and ret["alerted"] == [f"SPLIT-BRAIN: {VIP} (VI_web) is held by web-a, web-b"]
    assert [a["severity"] for a in world.alerts()] == ["critical"]
    assert runner.__context__["retcode"] == 1
    clock.now += 60
    assert runner.check_fleet()["alerted"] == []  # not repeated within realert
    clock.now += 600
    assert len(runner.check_fleet()["alerted"]) == 1  # repeated after realert
    fleet["now"] = status_runner.summarize({"web-a": _inst("FAULT", False, ["web-b"]), "web-b": _inst("BACKUP", False, ["web-a"], 99)}, healthy, ["web-a", "web-b"])
    ret = runner.check_fleet()
    assert ret["alerted"] == [f"NO-OWNER: {VIP} (VI_web) is held by no node", "FAULT: web-a is in FAULT state for VI_web"]
    assert ret["resolved"] == [f"SPLIT-BRAIN: {VIP} (VI_web) is held by web-a, web-b"]
    fleet["now"] = status_runner.summarize({"web-a": _inst("MASTER", True, ["web-b"]), "web-b": _inst("BACKUP", False, ["web-a"], 99)}, healthy, ["web-a", "web-b"])
    ret = runner.check_fleet()
    assert ret["ok"] and ret["resolved"] and world.alerts()[-1]["severity"] == "info"


def test_fleet_silent_node_is_a_warning(world, clock, fleet):
    fleet["now"] = status_runner.summarize({"web-a": _inst("MASTER", True, ["web-b"])}, {}, ["web-a"])
    runner.check_fleet()
    assert [a["severity"] for a in world.alerts()] == ["warning"]


# --------------------------------------------------------------------------------------------
# Alerts to a real webhook on 127.0.0.1
# --------------------------------------------------------------------------------------------


def test_alert_fires_on_the_bus_and_posts_slack_json(world, settings):
    with WebhookServer() as hook:
        settings["webhook"] = {"url": hook.url, "timeout": 1, "retries": 3, "backoff": 0.05}
        ret = runner.alert("critical", "VI_web: something broke", node="web-a")
        assert ret["webhook"]["ok"] and ret["webhook"]["attempts"] == 1
        (request,) = hook.wait_for(1)
    assert request["content_type"] == "application/json"
    assert request["body"]["text"].endswith("nginx-ha CRITICAL: VI_web: something broke")
    assert request["body"]["nginx_ha"] == {"severity": "critical", "message": "VI_web: something broke", "node": "web-a"}
    assert world.fired[0][0] == "nginx_ha/alert/critical" and world.fired[0][1]["node"] == "web-a"


def test_alert_retries_a_failing_webhook(world, settings):
    with WebhookServer() as hook:
        hook.fail_next(2, 503)
        settings["webhook"] = {"url": hook.url, "timeout": 1, "retries": 3, "backoff": 0.05}
        ret = runner.alert("warning", "retry me")
        assert ret["webhook"]["ok"] and ret["webhook"]["attempts"] == 3 and hook.attempts == 3


def test_alert_gives_up_in_bounded_time_on_a_hung_webhook(world, settings):
    with WebhookServer() as hook:
        hook.stall_next(5, 3)
        settings["webhook"] = {"url": hook.url, "timeout": 0.3, "retries": 2, "backoff": 0.05}
        started = time.monotonic()
        ret = runner.alert("critical", "nobody listens")
        took = time.monotonic() - started
    assert not ret["webhook"]["ok"] and ret["webhook"]["attempts"] == 2
    assert took < 2 * 0.3 + 0.05 + 0.5
    assert world.fired and world.fired[0][0] == "nginx_ha/alert/critical"  # the bus got it anyway


def test_alert_rejects_an_unknown_severity(world):
    with pytest.raises(ValueError, match="severity"):
        runner.alert("panic", "x")


def test_fault_of_an_already_healthy_node_restarts_nothing(world, clock, web_a):
    """A late FAULT (master was down) or keepalived's start-up FAULT: nginx serves, leave it be."""
    world.health_before = True
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["action"] == "already-healthy"
    assert world.calls == [("web-a", "nginx_ha.restart_nginx", [], {"unless_healthy": True, "verify": True})] and world.restarts() == []  # the module decided: nothing restarted
    assert runner.show_state()["restarts"].get("web-a", []) == []


def test_a_node_that_becomes_healthy_shortly_after_the_restart_is_verified_by_polling(world, clock, web_a):
    world.script = [False, False, False, True]  # the FAULT, the restart's own check, two polls
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["action"] == "restarted" and ret["healthy"] is True
    assert [c[1] for c in world.calls] == ["nginx_ha.restart_nginx", "nginx_ha.health", "nginx_ha.health"]


def test_a_fixed_health_delay_waits_then_checks_health_itself(world, clock, web_a, settings):
    settings["health_delay"] = 3
    world.script = [False, True, True]  # the FAULT, the restart's own check (not used: the delay), the check after it
    start = clock.now
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["action"] == "restarted" and clock.now - start >= 3
    assert [c[1] for c in world.calls] == ["nginx_ha.restart_nginx", "nginx_ha.health"]


def test_a_healthy_node_with_the_budget_spent_is_asked_for_health_alone(world, clock, web_a, settings):
    settings.update(restart_limit=1)
    assert runner.vrrp_event(*web_a.event("FAULT"))["action"] == "restarted"
    world.health_before = True
    calls = len(world.calls)
    assert runner.vrrp_event(*web_a.event("FAULT"))["action"] == "already-healthy"
    assert world.calls[calls:] == [("web-a", "nginx_ha.health", [], {})]


def test_failed_restart_alert_says_what_failed(world, clock, web_a):
    world.restart_ok = False
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["action"] == "maintenance"
    # a restart that failed gets one health check (the judge), no waiting for health_wait
    assert [c[1] for c in world.calls] == ["nginx_ha.restart_nginx", "nginx_ha.health", "nginx_ha.maintenance"]
    text = world.alerts("critical")[-1]["message"]
    assert "nginx_ha.restart_nginx returned ERROR: nginx_ha: nginx does not answer" in text and "restart failed: False" not in text


def test_a_master_event_received_earlier_but_handled_later_does_not_move_the_owner(world, clock, web_a, web_b):
    """Concurrent workers: web-b's MASTER was received (master's _stamp) before web-a's, handled after."""
    assert runner.vrrp_event(*web_a.event("MASTER", received=clock.now - 1))["action"] == "owner-changed"
    ret = runner.vrrp_event(*web_b.event("MASTER", received=clock.now - 2))
    assert ret["action"] == "stale" and ret["owner"] == "web-a"
    assert runner.show_state()["owners"]["VI_web"]["node"] == "web-a"
    assert not any("moved" in a["message"] for a in world.alerts())


# --------------------------------------------------------------------------------------------
# A FAULT never ends in silence (issue 9: a second failure inside the old coalesce window)
# --------------------------------------------------------------------------------------------


def test_the_restart_action_is_the_escalating_restart(configure_loader_modules):
    cfg = runner._config()
    assert cfg["actions"]["restart"]["fun"] == "nginx_ha.restart_nginx" and cfg["actions"]["restart"]["timeout"] >= 60
    assert "restart_coalesce" not in cfg
    assert runner._lease(cfg) == 30 + 90 + 30 + 30 + 0 + 10 + 60  # health, restart, health, maintenance, delay, wait, margin


def test_a_second_failure_right_after_a_verified_restart_is_restarted_again(world, clock, web_a):
    """nginx dies again 2 s after the reactor healed it: health says unhealthy, so restart (never 'coalesced')."""
    assert runner.vrrp_event(*web_a.event("FAULT"))["action"] == "restarted"
    clock.now += 2
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["action"] == "restarted" and ret["restarts_in_window"] == 2
    assert len(world.restarts()) == 2
    assert [a["severity"] for a in world.alerts()] == ["warning", "warning"]


def test_a_second_failure_with_the_budget_spent_is_a_critical_alert(world, clock, web_a, settings):
    settings.update(restart_limit=1)
    assert runner.vrrp_event(*web_a.event("FAULT"))["action"] == "restarted"
    clock.now += 2
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["action"] == "maintenance" and ret["reason"] == "budget-exhausted"
    assert [a["severity"] for a in world.alerts()] == ["warning", "critical"]


def test_an_escalated_restart_says_so(world, clock, web_a):
    world.escalated = True
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["action"] == "restarted" and ret["escalated"] is True
    assert "the nginx process tree was killed" in world.alerts("warning")[0]["message"]


@pytest.mark.parametrize("seed", range(6))
def test_every_fault_of_an_unhealthy_node_ends_in_a_restart_or_a_critical_alert(world, clock, web_a, settings, seed):
    """Random FAULT sequences, health, gaps, restart and maintenance failures: never a silent answer."""
    import random

    rng = random.Random(seed)
    settings.update(restart_limit=rng.choice([1, 2, 3]), restart_window=rng.choice([60, 300]), alerts={"dedupe": 0})
    kept_out = False  # a maintenance call succeeded since the last reset
    for _ in range(25):
        clock.now += rng.choice([0.5, 2, 5, 30, 120])
        world.health_before, world.health = rng.random() < 0.3, rng.random() < 0.6
        world.restart_ok, world.maintenance_ok = rng.random() < 0.8, rng.random() < 0.7
        if rng.random() < 0.1:
            runner.reset("web-a")
            kept_out = False
        calls, fired = len(world.calls), len(world.fired)
        ret = runner.vrrp_event(*web_a.event("FAULT"))
        new_calls = [c[1] for c in world.calls[calls:]]
        critical = [d for t, d in world.fired[fired:] if t == "nginx_ha/alert/critical"]
        if ret["action"] == "already-healthy":  # the module's own check, or health alone with the budget spent
            assert new_calls in (["nginx_ha.restart_nginx"], ["nginx_ha.health"]) and world.health_before
            continue
        if ret["action"] == "in-maintenance":  # only after a successful keep-out, with its critical alert
            assert kept_out and new_calls == []
            continue
        assert ret["action"] in ("restarted", "maintenance", "maintenance-failed"), ret
        assert any(f in ("nginx_ha.restart_nginx", "service.restart") for f in new_calls) or critical, (ret, new_calls)
        if ret["action"] != "restarted":
            kept_out = "nginx_ha.maintenance" in new_calls and world.maintenance_ok
            assert critical and ("web-a" in runner.show_state()["maintenance"]) == kept_out


def test_faults_while_a_restart_runs_share_it_and_health_is_checked_again(world, clock, web_a):
    inner = []

    def another_fault():
        world.on_restart = None
        inner.append(runner.vrrp_event(*web_a.event("FAULT"))["action"])

    world.on_restart = another_fault
    world.script = [False, True, True]  # broken at the FAULT, healthy after the restart, still healthy
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert inner == ["coalesced"]
    assert ret["action"] == "restarted" and ret["rounds"] == ["restarted", "already-healthy"]
    assert len(world.restarts()) == 1 and runner.show_state()["in_progress"] == {}


def test_a_failure_during_the_restart_is_not_dropped(world, clock, web_a):
    """The FAULT that came in during the restart reports a new failure: the re-check finds it."""

    def another_fault():
        world.on_restart = None
        assert runner.vrrp_event(*web_a.event("FAULT"))["action"] == "coalesced"

    world.on_restart = another_fault
    world.script = [False, True, False, True]
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["rounds"] == ["restarted", "restarted"] and len(world.restarts()) == 2


def test_an_in_progress_mark_of_a_dead_worker_expires_with_a_critical_alert(world, clock, web_a, settings):
    settings["in_progress_expiry"] = 100
    with runner._state(runner._config()) as state:
        state["in_progress"]["web-a"] = {"token": "dead-worker", "since": clock.now, "expires": clock.now + 100, "pending": 0}
    assert runner.vrrp_event(*web_a.event("FAULT"))["action"] == "coalesced" and world.calls == []
    clock.now += 101
    assert runner.vrrp_event(*web_a.event("FAULT"))["action"] == "restarted"
    (critical,) = world.alerts("critical")
    assert "healing web-a did not finish within 100s" in critical["message"] and "1 more FAULT(s)" in critical["message"]


# --------------------------------------------------------------------------------------------
# Marks only after success; Salt client errors are failed actions, never lost events
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("why", ["unhealthy", "budget"])
def test_failed_maintenance_leaves_no_mark_and_the_next_fault_is_handled(world, clock, web_a, settings, why):
    settings.update(restart_limit=0 if why == "budget" else 3)
    world.health, world.maintenance_ok = False, False
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["action"] == "maintenance-failed" and ret["result"] is False and ret["maintenance"] is False
    (critical,) = world.alerts("critical")
    assert "putting web-a in maintenance FAILED" in critical["message"] and "NOT kept out of MASTER" in critical["message"]
    assert "refusing maintenance" in critical["message"]
    assert runner.show_state()["maintenance"] == {}
    clock.now += 5
    world.calls.clear()
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["action"] != "in-maintenance" and world.calls and world.calls[-1][1] == "nginx_ha.maintenance"
    # once maintenance works, the node is marked (and only then)
    world.maintenance_ok = True
    clock.now += 400
    assert runner.vrrp_event(*web_a.event("FAULT"))["action"] == "maintenance"
    assert "web-a" in runner.show_state()["maintenance"]


class RaisingClient:
    """A LocalClient whose every call fails the way Salt's client does when the master is sick."""

    def __init__(self, exc=None, ret=None):
        self.exc, self.ret, self.calls = exc, ret, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def cmd(self, tgt, fun, **kwargs):
        self.calls.append((tgt, fun, kwargs))
        if self.exc is not None:
            raise self.exc
        return self.ret


def _client_errors():
    import salt.exceptions

    return [salt.exceptions.SaltClientError("the master is not reachable"), salt.exceptions.SaltReqTimeoutError("timed out"), TimeoutError("publish timed out")]


@pytest.mark.parametrize("exc", _client_errors(), ids=lambda e: type(e).__name__)
def test_salt_client_errors_become_failed_actions_and_a_critical_alert(clock, web_a, monkeypatch, exc):
    fired = []
    monkeypatch.setattr(runner, "_fire", lambda tag, data: fired.append((tag, data)))
    client = RaisingClient(exc=exc)
    monkeypatch.setattr(runner.salt.client, "get_local_client", lambda *a, **kw: client)
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["action"] == "maintenance-failed" and ret["result"] is False
    assert [c[1] for c in client.calls] == ["nginx_ha.restart_nginx", "nginx_ha.health", "nginx_ha.maintenance"]
    assert client.calls[0][2]["timeout"] == 90  # the restart action's own timeout
    assert client.calls[0][2]["kwarg"] == {"unless_healthy": True, "verify": True}
    critical = [d for t, d in fired if t == "nginx_ha/alert/critical"]
    assert len(critical) == 1 and f"{type(exc).__name__}: {exc}" in critical[0]["message"]
    assert runner.show_state()["maintenance"] == {} and runner.show_state()["in_progress"] == {}


def test_a_node_that_does_not_answer_is_a_failed_call(configure_loader_modules, monkeypatch):
    monkeypatch.setattr(runner.salt.client, "get_local_client", lambda *a, **kw: RaisingClient(ret={}))
    assert runner._call("web-a", {"fun": "nginx_ha.health"}, 7) == (False, "no answer from web-a within 7s")
    answer = {"web-a": {"ret": "ERROR: nginx_ha: nginx does not answer", "retcode": 1}}
    monkeypatch.setattr(runner.salt.client, "get_local_client", lambda *a, **kw: RaisingClient(ret=answer))
    assert runner._call("web-a", {"fun": "nginx_ha.restart_nginx"}, 7) == (False, "ERROR: nginx_ha: nginx does not answer")


def test_an_unexpected_error_is_a_critical_alert_not_a_lost_event(world, clock, web_a, monkeypatch):
    def broken(node):
        raise RuntimeError("pillar render failed")

    monkeypatch.setattr(runner, "_pillar_of", broken)
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["action"] == "error" and ret["result"] is False
    (critical,) = world.alerts("critical")
    assert "RuntimeError: pillar render failed" in critical["message"] and "web-a" in critical["message"]


def test_a_pillar_compiled_without_the_sender_is_compiled_again_before_rejecting(world, clock, web_a, monkeypatch, caplog):
    """Under load Salt's pillar.show_pillar (compiled in the reactor's concurrent worker threads)
    came back without the sender's own instance once (scale benchmark, 20 nodes): the FAULT was
    rejected and nginx stayed down. A second compilation that lists the node decides it."""
    answers = [{"nginx_ha": {"cluster": "other", "vrrp_instances": {}}}, PILLAR]
    asked = []

    def flaky(node):
        asked.append(node)
        return answers.pop(0)

    monkeypatch.setattr(runner, "_pillar_of", flaky)
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["action"] == "restarted" and ret["node"] == "web-a" and asked == ["web-a", "web-a"]
    assert world.targets() == ["web-a"]
    assert "lists it in VI_web only at compilation 2" in caplog.text and "cluster 'other'" in caplog.text


def test_a_sender_not_listed_by_any_compilation_is_rejected_with_its_name(world, clock, keys, monkeypatch):
    asked = []
    monkeypatch.setattr(runner, "_pillar_of", lambda node: asked.append(node) or PILLAR)
    ret = runner.vrrp_event(*Node("outsider", keys).event("FAULT"))
    assert ret["action"] == "rejected" and "outsider is not a node of VI_web" in ret["reason"]
    # who sent what stays in the decision (the signature verified), and nothing was done
    assert (ret["node"], ret["instance"], ret["state"]) == ("outsider", "VI_web", "FAULT")
    assert asked == ["outsider"] * runner._PILLAR_TRIES and world.calls == [] and world.alerts() == []


def test_compilations_that_disagree_and_never_list_the_sender_are_a_critical_alert(world, clock, web_a, monkeypatch):
    """Crossed pillars every time: a real node's FAULT is not healed, so people are told."""
    answers = [{"nginx_ha": {"cluster": f"pair0{i}", "vrrp_instances": {}}} for i in range(runner._PILLAR_TRIES)]
    monkeypatch.setattr(runner, "_pillar_of", lambda node: answers.pop(0))
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["action"] == "error" and ret["node"] == "web-a" and world.calls == []
    (critical,) = world.alerts("critical")
    assert "came out differently" in critical["message"] and "the event was NOT acted upon" in critical["message"]
    assert "'pair00'" in critical["message"] and "'pair02'" in critical["message"]


@pytest.mark.parametrize("pillar", [{"_errors": ["Rendering SLS 'pair04' failed"]}, {}, "a string"])
def test_a_pillar_that_cannot_be_compiled_is_a_critical_alert_not_a_rejection(world, clock, web_a, monkeypatch, pillar):
    monkeypatch.setattr(runner, "_pillar_of", lambda node: pillar)
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["action"] == "error" and ret["node"] == "web-a" and ret["state"] == "FAULT"
    assert "PillarUnreadable" in ret["error"] and world.calls == []
    (critical,) = world.alerts("critical")
    assert "the event was NOT acted upon" in critical["message"] and "web-a" in critical["message"]


def test_an_error_while_healing_lets_go_of_the_node(world, clock, web_a, monkeypatch):
    def broken(event, cfg, check):
        raise OSError("disk full")

    monkeypatch.setattr(runner, "_heal", broken)
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["action"] == "error" and ret["node"] == "web-a"
    assert runner.show_state()["in_progress"] == {} and len(world.alerts("critical")) == 1


# --------------------------------------------------------------------------------------------
# Replays and clocks: per node and boot the sequence number must advance; the master's clock
# --------------------------------------------------------------------------------------------


def test_seq_must_advance_per_boot_even_after_many_newer_events(world, clock, keys):
    """The old rule forgot a seq once 512 newer ones passed; an old signed event was then accepted again."""
    node = Node("web-a", keys, clock=clock.time, boot="1f0e-boot-1")
    old = node.event("FAULT")
    assert runner.vrrp_event(*old)["action"] == "restarted"
    for _ in range(520):
        clock.now += 20
        assert runner.vrrp_event(*node.event("BACKUP"))["action"] == "recorded"
    world.calls.clear()
    ret = runner.vrrp_event(*old)
    assert ret["action"] == "replay" and "is older than seq" in ret["reason"] and "received after it" in ret["reason"] and world.calls == []
    assert runner.vrrp_event(*node.event("BACKUP"))["action"] == "recorded"


def test_a_superseded_boot_is_a_replay_and_a_new_boot_is_accepted(world, clock, keys):
    first = Node("web-a", keys, clock=clock.time, boot="boot-1")
    recorded = first.event("BACKUP")
    undelivered = first.event("MASTER")  # signed while boot-1 ran, never delivered
    assert runner.vrrp_event(*recorded)["action"] == "recorded"
    assert runner.vrrp_event(*recorded)["action"] == "duplicate"
    clock.now += 60
    # rebooted with a lost spool: its seq starts lower than before, and is accepted (a new boot)
    second = Node("web-a", keys, clock=lambda: clock.now - 3600, boot="boot-2")
    tag, data = second.event("BACKUP")
    assert data["data"]["seq"] < recorded[1]["data"]["seq"]
    assert runner.vrrp_event(tag, data)["action"] == "recorded"
    for replayed in (recorded, undelivered):
        ret = runner.vrrp_event(*replayed)
        assert ret["action"] == "replay" and "boot boot-1 of web-a was superseded by boot boot-2" in ret["reason"]
    assert runner.show_state()["boots"]["web-a"]["boot"] == "boot-2"
    assert world.alerts() == []


def test_a_boot_without_seq_and_a_bad_boot_are_rejected(world, clock, web_a):
    for extra in ({"boot": "b1", "seq": None}, {"boot": "b1; rm -rf /"}, {"boot": 17}, {"boot": ""}, {"boot": "x" * 257}, {"boot": "b1\n"}):
        assert runner.vrrp_event(*web_a.event("FAULT", payload_extra=extra))["action"] == "rejected"
    assert world.calls == []


def test_an_older_event_arriving_after_a_newer_one_of_the_same_node_decides_nothing(world, clock, keys):
    """Actions are decided on the latest state: a FAULT older than a BACKUP already recorded, also
    when they are the first two events of a boot (CI: that FAULT was once rejected as a replay)."""
    for boot in (None, "boot-1", "boot-2"):
        node = Node("web-a", keys, clock=clock.time, boot=boot)
        fault, backup = node.event("FAULT", received=clock.now - 0.2), node.event("BACKUP", received=clock.now - 0.1)
        assert runner.vrrp_event(*backup)["action"] == "recorded"
        assert runner.vrrp_event(*fault)["action"] == "superseded"
        assert runner.vrrp_event(*fault)["action"] == "duplicate"
        clock.now += 60
    assert world.calls == []


def test_a_node_clock_far_in_the_future_does_not_freeze_owner_tracking(world, clock, keys):
    ahead = Node("web-a", keys, clock=lambda: clock.now + 10 * 365 * 86400, boot="a")
    web_b = Node("web-b", keys, clock=clock.time, boot="b")
    assert runner.vrrp_event(*ahead.event("MASTER", received=clock.now))["action"] == "owner-changed"
    clock.now += 5
    ret = runner.vrrp_event(*web_b.event("MASTER", received=clock.now))
    assert ret["action"] == "owner-changed" and (ret["old_owner"], ret["new_owner"]) == ("web-a", "web-b")
    assert world.alerts()[-1]["message"] == "VI_web: MASTER moved from web-a to web-b"
    clock.now += 5
    assert runner.vrrp_event(*ahead.event("MASTER", received=clock.now))["new_owner"] == "web-a"
    assert runner.show_state()["owners"]["VI_web"]["node"] == "web-a"


def test_receive_time_comes_from_the_masters_stamp(configure_loader_modules, clock):
    assert runner.receive_time({"_stamp": "2027-01-15T08:00:00.250000+00:00"}) == 1800000000.25
    assert runner.receive_time({"_stamp": "2027-01-15T08:00:00"}) == 1800000000.0  # naive: UTC
    assert runner.receive_time({"_stamp": "not a time"}) == clock.now
    assert runner.receive_time({}) == clock.now


# --------------------------------------------------------------------------------------------
# Late events and backlogs: recorded, one summary, actions on the latest state with a health check
# --------------------------------------------------------------------------------------------


def test_an_event_that_waited_too_long_on_the_master_is_recorded_without_alert(world, clock, web_a):
    ret = runner.vrrp_event(*web_a.event("MASTER", received=clock.now - 600))
    assert ret["action"] == "late" and "received 600s before it was handled" in ret["late"][0]
    assert world.alerts() == [] and runner.show_state()["owners"]["VI_web"]["node"] == "web-a"


def test_a_late_fault_is_health_checked_before_anything_is_restarted(world, clock, web_a, settings):
    settings["check_before_restart"] = False
    world.health_before = True
    ret = runner.vrrp_event(*web_a.event("FAULT", received=clock.now - 600))
    assert ret["action"] == "already-healthy" and world.restarts() == []
    world.health_before = False  # still broken: healed, as a live FAULT would be
    ret = runner.vrrp_event(*web_a.event("FAULT", received=clock.now - 600))
    assert ret["action"] == "restarted"


def _delivered(event, at):
    tag, data = event
    return tag, dict(data, _stamp=stamp(at))


def test_a_backlog_after_a_master_outage_is_one_summary_alert(world, clock, keys):
    web_a = Node("web-a", keys, clock=clock.time, boot="a1")
    web_b = Node("web-b", keys, clock=clock.time, boot="b1")
    assert runner.vrrp_event(*_delivered(web_a.event("MASTER"), clock.now))["action"] == "owner-changed"
    assert runner.vrrp_event(*_delivered(web_b.event("BACKUP"), clock.now))["action"] == "recorded"
    before = len(world.alerts())
    # The master is down for 10 minutes; both engines spool what happens meanwhile.
    spooled = []
    for node, state in ((web_a, "FAULT"), (web_b, "MASTER"), (web_a, "BACKUP"), (web_b, "FAULT"), (web_a, "MASTER"), (web_b, "BACKUP")):
        clock.now += 60
        spooled.append(node.event(state))
    clock.now += 240
    world.health_before = True  # both serve by now
    rets = [runner.vrrp_event(*_delivered(event, clock.now)) for event in spooled]
    assert [r["action"] for r in rets] == ["already-healthy", "late", "late", "already-healthy", "late", "late"]
    assert world.alerts()[before:] == [] and world.restarts() == []
    assert runner.show_state()["owners"]["VI_web"]["node"] == "web-a"
    # once web-a has been quiet for backlog:quiet, the next event (or check_fleet) sends the summary
    clock.now += 31
    assert runner.vrrp_event(*_delivered(web_b.event("MASTER"), clock.now))["action"] == "owner-changed"
    summary, moved = world.alerts()[before:]
    assert summary["check"] == "backlog" and summary["message"].startswith("6 late VRRP event(s)")
    assert summary["backlog"]["web-a"]["VI_web"] == {"transitions": ["FAULT", "BACKUP", "MASTER"], "now": "MASTER"}
    assert summary["backlog"]["web-b"]["VI_web"] == {"transitions": ["MASTER", "FAULT", "BACKUP"], "now": "BACKUP"}
    assert summary["owners"] == {"VI_web": "web-a"}
    assert moved["message"] == "VI_web: MASTER moved from web-a to web-b"


def test_a_late_fault_of_a_still_broken_node_is_healed(world, clock, keys):
    web_a = Node("web-a", keys, clock=clock.time, boot="a1")
    assert runner.vrrp_event(*_delivered(web_a.event("BACKUP"), clock.now))["action"] == "recorded"
    fault = web_a.event("FAULT")
    clock.now += 900
    ret = runner.vrrp_event(*_delivered(fault, clock.now))
    assert ret["action"] == "restarted" and "later than web-a's events usually do" in ret["late"][0]


def test_a_burst_of_one_node_is_summarized_not_alerted_one_by_one(world, clock, web_a, fleet, settings):
    settings["backlog"] = {"burst": 3, "window": 10, "quiet": 30}
    fleet["now"] = {"problems": []}
    actions = []
    for state in ("MASTER", "STOP", "MASTER", "STOP", "MASTER", "STOP"):
        clock.now += 1
        actions.append(runner.vrrp_event(*web_a.event(state))["action"])
    assert actions == ["owner-changed", "alerted", "owner-confirmed", "late", "late", "late"]
    assert len(world.alerts()) == 3
    clock.now += 30
    runner.check_fleet()
    summary = world.alerts()[-1]
    assert summary["severity"] == "warning" and summary["backlog"]["web-a"]["VI_web"] == {"transitions": ["STOP", "MASTER", "STOP"], "now": "STOP"}
    assert "more than 3 events of web-a within 10s" in summary["message"]


def test_a_node_clock_stepped_back_is_rebased(world, clock, keys, settings):
    offset = {"now": 0.0}
    node = Node("web-a", keys, clock=lambda: clock.now + offset["now"], boot="a1")
    assert runner.vrrp_event(*node.event("STOP"))["action"] == "alerted"
    offset["now"] = -3600.0  # NTP stepped the node's clock back by an hour
    clock.now += 400
    assert runner.vrrp_event(*node.event("BACKUP"))["action"] == "late"
    clock.now += 400
    assert runner.vrrp_event(*node.event("STOP"))["action"] == "alerted"  # same offset again: rebased


# --------------------------------------------------------------------------------------------
# Alert deduplication and rate limit
# --------------------------------------------------------------------------------------------


def test_the_same_alert_within_the_dedupe_window_goes_out_once(world, clock, web_a):
    for _ in range(3):
        clock.now += 60
        assert runner.vrrp_event(*web_a.event("STOP"))["action"] == "alerted"
    assert [a["message"] for a in world.alerts()] == ["VI_web: keepalived stopped on web-a"]
    clock.now += 300
    runner.vrrp_event(*web_a.event("STOP"))
    assert len(world.alerts()) == 2


def test_alerts_are_rate_limited_per_node_with_one_summary(world, clock, web_a, web_b, settings):
    settings["alerts"] = {"dedupe": 0, "limit": 3, "window": 300}
    for _ in range(6):
        clock.now += 12
        runner.vrrp_event(*web_a.event("STOP"))
    runner.vrrp_event(*web_b.event("STOP"))  # another node has its own budget
    assert [a["node"] for a in world.alerts()] == ["web-a"] * 3 + ["web-b"]
    # critical alerts are deduplicated, never rate-limited away
    assert runner._alert(runner._config(), "critical", "web-a: something critical", node="web-a")
    clock.now += 300
    runner.vrrp_event(*web_a.event("STOP"))
    summary, again = world.alerts()[-2:]
    assert summary["check"] == "rate-limit" and summary["message"].startswith("3 more alert(s) about web-a were suppressed")
    assert again["message"] == "VI_web: keepalived stopped on web-a"


# --------------------------------------------------------------------------------------------
# Fleet check: FAULT, unhealthy, maintenance, role-less, empty target
# --------------------------------------------------------------------------------------------


def _inst3(state, holds, peers):
    return {"VI_web": {"vips": [VIP], "vips_present": [VIP] if holds else [], "state": state, "role": "BACKUP", "effective_priority": 90, "peers": peers}}


def test_fleet_fault_and_unhealthy_without_a_healthy_standby_are_critical(world, clock, fleet):
    sick = {"healthy": False, "nginx": {"running": False}, "maintenance": False}
    fleet["now"] = status_runner.summarize(
        {"web-a": _inst("FAULT", False, ["web-b"]), "web-b": _inst("MASTER", True, ["web-a"], 99)},
        {"web-a": sick, "web-b": {"healthy": True}},
        ["web-a", "web-b"],
    )
    ret = runner.check_fleet()
    assert ret["alerted"] == ["FAULT: web-a is in FAULT state for VI_web", "UNHEALTHY: web-a is not healthy (nginx is not running)"]
    assert [a["severity"] for a in world.alerts()] == ["critical", "critical"] and ret["retcode"] == 1
    assert world.alerts()[0]["node"] == "web-a"


def test_fleet_problems_with_a_healthy_standby_left_are_warnings(world, clock, fleet):
    healthy = {"web-b": {"healthy": True}, "web-c": {"healthy": True}, "web-a": {"healthy": True, "maintenance": True}}
    fleet["now"] = status_runner.summarize(
        {"web-a": _inst3("FAULT", False, ["web-b", "web-c"]), "web-b": _inst3("MASTER", True, ["web-a", "web-c"]), "web-c": _inst3("BACKUP", False, ["web-a", "web-b"])},
        healthy,
        ["web-a", "web-b", "web-c"],
        errors={"web-d": {"nginx_ha.vip_status": "ERROR executing 'nginx_ha.vip_status': nginx_ha:vrrp_instances: minion 'web-d' is not a node of any instance"}},
    )
    ret = runner.check_fleet()
    assert ret["alerted"] == [
        "FAULT: web-a is in FAULT state for VI_web",
        "MAINTENANCE: web-a is in maintenance (kept out of MASTER)",
        "NO-ROLE: web-d has the nginx_ha pillar but no role in any instance",
    ]
    assert [a["severity"] for a in world.alerts()] == ["warning"] * 3


def test_fleet_check_refuses_ok_for_an_empty_target(world, clock, fleet):
    fleet["now"] = status_runner.summarize({}, {}, [], target="I@nginx_ha:vrrp_instances (compound)")
    ret = runner.check_fleet()
    assert not ret["ok"] and ret["retcode"] == 1
    assert ret["problems"] == ["NO-NODES: target I@nginx_ha:vrrp_instances (compound) matched no minion"]
    assert [a["severity"] for a in world.alerts()] == ["critical"]


def test_fleet_check_that_cannot_run_is_critical(world, clock, configure_loader_modules):
    def broken(**kwargs):
        raise RuntimeError("no salt client")

    runner.__salt__["nginx_ha.status"] = broken
    ret = runner.check_fleet()
    assert not ret["ok"] and ret["problems"][0].startswith("FLEET-CHECK-FAILED: nginx_ha.status raised RuntimeError")
    assert [a["severity"] for a in world.alerts()] == ["critical"]


def test_notify_script_events_without_seq_are_ordered_by_receive_time(world, clock, web_a, settings):
    settings["require_signature"] = False

    def notify(state, received):
        tag = f"nginx_ha/vrrp/VI_web/{state.lower()}"
        return tag, {"id": "web-a", "tag": tag, "_stamp": stamp(received), "data": {"instance": "VI_web", "state": state, "priority": 100, "source": "notify_script"}}

    backup, fault = notify("BACKUP", clock.now - 1), notify("FAULT", clock.now - 2)
    assert runner.vrrp_event(*backup)["action"] == "recorded"
    assert runner.vrrp_event(*fault)["action"] == "superseded" and world.calls == []
    assert runner.vrrp_event(*notify("FAULT", clock.now))["action"] == "restarted"


def test_the_example_master_config_documents_the_defaults(configure_loader_modules):
    import yaml

    example = yaml.safe_load((formula.REPO / "conf" / "master.d" / "nginx_ha_reactor.conf").read_text())["nginx_ha_reactor"]
    documented = {k: v for k, v in example.items() if k != "webhook"}
    assert documented == {k: v for k, v in runner.DEFAULTS.items() if k not in ("webhook", "state_file", "actions")}
    assert {k: v for k, v in example["webhook"].items() if k != "url"} == {k: v for k, v in runner.DEFAULTS["webhook"].items() if k not in ("url", "backoff")}


def test_an_older_event_admitted_after_a_newer_one_is_out_of_order_not_a_replay(world, clock, web_a):
    """Concurrent workers: web-a's FAULT (delivered once) is handled after its newer BACKUP."""
    fault = web_a.event("FAULT", received=clock.now - 0.2)
    backup = web_a.event("BACKUP", received=clock.now - 0.1)
    assert runner.vrrp_event(*backup)["action"] == "recorded"
    ret = runner.vrrp_event(*fault)
    assert ret["action"] == "superseded", ret  # received before the BACKUP and never seen: a real event
    assert runner.show_state()["nodes"]["web-a"]["VI_web"]["state"] == "BACKUP"  # the newer state stands
    assert runner.vrrp_event(*fault)["action"] == "duplicate"  # the same one again


def _ev(boot, seq, recv):
    """What _check_sequence reads of an event of web-a."""
    return {"node": "web-a", "boot": boot, "seq": seq, "recv": float(recv)}


def _json_round_trip(state):
    """The state file between two events."""
    import json

    return json.loads(json.dumps(state, sort_keys=True))


@st.composite
def engine_streams(draw, fire_late=False):
    """
    One node's deliveries as its engine sends them: boots one after another (the index in the
    boot name is the order), per boot a ``seq`` that grows by clock steps (a new boot may start
    lower: a lost spool), a send repeated when its answer was lost, each received (the master's
    ``_stamp``) after the one sent before it; with ``fire_late``, the master may fire such a
    repeat after the next events (a slow master worker). Then the order concurrent reactor
    workers admit them in: any.
    """
    deliveries, recv, seq = [], 1000.0, draw(st.integers(0, 10**12))
    for boot in range(draw(st.integers(1, 3))):
        seq = max(0, seq + draw(st.integers(-10**6, 10**6)))
        for _ in range(draw(st.integers(1, 18))):
            seq += draw(st.integers(1, 5000))
            for copy in range(draw(st.integers(1, 2))):
                recv += draw(st.floats(0.000001, 5))
                fired_after = draw(st.floats(5.001, 6)) if fire_late and copy and draw(st.booleans()) else 0.0
                deliveries.append(_ev(f"boot-{boot}", seq, recv + fired_after))
    deliveries.sort(key=lambda e: e["recv"])
    return deliveries, draw(st.permutations(range(len(deliveries))))


def _admit_all(deliveries, order):
    """Admit the deliveries in ``order``, the state through its JSON file between two events:
    ``(state, {(boot, seq): verdicts})``; no event is admitted twice."""
    state, verdicts = {"seen": {}, "boots": {}}, {}
    for index in order:
        state = _json_round_trip(state)
        event = deliveries[index]
        verdict = runner._check_sequence(state, dict(event))
        key = (event["boot"], event["seq"])
        assert verdict is not None or None not in verdicts.get(key, []), (event, "admitted twice")
        verdicts.setdefault(key, []).append(verdict)
    return _json_round_trip(state), verdicts


def _last_boot(deliveries):
    """The node's newest boot (in send order) and the highest seq sent in it."""
    boot = max((e["boot"] for e in deliveries), key=lambda b: int(b.split("-")[1]))
    return boot, max(e["seq"] for e in deliveries if e["boot"] == boot)


@hypothesis.settings(max_examples=300, deadline=None, suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@given(engine_streams(), st.data())
def test_any_admission_order_acts_on_each_sent_event_once_and_on_no_replay(configure_loader_modules, stream, data):
    """
    The class of the CI failure (a boot's first FAULT admitted after its BACKUP was called a
    replay): whatever order the workers admit a node's deliveries in, each event sent is admitted
    exactly once, its repeats are duplicates, nothing sent is a replay, and the node's current boot
    is its last. A copy sent again later (after all of them) is never admitted.
    """
    deliveries, order = stream
    state, verdicts = _admit_all(deliveries, order)
    for key, seen in verdicts.items():
        assert sorted(v[0] if v else "" for v in seen) == [""] + ["duplicate"] * (len(seen) - 1), (key, seen)
    assert state["boots"]["web-a"]["boot"] == _last_boot(deliveries)[0]
    replayed = dict(data.draw(st.sampled_from(deliveries)), recv=deliveries[-1]["recv"] + data.draw(st.floats(0, 1000)))
    assert runner._check_sequence(state, replayed)[0] in ("duplicate", "replay")


@hypothesis.settings(max_examples=300, deadline=None, suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@given(engine_streams(fire_late=True))
def test_fired_out_of_order_nothing_is_admitted_twice_and_the_next_event_restores_the_boot(configure_loader_modules, stream):
    """Receive order is wrong when the master fires a repeat late: then no event is acted on
    twice, and a boot wrongly left behind is the node's again with its next event (never locked out)."""
    deliveries, order = stream
    state, _ = _admit_all(deliveries, order)
    boot, highest = _last_boot(deliveries)
    assert runner._check_sequence(state, _ev(boot, highest + 1, deliveries[-1]["recv"] + 1)) is None, state
    assert state["boots"]["web-a"]["boot"] == boot


def test_a_live_boot_left_behind_is_the_nodes_again_with_its_next_event(configure_loader_modules):
    """Left behind on receive order alone (the master's clock stepped back before the reboot; or
    a replay of a forgotten boot took over): the boot that keeps sending new seqs wins it back."""
    state = {"seen": {}, "boots": {}}
    for event, expected in (
        (_ev("b1", 100, 5000), None),
        (_ev("b2", 200, 1500), None),  # the clock stepped back: b2 looks older than b1
        (_ev("b2", 201, 5100), None),  # b2 sends on: it is the node's boot
        (_ev("b1", 100, 5200), "replay"),
        (_ev("b1", 101, 5300), None),  # a seq of b1 above any seen, received last: b1 is alive
    ):
        verdict = runner._check_sequence(state, event)
        assert (verdict and verdict[0]) == expected, (event, verdict)
    assert state["boots"]["web-a"]["boot"] == "b1"
    assert runner._check_sequence(state, _ev("b2", 202, 5400)) is None and state["boots"]["web-a"]["boot"] == "b2"
    assert runner._check_sequence(state, _ev("b1", 101, 5500))[0] == "replay"  # seen: a real replay


def test_the_oldest_boots_left_behind_are_forgotten_first_across_the_state_file(configure_loader_modules):
    """The state file sorts mapping keys: boots are kept in a list, so the order is the boots'."""
    boots = [f"{99 - i:02d}-boot" for i in range(runner._BOOTS_KEEP + 3)]  # names sort backwards
    state = {"seen": {}, "boots": {}}
    for i, boot in enumerate(boots):
        state = _json_round_trip(state)
        assert runner._check_sequence(state, _ev(boot, 1000 * i, 10 * i)) is None
    assert [b for b, _ in state["boots"]["web-a"]["left"]] == boots[-runner._BOOTS_KEEP - 1:-1]
    assert runner._check_sequence(state, _ev(boots[-2], 0, 10_000))[0] == "replay"


def test_a_state_file_from_the_previous_version_keeps_its_rule(configure_loader_modules):
    """No ``recv``/``recent`` in the track: any seq not above the recorded one is refused."""
    state = {"seen": {}, "boots": {"web-a": {"boot": "b", "seq": 60, "superseded": ["a"]}}}
    assert runner._check_sequence(state, _ev("b", 55, 10))[0] == "replay"
    assert runner._check_sequence(state, _ev("b", 60, 11))[0] == "duplicate"
    assert runner._check_sequence(state, _ev("b", 61, 12)) is None
    assert runner._check_sequence(state, _ev("a", 5, 13))[0] == "replay"


def test_a_late_event_of_a_boot_left_behind_does_not_overwrite_the_newer_state(configure_loader_modules):
    """A STOP spooled at shutdown and sent first after the reboot, taken up after the new boot's
    BACKUP: the BACKUP stands, and the STOP is not the node's latest."""
    state = runner._empty_state()
    cfg = runner.copy.deepcopy(runner.DEFAULTS)
    extra = {"instance": "VI_web", "members": ["web-a", "web-b"]}
    new = dict(_ev("b2", 5, 11), state="BACKUP", time=11.0, **extra)
    old = dict(_ev("b1", 100, 10), state="STOP", time=10.0, **extra)
    assert runner._admit(state, new, cfg, 12.0)[0]["action"] is None
    assert runner._admit(state, old, cfg, 12.0)[0]["action"] is None
    assert state["nodes"]["web-a"]["VI_web"]["state"] == "BACKUP" and not runner._is_latest(state, old)


def test_an_event_older_than_the_remembered_window_is_a_replay(configure_loader_modules):
    """Received before the newest, but below the last 64 seq numbers seen: it cannot be told
    from one seen before, so it is refused."""
    state = {"seen": {}, "boots": {}}
    events = [_ev("b", 1000 + i, 10 + i) for i in range(70)]
    for event in events[1:]:
        assert runner._check_sequence(state, dict(event)) is None
    verdict = runner._check_sequence(state, dict(events[0]))
    assert verdict[0] == "replay" and "below the window of the last 64 seen" in verdict[1]


def test_a_send_fired_after_the_next_one_is_handled_within_the_window(configure_loader_modules):
    """The master's workers may fire a slow request after the next one: received after the newer
    event, but unseen and within 64 below it, it is handled (as IPsec's window); further below, a replay."""
    state = {"seen": {}, "boots": {}}
    assert runner._check_sequence(state, _ev("b", 5001, 10)) is None
    assert runner._check_sequence(state, _ev("b", 5000, 10.5)) is None
    assert runner._check_sequence(state, _ev("b", 5000, 11))[0] == "duplicate"
    verdict = runner._check_sequence(state, _ev("b", 4900, 12))
    assert verdict[0] == "replay" and "received after it" in verdict[1]


# --------------------------------------------------------------------------------------------
# Several masters (multi_master: claims): each event acted on once, claims kept on the node
# --------------------------------------------------------------------------------------------

node_module = formula.load_module("_modules", "nginx_ha")


class TwoMasters:
    """Two masters (own state files and holder names) in front of nodes whose nginx_ha.claim*
    calls run the real execution module (one claim directory per node, the test's clock)."""

    def __init__(self, world, clock, settings, tmp_path, monkeypatch):
        self.world, self.settings, self.tmp = world, settings, tmp_path
        monkeypatch.setattr(node_module, "_boot_clock", lambda: ("boot-1", clock.now))
        monkeypatch.setattr(node_module, "__opts__", {}, raising=False)
        plain = world.call

        def call(node, action, timeout):
            if action["fun"] in ("nginx_ha.claim", "nginx_ha.claim_done", "nginx_ha.claims"):
                world.calls.append((node, action["fun"], list(action.get("arg") or []), dict(action.get("kwarg") or {})))
                if not world.answers:
                    return False, f"no answer from {node}"
                node_module.__opts__["nginx_ha.claim_dir"] = str(tmp_path / "nodes" / node / "claims")
                fun = getattr(node_module, action["fun"].split(".", 1)[1])
                return True, fun(*(action.get("arg") or []), **(action.get("kwarg") or {}))
            return plain(node, action, timeout)

        monkeypatch.setattr(runner, "_call", call)
        self.view = {"clusters": {"default": {"nodes": ["web-a", "web-b"]}}, "unreachable": [], "errors": [], "problems": [], "problem_info": {}}
        monkeypatch.setattr(runner, "_fleet_view", lambda *a, **kw: self.view)
        monkeypatch.setattr(runner, "_router_ids", lambda *a, **kw: ([], {}))

    def use(self, name):
        """Run the next runner call as master ``name``."""
        self.settings["state_file"] = str(self.tmp / name / "reactor.json")
        self.settings["multi_master"] = {"claims": True, "holder": name, "lease": 60, "fleet_lease": 180}

    def on(self, name, tag, data):
        self.use(name)
        return runner.vrrp_event(tag, dict(data))


@pytest.fixture
def masters(world, clock, settings, tmp_path, monkeypatch):
    return TwoMasters(world, clock, settings, tmp_path, monkeypatch)


def test_two_masters_given_the_same_fault_restart_once_and_alert_once(world, clock, web_a, masters):
    tag, data = web_a.event("FAULT")
    first = masters.on("m1", tag, data)
    second = masters.on("m2", tag, data)
    assert first["action"] == "restarted"
    assert second["action"] == "claimed-elsewhere" and second["holder"] == "m1" and second["claim"] == "done"
    assert len(world.restarts()) == 1 and len(world.alerts()) == 1
    # the winner marked it done on the node with what it decided
    assert [c for c in world.calls if c[1] == "nginx_ha.claim_done"] == [("web-a", "nginx_ha.claim_done", [runner._claim_key(runner.parse_event(tag, data, require_signature=False)), "m1"], {"result": "restarted"})]


def test_a_master_event_is_alerted_by_one_master_and_both_record_the_owner(world, clock, web_a, masters):
    tag, data = web_a.event("MASTER")
    assert masters.on("m1", tag, data)["action"] in ("owner-changed", "owner-confirmed")
    assert masters.on("m2", tag, data)["action"] == "claimed-elsewhere"
    assert len(world.alerts()) == 1
    for name in ("m1", "m2"):
        masters.use(name)
        assert runner.show_state()["owners"]["VI_web"]["node"] == "web-a"  # the loser still recorded it


def test_a_node_that_cannot_be_asked_for_the_claim_is_acted_on_anyway(world, clock, web_a, masters, monkeypatch):
    original = runner._call

    def no_claims(node, action, timeout):
        if action["fun"].startswith("nginx_ha.claim"):
            return False, "no answer"
        return original(node, action, timeout)

    monkeypatch.setattr(runner, "_call", no_claims)
    assert masters.on("m1", *web_a.event("FAULT"))["action"] == "restarted"  # never dropped for a claim


def test_a_claim_of_a_master_that_died_is_taken_over_by_the_other_after_its_lease(world, clock, web_a, masters, monkeypatch):
    tag, data = web_a.event("FAULT")
    died = runner._heal

    def dies(*args, **kwargs):
        raise SystemExit("m1 powered off in the middle of the heal")

    monkeypatch.setattr(runner, "_heal", dies)
    with pytest.raises(SystemExit):
        masters.on("m1", tag, data)
    monkeypatch.setattr(runner, "_heal", died)
    assert masters.on("m2", tag, data)["action"] == "claimed-elsewhere"  # m1's lease still runs
    assert world.restarts() == []
    masters.use("m2")
    assert runner.check_fleet()["taken_over"] == []  # not yet expired: nothing taken over
    clock.now += 61
    ret = runner.check_fleet()
    assert [(t["node"], t["from"], t["action"]) for t in ret["taken_over"]] == [("web-a", "m1", "restarted")]
    assert len(world.restarts()) == 1
    assert any("m1 claimed web-a's FAULT event" in a["text"] and "m2 takes it over" in a["text"] for a in world.alerts("warning"))
    clock.now += 61
    assert runner.check_fleet()["taken_over"] == []  # done: never taken over again
    assert len(world.restarts()) == 1


def test_fleet_problems_are_alerted_by_one_master_and_by_the_other_once_it_is_gone(world, clock, masters):
    masters.view = dict(masters.view, problems=["FAULT: web-b is FAULT"], problem_info={"FAULT: web-b is FAULT": {"kind": "FAULT", "severity": "warning", "node": "web-b"}})
    masters.use("m1")
    one = runner.check_fleet()
    masters.use("m2")
    two = runner.check_fleet()
    assert one["alerted"] == ["FAULT: web-b is FAULT"] and one["alerter"]["holder"] == "m1"
    assert two["alerted"] == [] and two["alerter"] == {"alerts": False, "holder": "m1", "on": "web-a"}
    assert len(world.alerts()) == 1
    # m1 stops checking (down): after its fleet lease, m2 alerts the next problem
    clock.now += 181
    masters.view = dict(masters.view, problems=["NO-OWNER: VI_web"], problem_info={"NO-OWNER: VI_web": {"kind": "NO-OWNER", "severity": "critical"}})
    three = runner.check_fleet()
    assert three["alerter"]["holder"] == "m2" and "NO-OWNER: VI_web" in three["alerted"]
    assert [a["text"].split("]", 1)[-1].strip() for a in world.alerts("critical")] and len(world.alerts("critical")) == 1


def test_without_multi_master_no_claim_is_made(world, clock, web_a):
    assert runner.vrrp_event(*web_a.event("FAULT"))["action"] == "restarted"
    assert not [c for c in world.calls if c[1].startswith("nginx_ha.claim")]


class FlakyBus:
    """salt.utils.event.get_master_event's bus: fire_event answers from ``answers`` (False: Salt
    could not reach the master's event publisher in time)."""

    def __init__(self, answers):
        self.answers, self.fired = list(answers), []

    def __call__(self, *args, **kwargs):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def fire_event(self, data, tag, timeout=1000):
        self.fired.append((tag, timeout))
        return self.answers.pop(0)


def test_an_event_the_bus_did_not_take_is_fired_again(configure_loader_modules, monkeypatch, caplog):
    bus = FlakyBus([False, True])
    monkeypatch.setattr(runner.salt.utils.event, "get_master_event", bus)
    assert runner._fire("nginx_ha/alert/critical", {"text": "x"}) is True
    assert bus.fired == [("nginx_ha/alert/critical", runner._FIRE_TIMEOUT_MS)] * 2
    assert "did not take nginx_ha/alert/critical (attempt 1 of 3)" in caplog.text


def test_an_event_never_fired_is_an_error_in_the_log_not_a_silent_loss(configure_loader_modules, monkeypatch, caplog):
    bus = FlakyBus([False] * runner._FIRE_TRIES)
    monkeypatch.setattr(runner.salt.utils.event, "get_master_event", bus)
    assert runner._fire("nginx_ha/alert/critical", {"text": "x"}) is False
    assert len(bus.fired) == runner._FIRE_TRIES
    assert "nginx_ha/alert/critical was NOT fired on the master's event bus after 3 attempts" in caplog.text
