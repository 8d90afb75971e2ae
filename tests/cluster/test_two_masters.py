"""
Issue 12 on real hosts: two salt-masters in hot multi-master (``Lab(masters=2)``: one master key
pair, the minion keys accepted on both, the same file_roots/pillar/runner_dirs/reactor), every
minion connected to both, the reactor on both with ``multi_master: {claims: true}``; a webhook
receiver on the client host that both masters post to.

* the fleet view (``salt-run nginx_ha.status``) answers from each master;
* one nginx_ha_events engine per node reads keepalived's FIFO (Salt starts one per master);
* SIGKILL of nginx on the MASTER: healed by exactly one restart (the node's claim record says
  which master did it, one nginx_ha.restart_nginx job over both masters, the nginx master pid
  changed) and each alert reaches the webhook once;
* with the first master powered off, a new fault is healed once by the other.
"""

import time

import pytest
import yaml

from lab import Lab
from lab import bus as lab_bus
from tests.cluster.support import REPO, apply, base_pillar, failed, pid_of, served_by, vip_holders, wait_for
from tests.cluster.test_events import CLIENT_MGMT, FIFO, HOOK_LOG, HOOK_PORT, HOOK_SERVER, REACTOR_FUN, RESTART_FUN, hook_posts

pytestmark = pytest.mark.cluster

NODES = ("web-a", "web-b")
MASTERS = ("master", "master2")
NGINX_PID = "/run/nginx.pid"


def master_extra():
    return {
        "runner_dirs": [str(REPO / "_runners")],
        "peer": {".*": ["nginx_ha.health"]},
        "reactor": [{"nginx_ha/vrrp/*": [str(REPO / "reactor" / "vrrp.sls")]}],
        "nginx_ha_reactor": {
            "restart_limit": 3,
            "actions": {"restart": {"fun": RESTART_FUN, "timeout": 90}},
            "webhook": {"url": f"http://{CLIENT_MGMT}:{HOOK_PORT}/hook", "timeout": 2, "retries": 2},
            "multi_master": {"claims": True},  # holder: each master's id (master_master, master2_master)
        },
        **lab_bus.recorder(["nginx_ha/*", "salt/run/*/ret", "salt/job/*/new"]),
    }


@pytest.fixture(scope="module")
def lab():
    pillar = {"top.sls": "base:\n  '*':\n    - nginx_ha\n", "nginx_ha.sls": yaml.safe_dump({"nginx_ha": base_pillar()})}
    with Lab(minions=NODES, pillar_dir=pillar, file_roots=[str(REPO / "salt")], master_extra=master_extra(), masters=2) as lab:
        assert [m.name for m in lab.masters] == list(MASTERS)
        lab.client.write_file("/tmp/nginx-ha-hook.py", HOOK_SERVER)
        lab.client.spawn(f"exec python3 /tmp/nginx-ha-hook.py {CLIENT_MGMT} {HOOK_LOG} {HOOK_PORT}", "/tmp/nginx-ha-hook.log")
        probe = f"curl -s -m 2 -o /dev/null -w '%{{http_code}}' -X POST -d '{{}}' http://{CLIENT_MGMT}:{HOOK_PORT}/probe"
        for master in lab.masters:
            wait_for(lambda: master.run(probe).stdout == "200", 15, what=f"the webhook receiver answering {master.name}")
        for node in NODES:
            lab.salt(node, "saltutil.sync_all", timeout=120)
        for node in NODES:
            ret = apply(lab, node)
            assert failed(ret) == {}, (node, failed(ret))
        lab.wait_minions()  # the formula restarted the minions: both masters see them again
        wait_for(lambda: vip_holders(lab) == ["web-a"], 30, what="VIP on web-a")
        wait_for(lambda: served_by(lab) == "web-a", 15, what="web-a serving the VIP")
        yield lab


def decisions(lab, after, masters=MASTERS):
    """{master: [reactor decisions since ``after``]} (returns of nginx_ha_reactor.vrrp_event)."""
    out = {}
    for name in masters:
        events = lab_bus.events(lab, "salt/run/*/ret", after, where=lambda e: e["data"].get("fun") == REACTOR_FUN, master=name)
        out[name] = [e["data"]["return"] for e in events if isinstance(e["data"].get("return"), dict)]
    return out


def restart_jobs(lab, after, masters=MASTERS):
    return [(name, e["data"].get("tgt")) for name in masters
            for e in lab_bus.events(lab, "salt/job/*/new", after, where=lambda e: e["data"].get("fun") == RESTART_FUN, master=name)]


ENGINE_LOCK = "/var/cache/salt/minion/nginx_ha_events.spool.lock"  # the engine's instance lock (default spool)


def minion_procs_with(host, path):
    """How many salt-minion processes have ``path`` open."""
    out = host.run(f"for p in $(pgrep -f salt-minion); do ls -l /proc/$p/fd 2>/dev/null | grep -q ' {path}$' && echo $p; done").stdout
    return len(out.split())


def engines_on_fifo(host):
    """How many processes of the minion have keepalived's notify FIFO open."""
    return minion_procs_with(host, FIFO)


def fault_claims(lab, node, master=None):
    return [c for c in lab.salt(node, "nginx_ha.claims", timeout=60, master=master) if c["key"].startswith("vrrp|") and c["info"].get("state") == "FAULT"]


