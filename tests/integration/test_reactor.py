"""
The reactor on a real master: nginx_ha/vrrp/* events -> reactor/vrrp.sls -> nginx_ha_reactor.

The master's nginx_ha_reactor actions are harmless stand-ins (see the conftest): "restart" and
"maintenance" make the node itself fire nginx_ha/test/restart and nginx_ha/test/maintenance, so
data['id'] of those events shows which minion ran them; "health" is the presence of a file.
"""

import json
import os
import time

import pytest
import salt.channel.client
import salt.config

from tests.support import formula
from tests.support.events import collect, runner_returns, wait_for_fifo, write_fifo

pytestmark = pytest.mark.integration

engine = formula.load_module("_engines", "nginx_ha_events")


@pytest.fixture(scope="module")
def fifos(events_minions, events_dir):
    paths = {node: str(events_dir / f"{node}.fifo") for node in events_minions}
    for path in paths.values():
        wait_for_fifo(path)
    return paths


@pytest.fixture
def fresh(events_master, events_dir, events_reactor_config, webhook):
    """Healthy nodes, no reactor memory, an empty webhook log."""
    (events_dir / "healthy").write_text("")
    time.sleep(1)  # let the reactor finish events of earlier tests
    for suffix in ("", ".tmp"):
        try:
            os.unlink(events_reactor_config["state_file"] + suffix)
        except FileNotFoundError:
            pass
    webhook.reset()
    return time.time()


def reactor_state(events_reactor_config):
    with open(events_reactor_config["state_file"]) as fh:
        return json.load(fh)


def actions_run(event_listener, master, after, tag, timeout=0):
    """Minion ids that ran a stand-in action (fired ``tag``) since ``after``."""
    return [e.data["id"] for e in collect(event_listener, master.id, tag, after, 10**6, timeout=timeout)]


def minion_opts(factory):
    return salt.config.minion_config(factory.config["conf_file"])


def send_as(factory, tag, payload):
    """A _minion_event request with this minion's own key: the master sets data['id'] to it."""
    sender = engine.MasterSender(minion_opts(factory))
    try:
        sender(tag, payload)
    finally:
        sender.close()


def send_batch_as(factory, events):
    """The batch form of _minion_event: the master fires each entry's data as the minion wrote it."""
    opts = minion_opts(factory)
    opts["master_uri"] = f"tcp://127.0.0.1:{opts['master_port']}"
    with salt.channel.client.ReqChannel.factory(opts) as channel:
        channel.send({"id": opts["id"], "cmd": "_minion_event", "events": events}, timeout=10)


def signed_payload(factory, tag, **fields):
    opts = minion_opts(factory)
    payload = {"instance": tag.split("/")[2], "state": tag.rsplit("/", 1)[1].upper(), "previous_state": None, "priority": 100, "vips": [], "time": time.time(), "seq": time.time_ns()}
    payload.update(fields)
    payload["sig"] = engine.Signer(os.path.join(opts["pki_dir"], "minion.pem"), opts["id"])(tag, payload)
    return payload


def test_fault_restarts_nginx_on_that_node_only_within_the_budget(events_master, events_minions, event_listener, fifos, fresh, events_reactor_config, webhook):
    after = fresh
    actions = []
    for i in range(4):
        write_fifo(fifos["ev-a"], 'INSTANCE "VI_web" FAULT 100')
        rets = runner_returns(event_listener, events_master.id, after, i + 1, where=lambda r: r.get("node") == "ev-a" and r.get("state") == "FAULT")
        actions = [r["action"] for r in rets]
        assert len(actions) == i + 1, actions
    assert actions == ["restarted", "restarted", "restarted", "maintenance"]
    assert rets[-1]["reason"] == "budget-exhausted"
    time.sleep(1)
    assert actions_run(event_listener, events_master, after, "nginx_ha/test/restart") == ["ev-a"] * 3
    assert actions_run(event_listener, events_master, after, "nginx_ha/test/maintenance") == ["ev-a"]
    critical = collect(event_listener, events_master.id, "nginx_ha/alert/critical", after, 1, timeout=10)
    assert "ev-a put in maintenance" in critical[0].data["message"]
    assert any("CRITICAL" in r["body"]["text"] and "ev-a" in r["body"]["text"] for r in webhook.wait_for(4))
    state = reactor_state(events_reactor_config)
    assert len(state["restarts"]["ev-a"]) == 3 and "ev-a" in state["maintenance"]
    # the operator fixed it: reset, and the next FAULT is handled again
    ret = events_master.salt_run_cli().run("nginx_ha_reactor.reset", "ev-a")
    assert ret.returncode == 0 and len(ret.data["forgotten"]["restarts"]) == 3


