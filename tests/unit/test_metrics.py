"""
The metrics writer (salt/nginx_ha/files/nginx_ha_metrics.py), its settings in the schema and the
model, the check that keeps it running, and the state that installs it.

* rendering from keepalived 2.2.7's captured JSON and data dumps and ``ip -j addr``, parsed with
  the official Prometheus client's parser (``prometheus_client.parser``): names, HELP/TYPE, values;
* label values and HELP text escaped per the exposition format (round trip through the parser);
* the textfile replaced atomically: a reader never sees a partial file, a failed write leaves the
  old one, no temporary file stays;
* the whole writer process against a stand-in keepalived: textfile and port, a change shown within
  a second, gone on SIGTERM and when keepalived exits;
* keepalived's check starts the writer when metrics.json is there, never runs an insecure one,
  and answers the same whatever the metrics do;
* the schema: off by default, every bad key named with its value, property-based;
* ``nginx_ha_metrics.settings``: writes, restarts the writer on a change, removes everything when off.
"""

import copy
import http.client
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.support import formula

PROGRAM = formula.FILES / "nginx_ha_metrics.py"
WATCHER = formula.FILES / "health_watch.py"
DATA = pathlib.Path(__file__).parent / "data"
ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="the writer and the check accept only root-owned settings")

nm = formula.load_module_file(PROGRAM)
hw = formula.load_module_file(WATCHER)
status = formula.load_module("_utils", "nginx_ha_status")
model = formula.model()


def parse(text):
    """{(sample name, frozenset(labels)): value}, through prometheus_client's parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in out, f"duplicate series {key}"
            out[key] = sample.value
    return out


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def cfg(**over):
    node = formula.node_view(dict(formula.two_node_pillar(), metrics={"textfile": "/var/lib/prometheus/node-exporter/nginx_ha.prom"}), "web-a")
    out = node["metrics_settings"]
    out.update(over)
    return out


def snapshot(**over):
    """What collect() sees on the captured MASTER: keepalived 2.2.7's dumps and ip -j addr."""
    snap = {
        "time": 1795552800.25,
        "errors": [],
        "keepalived_up": True,
        "dump_ok": True,
        "vrrp": nm.parse_keepalived_json((DATA / "keepalived-2.2.7-master.json").read_text()),
        "check": nm.parse_script_status((DATA / "keepalived-2.2.7-master.data").read_text(), "chk"),
        "addresses": nm.parse_ip_addr((DATA / "ip-addr-master.json").read_text()),
        "watcher": True,
        "maintenance": False,
    }
    snap.update(over)
    return snap


def render(config=None, snap=None, seen=0):
    config = config or cfg()
    transitions = nm.Transitions([i["name"] for i in config["instances"]])
    transitions.counts = {name: seen for name in transitions.counts}
    return nm.render(config, snap or snapshot(), transitions, 1795552700.5)


# ---- rendering from captured keepalived data ----


def test_the_captured_master_renders_every_metric_and_parses():
    text = render(seen=2)
    m = parse(text)
    vi = ("vrrp_instance", "VI_web")
    assert m[("nginx_ha_node_info", frozenset({("node", "web-a")}))] == 1
    for state in nm.STATES:
        assert m[("nginx_ha_vrrp_state", frozenset({vi, ("state", state)}))] == (1 if state == "MASTER" else 0)
    assert m[("nginx_ha_vrrp_role_info", frozenset({vi, ("role", "MASTER")}))] == 1
    assert m[("nginx_ha_vrrp_priority", frozenset({vi, ("kind", "base")}))] == 100
    assert m[("nginx_ha_vrrp_priority", frozenset({vi, ("kind", "effective")}))] == 100
    assert m[("nginx_ha_vip_held", frozenset({vi, ("vip", "203.0.113.100")}))] == 1
    assert m[("nginx_ha_health_ok", frozenset({("source", "watcher")}))] == 1
    assert m[("nginx_ha_health_ok", frozenset({("source", "check")}))] == 1  # Status = GOOD
    assert m[("nginx_ha_vrrp_transitions_total", frozenset({vi}))] == 2
    assert m[("nginx_ha_vrrp_become_master_total", frozenset({vi}))] == 1  # stats.become_master
    assert m[("nginx_ha_vrrp_release_master_total", frozenset({vi}))] == 0
    assert m[("nginx_ha_vrrp_last_transition_timestamp_seconds", frozenset({vi}))] == 1795552777.954432
    assert m[("nginx_ha_maintenance", frozenset())] == 0
    assert m[("nginx_ha_keepalived_up", frozenset())] == 1
    assert m[("nginx_ha_keepalived_dump_success", frozenset())] == 1
    assert m[("nginx_ha_metrics_last_update_timestamp_seconds", frozenset())] == 1795552800.25
    assert m[("nginx_ha_metrics_start_time_seconds", frozenset())] == 1795552700.5
    assert "nginx_ha_vrrp_last_transition_timestamp_seconds{vrrp_instance=\"VI_web\"} 1795552777.954432\n" in text


