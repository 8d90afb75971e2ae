"""
Issue 4 on real hosts: keepalived's VRRP transitions reach the salt-master's event bus through the
nginx_ha_events engine (inside each real salt-minion), and the reactor (reactor/vrrp.sls ->
_runners/nginx_ha_reactor.py) acts on them: nginx restarted on the faulty node within its budget
(``nginx_ha.restart_nginx``, which escalates to killing a hung nginx's process tree: a MASTER
whose every nginx process is stopped is healed with no hand on the node), a FAULT right after a
verified restart restarted again and, with the budget spent, a critical alert (never a silent
"coalesced") with the fleet check flagging the node, a node whose nginx cannot start put in
maintenance with a critical alert to a real webhook receiver on the client host, transitions made while the master is down delivered once it is back
(each node's in keepalived's order; across nodes the arrival order is not theirs, the payload
``time`` is), and events from one node that name another change nothing.

How the master bus is observed: the lab's bus recorder (``lab.bus``: the master's
``event_return`` to a JSON-lines file, which cannot miss what is delivered right after a master
restart). It records the VRRP events, the alerts, the reactor's
runner returns (``salt/run/*/ret``: what it decided) and the jobs it published
(``salt/job/*/new``: which minion it asked to restart nginx).

The tests run in file order on one lab; each leaves web-a MASTER with a clean reactor memory.
Clients poll the VIP every 20 ms (250 ms timeout) where the issue asks for it, logging which node
served each request (:class:`ServedPoller`).
The last one checks that a MASTER event arriving late (its node was cut off) does not make its sender the owner.
Timing figures (transition -> master bus) are printed (run with ``-s``), never asserted.
"""

import json
import pathlib
import secrets
import shlex
import time

import pytest
import yaml

from lab import Lab
from lab import bus as lab_bus
from tests.cluster.support import VIP, VIP_URL, Poller, apply, base_pillar, failed, pid_of, served_by, vip_holders, wait_for, write_pillar

pytestmark = pytest.mark.cluster

REPO = pathlib.Path(__file__).resolve().parents[2]
NODES = ("web-a", "web-b")
INSTANCE = "VI_web"
FIFO = "/run/nginx_ha_vrrp.fifo"  # in each minion host (osfamilymap: keepalived.notify_fifo)
NGINX_PID = "/run/nginx.pid"
CLIENT_MGMT = "198.51.100.50"  # the client host on the management network, reachable from the master
HOOK_PORT = 8099
HOOK_LOG = "/tmp/nginx-ha-hook.jsonl"  # in the client host
RESTART_LIMIT = 2
PAYLOAD_KEYS = {"instance", "state", "previous_state", "priority", "vips", "time", "seq", "boot", "sig"}
BOOT_ID = "/proc/sys/kernel/random/boot_id"
REACTOR_FUN = "runner.nginx_ha_reactor.vrrp_event"
RESTART_FUN = "nginx_ha.restart_nginx"  # the reactor's default restart action (escalates on a hung nginx)
# how the reactor calls it: one minion call that checks health first (a healthy node is not
# restarted) and returns the health after the restart (as the salt/job/*/new event shows kwargs)
RESTART_ARG = [{"__kwarg__": True, "unless_healthy": True, "verify": True}]
# every way the reactor (or anything else) could touch nginx or a node's shell
NODE_ACTIONS = (RESTART_FUN, "service.restart", "service.start", "nginx_ha.maintenance", "cmd.run", "cmd.shell")
# answers that are no decision of their own: the same event delivered again (delivery is at least
# once; a redelivery after newer events of the node is a "replay" by its seq)
REPEATS = ("duplicate", "replay")

HOOK_SERVER = """
import http.server, json, sys, time

LOG = sys.argv[2]


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        entry = {"time": time.time(), "path": self.path, "content_type": self.headers.get("Content-Type"),
                 "body": body.decode("utf-8", "replace")}
        with open(LOG, "a") as fh:
            fh.write(json.dumps(entry) + "\\n")
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[3])), Hook).serve_forever()
"""

# Sent from web-b with web-b's own key through the batch form of _minion_event, whose entries the
# master fires with the data the minion wrote: data['id'] claims web-a.
FORGED_BATCH = """
import importlib.util, json, sys, time
import salt.channel.client, salt.config

repo, master, payload = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
spec = importlib.util.spec_from_file_location("nginx_ha_events", repo + "/_engines/nginx_ha_events.py")
engine = importlib.util.module_from_spec(spec)
spec.loader.exec_module(engine)
opts = salt.config.minion_config("/etc/salt/minion")
opts["master_uri"] = "tcp://%s:%s" % (master, opts["master_port"])
tag = "nginx_ha/vrrp/VI_web/fault"
payload["time"], payload["seq"] = time.time(), time.time_ns()
signed = dict(payload, sig=engine.Signer(opts["pki_dir"] + "/minion.pem", opts["id"])(tag, payload))
unsigned = dict(payload, sig=None)
events = [{"tag": tag, "data": {"id": "web-a", "cmd": "_minion_event", "tag": tag, "data": data}} for data in (signed, unsigned)]
with salt.channel.client.ReqChannel.factory(opts) as channel:
    print(channel.send({"id": opts["id"], "cmd": "_minion_event", "events": events}, timeout=10))
"""


def master_extra(client_mgmt):
    return {
        "runner_dirs": [str(REPO / "_runners")],
        "peer": {".*": ["nginx_ha.health"]},
        "reactor": [{"nginx_ha/vrrp/*": [str(REPO / "reactor" / "vrrp.sls")]}],
        "nginx_ha_reactor": {
            "restart_limit": RESTART_LIMIT,
            "restart_window": 300,
            # (restart_coalesce is gone: FAULTs share a restart only while it is in progress;
            # health_delay 0 and health_wait 10, the defaults)
            "timeout": 30,
            # restart_nginx on a hung nginx: a graceful restart bounded at 10 s, then the kill and a
            # start, ~10-15 s; the action's own timeout must be well above that
            "actions": {"restart": {"fun": RESTART_FUN, "timeout": 90}},
            "require_signature": True,
            "webhook": {"url": f"http://{client_mgmt}:{HOOK_PORT}/hook", "timeout": 2, "retries": 2},
        },
        # the bus recorder (see the module docstring)
        **lab_bus.recorder(["nginx_ha/*", "salt/run/*/new", "salt/run/*/ret", "salt/job/*/new"]),
    }


# ---------------------------------------------------------------------------------------------
# Reading the master bus (the event_return file) and the webhook receiver
# ---------------------------------------------------------------------------------------------


def bus(lab, pattern="*", after=0.0, where=None):
    """Events on the master bus matching the tag glob, fired at or after ``after``, in bus order."""
    return lab_bus.events(lab, pattern, after, where)


def vrrp_events(lab, after, node=None):
    """
    VRRP events since ``after`` (of ``node``), each engine event once: delivery is at least once
    (a send whose answer was lost while the master restarted is sent again, same ``seq``; the
    reactor drops the repeat by it). A repeat must be the same event.
    """
    first, out = {}, []
    for event in bus(lab, "nginx_ha/vrrp/*", after, where=lambda e: node is None or e["data"].get("id") == node):
        payload = event["data"].get("data") or {}
        key = (event["data"].get("id"), payload.get("seq"))
        if key[1] is not None and key in first:
            assert payload == first[key], (payload, first[key])
            continue
        first[key] = payload
        out.append(event)
    return out