def test_unhealthy_after_restart_keeps_the_node_out(events_master, event_listener, fifos, fresh, events_dir):
    after = fresh
    (events_dir / "healthy").unlink()
    write_fifo(fifos["ev-b"], 'INSTANCE "VI_api" FAULT 100')
    (ret,) = runner_returns(event_listener, events_master.id, after, 1, where=lambda r: r.get("node") == "ev-b" and r.get("state") == "FAULT")
    assert ret["action"] == "maintenance" and ret["reason"] == "unhealthy-after-restart" and ret["healthy"] is False
    time.sleep(1)
    assert actions_run(event_listener, events_master, after, "nginx_ha/test/restart") == ["ev-b"]
    assert actions_run(event_listener, events_master, after, "nginx_ha/test/maintenance") == ["ev-b"]


def test_a_node_healthy_again_shortly_after_the_restart_is_verified_not_kept_out(events_master, event_listener, fifos, fresh, events_dir):
    """The health check after a restart is polled until it says healthy (health_wait), not taken once."""
    after = fresh
    (events_dir / "healthy").unlink()
    write_fifo(fifos["ev-b"], 'INSTANCE "VI_api" FAULT 100')
    # the reactor has restarted and asked for health, and ev-b answered "not healthy" ...
    collect(
        event_listener, events_master.id, "salt/job/*/ret/ev-b", after, 1,
        where=lambda e: e.data.get("fun") == "file.file_exists" and e.data.get("return") is False,
    )
    (events_dir / "healthy").write_text("")  # ... then the node becomes healthy
    (ret,) = runner_returns(event_listener, events_master.id, after, 1, where=lambda r: r.get("node") == "ev-b" and r.get("state") == "FAULT")
    assert ret["action"] == "restarted" and ret["healthy"] is True, ret
    assert set(ret["took"]) == {"checks", "restart_call", "verify"}, ret
    time.sleep(1)
    assert actions_run(event_listener, events_master, after, "nginx_ha/test/restart") == ["ev-b"]
    assert actions_run(event_listener, events_master, after, "nginx_ha/test/maintenance") == []


def test_minion_naming_another_in_its_payload_acts_on_itself_only(events_master, events_minions, event_listener, fifos, fresh):
    """ev-b signs a FAULT whose payload names ev-a (and carries shell metacharacters)."""
    after = fresh
    tag = "nginx_ha/vrrp/VI_web/fault"
    payload = signed_payload(events_minions["ev-b"], tag, id="ev-a", node="ev-a", target="*", priority="1; touch /tmp/nginx-ha-pwned", vips=["$(reboot)"])
    send_as(events_minions["ev-b"], tag, payload)
    (ret,) = runner_returns(event_listener, events_master.id, after, 1, where=lambda r: r.get("state") == "FAULT")
    assert ret["node"] == "ev-b" and ret["action"] == "restarted"
    time.sleep(1)
    assert actions_run(event_listener, events_master, after, "nginx_ha/test/restart") == ["ev-b"]
    assert not os.path.exists("/tmp/nginx-ha-pwned")


def test_forged_sender_through_the_batch_path_is_rejected(events_master, events_minions, event_listener, fifos, fresh):
    """
    Salt fires each entry of a batch _minion_event with the data the minion wrote, so ev-b can
    make data['id'] say ev-a. The engine's signature is what tells them apart.
    """
    after = fresh
    tag = "nginx_ha/vrrp/VI_web/fault"
    forged = [
        {"tag": tag, "data": {"id": "ev-a", "cmd": "_minion_event", "tag": tag, "data": signed_payload(events_minions["ev-b"], tag)}},
        {"tag": tag, "data": {"id": "ev-a", "cmd": "_minion_event", "tag": tag, "data": dict(signed_payload(events_minions["ev-b"], tag), sig=None)}},
    ]
    send_batch_as(events_minions["ev-b"], forged)
    seen = collect(event_listener, events_master.id, tag, after, 2, timeout=30)
    assert [e.data["id"] for e in seen] == ["ev-a", "ev-a"]  # Salt let ev-b claim to be ev-a ...
    rets = runner_returns(event_listener, events_master.id, after, 2, where=lambda r: r.get("action") == "rejected")
    assert len(rets) == 2 and all("signature" in r["reason"] for r in rets)  # ... the reactor does not
    time.sleep(1)
    assert actions_run(event_listener, events_master, after, "nginx_ha/test/*") == []


