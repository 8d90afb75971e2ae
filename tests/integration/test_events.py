"""
keepalived transitions -> nginx_ha_events engine (in a real salt-minion) -> the master's event bus.

The engine is configured the way a user gets it: `state.sls nginx_ha.events` writes
minion.d/nginx_ha_events.conf, then the minion is restarted. Lines are written into the FIFO the
way keepalived writes them (and, in one test, by a real keepalived).
"""

import os
import shutil
import statistics
import subprocess
import time

import pytest
import yaml

from tests.integration.conftest import EVENTS_PILLAR, REPO
from tests.support import formula
from tests.support.events import collect, runner_returns, wait_for_fifo, write_fifo

pytestmark = pytest.mark.integration

PAYLOAD_KEYS = {"instance", "state", "previous_state", "priority", "vips", "time", "seq", "boot", "sig"}


@pytest.fixture(scope="module")
def fifo_a(events_minions, events_dir):
    path = str(events_dir / "ev-a.fifo")
    wait_for_fifo(path)
    return path


@pytest.fixture(scope="module")
def fifo_b(events_minions, events_dir):
    path = str(events_dir / "ev-b.fifo")
    wait_for_fifo(path)
    return path


def vrrp(event_listener, master, after, count, node=None, timeout=60, unique=False):
    """VRRP events; ``unique``: each (boot, seq) once (the engine delivers at least once: a retry may repeat one)."""
    seq = (lambda e: (e.data.get("data", {}).get("boot"), e.data.get("data", {}).get("seq"))) if unique else None
    return collect(event_listener, master.id, "nginx_ha/vrrp/*", after, count, timeout,
                   where=(lambda e: e.data.get("id") == node) if node else None, key=seq)


def test_state_writes_the_engine_config(events_minions, events_dir):
    minion = events_minions["ev-a"]
    conf = yaml.safe_load((open(os.path.join(os.path.dirname(minion.config["conf_file"]), "minion.d", "nginx_ha_events.conf"))).read())
    (engine,) = conf["engines"]
    assert engine["nginx_ha_events"]["fifo"] == str(events_dir / "ev-a.fifo")
    assert engine["nginx_ha_events"]["vips"] == {"VI_api": ["203.0.113.101"], "VI_web": ["203.0.113.100"]}
    assert engine["nginx_ha_events"]["backoff_max"] == EVENTS_PILLAR["events"]["backoff_max"]
    assert oct(os.stat(events_dir / "ev-a.fifo").st_mode & 0o777) == "0o600"
    # applied again: nothing changes, so nothing would restart the minion
    ret = minion.salt_call_cli().run("state.sls", "nginx_ha.events")
    assert ret.returncode == 0 and all(r["result"] is True and not r["changes"] for r in ret.data.values()), ret.data


def test_the_engine_is_synced_only_when_the_minions_copy_is_not_the_masters(events_minions):
    """An idempotent run asks the file server for one hash; a changed or missing copy is synced back."""
    minion = events_minions["ev-a"]
    cli = minion.salt_call_cli()
    extmods = cli.run("config.get", "extension_modules").data
    synced = os.path.join(extmods, "engines", "nginx_ha_events.py")
    served = (REPO / "_engines" / "nginx_ha_events.py").read_bytes()

    def engine_state():
        ret = cli.run("state.sls", "nginx_ha.events")
        assert ret.returncode == 0, ret
        (state,) = [r for r in ret.data.values() if r["__id__"] == "nginx_ha_events_engine_synced"]
        assert state["result"] is True, state
        return state

    assert engine_state()["changes"] == {}
    for damage in ("changed", "missing"):
        if damage == "changed":
            with open(synced, "ab") as fh:
                fh.write(b"# edited on the minion\n")
        else:
            os.unlink(synced)
        state = engine_state()
        assert state["changes"] == {"engines": ["engines.nginx_ha_events"]}, state
        assert open(synced, "rb").read() == served
        assert engine_state()["changes"] == {}


def test_restart_of_the_minion_is_part_of_the_state(events_minions):
    """With events:restart_minion (the default), a changed engine config restarts the minion in the background."""
    cli = events_minions["ev-a"].salt_call_cli()
    ret = cli.run("state.show_sls", "nginx_ha.events", "pillar={nginx_ha: {events: {restart_minion: true}}}")
    assert ret.returncode == 0, ret
    restart = ret.data["nginx_ha_events_minion_restart"]["cmd"]
    assert {"name": "salt-call --local service.restart salt-minion"} in restart and {"bg": True} in restart
    assert {"onchanges": [{"file": "nginx_ha_events_engine_config"}, {"nginx_ha": "nginx_ha_events_engine_synced"}]} in restart