def wait_vrrp(lab, after, node, states, timeout=30, exact=True):
    """
    Wait until ``node``'s VRRP events since ``after`` begin with ``states`` (lowercase tag ends);
    returns those events. ``exact=False``: ``states`` may be a subsequence (other transitions
    between them allowed); returns the matching events only.
    """

    def check():
        events = vrrp_events(lab, after, node)
        if exact:
            got = [e["tag"].rsplit("/", 1)[1] for e in events]
            return events if got[: len(states)] == list(states) else None
        matched = []
        for event in events:
            if len(matched) < len(states) and event["tag"].endswith("/" + states[len(matched)]):
                matched.append(event)
        return matched if len(matched) == len(states) else None

    try:
        return wait_for(check, timeout, interval=0.3, what=f"{node} VRRP events {states}")
    except AssertionError as exc:
        seen = [(e["data"].get("id"), e["tag"]) for e in vrrp_events(lab, after)]
        raise AssertionError(f"{exc}\nVRRP events on the master bus since the start of the test: {seen}\n{lab.logs()}") from None


def reactor_returns(lab, after, where=None):
    """What the reactor's runner decided (returns of nginx_ha_reactor.vrrp_event), oldest first."""
    rets = [e["data"].get("return") for e in bus(lab, "salt/run/*/ret", after, where=lambda e: e["data"].get("fun") == REACTOR_FUN)]
    return [r for r in rets if isinstance(r, dict) and (where is None or where(r))]


def wait_reactor(lab, after, where, count=1, timeout=60, what="reactor decision"):
    return wait_for(lambda: (lambda r: r if len(r) >= count else None)(reactor_returns(lab, after, where)), timeout, interval=0.5, what=what)


def jobs(lab, after, funs):
    """Jobs published since ``after`` running one of ``funs``: [(fun, tgt, arg)]."""
    return [
        (e["data"].get("fun"), e["data"].get("tgt"), e["data"].get("arg"))
        for e in bus(lab, "salt/job/*/new", after, where=lambda e: e["data"].get("fun") in funs)
    ]


def job_return(lab, after, fun, node):
    """What ``node`` returned for the last ``fun`` job published since ``after`` (the master's job cache)."""
    (event,) = bus(lab, "salt/job/*/new", after, where=lambda e: e["data"].get("fun") == fun)[-1:]
    code, ret = lab.salt_run("jobs.lookup_jid", event["data"]["jid"], timeout=60)
    assert code == 0 and isinstance(ret, dict) and node in ret, (code, ret)
    return ret[node]


def fault_decisions(lab, after, node="web-a"):
    """The reactor's decisions on ``node``'s FAULTs since ``after`` (repeated deliveries left out)."""
    return reactor_returns(lab, after, lambda r: r.get("node") == node and r.get("state") == "FAULT" and r.get("action") not in REPEATS)


def wait_fault_decision(lab, fault, timeout=120):
    """The reactor's decision on the FAULT event ``fault`` (matched by its seq and boot)."""
    payload = fault["data"]["data"]
    (ret,) = wait_for(
        lambda: [r for r in fault_decisions(lab, fault["stamp"], fault["data"]["id"]) if r.get("seq") == payload["seq"]],
        timeout, interval=0.5, what=f"the reactor's decision on {fault['data']['id']}'s FAULT seq {payload['seq']}",
    )
    return ret


def hook_posts(lab, after=0.0):
    text = lab.client.read_file(HOOK_LOG, missing_ok=True) or ""
    posts = []
    for line in text.splitlines():
        entry = json.loads(line)
        if entry["path"] == "/hook" and entry["time"] >= after:
            entry["json"] = json.loads(entry["body"])
            posts.append(entry)
    return posts


def latency_line(event):
    payload = event["data"]["data"]
    return f"{event['data']['id']} {event['tag']}: FIFO read -> master bus {1000 * (event['stamp'] - payload['time']):.1f} ms"


# ---------------------------------------------------------------------------------------------
# Lab
# ---------------------------------------------------------------------------------------------


def engine_reads_fifo(host):
    """The minion (its engine process) has keepalived's notify FIFO open."""
    out = host.run("for p in $(pgrep -f salt-minion); do ls -l /proc/$p/fd 2>/dev/null; done").stdout
    return FIFO in out


def healthy(lab, node):
    return lab.salt(node, "nginx_ha.health", timeout=60).get("healthy") is True


def nginx_procs(host):
    """{pid: ps state} of the host's nginx processes."""
    out = host.run("ps -o pid=,stat= -C nginx").stdout
    return {int(pid): stat for pid, stat in (line.split() for line in out.splitlines() if line.strip())}


def nginx_answers(host):
    """nginx answers on the node itself (not through the VIP)."""
    return host.run("curl -s -m 1 -o /dev/null -w '%{http_code}' http://127.0.0.1/").stdout == "200"


class ServedPoller(Poller):
    """
    support.Poller (a request to the VIP every ``interval`` s, ``timeout`` each), logging per
    request the time it started, the HTTP code and the node whose page answered:
    ``stop()`` -> [(time, code, node or None)].
    """

    def __init__(self, lab, interval=0.05, timeout=0.5, name="poll"):  # pylint: disable=super-init-not-called
        self.lab, self.log = lab, f"/tmp/nginx-ha-{name}.log"
        script = (
            f"rm -f {self.log}.stop; while [ ! -e {self.log}.stop ]; do "
            f"t=$(date +%s.%N); out=$(curl -s -m {timeout} -w ' %{{http_code}}' {VIP_URL}); "
            "case \"$out\" in *'served by web-a'*) n=web-a;; *'served by web-b'*) n=web-b;; *) n=-;; esac; "
            f"echo \"$t ${{out##* }} $n\" >> {self.log}; sleep {interval}; done"
        )
        lab.client.run(f"rm -f {self.log}; (nohup sh -c {shlex.quote(script)} >/dev/null 2>&1 &)", check=True)

    def samples(self):
        text = self.lab.client.read_file(self.log, missing_ok=True) or ""
        lines = [line.split() for line in text.splitlines()]
        # (a line being written while the poller runs may be incomplete)
        return [(float(t), code, None if node == "-" else node) for t, code, node in (x for x in lines if len(x) == 3)]

    def wait_served(self, node, timeout=10):
        """Until the client has seen ``node``'s page (the poller runs)."""
        wait_for(lambda: any(x[2] == node for x in self.samples()), timeout, interval=0.1, what=f"the poller served by {node}")

    def stop(self):
        self.lab.client.run(f"touch {self.log}.stop", check=True)
        time.sleep(0.8)
        return self.samples()


def servers(samples):
    """The nodes that served the client, in order, repeats collapsed (failed requests left out)."""
    out = []
    for _, _, node in samples:
        if node and (not out or out[-1] != node):
            out.append(node)
    return out


def outages(samples):
    """The client's failed-request bursts: [(first failure, last failure, failed requests)]."""
    out, current = [], None
    for t, code, _ in samples:
        if code != "200":
            current = [current[0], t, current[2] + 1] if current else [t, t, 1]
        elif current:
            out.append(tuple(current))
            current = None
    if current:
        out.append(tuple(current))
    return out


def reset_reactor(lab):
    for node in NODES:
        code, ret = lab.salt_run("nginx_ha_reactor.reset", node, timeout=60)
        assert code == 0, ret


def reactor_idle(lab, quiet=3.0):
    """Every VRRP event on the bus has its reactor decision, and none came for ``quiet`` seconds."""
    events = bus(lab, "nginx_ha/vrrp/*")
    decided = bus(lab, "salt/run/*/ret", where=lambda e: e["data"].get("fun") == REACTOR_FUN)
    last = max([e["stamp"] for e in events + decided] or [0.0])
    return len(decided) >= len(events) and time.time() - last >= quiet