def test_help_and_type_precede_every_family_and_counters_are_counters():
    text = render()
    fams = families(text)
    kinds = {name: f.type for name, f in fams.items()}
    assert kinds["nginx_ha_vrrp_transitions"] == "counter"  # the parser names a counter without _total
    assert kinds["nginx_ha_vrrp_become_master"] == kinds["nginx_ha_vrrp_release_master"] == "counter"
    assert {k for k, v in kinds.items() if v != "counter"} >= {"nginx_ha_vrrp_state", "nginx_ha_vip_held", "nginx_ha_health_ok",
                                                               "nginx_ha_maintenance", "nginx_ha_vrrp_priority"}
    assert all(f.documentation for f in fams.values())
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert lines[i + 1].startswith(f"# TYPE {name} ")
            assert sum(1 for x in lines if x.startswith(f"# HELP {name} ")) == 1
        elif not line.startswith("#"):
            name = line.split("{")[0].split()[0]
            assert any(l == f"# TYPE {name} gauge" or l == f"# TYPE {name} counter" for l in lines[:i]), name
    assert "_total{" in text and text.endswith("\n") and "\n\n" not in text


def test_the_metrics_follow_keepalived_the_kernel_and_the_files():
    vrrp = copy.deepcopy(snapshot()["vrrp"])
    vrrp["VI_web"].update(state="FAULT", effective_priority=90)
    m = parse(render(snap=snapshot(vrrp=vrrp, addresses={"203.0.113.100": ["lo"]}, watcher=False, check="BAD", maintenance=True)))
    vi = ("vrrp_instance", "VI_web")
    assert m[("nginx_ha_vrrp_state", frozenset({vi, ("state", "FAULT")}))] == 1
    assert m[("nginx_ha_vrrp_state", frozenset({vi, ("state", "MASTER")}))] == 0
    assert m[("nginx_ha_vrrp_priority", frozenset({vi, ("kind", "effective")}))] == 90
    assert m[("nginx_ha_vip_held", frozenset({vi, ("vip", "203.0.113.100")}))] == 0  # on lo (local_vip) is not held
    assert m[("nginx_ha_health_ok", frozenset({("source", "watcher")}))] == 0
    assert m[("nginx_ha_health_ok", frozenset({("source", "check")}))] == 0
    assert m[("nginx_ha_maintenance", frozenset())] == 1


def test_keepalived_down_or_silent_says_stop_or_unknown_and_claims_nothing():
    vi = ("vrrp_instance", "VI_web")
    down = parse(render(snap=snapshot(keepalived_up=False, dump_ok=False, vrrp={}, check=None)))
    assert down[("nginx_ha_vrrp_state", frozenset({vi, ("state", "STOP")}))] == 1
    assert down[("nginx_ha_keepalived_up", frozenset())] == 0
    silent = parse(render(snap=snapshot(dump_ok=False, vrrp={}, check=None, addresses=None)))
    assert silent[("nginx_ha_vrrp_state", frozenset({vi, ("state", "UNKNOWN")}))] == 1
    assert silent[("nginx_ha_keepalived_dump_success", frozenset())] == 0
    for name in ("nginx_ha_vrrp_priority", "nginx_ha_vip_held", "nginx_ha_vrrp_last_transition_timestamp_seconds",
                 "nginx_ha_vrrp_become_master_total"):
        assert not any(k[0] == name for k in silent), name  # no data is no sample, never a made-up 0
    assert ("nginx_ha_health_ok", frozenset({("source", "check")})) not in silent
    assert silent[("nginx_ha_vrrp_transitions_total", frozenset({vi}))] == 0
    no_watcher = parse(render(config=cfg(watcher_state_file=None), snap=snapshot(watcher=None)))
    assert ("nginx_ha_health_ok", frozenset({("source", "watcher")})) not in no_watcher


def test_two_instances_and_two_vips():
    config = cfg(instances=[
        {"name": "VI_web", "role": "MASTER", "vips": [{"ip": "203.0.113.100", "interface": "eth0"}, {"ip": "203.0.113.101", "interface": "eth0"}]},
        {"name": "VI_api", "role": "BACKUP", "vips": [{"ip": "203.0.113.110", "interface": "eth1"}]},
    ])
    m = parse(render(config=config))
    assert m[("nginx_ha_vip_held", frozenset({("vrrp_instance", "VI_web"), ("vip", "203.0.113.101")}))] == 0
    assert m[("nginx_ha_vrrp_state", frozenset({("vrrp_instance", "VI_api"), ("state", "UNKNOWN")}))] == 1  # not in the dump
    assert m[("nginx_ha_vrrp_role_info", frozenset({("vrrp_instance", "VI_api"), ("role", "BACKUP")}))] == 1


def test_keepalived_state_codes_are_the_status_utils():
    for code, name in status.KEEPALIVED_STATES.items():
        assert nm.KEEPALIVED_STATES.get(code, "UNKNOWN") == (name if name != "DELETED" else "UNKNOWN")
    assert set(nm.KEEPALIVED_STATES.values()) <= set(nm.STATES)


def test_transitions_count_what_the_writer_saw():
    t = nm.Transitions(["VI_web"])
    look = lambda state, when: {"VI_web": {"state": state, "last_transition": when}}  # noqa: E731
    t.observe(look("BACKUP", 1.0))
    assert t.counts["VI_web"] == 0  # the first look is the baseline
    t.observe({})  # keepalived did not answer: nothing counted, nothing forgotten
    t.observe(look("MASTER", 2.0))
    t.observe(look("MASTER", 2.0))
    t.observe(look("MASTER", 3.0))  # a flap between two looks: its new time counts it once
    assert t.counts["VI_web"] == 2


# ---- parsing keepalived's dumps ----