def test_transitions_arrive_in_order_from_the_authenticated_minion(events_master, event_listener, fifo_a):
    lines = []
    for i in range(10):
        lines.append(f'INSTANCE "VI_web" {"MASTER" if i % 2 else "BACKUP"} 100')
        lines.append(f'INSTANCE "VI_api" {"BACKUP" if i % 2 else "MASTER"} 99')
    after = time.time()
    write_fifo(fifo_a, *lines[:7])  # several lines in one write ...
    for line in lines[7:]:  # ... and one write per line
        write_fifo(fifo_a, line)
    events = vrrp(event_listener, events_master, after, len(lines), node="ev-a")
    assert len(events) == len(lines)
    assert [e.tag for e in events] == [f"nginx_ha/vrrp/{line.split()[1].strip(chr(34))}/{line.split()[2].lower()}" for line in lines]
    payloads = [e.data["data"] for e in events]
    seqs = [p["seq"] for p in payloads]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for event, payload in zip(events, payloads):
        assert event.data["id"] == "ev-a"  # set by the master from the authenticated request
        assert set(payload) == PAYLOAD_KEYS and "id" not in payload
    web = [p for p in payloads if p["instance"] == "VI_web"]
    assert [p["previous_state"] for p in web[1:]] == [p["state"] for p in web[:-1]]
    assert web[0]["vips"] == ["203.0.113.100"] and web[0]["priority"] == 100


def test_lines_that_are_not_instance_transitions_are_ignored(events_master, event_listener, fifo_a):
    after = time.time()
    write_fifo(fifo_a, 'GROUP "G1" MASTER 100', 'VS "10.0.0.1:80" UP', "garbage", 'INSTANCE "VI/x" MASTER 1', 'INSTANCE "VI_web" STOP 100')
    events = vrrp(event_listener, events_master, after, 1, node="ev-a")
    time.sleep(2)
    events = vrrp(event_listener, events_master, after, 1, node="ev-a", timeout=0)
    assert [e.tag for e in events] == ["nginx_ha/vrrp/VI_web/stop"]


def test_master_down_then_back_gets_everything_in_order(events_master, event_listener, fifo_a):
    events_master.terminate()
    try:
        written = time.time()
        lines = [f'INSTANCE "VI_web" {s} 100' for s in ("BACKUP", "MASTER", "BACKUP", "MASTER", "STOP")]
        for line in lines:
            write_fifo(fifo_a, line)
            time.sleep(0.3)
        time.sleep(2)  # the engine keeps retrying meanwhile
    finally:
        events_master.start()
    events = vrrp(event_listener, events_master, written, len(lines), node="ev-a", timeout=90, unique=True)
    assert [e.tag.rsplit("/", 1)[1] for e in events] == [line.split()[2].lower() for line in lines]
    payloads = [e.data["data"] for e in events]
    assert [p["seq"] for p in payloads] == sorted(p["seq"] for p in payloads)
    assert all(p["time"] < events[0].stamp.timestamp() for p in payloads)  # read while the master was down


def test_minion_restart_loses_nothing(events_master, events_minions, event_listener, fifo_b, events_dir):
    minion = events_minions["ev-b"]
    spool = os.path.join(minion.config["cachedir"], "nginx_ha_events.spool")
    events_master.terminate()
    try:
        written = time.time()
        lines = ['INSTANCE "VI_api" BACKUP 100', 'INSTANCE "VI_api" MASTER 100', 'INSTANCE "VI_web" BACKUP 99']
        write_fifo(fifo_b, *lines)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with open(spool) as fh:
                    if len(yaml.safe_load(fh)["pending"]) == len(lines):
                        break
            except (OSError, ValueError, TypeError, KeyError):
                pass
            time.sleep(0.1)
        else:
            pytest.fail("the engine did not spool the unsent events")
        minion.terminate()  # the minion goes down with three unsent events
    finally:
        events_master.start()
    minion.start()
    wait_for_fifo(fifo_b)
    events = vrrp(event_listener, events_master, written, len(lines), node="ev-b", timeout=90)
    assert [e.tag for e in events] == ["nginx_ha/vrrp/VI_api/backup", "nginx_ha/vrrp/VI_api/master", "nginx_ha/vrrp/VI_web/backup"]
    # numbering goes on after the restart, and previous_state was kept too
    after = time.time()
    write_fifo(fifo_b, 'INSTANCE "VI_api" BACKUP 100')
    (later,) = vrrp(event_listener, events_master, after, 1, node="ev-b")
    assert later.data["data"]["seq"] > events[-1].data["data"]["seq"]
    assert later.data["data"]["previous_state"] == "MASTER"


def test_latency_fifo_to_master_bus(events_master, event_listener, fifo_a, capsys):
    """50 transitions, one write each, 50 ms apart: time from the write to the master firing the event."""
    writes = []
    after = time.time()
    for i in range(50):
        writes.append(write_fifo(fifo_a, f'INSTANCE "VI_web" {"MASTER" if i % 2 else "BACKUP"} 100'))
        time.sleep(0.05)
    events = vrrp(event_listener, events_master, after, 50, node="ev-a")
    assert len(events) == 50
    events.sort(key=lambda e: e.data["data"]["seq"])
    latencies = sorted((e.stamp.timestamp() - w) * 1000 for e, w in zip(events, writes))
    median = statistics.median(latencies)
    p95 = latencies[int(round(0.95 * len(latencies))) - 1]
    with capsys.disabled():
        print(f"\nnginx_ha_events latency FIFO write -> master bus over 50 transitions: median {median:.1f} ms, p95 {p95:.1f} ms, max {latencies[-1]:.1f} ms")
    assert p95 < 1000