def wait_reactor_idle(lab, timeout, what="the reactor done", after=0.0):
    """Until :func:`reactor_idle`; on timeout says which events since ``after`` have no decision."""
    try:
        wait_for(lambda: reactor_idle(lab), timeout, interval=0.5, what=what)
    except AssertionError as exc:
        events = [(e["data"].get("id"), e["tag"].rsplit("/", 1)[1], (e["data"].get("data") or {}).get("seq"), round(e["stamp"], 2))
                  for e in bus(lab, "nginx_ha/vrrp/*", after)]
        rets = [(r.get("node"), r.get("state"), r.get("seq"), r.get("action"), r.get("reason")) for r in reactor_returns(lab, after)]
        runs = [(e["tag"], e["data"].get("fun")) for e in bus(lab, "salt/run/*/ret", after, where=lambda e: e["data"].get("fun") != REACTOR_FUN)]
        raise AssertionError(f"{exc}\nVRRP events (node, state, seq, stamp): {events}\nreactor decisions: {rets}\n"
                             f"other runner returns: {runs}\nreactor runs started, never returned: {unreturned_runs(lab, after)}\n"
                             f"{lab.master.log_tail('/var/log/salt/master', 60)}") from None


def unreturned_runs(lab, after):
    """Reactor runs the master started (salt/run/<jid>/new) with no return yet: (jid, tag, seq)."""
    returned = {e["data"].get("jid") for e in bus(lab, "salt/run/*/ret", after)}
    out = []
    for event in bus(lab, "salt/run/*/new", after, where=lambda e: e["data"].get("fun") == REACTOR_FUN):
        if event["data"].get("jid") in returned:
            continue
        args = {k: v for arg in event["data"].get("fun_args") or [] if isinstance(arg, dict) for k, v in arg.items()}
        payload = (args.get("data") or {}).get("data") if isinstance(args.get("data"), dict) else None
        out.append((event["data"].get("jid"), args.get("tag"), (payload or {}).get("seq") if isinstance(payload, dict) else None))
    return out


@pytest.fixture(scope="module")
def lab():
    pillar = {"top.sls": "base:\n  '*':\n    - nginx_ha\n", "nginx_ha.sls": yaml.safe_dump({"nginx_ha": base_pillar()})}
    client_mgmt = CLIENT_MGMT
    with Lab(minions=NODES, pillar_dir=pillar, file_roots=[str(REPO / "salt")], master_extra=master_extra(client_mgmt)) as lab:
        assert lab.client.addr("mgmt") == client_mgmt
        # the webhook receiver, reached by the master over the management network
        lab.client.write_file("/tmp/nginx-ha-hook.py", HOOK_SERVER)
        lab.client.spawn(f"exec python3 /tmp/nginx-ha-hook.py {client_mgmt} {HOOK_LOG} {HOOK_PORT}", "/tmp/nginx-ha-hook.log")
        probe = f"curl -s -m 2 -o /dev/null -w '%{{http_code}}' -X POST -d '{{}}' http://{client_mgmt}:{HOOK_PORT}/probe"
        wait_for(lambda: lab.master.run(probe).stdout == "200", 15, what="the webhook receiver answering the master")
        for node in NODES:
            lab.salt(node, "saltutil.sync_all", timeout=120)
        for node in NODES:
            ret = apply(lab, node)
            assert failed(ret) == {}, (node, failed(ret))
        for node in NODES:
            wait_for(lambda: engine_reads_fifo(lab.host(node)), 30, what=f"the nginx_ha_events engine reading the FIFO on {node}")
        wait_for(lambda: vip_holders(lab) == ["web-a"], 30, what="VIP on web-a")
        wait_reactor_idle(lab, 90, what="the reactor done with the first transitions")
        startup = [(e["data"]["id"], e["data"]["data"]["state"], e["data"]["data"]["previous_state"]) for e in vrrp_events(lab, 0)]
        print(f"\n[events] transitions while the formula was applied: {startup}")
        print(f"  nginx restarts the reactor made meanwhile: {jobs(lab, 0, (RESTART_FUN,))}")
        yield lab


@pytest.fixture
def fresh(lab):
    """
    web-a holds the VIP, both nodes healthy, the reactor done with earlier events and remembering
    no restarts or maintenance; returns the start time.
    """
    wait_reactor_idle(lab, 90, what="the reactor done with earlier events")
    wait_for(lambda: vip_holders(lab) == ["web-a"], 30, what="VIP on web-a")
    for node in NODES:
        wait_for(lambda: healthy(lab, node), 30, what=f"{node} healthy")
    reset_reactor(lab)
    return time.time()


def repair_web_a(lab, reapply=False):
    """Back to normal whatever a test left: nginx config clean and running, no maintenance, VIP on web-a."""
    web_a = lab.host("web-a")
    web_a.run("rm -f /etc/nginx/conf.d/zz-nginx-ha-test-broken.conf; pkill -CONT -x nginx")
    if reapply:
        ret = apply(lab, "web-a")
        assert failed(ret) == {}, failed(ret)
    lab.salt("web-a", "nginx_ha.maintenance", "off", timeout=120)
    reset_reactor(lab)
    wait_for(lambda: vip_holders(lab) == ["web-a"], 30, what="VIP back on web-a")
    wait_for(lambda: healthy(lab, "web-a"), 30, what="web-a healthy")


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def test_transition_reaches_the_master_bus_with_the_documented_payload(lab, fresh):
    t0 = fresh
    on = lab.salt("web-a", "nginx_ha.maintenance", "on", timeout=120)  # a real VRRP switchover ...
    assert on["settled"] is True, on
    a_events = wait_vrrp(lab, t0, "web-a", ["backup"])
    b_events = wait_vrrp(lab, t0, "web-b", ["master"])
    t1 = time.time()
    off = lab.salt("web-a", "nginx_ha.maintenance", "off", timeout=120)  # ... and back
    assert off["settled"] is True, off
    a_events = wait_vrrp(lab, t0, "web-a", ["backup", "master"])
    b_events = wait_vrrp(lab, t0, "web-b", ["master", "backup"])

    for node, events, states in (("web-a", a_events, ["BACKUP", "MASTER"]), ("web-b", b_events, ["MASTER", "BACKUP"])):
        events = events[:2]
        boot = lab.host(node).read_file(BOOT_ID).strip()  # the lab's hosts share one kernel, hence one boot id
        for event, state in zip(events, states):
            data, payload = event["data"], event["data"]["data"]
            assert event["tag"] == f"nginx_ha/vrrp/{INSTANCE}/{state.lower()}"
            assert data["id"] == node  # the sender Salt authenticated
            assert set(payload) == PAYLOAD_KEYS, payload
            assert payload["instance"] == INSTANCE and payload["state"] == state
            assert payload["vips"] == [VIP]
            assert isinstance(payload["priority"], int) and isinstance(payload["seq"], int)
            assert t0 - 1 < payload["time"] <= event["stamp"] and isinstance(payload["sig"], str)
            assert payload["boot"] == boot, (payload["boot"], boot)  # seq must advance per (node, boot)
        assert events[0]["data"]["data"]["seq"] < events[1]["data"]["data"]["seq"]
        # keepalived's own order: the second transition names the first as its previous state
        assert events[1]["data"]["data"]["previous_state"] == states[0]
        assert events[0]["data"]["data"]["previous_state"] in (states[1], None), events[0]
    assert a_events[1]["data"]["data"]["time"] >= t1 and a_events[1]["data"]["data"]["priority"] == 100
    assert b_events[0]["data"]["data"]["priority"] == 99

    # the reactor verified every one of them with the sender's accepted key (none rejected)
    seqs = {e["data"]["data"]["seq"] for e in a_events[:2] + b_events[:2]}
    rets = wait_reactor(lab, t0, lambda r: r.get("seq") in seqs or r.get("action") == "rejected", count=4, what="4 reactor decisions")
    assert [r for r in rets if r["action"] == "rejected"] == []
    (back,) = [r for r in rets if (r["node"], r["state"]) == ("web-a", "MASTER")]
    # The switch back takes one advert interval: web-b's BACKUP and web-a's MASTER reach the
    # reactor together and its workers handle them concurrently. Either web-a's MASTER finds web-b
    # the owner (owner-changed), or web-b's BACKUP was admitted first and already corrected the
    # owner to web-a, the node whose newest state is MASTER (said in an alert of its own), and
    # web-a's MASTER confirms it.
    if back["action"] == "owner-confirmed":
        corrections = [e["data"]["message"] for e in bus(lab, "nginx_ha/alert/*", t1)
                       if "web-b reported BACKUP after its MASTER event; web-a is the owner" in e["data"]["message"]]
        assert corrections, (back, rets)
        assert (back["old_owner"], back["new_owner"]) == ("web-a", "web-a"), back
    else:
        assert (back["action"], back["old_owner"], back["new_owner"]) == ("owner-changed", "web-b", "web-a"), back

    print("\n[events] latency, keepalived transition (engine's FIFO read time) -> master bus:")
    for event in sorted(a_events[:2] + b_events[:2], key=lambda e: e["stamp"]):
        print("  " + latency_line(event))