def test_the_check_status_comes_from_the_data_dump_even_while_it_is_written():
    text = (DATA / "keepalived-2.2.7-master.data").read_text()
    assert nm.parse_script_status(text, "chk") == "GOOD"
    assert nm.parse_script_status(text, "nginx_ha_check") is None  # complete dump, no such script
    cut = text.index("Status = GOOD")
    for end in (0, 100, cut, cut + len("Status = GO")):
        with pytest.raises(ValueError):
            nm.parse_script_status(text[:end], "chk")  # keepalived writes in place: wait for the line
    bad = text.replace("Status = GOOD", "Status = BAD")
    assert nm.parse_script_status(bad, "chk") == "BAD"


NETLINK_CHILD = r'''
import importlib.util, json, select, subprocess, sys, time
spec = importlib.util.spec_from_file_location("nm", sys.argv[1])
nm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(nm)
sock = nm.open_netlink()
vips, ifaces = {nm.packed("203.0.113.100"), nm.packed("2001:db8::100")}, {"eth0"}
out = []
for cmd in sys.argv[2:]:
    subprocess.run(cmd.split(), check=True)
    time.sleep(0.05)
    seen = False
    while select.select([sock], [], [], 0.1)[0]:
        seen = nm.netlink_relevant(sock.recv(65536), vips, ifaces) or seen
    out.append(seen)
print(json.dumps(out))
'''