def test_new_master_alert_names_old_and_new_owner(events_master, event_listener, fifos, fresh, webhook):
    after = fresh
    write_fifo(fifos["ev-a"], 'INSTANCE "VI_web" MASTER 100')
    runner_returns(event_listener, events_master.id, after, 1, where=lambda r: r.get("state") == "MASTER")
    write_fifo(fifos["ev-a"], 'INSTANCE "VI_web" FAULT 100')
    write_fifo(fifos["ev-b"], 'INSTANCE "VI_web" MASTER 99')
    rets = runner_returns(event_listener, events_master.id, after, 2, where=lambda r: r.get("state") == "MASTER")
    assert [(r["old_owner"], r["new_owner"]) for r in rets] == [(None, "ev-a"), ("ev-a", "ev-b")]
    (moved,) = collect(event_listener, events_master.id, "nginx_ha/alert/warning", after, 1, where=lambda e: "moved" in e.data["message"])
    assert moved.data["message"] == "VI_web: MASTER moved from ev-a to ev-b" and moved.data["vips"] == ["203.0.113.100"]
    texts = [r["body"]["text"] for r in webhook.wait_for(3)]
    assert ":warning: nginx-ha WARNING: VI_web: MASTER moved from ev-a to ev-b" in texts


def test_fleet_check_alerts_when_no_node_holds_a_vip(events_master, events_minions, event_listener, fresh):
    """
    No keepalived runs for the test nodes: the real fleet view says NO-OWNER for both VIPs (and
    reports the nodes themselves, e.g. UNHEALTHY, which this test does not pin down).
    """
    after = fresh
    ret = events_master.salt_run_cli(timeout=120).run("nginx_ha_reactor.check_fleet", "timeout=20")
    assert ret.returncode == 1, ret
    no_owner = sorted(p for p in ret.data["alerted"] if p.startswith("NO-OWNER"))
    assert no_owner == ["NO-OWNER: 203.0.113.100 (VI_web) is held by no node", "NO-OWNER: 203.0.113.101 (VI_api) is held by no node"]
    assert not any(p.startswith(("NO-ANSWER", "NO-NODES")) for p in ret.data["problems"]), ret.data["problems"]
    critical = collect(event_listener, events_master.id, "nginx_ha/alert/critical", after, 2, timeout=20, where=lambda e: e.data.get("problem") == "NO-OWNER")
    assert len(critical) == 2 and all(e.data["check"] == "fleet" for e in critical)
    again = events_master.salt_run_cli(timeout=120).run("nginx_ha_reactor.check_fleet", "timeout=20")
    assert again.data["alerted"] == []  # not repeated within fleet:realert


def test_example_master_config_and_its_schedule(salt_factories, event_listener, tmp_path):
    """conf/master.d/nginx_ha_reactor.conf: the reactor file exists, and its schedule runs the fleet check."""
    import yaml

    from tests.integration.conftest import REPO

    example = yaml.safe_load((REPO / "conf" / "master.d" / "nginx_ha_reactor.conf").read_text())
    (reaction,) = example["reactor"]
    assert list(reaction) == ["nginx_ha/vrrp/*"]
    assert all((REPO / "reactor" / os.path.basename(path)).is_file() for path in reaction["nginx_ha/vrrp/*"])
    schedule = example["schedule"]
    schedule["nginx_ha_fleet_check"]["seconds"] = 2
    overrides = {
        "interface": "127.0.0.1",
        "runner_dirs": [str(REPO / "_runners")],
        "nginx_ha_reactor": dict(example["nginx_ha_reactor"], webhook={}, state_file=str(tmp_path / "state.json")),
        "schedule": schedule,
    }
    master = salt_factories.salt_master_daemon("nginx-ha-schedule-master", overrides=overrides)
    with master.started():
        after = time.time()
        (ret,) = collect(event_listener, master.id, "__schedule_return", after, 1, timeout=30, where=lambda e: e.data.get("schedule") == "nginx_ha_fleet_check")[:1]
    assert ret.data["fun"] == "nginx_ha_reactor.check_fleet"
    # no cluster minions here: the fleet check refuses to call an empty target OK
    assert ret.data["return"]["ok"] is False
    assert ret.data["return"]["problems"] == ["NO-NODES: target I@nginx_ha:vrrp_instances (compound) matched no minion"]