def test_killed_nginx_on_the_master_is_restarted_and_takes_the_vip_back(lab, fresh):
    t0 = fresh
    web_a = lab.host("web-a")
    old_pid = pid_of(web_a, NGINX_PID)
    assert old_pid
    t_kill = time.time()
    web_a.run("pkill -KILL -x nginx", check=True)
    try:
        (fault,) = wait_vrrp(lab, t0, "web-a", ["fault"])[:1]
        assert fault["data"]["data"]["previous_state"] == "MASTER"
        (ret,) = wait_reactor(lab, t0, lambda r: r.get("node") == "web-a" and r.get("state") == "FAULT", what="the reactor's FAULT decision")
        assert ret["action"] == "restarted" and ret["healthy"] is True and ret["restarts_in_window"] == 1, ret
        assert ret["seq"] == fault["data"]["data"]["seq"]
        # a dead nginx starts again at once: restart_nginx needs no escalation for it
        assert ret["escalated"] is False, ret
        # nginx restarted on web-a, and only there, by the escalating restart action, in one minion
        # call: no health check of its own before or after (the module checked and verified)
        assert jobs(lab, t0, NODE_ACTIONS) == [(RESTART_FUN, ["web-a"], RESTART_ARG)]
        assert jobs(lab, t0, ("nginx_ha.health",)) == []
        restart = job_return(lab, t0, RESTART_FUN, "web-a")
        assert restart["restarted"] is True and restart["detail"].startswith("start: "), restart  # nothing left to stop
        assert restart["health"]["healthy"] is True and restart["health"]["nginx"]["answers"] is True, restart
        wait_for(lambda: healthy(lab, "web-a"), 30, what="web-a healthy again")
        new_pid = pid_of(web_a, NGINX_PID)
        assert new_pid and new_pid != old_pid
        # preemption: web-a (priority 100) takes the VIP back from web-b
        events = wait_vrrp(lab, t0, "web-a", ["fault", "master"], exact=False)
        wait_vrrp(lab, t0, "web-b", ["master", "backup"], exact=False)
        wait_for(lambda: vip_holders(lab) == ["web-a"], 30, what="VIP back on web-a")
        wait_for(lambda: served_by(lab) == "web-a", 15, what="web-a's page through the VIP")
        warnings = wait_for(
            lambda: [p for p in hook_posts(lab, t0) if "FAULT on web-a; nginx restarted and healthy again" in p["json"]["text"]],
            15,
            what="the restart alert at the webhook",
        )
        assert warnings[0]["json"]["nginx_ha"]["severity"] == "warning"
    finally:
        if web_a.run(["pgrep", "-x", "nginx"]).returncode != 0:  # the reactor did not bring it back
            repair_web_a(lab, reapply=True)
    print(f"\n[events] nginx killed on web-a -> FAULT on the master bus: {fault['stamp'] - t_kill:.2f} s (check interval x fall + delivery)")
    print("  " + latency_line(fault))
    print(f"  FAULT on the bus -> web-a MASTER again on the bus: {events[1]['stamp'] - fault['stamp']:.2f} s")


BROKEN_CONF = "/etc/nginx/conf.d/zz-nginx-ha-test-broken.conf"


def test_nginx_that_cannot_start_is_put_in_maintenance_with_a_critical_alert(lab, fresh):
    t0 = fresh
    web_a = lab.host("web-a")
    web_a.write_file(BROKEN_CONF, "this is not an nginx directive;\n")  # web-a's private /etc/nginx
    try:
        assert web_a.run("nginx -t").returncode != 0
        t_kill = time.time()
        web_a.run("pkill -KILL -x nginx", check=True)
        wait_for(lambda: vip_holders(lab) == ["web-b"], 30, what="VIP on web-b")
        wait_for(lambda: served_by(lab) == "web-b", 15, what="web-b's page through the VIP")
        (fault,) = wait_vrrp(lab, t0, "web-a", ["fault"])[:1]
        (ret,) = wait_reactor(lab, t0, lambda r: r.get("node") == "web-a" and r.get("state") == "FAULT", timeout=90, what="the reactor's FAULT decision")
        assert ret["action"] == "maintenance" and ret["healthy"] is False and ret["result"] is True, ret

        # restart_nginx refuses to kill an nginx whose config `nginx -t` refuses, and fails (the
        # reactor's "restart-failed"): the node is kept out at once
        assert ret["reason"] in ("restart-failed", "unhealthy-after-restart"), ret
        # the budget: never more restart attempts than restart_limit, all on web-a
        restarts = jobs(lab, t0, (RESTART_FUN, "service.restart"))
        assert 1 <= len(restarts) <= RESTART_LIMIT and all(tgt == ["web-a"] for _, tgt, _ in restarts), restarts
        code, state = lab.salt_run("nginx_ha_reactor.show_state", timeout=60)
        assert code == 0 and 1 <= len(state["restarts"].get("web-a", [])) <= RESTART_LIMIT, state
        assert "web-a" in state["maintenance"] and "web-b" not in state["maintenance"], state
        ((fun, tgt, arg),) = jobs(lab, t0, ("nginx_ha.maintenance",))
        assert tgt == ["web-a"] and arg[0] == "on", (fun, tgt, arg)

        # the critical alert at the receiver: Slack-compatible JSON
        critical = wait_for(lambda: [p for p in hook_posts(lab, t0) if p["json"].get("nginx_ha", {}).get("severity") == "critical"], 20, what="a critical alert at the webhook")
        body = critical[0]["json"]
        assert critical[0]["content_type"] == "application/json"
        assert body["text"].startswith(":rotating_light: nginx-ha CRITICAL: VI_web: FAULT on web-a") and "web-a put in maintenance" in body["text"], body
        assert body["nginx_ha"]["node"] == "web-a" and body["nginx_ha"]["maintenance"] is True
        assert bus(lab, "nginx_ha/alert/critical", t0)

        # web-a is kept out of MASTER: even with nginx repaired and healthy, it stays BACKUP
        assert lab.salt("web-a", "nginx_ha.health", timeout=60)["maintenance"] is True
        web_a.run(f"rm -f {BROKEN_CONF}", check=True)
        lab.salt("web-a", "service.start", "nginx", timeout=60)
        wait_for(lambda: healthy(lab, "web-a"), 30, what="web-a's nginx healthy again")
        wait_vrrp(lab, t0, "web-a", ["fault", "backup"], exact=False)
        time.sleep(4)  # several advert intervals: a node that could preempt would have
        assert vip_holders(lab) == ["web-b"]
        assert lab.salt("web-a", "nginx_ha.vip_status", timeout=60)[INSTANCE]["state"] == "BACKUP"
        # its own FAULT in maintenance restarted nothing more
        assert len(jobs(lab, t0, (RESTART_FUN, "service.restart"))) == len(restarts)
        print(f"\n[events] critical alert body at the webhook: {json.dumps(body)}")
        print(f"[events] nginx broken on web-a: kill -> FAULT on the bus {fault['stamp'] - t_kill:.2f} s; "
              f"{len(restarts)} restart attempt(s) (restart_limit {RESTART_LIMIT}); critical alert at the webhook "
              f"{critical[0]['time'] - fault['stamp']:.2f} s after the FAULT")
    finally:
        repair_web_a(lab, reapply=True)