def _wait_gone(pidfile, timeout=20):
    """Wait for the keepalived whose pid file this is to exit (it removes the file on exit)."""
    deadline = time.monotonic() + timeout
    while pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pidfile.exists(), "keepalived did not stop"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("keepalived") or not shutil.which("unshare"), reason="needs root, keepalived and unshare")
def test_a_real_keepalived_feeds_the_engine(events_master, event_listener, fifo_a, tmp_path):
    """keepalived 2.2.7 in a private network namespace writes its notify_fifo: BACKUP, MASTER, STOP."""
    conf = tmp_path / "keepalived.conf"
    conf.write_text(
        "global_defs {\n    notify_fifo %s\n}\n"
        "vrrp_instance VI_web {\n    state BACKUP\n    interface eth0\n    virtual_router_id 68\n    priority 100\n"
        "    advert_int 1\n    virtual_ipaddress {\n        192.0.2.100/24\n    }\n}\n" % fifo_a
    )
    script = (
        "ip link set lo up && ip link add eth0 type veth peer name peer0 && ip addr add 192.0.2.1/24 dev eth0"
        " && ip link set eth0 up && ip link set peer0 up"
        f" && exec keepalived --vrrp -n -l -D -f {conf} -p {tmp_path}/k.pid -r {tmp_path}/v.pid"
    )
    after = time.time()
    proc = subprocess.Popen(["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child=SIGTERM", "--propagation", "private", "sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        events = vrrp(event_listener, events_master, after, 2, node="ev-a", timeout=30)
        assert [e.tag for e in events[:2]] == ["nginx_ha/vrrp/VI_web/backup", "nginx_ha/vrrp/VI_web/master"]
    finally:
        # unshare ignores SIGTERM while it waits; killing it makes the kernel send keepalived the
        # SIGTERM of --kill-child (PR_SET_PDEATHSIG), and keepalived stops cleanly (STOP line).
        proc.kill()
        proc.wait(timeout=20)
        _wait_gone(tmp_path / "k.pid")
    events = vrrp(event_listener, events_master, after, 3, node="ev-a", timeout=30)
    assert [e.tag for e in events] == ["nginx_ha/vrrp/VI_web/backup", "nginx_ha/vrrp/VI_web/master", "nginx_ha/vrrp/VI_web/stop"]
    assert events[1].data["data"]["previous_state"] == "BACKUP" and events[1].data["data"]["priority"] == 100


def test_notify_script_path(events_master, events_minions, event_listener, tmp_path):
    """The optional notify script sends with salt-call; shell metacharacters in its arguments go nowhere."""
    minion = events_minions["ev-b"]
    node = formula.node_view(EVENTS_PILLAR | {"events": {"notify_script": True, "notify_script_timeout": 60, "salt_call": str(REPO / ".venv" / "bin" / "salt-call"), "salt_config_dir": os.path.dirname(minion.config["conf_file"])}}, "ev-b")
    script = tmp_path / "notify_event.sh"
    script.write_text(formula.render("notify_event.sh.jinja", node=node))
    script.chmod(0o755)
    after = time.time()
    proc = subprocess.run([str(script), "INSTANCE", "VI_api", "MASTER", "100"], timeout=90)
    assert proc.returncode == 0
    canary = tmp_path / "pwned"
    for args in (["INSTANCE", f"VI_api;touch {canary}", "MASTER", "100"], ["INSTANCE", "VI_api", "MASTER", f"1$(touch {canary})"], ["GROUP", "G", "MASTER", "1"]):
        subprocess.run([str(script), *args], timeout=90, check=True)
    event = vrrp(event_listener, events_master, after, 1, node="ev-b")[0]
    assert event.tag == "nginx_ha/vrrp/VI_api/master"
    payload = {k: v for k, v in event.data["data"].items() if not k.startswith("__pub_")}  # salt-call adds __pub_*
    assert payload == {"instance": "VI_api", "state": "MASTER", "priority": 100, "source": "notify_script"}
    time.sleep(1)
    events = vrrp(event_listener, events_master, after, 2, node="ev-b", timeout=5)
    assert len(events) == 2 and events[1].data["data"]["priority"] is None  # the $(...) priority was dropped
    assert not canary.exists()
    # The reactor does not act on it: unsigned (only the engine signs).
    rets = runner_returns(event_listener, events_master.id, after, 2, where=lambda r: r.get("tag", "").startswith("nginx_ha/vrrp/VI_api/"))
    assert [r["action"] for r in rets] == ["rejected", "rejected"] and all("signature" in r["reason"] for r in rets)