def undecided(lab, after, masters=MASTERS):
    """
    The VRRP events a master received since ``after`` that its reactor has not decided yet (a
    decision names the node and seq). Empty: every master that got an event has answered it, and
    the reactor posts its alerts before it returns the decision. This is the positive signal the
    tests wait for instead of sleeping for "no second decision, no second alert".
    """
    out = []
    for name in masters:
        got = {(e["data"]["id"], e["data"]["data"].get("seq"))
               for e in lab_bus.events(lab, "nginx_ha/vrrp/*", after, master=name) if isinstance(e["data"].get("data"), dict)}
        done = {(r.get("node"), r.get("seq")) for r in decisions(lab, after, (name,))[name]}
        out += [(name, node, seq) for node, seq in sorted(got - done, key=str)]
    return out


def kill_and_heal(lab, masters):
    """SIGKILL every nginx process on web-a (MASTER); wait until healed. Returns (t0, old pid, claims before)."""
    web_a = lab.host("web-a")
    old = pid_of(web_a, NGINX_PID)
    before = {c["key"] for c in fault_claims(lab, "web-a", master=masters[0])}
    t0 = time.time()
    web_a.run("pkill -KILL -x nginx", check=True)
    wait_for(lambda: [r for rs in decisions(lab, t0, masters).values() for r in rs if r.get("node") == "web-a" and r.get("state") == "FAULT" and r.get("action") == "restarted"],
             120, interval=0.5, what="the reactor's restart of web-a")
    wait_for(lambda: vip_holders(lab) == ["web-a"], 60, what="VIP back on web-a")
    return t0, old, before


def test_the_fleet_view_answers_from_each_master(lab):
    for name in MASTERS:
        code, view = lab.salt_run("nginx_ha.status", master=name, timeout=120)
        assert code == 0 and view["ok"] is True, (name, view)
        assert view["vips"], (name, view)
        assert lab.salt("web-b", "test.ping", master=name) is True


def test_one_engine_reads_the_fifo_on_each_node(lab):
    for node in NODES:
        host = lab.host(node)
        # Salt starts the engine once per master (the process title, cut to argv's length, shows
        # only "Engine(salt.l"): both hold the instance lock file open, one has the lock and the FIFO
        wait_for(lambda: minion_procs_with(host, ENGINE_LOCK) == 2, 30, what=f"two nginx_ha_events engines on {node}")
        wait_for(lambda: engines_on_fifo(host) == 1, 30, what=f"one engine reading the FIFO on {node}")


def test_a_fault_is_healed_by_one_restart_and_alerted_once(lab):
    t0, old, before = kill_and_heal(lab, MASTERS)
    wait_for(lambda: undecided(lab, t0) == [], 60, interval=0.5, what="every event decided by each master that got it")
    # node side: one FAULT claim, done, by one master, with the decision "restarted"; nginx is another process
    new = [c for c in fault_claims(lab, "web-a") if c["key"] not in before]
    assert len(new) == 1 and new[0]["state"] == "done" and new[0]["result"] == "restarted", new
    assert new[0]["holder"] in ("master_master", "master2_master"), new
    assert pid_of(lab.host("web-a"), NGINX_PID) not in (None, old)
    # master side: one restart job over both masters; the other master, if it got the event, left it
    assert restart_jobs(lab, t0) and len(restart_jobs(lab, t0)) == 1, restart_jobs(lab, t0)
    faults = [(m, r["action"]) for m, rs in decisions(lab, t0).items() for r in rs if r.get("node") == "web-a" and r.get("state") == "FAULT"]
    assert sorted(a for _, a in faults if a not in ("duplicate", "replay")) in (["restarted"], ["claimed-elsewhere", "restarted"]), faults
    # each alert reached the webhook once (both masters post to it)
    wait_for(lambda: any("nginx restarted" in p["json"]["text"] for p in hook_posts(lab, t0)), 30, what="the restart alert")
    wait_for(lambda: undecided(lab, t0) == [], 60, interval=0.5, what="every event decided (its alerts posted)")
    texts = [p["json"]["text"] for p in hook_posts(lab, t0)]
    assert len([t for t in texts if "FAULT on web-a" in t]) == 1, texts
    assert len(texts) == len(set(texts)), texts
    print(f"\n[two masters] decisions: {faults}; alerts: {texts}")


def test_with_one_master_down_the_other_heals_a_new_fault_once(lab):
    lab.power_off("master")
    try:
        t0, old, before = kill_and_heal(lab, ("master2",))
        new = [c for c in fault_claims(lab, "web-a", master="master2") if c["key"] not in before]
        assert len(new) == 1 and new[0]["holder"] == "master2_master" and new[0]["result"] == "restarted", new
        assert pid_of(lab.host("web-a"), NGINX_PID) not in (None, old)
        assert restart_jobs(lab, t0, ("master2",)) == [("master2", ["web-a"])]
        wait_for(lambda: any("nginx restarted" in p["json"]["text"] for p in hook_posts(lab, t0)), 30, what="the restart alert")
        wait_for(lambda: undecided(lab, t0, ("master2",)) == [], 60, interval=0.5, what="every event decided by master2")
        texts = [p["json"]["text"] for p in hook_posts(lab, t0)]
        assert len([t for t in texts if "FAULT on web-a" in t]) == 1, texts
        code, view = lab.salt_run("nginx_ha.status", master="master2", timeout=120)
        assert code == 0 and view["ok"] is True, view
        print(f"\n[two masters] master down, healed by master2: alerts {texts}")
    finally:
        lab.power_on("master")