def test_every_nginx_process_stopped_on_the_master_is_healed_with_no_hand_on_the_node(lab, fresh):
    """
    Issue 9: a hung nginx (every process SIGSTOPped: the init script's stop cannot finish them and
    they keep the listening sockets) on the MASTER. The VIP moves to web-b at once; the engine's
    FAULT reaches the reactor, which runs nginx_ha.restart_nginx on web-a; the graceful restart
    does not finish, restart_nginx kills the whole stopped process tree and starts nginx; web-a is
    MASTER again and serves the VIP. Nothing is done on web-a by this test (the SIGCONT in the
    finally is a safety net for a failed run, after every assertion on the processes).
    """
    t0 = fresh
    web_a = lab.host("web-a")
    hung = nginx_procs(web_a)
    assert len(hung) >= 2, hung  # master and worker(s)
    assert served_by(lab) == "web-a"
    poller = ServedPoller(lab, interval=0.02, timeout=0.25, name="events-hang")
    try:
        poller.wait_served("web-a")
        t_stop = time.time()
        web_a.run("pkill -STOP -x nginx", check=True)
        assert set(nginx_procs(web_a)) == set(hung) and all(stat.startswith("T") for stat in nginx_procs(web_a).values())
        (fault,) = wait_vrrp(lab, t0, "web-a", ["fault"])[:1]
        assert fault["data"]["data"]["previous_state"] == "MASTER"
        # the VIP moved: web-b serves while the reactor heals web-a
        wait_for(lambda: served_by(lab) == "web-b", 15, what="web-b serving the VIP")
        assert vip_holders(lab) == ["web-b"]

        ret = wait_fault_decision(lab, fault, timeout=120)
        t_decided = time.time()
        escalates = lab.init != "systemd"  # on systemd hosts nginx.service's stop kills its cgroup: no escalation
        assert ret["action"] == "restarted" and ret["healthy"] is True and ret["escalated"] is escalates, ret
        assert ret["restarts_in_window"] == 1 and "rounds" not in ret, ret
        # one action on one node: the escalating restart on web-a (no maintenance, no other node)
        assert jobs(lab, t0, NODE_ACTIONS) == [(RESTART_FUN, ["web-a"], RESTART_ARG)]
        restart = job_return(lab, t0, RESTART_FUN, "web-a")
        assert isinstance(restart, dict) and restart["healthy"] is True and restart["escalated"] is escalates, restart
        if escalates:
            assert set(hung) <= set(restart["killed"]), (hung, restart)
        # the stopped processes are gone (killed by restart_nginx, before any SIGCONT of this test)
        # and a new nginx runs, none of it stopped
        now = nginx_procs(web_a)
        assert now and set(now).isdisjoint(hung) and not any(stat.startswith("T") for stat in now.values()), now

        # web-a holds its VIP again (MASTER by preemption) and serves it; the reactor saw it
        wait_vrrp(lab, t0, "web-a", ["fault", "master"], exact=False, timeout=60)
        wait_for(lambda: vip_holders(lab) == ["web-a"], 30, what="VIP back on web-a")
        wait_for(lambda: served_by(lab) == "web-a", 15, what="web-a's page through the VIP")
        (back,) = wait_reactor(lab, fault["stamp"], lambda r: r.get("node") == "web-a" and r.get("state") == "MASTER", what="web-a MASTER decided")[-1:]
        assert back["new_owner"] == "web-a", back
        # the warning alert says the restart escalated
        wait_for(lambda: [p for p in hook_posts(lab, t0) if "FAULT on web-a; nginx restarted (a graceful restart did not finish" in p["json"]["text"]],
                 20, what="the escalated-restart alert at the webhook")
    finally:
        web_a.run("pkill -CONT -x nginx")  # never leave the lab with a stopped nginx
        samples = poller.stop()
    health = lab.salt("web-a", "nginx_ha.health", timeout=60)
    assert health["healthy"] is True and health["maintenance"] is False, health
    assert lab.salt("web-a", "nginx_ha.vip_status", timeout=60)[INSTANCE]["state"] == "MASTER"
    # What the client saw: web-a, then web-b while web-a was healed, then web-a again; failed
    # requests only while the hang was detected (and at most a few at the failback), never during
    # the repair (restart_nginx ran >= 10 s: its graceful restart's bound before the kill).
    bursts = outages(samples)
    assert len(samples) > 100 and samples[-1][1:] == ("200", "web-a"), samples[-5:]
    assert all(code != "200" or node in NODES for _, code, node in samples), [s for s in samples if s[1] == "200" and s[2] not in NODES][:5]
    assert servers(samples) == ["web-a", "web-b", "web-a"], servers(samples)
    assert len(bursts) <= 2 and all(last - first < 3 for first, last, _ in bursts), bursts
    (published,) = [e["stamp"] for e in bus(lab, "salt/job/*/new", t0, where=lambda e: e["data"].get("fun") == RESTART_FUN)]
    # the restart is published ~0.5 s after the FAULT, possibly while the failover's own burst (the
    # client still sending to the hung web-a) ends: the repair counts from web-b's first answer
    moved = next(x[0] for x in samples if x[0] >= t_stop and x[1:] == ("200", "web-b"))
    during = [x for x in samples if max(published, moved) <= x[0] <= published + 8]
    assert during and all(x[1:] == ("200", "web-b") for x in during), [x for x in during if x[1:] != ("200", "web-b")][:5]
    print(f"\n[events] nginx SIGSTOPped on web-a: FAULT on the bus {fault['stamp'] - t_stop:.2f} s, reactor's decision "
          f"{t_decided - t_stop:.1f} s after the stop; restart_nginx: {restart['detail']}")
    print(f"  client: {len(samples)} requests, served by {servers(samples)}, failed bursts "
          f"{[(round(a - t_stop, 2), round(b - a, 2), n) for a, b, n in bursts]} (start after the stop, length, requests)")