@ROOT
@pytest.mark.skipif(not shutil.which("unshare"), reason="needs util-linux unshare")
def test_only_netlink_events_of_the_vips_and_vrrp_interfaces_count():
    """Real rtnetlink messages in a private network namespace: another interface's churn is no change."""
    steps = [
        ("ip link add other0 type veth peer name other1", False), ("ip link set other0 up", False),
        ("ip addr add 198.51.100.9/24 dev other0", False), ("ip addr add 203.0.113.7/24 dev other0", False),
        ("ip link add eth0 type veth peer name eth0p", True), ("ip link set eth0 up", True),
        ("ip addr add 203.0.113.100/24 dev eth0", True), ("ip addr add 203.0.113.100/32 dev other0", True),
        ("ip addr del 203.0.113.100/24 dev eth0", True), ("ip link del other0", True),  # the VIP on it goes with it
        ("ip link add other2 type veth peer name other3", False), ("ip link del other2", False),
        ("ip -6 addr add 2001:db8::100/64 dev eth0 nodad", True),
    ]
    res = subprocess.run(["unshare", "--net", sys.executable, "-c", NETLINK_CHILD, str(PROGRAM), *[c for c, _ in steps]],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert list(zip([c for c, _ in steps], json.loads(res.stdout))) == steps


def test_a_partial_json_dump_is_not_taken():
    text = (DATA / "keepalived-2.2.7-master.json").read_text()
    with pytest.raises(ValueError):
        nm.parse_keepalived_json(text[: len(text) // 2])
    with pytest.raises(ValueError):
        nm.parse_keepalived_json('[{"data": {}}]')


# ---- the exposition format ----


WEIRD = ['a"b', "back\\slash", "new\nline", 'all \\" \n "\\', "é ü 中", "trailing\\"]


@pytest.mark.parametrize("weird", WEIRD)
def test_label_values_are_escaped_and_parse_back_to_themselves(weird):
    config = cfg(node=weird, instances=[{"name": weird, "role": "MASTER", "vips": [{"ip": weird, "interface": "eth0"}]}])
    m = parse(render(config=config, snap=snapshot(addresses={weird: ["eth0"]})))
    assert m[("nginx_ha_node_info", frozenset({("node", weird)}))] == 1
    assert m[("nginx_ha_vip_held", frozenset({("vrrp_instance", weird), ("vip", weird)}))] == 1
    assert m[("nginx_ha_vrrp_state", frozenset({("vrrp_instance", weird), ("state", "UNKNOWN")}))] == 1


def test_help_text_is_escaped():
    ex = nm.Exposition()
    ex.family("x_thing", "gauge", "one\\two\nthree").append(((("l", 'q"\n\\'),), 1.5))
    text = ex.text()
    assert text.splitlines()[0] == "# HELP x_thing one\\\\two\\nthree"
    fam = families(text)["x_thing"]
    assert fam.documentation == "one\\two\nthree" and fam.samples[0].labels == {"l": 'q"\n\\'} and fam.samples[0].value == 1.5


@pytest.mark.parametrize("value, text", [(True, "1"), (False, "0"), (7, "7"), (100.0, "100"), (0.1, "0.1"),
                                         (1795552777.954432, "1795552777.954432"), (float("nan"), "NaN"), (float("inf"), "+Inf")])
def test_numbers(value, text):
    assert nm.number(value) == text


# ---- the textfile: atomic replacement ----


def test_the_textfile_is_replaced_atomically(tmp_path):
    path = tmp_path / "nginx_ha.prom"
    texts = [("# A\n" + "a 1\n" * 20000), ("# B\n" + "b 2\n" * 30000)]
    nm.write_textfile(str(path), texts[0])
    seen, stop = set(), threading.Event()

    def reader():
        while not stop.is_set():
            seen.add(path.read_text())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(60):
            nm.write_textfile(str(path), texts[i % 2])
    finally:
        stop.set()
        thread.join()
    assert seen <= set(texts) and len(seen) == 2  # whole old or whole new, never a mix or a part
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nginx_ha.prom"]  # no temporary file left


def test_a_missing_textfile_directory_is_made(tmp_path):
    path = tmp_path / "gone" / "node-exporter" / "nginx_ha.prom"  # /run after a reboot
    nm.write_textfile(str(path), "a 1\n")
    assert path.read_text() == "a 1\n" and oct(path.parent.stat().st_mode & 0o777) == "0o755"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "nginx_ha.prom"
    nm.write_textfile(str(path), "old 1\n")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nm.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        nm.write_textfile(str(path), "new 2\n")
    assert path.read_text() == "old 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nginx_ha.prom"]
    assert not nm.temp_path(str(path)).endswith(".prom")  # the textfile collector never reads a temporary


def test_the_collection_time_alone_does_not_count_as_a_change():
    a = render(snap=snapshot(time=1.0))
    b = render(snap=snapshot(time=2.0))
    assert a != b and nm.body_of(a) == nm.body_of(b)
    assert nm.body_of(render(snap=snapshot(maintenance=True))) != nm.body_of(a)


# ---- the port ----


def test_the_port_serves_the_latest_exposition():
    server = nm.start_server({"host": "127.0.0.1", "port": 0})
    try:
        port = server.server_address[1]
        server.publish(render())
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read().decode()
        assert resp.status == 200 and resp.getheader("Content-Type") == nm.CONTENT_TYPE
        assert parse(body) == parse(render())
        conn.request("GET", "/other")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 404
        conn.close()
    finally:
        server.shutdown()
        server.server_close()


# ---- settings ----


def write_settings(path, data, mode=0o644):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.chmod(mode)
    os.replace(tmp, path)
    return path


@ROOT
def test_the_writer_refuses_insecure_or_damaged_settings(tmp_path):
    good = write_settings(tmp_path / "metrics.json", cfg())
    assert nm.load_settings(str(good))["node"] == "web-a"
    good.chmod(0o664)
    with pytest.raises(ValueError, match="writable by root only"):
        nm.load_settings(str(good))
    for damage in ({"interval": 0}, {"textfile": None, "listen": None}, {"listen": {"host": "127.0.0.1", "port": "80"}},
                   {"textfile": "relative.prom"}, {"instances": [{"name": "VI_web"}]}, {"keepalived": {}}):
        bad = write_settings(tmp_path / "metrics.json", dict(cfg(), **damage))
        with pytest.raises(ValueError):
            nm.load_settings(str(bad))


# ---- the writer process, against a stand-in keepalived ----

FAKE_KEEPALIVED = r'''
import ctypes, json, os, signal, sys, time
ctypes.CDLL(None).prctl(15, b"keepalived", 0, 0, 0)  # PR_SET_NAME: /proc/<pid>/comm says keepalived
d = sys.argv[1]
dump = json.load(open(os.path.join(d, "dump.json")))
data = open(os.path.join(d, "dump.data")).read()
def state():
    with open(os.path.join(d, "state")) as fh:
        return fh.read().split()
def asked(kind):
    with open(os.path.join(d, "asked.log"), "a") as fh:
        fh.write(kind + "\n")
def on_json(*_):
    asked("JSON")
    code, when = state()
    dump[0]["data"]["state"], dump[0]["data"]["last_transition"] = int(code), float(when)
    with open(os.path.join(d, "keepalived.json"), "w") as fh:
        fh.write(json.dumps(dump))
def on_data(*_):
    asked("DATA")
    with open(os.path.join(d, "keepalived.data"), "w") as fh:
        fh.write(data.replace("Status = GOOD", "Status = " + state()[0].replace("2", "GOOD").replace("3", "BAD")))
signal.signal(36, on_json)
signal.signal(signal.SIGUSR1, on_data)
with open(os.path.join(d, "keepalived.pid"), "w") as fh:
    fh.write("%d\n" % os.getpid())
while True:
    time.sleep(1)
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    return None


@pytest.fixture
def fake(tmp_path):
    """A stand-in keepalived (its --signum, its dumps on those signals), ip, and the writer's settings."""
    (tmp_path / "dump.json").write_text((DATA / "keepalived-2.2.7-master.json").read_text())
    (tmp_path / "dump.data").write_text((DATA / "keepalived-2.2.7-master.data").read_text().replace("VRRP Script = chk", "VRRP Script = nginx_ha_check"))
    (tmp_path / "state").write_text("2 1000.5\n")
    binary = tmp_path / "keepalived-bin"
    binary.write_text('#!/bin/sh\ncase "$1" in --signum=JSON) echo 36;; --signum=DATA) echo 10;; *) exit 1;; esac\n')
    binary.chmod(0o755)
    ip = tmp_path / "ip"
    (tmp_path / "addr.json").write_text((DATA / "ip-addr-master.json").read_text())
    ip.write_text(f'#!/bin/sh\ncat {tmp_path / "addr.json"}\n')
    ip.chmod(0o755)
    (tmp_path / "health").write_text("0\n")
    (tmp_path / "maintenance").write_text("0\n")
    keepalived = subprocess.Popen([sys.executable, "-c", FAKE_KEEPALIVED, str(tmp_path)])
    assert wait_until(lambda: (tmp_path / "keepalived.pid").exists(), 5)
    port = free_port()
    config = cfg(
        textfile=str(tmp_path / "out" / "nginx_ha.prom"), listen={"host": "127.0.0.1", "port": port}, interval=30,
        lock_file=str(tmp_path / "metrics.lock"), dump_lock=str(tmp_path / "dump.lock"), ip=str(ip),
        keepalived={"binary": str(binary), "pidfile": str(tmp_path / "keepalived.pid"), "config": str(tmp_path / "keepalived.conf"),
                    "json_dump": str(tmp_path / "keepalived.json"), "data_dump": str(tmp_path / "keepalived.data")},
        watcher_state_file=str(tmp_path / "health"), maintenance_file=str(tmp_path / "maintenance"),
    )
    (tmp_path / "out").mkdir()
    write_settings(tmp_path / "metrics.json", config)
    yield tmp_path, keepalived, config
    if keepalived.poll() is None:
        keepalived.kill()
        keepalived.wait()


def read_textfile(config):
    try:
        with open(config["textfile"]) as fh:
            return parse(fh.read())
    except FileNotFoundError:
        return None


def scrape(config):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", config["listen"]["port"], timeout=2)
        conn.request("GET", "/metrics")
        return parse(conn.getresponse().read().decode())
    except OSError:
        return None


def vrrp_state(m):
    return next((s for s in nm.STATES if m and m.get(("nginx_ha_vrrp_state", frozenset({("vrrp_instance", "VI_web"), ("state", s)}))) == 1), None)


def health(m, source):
    return m and m.get(("nginx_ha_health_ok", frozenset({("source", source)})))


@ROOT
def test_the_writer_writes_serves_follows_a_change_at_once_and_cleans_up_on_sigterm(fake):
    tmp_path, keepalived, config = fake
    cmd = [sys.executable, str(PROGRAM), "run", str(tmp_path / "metrics.json"), "--keepalived-pid", str(keepalived.pid)]
    writer = subprocess.Popen(cmd)
    try:
        assert wait_until(lambda: vrrp_state(read_textfile(config)) == "MASTER", 10), "no textfile"
        m = read_textfile(config)
        assert health(m, "watcher") == 1 and health(m, "check") == 1
        assert m[("nginx_ha_vip_held", frozenset({("vrrp_instance", "VI_web"), ("vip", "203.0.113.100")}))] == 1
        assert vrrp_state(scrape(config)) == "MASTER"
        assert subprocess.run(cmd, timeout=10).returncode == 0  # a second writer sees the lock and leaves
        # nginx fails: the watcher writes 1 and keepalived goes FAULT; shown long before the 30 s interval
        (tmp_path / "state").write_text("3 1001.5\n")
        (tmp_path / "addr.json").write_text("[]")
        start = time.monotonic()
        (tmp_path / "health").write_text("1\n")
        assert wait_until(lambda: vrrp_state(read_textfile(config)) == "FAULT", 5), read_textfile(config)
        took = time.monotonic() - start
        m = read_textfile(config)
        assert health(m, "watcher") == 0 and health(m, "check") == 0
        assert m[("nginx_ha_vip_held", frozenset({("vrrp_instance", "VI_web"), ("vip", "203.0.113.100")}))] == 0
        assert m[("nginx_ha_vrrp_transitions_total", frozenset({("vrrp_instance", "VI_web")}))] == 1
        assert m[("nginx_ha_vrrp_last_transition_timestamp_seconds", frozenset({("vrrp_instance", "VI_web")}))] == 1001.5
        assert took < 2.0, took
        assert vrrp_state(scrape(config)) == "FAULT"
        (tmp_path / "maintenance").write_text("-253\n")
        assert wait_until(lambda: (read_textfile(config) or {}).get(("nginx_ha_maintenance", frozenset())) == 1, 3)
        writer.send_signal(signal.SIGTERM)
        assert writer.wait(5) == 0
        assert not os.path.exists(config["textfile"])  # no stale picture of this node
        assert scrape(config) is None  # the port is closed
        assert sorted(os.listdir(tmp_path / "out")) == []
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()


@ROOT
def test_the_writer_leaves_with_keepalived_and_with_its_settings(fake):
    tmp_path, keepalived, config = fake
    cmd = [sys.executable, str(PROGRAM), "run", str(tmp_path / "metrics.json"), "--keepalived-pid", str(keepalived.pid)]
    writer = subprocess.Popen(cmd)
    try:
        assert wait_until(lambda: read_textfile(config), 10)
        keepalived.kill()
        keepalived.wait()
        assert writer.wait(5) == 0
        assert not os.path.exists(config["textfile"])
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    # a new keepalived, a new writer; new settings make it leave (keepalived's check starts the next)
    keepalived = subprocess.Popen([sys.executable, "-c", FAKE_KEEPALIVED, str(tmp_path)])
    (tmp_path / "keepalived.pid").unlink()
    assert wait_until(lambda: (tmp_path / "keepalived.pid").exists(), 5)
    writer = subprocess.Popen([sys.executable, str(PROGRAM), "run", str(tmp_path / "metrics.json"), "--keepalived-pid", str(keepalived.pid)])
    try:
        assert wait_until(lambda: read_textfile(config), 10)
        write_settings(tmp_path / "metrics.json", dict(config, interval=31))
        assert writer.wait(5) == 0
    finally:
        for proc in (writer, keepalived):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def asked(tmp_path):
    path = tmp_path / "asked.log"
    return path.read_text().split() if path.exists() else []


@ROOT
def test_keepalived_is_asked_on_changes_not_at_every_refresh(fake):
    """keepalived logs every dump it writes: a quiet node is refreshed every interval without asking it."""
    tmp_path, keepalived, config = fake
    write_settings(tmp_path / "metrics.json", dict(config, interval=1))
    writer = subprocess.Popen([sys.executable, str(PROGRAM), "run", str(tmp_path / "metrics.json"), "--keepalived-pid", str(keepalived.pid)])
    stamp = lambda: (read_textfile(config) or {}).get(("nginx_ha_metrics_last_update_timestamp_seconds", frozenset()))  # noqa: E731
    try:
        first = wait_until(stamp, 10)
        assert first and asked(tmp_path) == ["JSON", "DATA"]
        assert wait_until(lambda: (stamp() or 0) >= first + 1.5, 6)  # rewritten every interval (1 s) ...
        assert asked(tmp_path) == ["JSON", "DATA"]  # ... from the kernel and the files alone
        (tmp_path / "maintenance").write_text("-253\n")  # a change: keepalived is asked at once, then while it settles
        assert wait_until(lambda: (read_textfile(config) or {}).get(("nginx_ha_maintenance", frozenset())) == 1, 3)
        assert len(asked(tmp_path)) >= 4
    finally:
        writer.send_signal(signal.SIGTERM)
        writer.wait(5)


@ROOT
def test_render_mode_prints_one_exposition(fake):
    tmp_path, _, _ = fake
    res = subprocess.run([sys.executable, str(PROGRAM), "render", str(tmp_path / "metrics.json")], capture_output=True, text=True, timeout=20)
    assert res.returncode == 0, res.stderr
    assert vrrp_state(parse(res.stdout)) == "MASTER"


# ---- keepalived's check keeps the writer running ----


def install(tmp_path, config, program=None, mode=0o644):
    write_settings(tmp_path / "metrics.json", config, mode)
    target = tmp_path / "nginx_ha_metrics.py"
    if program is None:
        shutil.copy(PROGRAM, target)
    else:
        target.write_text(program)
    target.chmod(0o755)
    return tmp_path / "health.json"


def holder_pid(lock):
    text = lock.read_text().strip() if lock.exists() else ""
    return int(text) if text else None


@ROOT
def test_the_check_starts_the_writer_once(fake):
    tmp_path, _, config = fake
    settings_path = install(tmp_path, config)
    assert hw.ensure_metrics(str(settings_path), fake[1].pid) is True
    lock = tmp_path / "metrics.lock"
    try:
        pid = wait_until(lambda: holder_pid(lock), 10)
        assert pid and wait_until(lambda: read_textfile(config), 10)
        assert hw.ensure_metrics(str(settings_path), fake[1].pid) is False  # it runs: nothing started
        assert holder_pid(lock) == pid
    finally:
        pid = holder_pid(lock)
        if pid:
            os.kill(pid, signal.SIGTERM)

            def free():
                fd = hw.take_lock(str(lock), write_pid=False)
                if fd is not None:
                    os.close(fd)
                return fd is not None

            assert wait_until(free, 5)  # it let go of its lock: gone (its zombie is this test's to reap)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:  # subprocess reaped it already
                pass


@ROOT
def test_the_check_never_runs_insecure_or_missing_metrics(tmp_path):
    config = cfg(lock_file=str(tmp_path / "metrics.lock"))
    assert hw.ensure_metrics(str(tmp_path / "health.json"), os.getpid()) is False  # metrics off: no metrics.json
    settings_path = install(tmp_path, config, mode=0o666)
    assert hw.ensure_metrics(str(settings_path), os.getpid()) is False
    install(tmp_path, config)
    (tmp_path / "nginx_ha_metrics.py").chmod(0o777)
    assert hw.ensure_metrics(str(settings_path), os.getpid()) is False
    assert not (tmp_path / "metrics.lock").exists()


@ROOT
@pytest.mark.parametrize("metrics", ["garbage", "hangs", "crashes"])
def test_the_check_answers_the_same_whatever_the_metrics_do(tmp_path, metrics):
    """A damaged settings file, a writer that hangs or one that crashes: the check's exit and its speed are the nginx probe's."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    health_json = {"host": "127.0.0.1", "port": srv.server_address[1], "request": "/h", "check_timeout": 1, "enabled": False,
                   "interval": 0.1, "retry_interval": 0.02, "timeout": 0.25, "fall": 2, "rise": 2,
                   "state_file": str(tmp_path / "health"), "pidfile": None}
    settings_path = write_settings(tmp_path / "health.json", health_json)
    config = cfg(lock_file=str(tmp_path / "metrics.lock"))
    if metrics == "garbage":
        (tmp_path / "metrics.json").write_text("{not json")
        (tmp_path / "metrics.json").chmod(0o644)
        shutil.copy(PROGRAM, tmp_path / "nginx_ha_metrics.py")
    elif metrics == "hangs":  # records its pid, so the test ends exactly the processes it made
        install(tmp_path, config, program=(
            "import os, sys, time\n"
            "with open(os.path.join(os.path.dirname(sys.argv[0]), 'hung.pids'), 'a') as fh:\n"
            "    fh.write('%d\\n' % os.getpid())\n"
            "time.sleep(30)\n"))
    else:
        install(tmp_path, config, program="raise SystemExit(3)\n")
    try:
        for _ in range(3):
            start = time.monotonic()
            res = subprocess.run([sys.executable, str(WATCHER), "check", str(settings_path)], timeout=10)
            assert res.returncode == 0 and time.monotonic() - start < 2.0
        if metrics == "hangs":  # it was started, and the check did not wait for it
            assert wait_until(lambda: (tmp_path / "hung.pids").exists() and (tmp_path / "hung.pids").read_text().split(), 5)
    finally:
        srv.shutdown()
        srv.server_close()
        pids = tmp_path / "hung.pids"
        for pid in (pids.read_text().split() if pids.exists() else []):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


# ---- the schema and the model ----


def view(metrics, **extra):
    return formula.node_view(dict(formula.two_node_pillar(), metrics=metrics, **extra), "web-a")


def test_metrics_are_off_by_default():
    node = formula.node_view(formula.two_node_pillar(), "web-a")
    assert node["metrics"] == {"textfile": None, "listen": None, "interval": 15}
    assert node["metrics_settings"] is None


def test_a_bare_port_binds_localhost_and_addresses_are_kept():
    assert view({"listen": 9650})["metrics_settings"]["listen"] == {"host": "127.0.0.1", "port": 9650}
    assert view({"listen": "9650"})["metrics_settings"]["listen"] == {"host": "127.0.0.1", "port": 9650}
    assert view({"listen": "*:9650"})["metrics_settings"]["listen"] == {"host": "0.0.0.0", "port": 9650}
    assert view({"listen": "[::1]:9650"})["metrics_settings"]["listen"] == {"host": "::1", "port": 9650}
    settings_ = view({"textfile": "/var/lib/prometheus/node-exporter/nginx_ha.prom", "interval": "30"})["metrics_settings"]
    assert settings_["listen"] is None and settings_["interval"] == 30
    assert settings_["watcher_state_file"] == "/run/nginx_ha_health" and settings_["check_script"] == "nginx_ha_check"
    assert settings_["dump_lock"] == "/run/nginx_ha.dump.lock" and settings_["keepalived"]["data_dump"] == "/tmp/keepalived.data"
    assert settings_["instances"] == [{"name": "VI_web", "role": "MASTER", "vips": [{"ip": "203.0.113.100", "interface": "eth0"}]}]


def test_the_check_script_name_is_the_one_keepalived_conf_declares():
    node = formula.node_view(formula.two_node_pillar(), "web-a")
    assert f"vrrp_script {model.CHECK_SCRIPT} {{" in formula.render("keepalived.conf.jinja", node=node)


@pytest.mark.parametrize("metrics, key, value", [
    ({"textfile": "/var/lib/node-exporter/nginx_ha.txt"}, "nginx_ha:metrics:textfile", "nginx_ha.txt"),
    ({"textfile": "relative.prom"}, "nginx_ha:metrics:textfile", "relative.prom"),
    ({"textfile": "/a/.prom"}, "nginx_ha:metrics:textfile", "/a/.prom"),
    ({"listen": "127.0.0.1:99999"}, "nginx_ha:metrics:listen", "99999"),
    ({"listen": True}, "nginx_ha:metrics:listen", "True"),
    ({"interval": 0}, "nginx_ha:metrics:interval", "0"),
    ({"interval": 3601}, "nginx_ha:metrics:interval", "3601"),
    ({"port": 9650}, "nginx_ha:metrics:port", "known"),
    ({"listen": 8081}, "nginx_ha:metrics:listen", "nginx_ha:nginx:health:listen"),  # the health endpoint's port
    ({"listen": "*:80"}, "nginx_ha:metrics:listen", "nginx_ha:nginx:listen:0"),  # the site's
])
def test_bad_metrics_settings_name_key_and_value(metrics, key, value):
    with pytest.raises(model.ModelError) as exc:
        view(metrics)
    assert any(e.startswith(key) and value in e for e in exc.value.errors), exc.value.errors


SOME_PORT = st.integers(1, 65535)
LISTEN = st.one_of(st.none(), SOME_PORT, SOME_PORT.map(str), SOME_PORT.map(lambda p: f"127.0.0.1:{p}"), SOME_PORT.map(lambda p: f"[::1]:{p}"),
                   SOME_PORT.map(lambda p: f"*:{p}"), st.text(max_size=12), st.integers(-5, 70000), st.booleans())
TEXTFILE = st.one_of(st.none(), st.just("/var/lib/prometheus/node-exporter/nginx_ha.prom"),
                     st.text(alphabet=st.sampled_from(list("ab/._ -\n$\"'\\")), max_size=16).map(lambda t: "/run/" + t + ".prom"),
                     st.text(max_size=12))
INTERVAL = st.one_of(st.integers(-2, 4000), st.sampled_from(["15", "x", 1.5, None, True]))


@ROOT
@settings(max_examples=150, deadline=None)
@given(metrics=st.fixed_dictionaries({}, optional={"textfile": TEXTFILE, "listen": LISTEN, "interval": INTERVAL}))
def test_any_metrics_pillar_is_refused_by_key_or_gives_settings_the_writer_accepts(metrics):
    try:
        node = view(metrics)
    except model.ModelError as exc:
        assert exc.errors and all(e.startswith("nginx_ha:metrics:") for e in exc.errors), exc.errors
        return
    data = node["metrics_settings"]
    if data is None:
        assert not metrics.get("textfile") and metrics.get("listen") is None
        return
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = write_settings(pathlib.Path(tmp) / "metrics.json", data)
        loaded = nm.load_settings(str(path))
    assert loaded == data
    if data["listen"]:
        assert 1 <= data["listen"]["port"] <= 65535


# ---- the state ----

state = formula.load_module("_states", "nginx_ha_metrics")
STATE_PROGRAM = "#!/usr/bin/python3\nprint('writer v2')\n"


@pytest.fixture
def opts():
    return {"test": False}


@pytest.fixture
def configure_loader_modules(opts):
    return {state: {"__salt__": {"cp.get_file_str": lambda url, saltenv=None: STATE_PROGRAM}, "__opts__": opts, "__env__": "base"}}


def run_state(tmp_path, data):
    return state.settings(str(tmp_path / "metrics.json"), data, "salt://nginx_ha/files/nginx_ha_metrics.py", str(tmp_path / "nginx_ha_metrics.py"))


def state_settings(tmp_path, **over):
    return dict(cfg(textfile=str(tmp_path / "node-exporter" / "nginx_ha.prom"), lock_file=str(tmp_path / "metrics.lock")), **over)


def lock_holder(lock):
    """A stand-in writer: holds ``lock`` with its pid written there, its command line naming nginx_ha_metrics.py."""
    proc = subprocess.Popen(
        [sys.executable, "-c", (
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nos.ftruncate(fd, 0)\nos.write(fd, b'%d\\n' % os.getpid())\n"
            "print('locked', flush=True)\ntime.sleep(60)\n"
        ), str(lock), "nginx_ha_metrics.py"],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_the_state_writes_both_files_root_owned_then_changes_nothing(tmp_path):
    data = state_settings(tmp_path)
    ret = run_state(tmp_path, data)
    assert ret["result"] is True and set(ret["changes"]) == {"settings", "program"}, ret
    assert json.loads((tmp_path / "metrics.json").read_text()) == data
    assert (tmp_path / "nginx_ha_metrics.py").read_text() == STATE_PROGRAM
    assert oct((tmp_path / "metrics.json").stat().st_mode & 0o777) == "0o644"
    assert oct((tmp_path / "nginx_ha_metrics.py").stat().st_mode & 0o777) == "0o755"
    assert (tmp_path / "node-exporter").is_dir()  # the textfile directory, made when missing
    again = run_state(tmp_path, data)
    assert again["result"] is True and again["changes"] == {}


def test_test_mode_reports_and_writes_nothing(tmp_path, opts):
    opts["test"] = True
    ret = run_state(tmp_path, state_settings(tmp_path))
    assert ret["result"] is None and ret["changes"] and not (tmp_path / "metrics.json").exists()


def test_a_change_restarts_the_running_writer_and_a_moved_textfile_goes(tmp_path):
    data = state_settings(tmp_path)
    assert run_state(tmp_path, data)["result"] is True
    old_textfile = pathlib.Path(data["textfile"])
    old_textfile.write_text("old\n")
    holder = lock_holder(tmp_path / "metrics.lock")
    try:
        assert state.writer_pid(data["lock_file"]) == holder.pid
        moved = dict(data, textfile=str(tmp_path / "elsewhere" / "nginx_ha.prom"))
        ret = run_state(tmp_path, moved)
        assert ret["result"] is True and "writer_restarted" in ret["changes"] and ret["changes"]["removed"] == [str(old_textfile)]
        assert holder.wait(5) != 0  # SIGTERM
        assert not old_textfile.exists()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_metrics_off_stops_the_writer_and_removes_everything(tmp_path):
    data = state_settings(tmp_path)
    assert run_state(tmp_path, data)["result"] is True
    pathlib.Path(data["textfile"]).write_text("x 1\n")
    holder = lock_holder(tmp_path / "metrics.lock")
    try:
        ret = run_state(tmp_path, None)
        assert ret["result"] is True and "writer_stopped" in ret["changes"], ret
        assert holder.wait(5) != 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["metrics.lock"]
    assert not pathlib.Path(data["textfile"]).exists()
    assert run_state(tmp_path, None) == {"name": str(tmp_path / "metrics.json"), "result": True, "changes": {}, "comment": "the metrics are off"}


def test_the_state_refuses_a_program_path_the_check_would_not_run(tmp_path):
    ret = state.settings(str(tmp_path / "metrics.json"), state_settings(tmp_path), "salt://x", str(tmp_path / "other" / "nginx_ha_metrics.py"))
    assert ret["result"] is False and "beside" in ret["comment"]


# ---- the example alert rules (conf/prometheus) ----

RULES = formula.REPO / "conf" / "prometheus" / "nginx_ha.rules.yml"


def test_the_alert_rules_use_only_metrics_and_labels_the_writer_renders():
    import re

    import yaml

    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    assert {r["alert"] for r in rules} >= {"NginxHASplitBrain", "NginxHANoOwner", "NginxHAFault"}
    rendered = {name for name, _ in parse(render())}
    labels = {label for _, pairs in parse(render()) for label, _ in pairs}
    for rule in rules:
        names = set(re.findall(r"\bnginx_ha_[a-z_]+", rule["expr"]))
        assert names and names <= rendered, (rule["alert"], names - rendered)
        used = set(re.findall(r"\b(?:by|on) \(([^)]*)\)", rule["expr"]))
        for group in used:
            for label in (x.strip() for x in group.split(",")):
                assert label in labels | {"job", "instance"}, (rule["alert"], label)


@pytest.mark.skipif(not (os.environ.get("NGINX_HA_PROMTOOL") or shutil.which("promtool")), reason="promtool is not installed (NGINX_HA_PROMTOOL=path)")
def test_the_alert_rules_pass_promtool():
    promtool = os.environ.get("NGINX_HA_PROMTOOL") or shutil.which("promtool")
    subprocess.run([promtool, "check", "rules", str(RULES)], check=True, timeout=60)
    subprocess.run([promtool, "test", "rules", str(RULES.with_name("nginx_ha.rules.test.yml"))], check=True, timeout=60)
    res = subprocess.run([promtool, "check", "metrics"], input=render(), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), res.stdout + res.stderr  # no lint finding
