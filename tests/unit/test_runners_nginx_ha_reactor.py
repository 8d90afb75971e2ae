"""
The nginx_ha_reactor runner's decisions, with loader mocks: who is acted on, the restart budget,
alerts, the fleet check. Minion calls and the master bus are recorded, not performed; the webhook
is a real HTTP server on 127.0.0.1.
"""

import contextvars
import multiprocessing
import threading
import time

import pytest

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
        self.restarted = False
        self.restart_ok = True
        self.answers = True

    def call(self, node, action, timeout):
        self.calls.append((node, action["fun"], list(action.get("arg") or []), dict(action.get("kwarg") or {})))
        if not self.answers:
            return False, None
        if action["fun"] == "nginx_ha.health":
            # before a restart: as the FAULT found it; after one: as the restart left it
            healthy, self.restarted = (self.health if self.restarted else self.health_before), False
            return True, {"healthy": healthy}
        if action["fun"] == "service.restart":
            self.restarted = self.restart_ok
            return self.restart_ok, self.restart_ok
        return True, True

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
    return {"state_file": str(tmp_path / "state" / "reactor.json"), "health_delay": 3}


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


class Node:
    """A minion's engine: numbered, signed events, as they arrive in the reactor's data."""

    def __init__(self, minion_id, keys, clock=None):
        self.id = minion_id
        self.tracker = engine.Tracker(clock=clock or time.time)
        self.signer = engine.Signer(keys[minion_id][0], minion_id)

    def event(self, state, instance="VI_web", sender=None, payload_extra=None, sign=True):
        tag, data = self.tracker.event({"instance": instance, "state": state, "priority": 100})
        data["vips"] = [VIP]
        data.update(payload_extra or {})
        if sign:
            data["sig"] = self.signer(tag, data)
        # What the master fires for a _minion_event request: id is the authenticated sender.
        return tag, {"id": sender or self.id, "cmd": "_minion_event", "tag": tag, "data": data}


@pytest.fixture
def web_a(keys):
    return Node("web-a", keys)


@pytest.fixture
def web_b(keys):
    return Node("web-b", keys)


# --------------------------------------------------------------------------------------------
# Who is acted on
# --------------------------------------------------------------------------------------------


def test_fault_restarts_nginx_on_the_sender_only(world, clock, web_a):
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["action"] == "restarted" and ret["node"] == "web-a" and ret["healthy"] is True
    assert world.calls == [("web-a", "nginx_ha.health", [], {}), ("web-a", "service.restart", ["nginx"], {}), ("web-a", "nginx_ha.health", [], {})]
    assert [a["severity"] for a in world.alerts()] == ["warning"]


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
    assert len([c for c in world.calls if c[1] == "service.restart"]) == 1


# --------------------------------------------------------------------------------------------
# Restart budget
# --------------------------------------------------------------------------------------------


def test_restart_budget_per_node_and_window(world, clock, web_a, web_b, settings):
    settings.update(restart_limit=3, restart_window=300, restart_coalesce=10)
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
    settings.update(restart_limit=2, restart_window=100, restart_coalesce=0)
    got = []
    # restarts at t=0 and t=50 (each followed by the 3 s health delay); at t=101 the first one has
    # left the window, at t=114 two are inside it again
    for step in (0, 47, 48, 10):
        clock.now += step
        got.append(runner.vrrp_event(*web_a.event("FAULT"))["action"])
    assert got == ["restarted", "restarted", "restarted", "maintenance"]


def test_close_faults_share_one_restart(world, clock, web_a, settings):
    settings.update(restart_coalesce=10)
    assert runner.vrrp_event(*web_a.event("FAULT"))["action"] == "restarted"
    clock.now += 2
    assert runner.vrrp_event(*web_a.event("FAULT", instance="VI_web"))["action"] == "coalesced"
    assert len([c for c in world.calls if c[1] == "service.restart"]) == 1


def test_unhealthy_after_restart_goes_to_maintenance(world, clock, web_a):
    world.health = False
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["action"] == "maintenance" and ret["reason"] == "unhealthy-after-restart"
    assert [c[1] for c in world.calls] == ["nginx_ha.health", "service.restart", "nginx_ha.health", "nginx_ha.maintenance"]
    assert [a["severity"] for a in world.alerts()] == ["critical"]
    assert "web-a" in runner.show_state()["maintenance"]


def test_silent_node_counts_as_unhealthy(world, clock, web_a):
    world.answers = False
    assert runner.vrrp_event(*web_a.event("FAULT"))["action"] == "maintenance"


def test_budget_is_safe_under_concurrent_workers(world, keys, settings):
    """Reactor workers are threads: 12 FAULTs at once still restart at most restart_limit times."""
    settings.update(restart_limit=3, restart_coalesce=0, health_delay=0)
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
    assert results.count("restarted") == 3
    assert results.count("restarted") + results.count("maintenance") + results.count("in-maintenance") == 12


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
    assert ret["alerted"] == [f"NO-OWNER: {VIP} (VI_web) is held by no node"] and ret["resolved"] == [f"SPLIT-BRAIN: {VIP} (VI_web) is held by web-a, web-b"]
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
    assert [c[1] for c in world.calls] == ["nginx_ha.health"]
    assert runner.show_state()["restarts"].get("web-a", []) == []


def test_failed_restart_alert_says_what_failed(world, clock, web_a):
    world.restart_ok = False
    ret = runner.vrrp_event(*web_a.event("FAULT"))
    assert ret["action"] == "maintenance"
    text = world.alerts("critical")[-1]["message"]
    assert "service.restart returned False" in text and "restart failed: False" not in text


def test_an_older_master_event_arriving_late_does_not_move_the_owner(world, clock, keys):
    """web-b's MASTER happened before web-a's but arrives after it (master outage, cut link)."""
    web_a = Node("web-a", keys, clock=lambda: 2000.0)
    web_b = Node("web-b", keys, clock=lambda: 1000.0)
    assert runner.vrrp_event(*web_a.event("MASTER"))["action"] == "owner-changed"
    ret = runner.vrrp_event(*web_b.event("MASTER"))
    assert ret["action"] == "stale" and ret["owner"] == "web-a"
    assert runner.show_state()["owners"]["VI_web"]["node"] == "web-a"
    assert not any("moved" in a["message"] for a in world.alerts())