def fleet_check_in_background(lab, name):
    """``salt-run nginx_ha_reactor.check_fleet`` started in the master host now; returns a reader."""
    out = f"/tmp/nginx-ha-{name}"
    lab.master.run(f"rm -f {out}.json {out}.rc", check=True)
    lab.master.spawn(f"salt-run --out json nginx_ha_reactor.check_fleet > {out}.json 2>{out}.err; echo $? > {out}.rc", f"{out}.log")

    def read(timeout=120):
        wait_for(lambda: lab.master.read_file(f"{out}.rc", missing_ok=True), timeout, interval=0.5, what=f"{name} done")
        text = lab.master.read_file(f"{out}.json")
        return int(lab.master.read_file(f"{out}.rc")), json.loads(text[text.find("{"):])

    return read


def node_problems(fleet, node):
    """The fleet check's problems that flag ``node`` as down or unhealthy."""
    return [p for p in fleet.get("problems", []) if p.split(":", 1)[0] in ("FAULT", "UNHEALTHY") and f" {node} " in p]


def test_nginx_killed_again_right_after_the_reactor_healed_it_is_restarted_again_or_alerted(lab, fresh):
    """
    Issue 9, example 4: nginx dies again right after the reactor's restart. The second FAULT is a
    new failure: it gets a restart of its own (never a silent "coalesced"); a third, with the
    budget (restart_limit 2 per 300 s) spent, a critical alert and maintenance. The fleet check
    flags the node while it is down (see the third round for why that is asserted there).
    """
    t0 = fresh
    web_a = lab.host("web-a")
    poller = ServedPoller(lab, interval=0.02, timeout=0.25, name="events-rekill")
    rounds, fleet_during_second = [], None
    try:
        poller.wait_served("web-a")
        for n in (1, 2, 3):
            pids = nginx_procs(web_a)
            assert pids and nginx_answers(web_a), pids
            t_kill = time.time()
            web_a.run("pkill -KILL -x nginx", check=True)  # master and workers
            if n == 2:
                # Try to catch the node down. The reactor restarts a SIGKILLed nginx within ~1-2 s
                # (FAULT on the bus, runner, one restart_nginx call), shorter than a
                # salt-run takes to start and ask both minions: this fleet check may or may not see
                # web-a down, so it is reported, and asserted only for what it cannot miss.
                fleet_during_second = fleet_check_in_background(lab, "fleet-second-kill")
            (fault,) = wait_vrrp(lab, t_kill, "web-a", ["fault"], exact=False)[:1]
            ret = wait_fault_decision(lab, fault, timeout=120)
            rounds.append((t_kill, fault, ret))
            if n < 3:
                # a new failure after a verified restart gets a restart of its own
                assert ret["action"] == "restarted" and ret["healthy"] is True and ret["restarts_in_window"] == n, ret
                assert "rounds" not in ret, ret
                # healed: nginx answers on web-a, a new process, and keepalived took web-a out of FAULT
                wait_for(lambda: nginx_answers(web_a), 30, what="web-a's nginx answering again")
                assert set(nginx_procs(web_a)).isdisjoint(pids)
                wait_for(lambda: [e for e in vrrp_events(lab, fault["stamp"], "web-a") if not e["tag"].endswith("/fault")],
                         30, what="web-a out of FAULT")
                # ... and at once nginx is killed again (next round)
        # third FAULT, budget spent: a critical alert and web-a kept out of MASTER
        ret = rounds[2][2]
        assert ret["action"] == "maintenance" and ret["reason"] == "budget-exhausted" and ret["maintenance"] is True, ret
        assert ret["restarts_in_window"] == RESTART_LIMIT, ret
        critical = wait_for(
            lambda: [p for p in hook_posts(lab, rounds[2][1]["stamp"]) if p["json"]["nginx_ha"].get("severity") == "critical"
                     and "FAULT on web-a and its restart budget is spent" in p["json"]["text"]],
            20, what="the critical alert at the webhook",
        )
        assert "web-a put in maintenance" in critical[0]["json"]["text"], critical
        # two restarts and one maintenance call, all on web-a, nothing else
        acted = jobs(lab, t0, NODE_ACTIONS)
        assert [(fun, tgt) for fun, tgt, _ in acted] == [(RESTART_FUN, ["web-a"])] * 2 + [("nginx_ha.maintenance", ["web-a"])], acted
        # no FAULT of web-a went without a decision, none coalesced
        decided = fault_decisions(lab, t0)
        assert [r["action"] for r in decided] == ["restarted", "restarted", "maintenance"], decided

        # The fleet check flags web-a, which is down now (nginx dead, kept out by maintenance): the
        # state it stays in, so this cannot race with a restart.
        code, fleet = lab.salt_run("nginx_ha_reactor.check_fleet", timeout=120)
        assert code == 1 and fleet["ok"] is False, (code, fleet)
        assert node_problems(fleet, "web-a"), fleet
        assert "MAINTENANCE: web-a is in maintenance (kept out of MASTER)" in fleet["problems"], fleet
        assert not [p for p in fleet["problems"] if "web-b" in p], fleet  # the standby is fine
        alerted = bus(lab, "nginx_ha/alert/critical", t0, where=lambda e: e["data"].get("check") == "fleet" and e["data"].get("node") == "web-a")
        assert {e["data"]["problem"] for e in alerted} & {"FAULT", "UNHEALTHY"}, alerted  # no healthy standby left: critical
        # the VIP is served by web-b
        assert vip_holders(lab) == ["web-b"]
        wait_for(lambda: served_by(lab) == "web-b", 15, what="web-b's page through the VIP")
        code2, fleet2 = fleet_during_second()
    finally:
        samples = poller.stop()
        repair_web_a(lab, reapply=True)
    caught = node_problems(fleet2, "web-a")
    assert code2 == (1 if fleet2["problems"] else 0), (code2, fleet2)  # salt-run's exit code says whether it found a problem
    print(f"\n[events] nginx killed 3 times on web-a, each right after the reactor healed it: "
          f"{[(r['action'], r.get('restarts_in_window')) for _, _, r in rounds]}")
    for n, (t_kill, fault, ret) in enumerate(rounds, 1):
        print(f"  kill {n}: FAULT on the bus {fault['stamp'] - t_kill:.2f} s after the kill")
    print(f"  fleet check started with the second kill: {'flagged ' + str(caught) if caught else 'web-a already healed (too fast to see)'}; "
          f"all its problems: {fleet2['problems']}")
    bursts = outages(samples)
    print(f"  client: {len(samples)} requests, served by {servers(samples)}, failed bursts "
          f"{[(round(a - rounds[0][0], 2), round(b - a, 2), n) for a, b, n in bursts]} (start after the first kill, length, requests)")
    # each failure was a short failover window (web-b took over), never an outage lasting a heal:
    # at most one burst per kill and per failback, served by web-b at the end
    assert len(bursts) <= 5 and all(last - first < 3 for first, last, _ in bursts), bursts
    assert servers(samples)[0] == "web-a" and servers(samples)[-1] == "web-b" and len(servers(samples)) <= 6, servers(samples)
    assert samples[-1][1:] == ("200", "web-b"), samples[-5:]
    # once fixed, the fleet check says OK again and announces the end of web-a's problems
    code, fleet = lab.salt_run("nginx_ha_reactor.check_fleet", timeout=120)
    assert code == 0 and fleet["ok"] is True, (code, fleet)
    assert node_problems({"problems": fleet["resolved"]}, "web-a"), fleet


def stop_master(lab):
    master = lab.master
    master.run("kill $(cat /run/salt-master.pid)", check=True)
    try:
        wait_for(lambda: master.run(["pgrep", "-f", "salt-master"]).returncode != 0, 30, what="salt-master stopped")
    except AssertionError:
        pids = master.run(["pgrep", "-f", "salt-master"]).stdout.split()
        if pids:
            master.run(["kill", "-KILL", *pids])
        wait_for(lambda: master.run(["pgrep", "-f", "salt-master"]).returncode != 0, 10, what="salt-master killed")


def start_master(lab):
    if lab.master.run(["pgrep", "-f", "salt-master"]).returncode != 0:
        lab.start_salt("master")  # through its unit on systemd hosts
    lab.wait_minions(timeout=90)


def test_failover_without_the_master_and_events_delivered_in_order_afterwards(lab, fresh):
    t0 = fresh
    web_a = lab.host("web-a")
    stop_master(lab)
    t_down = time.time()
    try:
        web_a.run("pkill -STOP -x nginx", check=True)  # hung nginx on the MASTER
        try:
            wait_for(lambda: vip_holders(lab) == ["web-b"], 30, what="VIP on web-b without a salt-master")
            wait_for(lambda: served_by(lab) == "web-b", 15, what="web-b's page through the VIP")
        finally:
            web_a.run("pkill -CONT -x nginx")
        wait_for(lambda: vip_holders(lab) == ["web-a"], 30, what="VIP back on web-a without a salt-master")
        time.sleep(1)
    finally:
        t_up = time.time()
        start_master(lab)
    print(f"\n[events] salt-master down for {t_up - t_down:.1f} s")

    a_events = wait_vrrp(lab, t0, "web-a", ["fault", "backup", "master"], timeout=90)[:3]
    b_events = wait_vrrp(lab, t0, "web-b", ["master", "backup"], timeout=90)[:2]
    for events in (a_events, b_events):
        payloads = [e["data"]["data"] for e in events]
        assert [p["seq"] for p in payloads] == sorted(p["seq"] for p in payloads)
        assert [p["previous_state"] for p in payloads[1:]] == [p["state"] for p in payloads[:-1]]
        assert all(t_down < p["time"] < t_up for p in payloads), payloads  # happened while the master was down
        assert all(e["stamp"] > t_up for e in events)  # reached the bus once it was back
    # the transitions in the order keepalived made them: web-a FAULT, web-b MASTER, web-a MASTER, web-b BACKUP
    t = {(e["data"]["id"], e["data"]["data"]["state"]): e["data"]["data"]["time"] for e in a_events + b_events}
    assert t[("web-a", "FAULT")] < t[("web-b", "MASTER")] < t[("web-a", "MASTER")]
    arrival = [(e["data"]["id"], e["data"]["data"]["state"]) for e in sorted(a_events + b_events, key=lambda e: e["stamp"])]
    print(f"  arrival order on the bus: {arrival}")
    for event in sorted(a_events + b_events, key=lambda e: e["stamp"]):
        print(f"  {event['data']['id']} {event['data']['data']['state']}: happened {event['data']['data']['time'] - t_down:.1f} s "
              f"after the master stopped, on the bus {event['stamp'] - t_up:.1f} s after it was started again")

    # the reactor handled the FAULT it got late (web-a had recovered meanwhile); wait for it, so
    # the next test starts clean. A redelivered FAULT (same seq: a send whose answer was lost while
    # the master started) is answered "duplicate", or "replay" once newer events of web-a were
    # handled: never a decision of its own. The first delivery must get one.
    fault_seq = a_events[0]["data"]["data"]["seq"]
    wait_reactor_idle(lab, 120, what="the reactor done with the backlog (a decision per delivery)", after=t0)
    deliveries = bus(
        lab, f"nginx_ha/vrrp/{INSTANCE}/fault", t0,
        where=lambda e: e["data"].get("id") == "web-a" and e["data"]["data"].get("seq") == fault_seq,
    )
    faults = reactor_returns(lab, t0, lambda r: r.get("node") == "web-a" and r.get("state") == "FAULT")
    rets = [r for r in faults if r.get("seq") == fault_seq]
    # A later FAULT of web-a can only come from the reactor's own restart of web-a (when its health
    # check could not reach web-a's minion yet, the late FAULT is healed by a restart, a real
    # transition): it shares that restart or gets its own decision, never an error.
    later = [r for r in faults if r.get("seq") != fault_seq]
    assert all(r["action"] in REPEATS + ("coalesced", "already-healthy", "superseded", "restarted") for r in later), later
    decided = [r for r in rets if r["action"] not in REPEATS]
    detail = {
        "FAULT deliveries (stamp, seq)": [(e["stamp"], e["data"]["data"]["seq"]) for e in deliveries],
        "web-a's decisions (state, seq, action, reason)": [
            (r.get("state"), r.get("seq"), r.get("action"), r.get("reason")) for r in reactor_returns(lab, t0, lambda r: r.get("node") == "web-a")
        ],
    }
    assert len(rets) == len(deliveries), detail  # each delivery of that FAULT answered
    # already-healthy: its health check reached web-a, whose nginx had recovered; superseded: web-a's
    # BACKUP and MASTER (newer, same boot) were recorded before the FAULT's worker started;
    # restarted: web-a's minion had not reconnected to the restarted master in time to answer the
    # health check (a restart of a healthy nginx is harmless); never maintenance, never an error
    assert all(r["action"] in REPEATS + ("already-healthy", "superseded", "restarted") for r in rets), detail
    assert len(decided) <= 1, detail
    wait_for(lambda: vip_holders(lab) == ["web-a"], 30, what="VIP on web-a")
    wait_for(lambda: healthy(lab, "web-a"), 30, what="web-a healthy")
    wait_reactor_idle(lab, 60, after=t0)
    after = [(e["data"]["id"], e["data"]["data"]["state"]) for e in vrrp_events(lab, t_up)][len(a_events) + len(b_events):]
    print(f"  reactor on the late FAULT: {[r['action'] for r in rets]}; transitions after it: {after}")
    code, state = lab.salt_run("nginx_ha_reactor.show_state", timeout=60)
    owner = state["owners"].get(INSTANCE, {}).get("node")
    moved = [e["data"]["message"] for e in bus(lab, "nginx_ha/alert/*", t_up) if "MASTER" in e["data"]["message"]]
    print(f"  owner the reactor remembers: {owner} (VIP held by {vip_holders(lab)}); its MASTER alerts: {moved}")
    print(f"  last state it remembers per node: { {n: v.get(INSTANCE) for n, v in state['nodes'].items()} }")
    # the FAULT, delivered once, gets a decision even when a worker admitted web-a's newer events
    # first (the reactor's anti-replay window): a first delivery is never answered "replay"
    assert decided, detail


def test_event_from_one_node_naming_another_changes_nothing(lab, fresh):
    t0 = fresh
    web_a, web_b = lab.host("web-a"), lab.host("web-b")
    pids = {node: pid_of(lab.host(node), NGINX_PID) for node in NODES}
    marker = f"/tmp/nginx-ha-pwned-{secrets.token_hex(4)}"
    evil = f"$(touch {marker}); touch {marker} `touch {marker}`"
    payload = {
        "instance": INSTANCE, "state": "FAULT", "previous_state": "MASTER", "priority": evil, "vips": [evil],
        "id": "web-a", "node": "web-a", "minion": "web-a", "target": "*", "tgt": evil, "seq": 1, "time": time.time(),
    }
    # 1. the way the brief's attacker would: salt-call event.send on web-b, unsigned, naming web-a
    sent = web_b.run(["salt-call", "--out", "json", "event.send", f"nginx_ha/vrrp/{INSTANCE}/fault", json.dumps(payload)], timeout=60)
    assert sent.returncode == 0 and json.loads(sent.stdout)["local"] is True, sent
    # 2. the batch form: signed with web-b's key, data['id'] forged to web-a (and once unsigned)
    forged = web_b.run(["python3", "-c", FORGED_BATCH, str(REPO), lab.master.addr("mgmt"),
                        json.dumps({k: v for k, v in payload.items() if k not in ("time", "seq")})], timeout=60)
    assert forged.returncode == 0, forged.stderr

    fault = f"nginx_ha/vrrp/{INSTANCE}/fault"
    seen = wait_for(lambda: (lambda e: e if len(e) >= 3 else None)(bus(lab, fault, t0)), 30, what="the 3 events on the master bus")
    assert sorted(e["data"]["id"] for e in seen) == ["web-a", "web-a", "web-b"]  # Salt lets web-b claim web-a in a batch ...
    rets = wait_reactor(lab, t0, lambda r: r.get("tag") == fault, count=3, what="3 reactor decisions")
    assert [r["action"] for r in rets] == ["rejected"] * 3, rets  # ... the reactor does not act on any of them
    reasons = sorted(r["reason"] for r in rets)
    assert reasons[:2] == ["signature of the event does not verify with web-a's key"] * 2, reasons
    assert reasons[2] == "signature of the event does not verify with web-b's key", reasons

    time.sleep(5)  # the reactor publishes a restart within ~1 s of a FAULT: one would have been by now
    assert jobs(lab, t0, NODE_ACTIONS) == []
    assert {node: pid_of(lab.host(node), NGINX_PID) for node in NODES} == pids
    assert lab.salt("web-a", "nginx_ha.health", timeout=60)["maintenance"] is False
    assert vip_holders(lab) == ["web-a"]
    for host in [lab.master, lab.client, web_a, web_b]:
        assert host.run(["test", "-e", marker]).returncode != 0, f"{marker} exists on {host.name}"
    assert not pathlib.Path(marker).exists()
    code, state = lab.salt_run("nginx_ha_reactor.show_state", timeout=60)
    assert code == 0 and state["restarts"] == {} and state["maintenance"] == {}, state
    print(f"\n[events] forged/unsigned events: {[(e['data']['id'], e['tag']) for e in seen]} -> {[r['action'] for r in rets]}")


def test_a_late_master_event_does_not_make_its_sender_the_owner(lab, fresh):
    """
    web-b's management link is cut while web-a fails and takes the VIP back: web-a's events reach
    the master at once, web-b's MASTER and BACKUP only when its link returns. keepalived's order
    (and the VIP) say web-a is the owner; the reactor must not end up believing web-b.
    """
    t0 = fresh
    lab.set_link("web-b", "mgmt", up=False)
    try:
        lab.host("web-a").run("pkill -KILL -x nginx", check=True)  # the reactor restarts it
        wait_vrrp(lab, t0, "web-a", ["fault", "master"], exact=False, timeout=60)
        wait_for(lambda: vip_holders(lab) == ["web-a"], 30, what="VIP back on web-a")
        wait_reactor(lab, t0, lambda r: r.get("node") == "web-a" and r.get("state") == "MASTER", what="web-a MASTER decided")
    finally:
        lab.set_link("web-b", "mgmt", up=True)
    b_events = wait_vrrp(lab, t0, "web-b", ["master", "backup"], exact=False, timeout=90)
    wait_reactor_idle(lab, 60, after=t0)
    a_master = [e for e in vrrp_events(lab, t0, "web-a") if e["tag"].endswith("/master")][-1]
    assert b_events[0]["data"]["data"]["time"] < a_master["data"]["data"]["time"] < b_events[0]["stamp"]  # happened before, arrived after
    code, state = lab.salt_run("nginx_ha_reactor.show_state", timeout=60)
    assert code == 0, state
    moved = [e["data"]["message"] for e in bus(lab, "nginx_ha/alert/*", t0) if "MASTER" in e["data"]["message"]]
    print(f"\n[events] late web-b MASTER: VIP on {vip_holders(lab)}, reactor's owner {state['owners'].get(INSTANCE)}, alerts {moved}")
    assert vip_holders(lab) == ["web-a"]
    assert state["owners"][INSTANCE]["node"] == "web-a", (state["owners"], moved)
    # web-b's late MASTER may be handled before its BACKUP (concurrent workers): then the reactor
    # says "moved from web-a to web-b" and, for the BACKUP, corrects itself; the two alerts are
    # fired by different workers, in either order. The correction must be there.
    if any("moved from web-a to web-b" in m for m in moved):
        assert any("web-b reported BACKUP after its MASTER event; web-a is the owner" in m for m in moved), moved


def set_notify_script(lab, on):
    """events:notify_script on or off on both nodes (the lab's salt-call is in the virtualenv)."""
    pillar = base_pillar()
    if on:
        pillar["events"].update(notify_script=True, salt_call=lab.salt_call)
    write_pillar(pathlib.Path(lab.pillar_dir), pillar)
    for node in NODES:
        lab.salt(node, "saltutil.refresh_pillar", "wait=True", timeout=60)
        ret = apply(lab, node)
        assert failed(ret) == {}, (node, failed(ret))


def test_the_notify_script_path_reports_the_same_transitions_unsigned_and_the_reactor_ignores_them(lab, fresh):
    set_notify_script(lab, True)
    try:
        script = lab.host("web-a").run("stat -c '%U %a' /etc/keepalived/nginx_ha/notify_event.sh", check=True).stdout.split()
        assert script[0] == "root" and not int(script[1], 8) & 0o022, script  # root's, writable by nobody else
        t0 = time.time()
        assert lab.salt("web-a", "nginx_ha.maintenance", "on", timeout=120)["maintenance"] is True
        wait_for(lambda: vip_holders(lab) == ["web-b"], 30, what="VIP on web-b")

        def by_script(node, state):
            return [e for e in vrrp_events(lab, t0, node)
                    if e["data"]["data"].get("source") == "notify_script" and e["tag"].endswith("/" + state)]

        (a_backup,) = wait_for(lambda: by_script("web-a", "backup"), 30, what="web-a's BACKUP from the notify script")[:1]
        (b_master,) = wait_for(lambda: by_script("web-b", "master"), 30, what="web-b's MASTER from the notify script")[:1]
        for event, node, state in ((a_backup, "web-a", "BACKUP"), (b_master, "web-b", "MASTER")):
            payload = event["data"]["data"]
            assert event["data"]["id"] == node
            assert (payload["instance"], payload["state"], payload["source"]) == (INSTANCE, state, "notify_script"), payload
            assert "sig" not in payload
            # the engine reported the same transition, signed, and sooner
            (engine,) = [e for e in vrrp_events(lab, t0, node) if e["tag"] == event["tag"] and e["data"]["data"].get("sig")][:1]
            assert engine["stamp"] <= event["stamp"]
            print(f"\n[events] {node} {state}: engine {1000 * (engine['stamp'] - t0):.0f} ms, "
                  f"notify script {1000 * (event['stamp'] - t0):.0f} ms after maintenance on was sent")
        rejected = wait_reactor(lab, t0, lambda r: r.get("action") == "rejected", count=2, what="the unsigned events rejected")
        assert all("sig" in r["reason"] for r in rejected), rejected
        assert jobs(lab, t0, (RESTART_FUN, "service.restart")) == []  # nothing acted on them (maintenance here is the test's own call)
    finally:
        lab.salt("web-a", "nginx_ha.maintenance", "off", timeout=120)
        set_notify_script(lab, False)
    wait_for(lambda: vip_holders(lab) == ["web-a"], 30, what="VIP back on web-a")
