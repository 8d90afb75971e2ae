"""
The nginx_ha_events engine without Salt: parsing, numbering, ordering, buffering, spool, FIFO,
boot id; property tests (hypothesis) for damaged spools.
"""

import json
import logging
import os
import re
import stat
import tempfile
import threading
import time
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import formula

engine = formula.load_module("_engines", "nginx_ha_events")
runner = formula.load_module("_runners", "nginx_ha_reactor")
import nginx_ha_event  # noqa: E402  (_utils/ is on sys.path now, as Salt's loader has it)

# What keepalived 2.2.7 wrote to its notify_fifo for one instance going through start-up and stop
# (captured from a real keepalived in a network namespace).
KEEPALIVED_LINES = ['INSTANCE "VI_test" BACKUP 100', 'INSTANCE "VI_test" MASTER 100', 'INSTANCE "VI_test" STOP 100']


@pytest.fixture(autouse=True, scope="module")
def _salt_logging_not_deferred():
    """Salt defers log records to stderr at exit (closed under pytest); let pytest capture them."""
    import salt._logging.impl

    salt._logging.impl.shutdown_temp_handler()


class Clock:
    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        self.now += 0.001
        return self.now


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, expected",
    [
        (KEEPALIVED_LINES[0], {"instance": "VI_test", "state": "BACKUP", "priority": 100}),
        (KEEPALIVED_LINES[1], {"instance": "VI_test", "state": "MASTER", "priority": 100}),
        (KEEPALIVED_LINES[2], {"instance": "VI_test", "state": "STOP", "priority": 100}),
        ('INSTANCE "VI_web" FAULT 0', {"instance": "VI_web", "state": "FAULT", "priority": 0}),
        ('INSTANCE "VI_web" MASTER 100\r', {"instance": "VI_web", "state": "MASTER", "priority": 100}),
        ("INSTANCE VI_web BACKUP 99", {"instance": "VI_web", "state": "BACKUP", "priority": 99}),
        ('INSTANCE "VI_web" BACKUP', {"instance": "VI_web", "state": "BACKUP", "priority": None}),
        (b'INSTANCE "VI_web" MASTER 100', {"instance": "VI_web", "state": "MASTER", "priority": 100}),
    ],
)
def test_parse_instance_lines(line, expected):
    assert engine.parse_line(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        'GROUP "G1" MASTER 100',  # sync groups: not instances
        'VS "10.0.0.1:80" UP',
        'RS "10.0.0.2:80" "10.0.0.1:80" DOWN',
        'INSTANCE "VI_web" MASTER_RX_LOWER_PRI 100',  # not a transition
        'INSTANCE "VI_web" DELETED 100',
        'INSTANCE "VI/web" MASTER 100',  # would break the tag
        'INSTANCE "VI_web" master 100',
        'INSTANCE "" MASTER 100',
        "",
        "garbage",
        'INSTANCE "VI_web" MASTER 100 extra',
    ],
)
def test_ignores_what_is_not_an_instance_transition(line):
    assert engine.parse_line(line) is None


def test_tag():
    assert engine.make_tag("VI_web", "FAULT") == "nginx_ha/vrrp/VI_web/fault"


# --------------------------------------------------------------------------------------------
# Numbering and previous state
# --------------------------------------------------------------------------------------------


def test_tracker_previous_state_per_instance_and_growing_seq():
    tracker = engine.Tracker(clock=Clock())
    events = [tracker.event(engine.parse_line(line)) for line in KEEPALIVED_LINES + ['INSTANCE "VI_api" MASTER 50']]
    assert [tag for tag, _ in events] == [
        "nginx_ha/vrrp/VI_test/backup",
        "nginx_ha/vrrp/VI_test/master",
        "nginx_ha/vrrp/VI_test/stop",
        "nginx_ha/vrrp/VI_api/master",
    ]
    assert [d["previous_state"] for _, d in events] == [None, "BACKUP", "MASTER", None]
    seqs = [d["seq"] for _, d in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4 and seqs[1] == seqs[0] + 1
    assert set(events[0][1]) == {"instance", "state", "previous_state", "priority", "vips", "time", "seq"}
    assert isinstance(events[0][1]["time"], float)


def test_seq_continues_from_the_spool_and_never_goes_below_the_epoch_ms():
    clock = Clock(1_800_000_000.0)
    assert engine.Tracker(next_seq=5, clock=clock).next_seq >= 1_800_000_000_000  # lost spool: still above old numbers
    assert engine.Tracker(next_seq=9_000_000_000_000, clock=clock).next_seq == 9_000_000_000_000


# --------------------------------------------------------------------------------------------
# Delivery: order, retry with backoff, bounded buffer, spool
# --------------------------------------------------------------------------------------------


class FlakySend:
    """Fails the first ``failures`` calls, then records what it delivers."""

    def __init__(self, failures=0):
        self.failures = failures
        self.calls = 0
        self.delivered = []

    def __call__(self, tag, data):
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("master down")
        self.delivered.append((tag, data["seq"]))


def lines(n, instance="VI_web"):
    states = ["MASTER", "BACKUP", "FAULT", "STOP"]
    return [f'INSTANCE "{instance}" {states[i % 4]} {100 - i % 3}' for i in range(n)]


def test_in_order_with_retries_until_ack(tmp_path):
    send = FlakySend(failures=3)
    fwd = engine.Forwarder(send, engine.Tracker(clock=Clock()), spool=engine.Spool(str(tmp_path / "spool")))
    queued = [fwd.put_line(line) for line in lines(10)]
    results = [fwd.step() for _ in range(13)]
    assert results[:3] == [False, False, False] and all(results[3:])
    assert send.delivered == [(tag, data["seq"]) for tag, data in queued]
    assert not fwd.pending and fwd.delivered == 10


def test_backoff_doubles_up_to_the_maximum_then_resets():
    waits = []
    send = FlakySend(failures=6)
    fwd = engine.Forwarder(send, engine.Tracker(clock=Clock()), backoff_min=0.1, backoff_max=1.0, sleep=waits.append)
    fwd.put_line(lines(1)[0])
    thread = threading.Thread(target=fwd.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not send.delivered and time.monotonic() < deadline:
        time.sleep(0.01)
    fwd.stop()
    thread.join(5)
    assert len(send.delivered) == 1 and len(waits) == 6
    nominal = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert all(0.8 * n <= w <= 1.2 * n for w, n in zip(waits, nominal)), waits


def test_buffer_is_bounded_and_drops_the_oldest():
    send = FlakySend(failures=10**9)
    fwd = engine.Forwarder(send, engine.Tracker(clock=Clock()), buffer_size=5)
    queued = [fwd.put_line(line) for line in lines(8)]
    fwd.step()
    assert [d["seq"] for _, d in fwd.pending] == [d["seq"] for _, d in queued[3:]]
    assert fwd.dropped == 3


def test_reader_never_blocks_while_the_master_hangs():
    release = threading.Event()

    def hanging_send(tag, data):
        release.wait(30)

    fwd = engine.Forwarder(hanging_send, engine.Tracker(clock=Clock()))
    thread = threading.Thread(target=fwd.run, daemon=True)
    thread.start()
    fwd.put_line(lines(1)[0])
    time.sleep(0.2)  # the sender is now stuck in send()
    started = time.monotonic()
    for line in lines(1000):
        fwd.put_line(line)
    assert time.monotonic() - started < 0.5
    release.set()
    fwd.stop()
    thread.join(5)


def test_spool_survives_a_restart_in_order(tmp_path):
    spool = engine.Spool(str(tmp_path / "spool.json"))
    first = engine.Forwarder(FlakySend(failures=10**9), engine.Tracker(clock=Clock()), spool=spool)
    queued = [first.put_line(line) for line in lines(6)]
    first.step()  # master down: everything is spooled, nothing acknowledged
    assert stat.S_IMODE(os.stat(spool.path).st_mode) == 0o600

    saved = spool.load()  # a new minion process
    tracker = engine.Tracker(saved["states"], saved["next_seq"], clock=Clock())
    send = FlakySend()
    second = engine.Forwarder(send, tracker, spool=spool)
    second.restore(saved["pending"])
    later = second.put_line('INSTANCE "VI_web" MASTER 100')
    while second.step():
        pass
    assert send.delivered == [(t, d["seq"]) for t, d in queued] + [(later[0], later[1]["seq"])]
    assert later[1]["seq"] > queued[-1][1]["seq"]
    assert later[1]["previous_state"] == queued[-1][1]["state"]
    assert spool.load()["pending"] == []


def test_prepare_fills_vips_before_spooling(tmp_path):
    spool = engine.Spool(str(tmp_path / "spool.json"))
    resolve = engine._vips_resolver({"VI_web": ["203.0.113.100"]})

    def prepare(tag, data):
        return dict(data, vips=resolve(data["instance"]))

    fwd = engine.Forwarder(FlakySend(failures=10**9), engine.Tracker(clock=Clock()), spool=spool, prepare=prepare)
    fwd.put_line('INSTANCE "VI_web" FAULT 100')
    fwd.put_line('INSTANCE "VI_other" FAULT 100')
    fwd.step()
    assert [d["vips"] for _, d in spool.load()["pending"]] == [["203.0.113.100"], []]


def test_corrupt_spool_is_quarantined_and_starts_empty(tmp_path, caplog):
    path = tmp_path / "spool.json"
    path.write_text("{not json")
    assert engine.Spool(str(path)).load() == {"pending": [], "next_seq": 0, "states": {}}
    damaged = list(tmp_path.glob("spool.json.damaged.*"))
    assert len(damaged) == 1 and damaged[0].read_text() == "{not json" and not path.exists()
    assert re.fullmatch(r"spool\.json\.damaged\.\d{8}T\d{6}Z", damaged[0].name)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "is not valid JSON" in errors[0].getMessage() and str(damaged[0]) in errors[0].getMessage()


# --------------------------------------------------------------------------------------------
# Signature (engine signs, runner verifies)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keypair(tmp_path_factory):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("pki") / "minion.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return str(path), pub


def test_signature_binds_sender_tag_and_payload(keypair):
    key_path, pub = keypair
    tag, data = engine.Tracker(clock=Clock()).event(engine.parse_line('INSTANCE "VI_web" FAULT 100'))
    data["sig"] = engine.Signer(key_path, "web-a")(tag, data)
    # one wire format: the engine signs and the runner verifies with the same module
    assert engine.Signer is nginx_ha_event.Signer and runner.nginx_ha_event is nginx_ha_event
    assert nginx_ha_event.verify("web-a", tag, data, pub)
    assert not nginx_ha_event.verify("web-b", tag, data, pub)  # claimed by another minion
    assert not nginx_ha_event.verify("web-a", "nginx_ha/vrrp/VI_web/master", data, pub)
    assert not nginx_ha_event.verify("web-a", tag, dict(data, priority=1), pub)
    assert not nginx_ha_event.verify("web-a", tag, dict(data, sig="bm90IGEgc2lnbmF0dXJl"), pub)


def test_events_are_signed_once_the_minion_key_appears(keypair, tmp_path, caplog):
    """A new minion starts its engines before it generates its key: sign as soon as it is there."""
    key_path, pub = keypair
    path = tmp_path / "minion.pem"
    signer = engine.KeySigner(str(path), "web-a")
    tag, data = engine.Tracker(clock=Clock()).event(engine.parse_line('INSTANCE "VI_web" BACKUP 99'))
    with caplog.at_level(logging.WARNING):
        assert signer(tag, data) is None and signer(tag, data) is None
        path.write_bytes(open(key_path, "rb").read())
        data["sig"] = signer(tag, data)
    assert nginx_ha_event.verify("web-a", tag, data, pub)
    assert [r.levelname for r in caplog.records if "minion key" in r.getMessage()] == ["ERROR", "WARNING"]  # once each


# --------------------------------------------------------------------------------------------
# The FIFO itself
# --------------------------------------------------------------------------------------------


def test_fifo_created_0600_and_survives_writer_restarts(tmp_path):
    path = str(tmp_path / "notify.fifo")
    fd = engine.open_fifo(path)
    received = []
    stop = threading.Event()
    reader = threading.Thread(target=engine.read_fifo, args=(fd, received.append, stop), kwargs={"poll": 0.05}, daemon=True)
    reader.start()
    try:
        assert stat.S_ISFIFO(os.stat(path).st_mode) and stat.S_IMODE(os.stat(path).st_mode) == 0o600
        for chunk in ('INSTANCE "VI_web" BAC', 'KUP 100\nINSTANCE "VI_web" MASTER 100\n'):
            # keepalived opening, writing and closing (a restart) as separate writers
            wfd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            os.write(wfd, chunk.encode())
            os.close(wfd)
            time.sleep(0.1)
        wfd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.write(wfd, b'INSTANCE "VI_web" STOP 100\n')
        os.close(wfd)
        deadline = time.monotonic() + 5
        while len(received) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert received == ['INSTANCE "VI_web" BACKUP 100', 'INSTANCE "VI_web" MASTER 100', 'INSTANCE "VI_web" STOP 100']
    finally:
        stop.set()
        reader.join(5)
        os.close(fd)


def test_reader_returns_when_the_fifo_is_removed_so_it_is_reopened(tmp_path):
    path = str(tmp_path / "notify.fifo")
    fd = engine.open_fifo(path)
    stop = threading.Event()
    reader = threading.Thread(target=engine.read_fifo, args=(fd, lambda line: None, stop), kwargs={"poll": 0.05, "path": path}, daemon=True)
    reader.start()
    try:
        time.sleep(0.2)
        assert reader.is_alive()
        os.unlink(path)
        reader.join(2)
        assert not reader.is_alive()
        fd2 = engine.open_fifo(path)  # what the engine's loop does next: a fresh FIFO at the path
        assert stat.S_ISFIFO(os.stat(path).st_mode)
        os.close(fd2)
    finally:
        stop.set()
        os.close(fd)


@pytest.fixture
def umask0():
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _root_only_fifo(path):
    st = os.lstat(path)
    return stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and (st.st_uid, st.st_gid) == (0, 0)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to root needs root")


@needs_root
def test_fifo_created_root_only_whatever_the_umask(tmp_path, umask0):
    path = str(tmp_path / "notify.fifo")
    fd = engine.open_fifo(path)
    os.close(fd)
    assert _root_only_fifo(path)


@needs_root
def test_fifo_precreated_world_readable_is_fixed_in_place(tmp_path, umask0, caplog):
    path = str(tmp_path / "notify.fifo")
    os.mkfifo(path, 0o666)  # as keepalived or a local user could have made it
    os.chown(path, 65534, 65534)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
    # a writer (keepalived) already holds it open: fixing in place keeps it connected to us
    writer = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    inode = os.stat(path).st_ino
    fd = engine.open_fifo(path)
    try:
        assert _root_only_fifo(path) and os.stat(path).st_ino == inode
        os.write(writer, b'INSTANCE "VI_web" MASTER 100\n')
        assert os.read(fd, 100) == b'INSTANCE "VI_web" MASTER 100\n'
    finally:
        os.close(fd)
        os.close(writer)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("was mode 0666 owner 65534:65534; making it root-only (0600 0:0)" in m for m in warnings), warnings


@needs_root
@pytest.mark.parametrize("kind", ["regular file", "symlink", "socket"])
def test_what_is_not_a_fifo_is_replaced_by_a_root_only_fifo(tmp_path, umask0, caplog, kind):
    import socket

    path = tmp_path / "notify.fifo"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("keep me")
    sock = None
    if kind == "regular file":
        path.write_text("")
        path.chmod(0o666)
    elif kind == "symlink":
        path.symlink_to(elsewhere)
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
    try:
        fd = engine.open_fifo(str(path))
        os.close(fd)
    finally:
        if sock is not None:
            sock.close()
    assert _root_only_fifo(path) and elsewhere.read_text() == "keep me"
    assert any("is not a FIFO" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


def test_open_fifo_refuses_a_directory(tmp_path):
    path = tmp_path / "notify.fifo"
    path.mkdir()
    with pytest.raises(OSError, match="is a directory"):
        engine.open_fifo(str(path))
    assert path.is_dir()


def test_vips_from_node_config_when_not_configured(monkeypatch):
    calls = []

    def node_config():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("master unreachable")
        return {"instances": [{"name": "VI_web", "virtual_ipaddress": [{"ip": "203.0.113.100"}]}]}

    monkeypatch.setattr(engine, "__salt__", {"nginx_ha.node_config": node_config}, raising=False)
    now = [1000.0]
    monkeypatch.setattr(engine, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    resolve = engine._vips_resolver(None)
    assert resolve("VI_web") == []  # not available: [] rather than blocking
    assert resolve("VI_web") == [] and len(calls) == 1  # not retried at once
    now[0] += 61
    assert resolve("VI_web") == ["203.0.113.100"] and resolve("VI_other") == [] and len(calls) == 2


# --------------------------------------------------------------------------------------------
# Boot id
# --------------------------------------------------------------------------------------------


def test_boot_id_is_read_stripped_and_its_absence_tolerated(tmp_path):
    boot_file = tmp_path / "boot_id"
    boot_file.write_text("6b085cff-9d20-454d-a7a8-1c2e37e6298f\n")
    assert engine.read_boot_id(str(boot_file)) == "6b085cff-9d20-454d-a7a8-1c2e37e6298f"
    assert engine.read_boot_id(str(tmp_path / "missing")) is None
    (tmp_path / "empty").write_text("\n")
    assert engine.read_boot_id(str(tmp_path / "empty")) is None
    if os.path.exists(engine.BOOT_ID_FILE):
        assert re.fullmatch(r"[0-9a-f-]{36}", engine.read_boot_id())


def test_every_event_carries_the_boot_id_and_the_signature_covers_it(keypair):
    key_path, pub = keypair
    tracker = engine.Tracker(clock=Clock(), boot="boot-1")
    events = [tracker.event(engine.parse_line(line)) for line in KEEPALIVED_LINES]
    assert all(data["boot"] == "boot-1" for _, data in events)
    tag, data = events[0]
    data["sig"] = engine.Signer(key_path, "web-a")(tag, data)
    assert nginx_ha_event.verify("web-a", tag, data, pub)
    assert not nginx_ha_event.verify("web-a", tag, dict(data, boot="boot-2"), pub)
    unsigned_boot = {k: v for k, v in data.items() if k != "boot"}
    assert not nginx_ha_event.verify("web-a", tag, unsigned_boot, pub)
    # no boot id: the field is omitted, not null
    assert "boot" not in engine.Tracker(clock=Clock(), boot=None).event(engine.parse_line(KEEPALIVED_LINES[0]))[1]


def test_seq_strictly_increases_across_restarts_within_a_boot_even_if_the_clock_steps_back(tmp_path):
    spool = engine.Spool(str(tmp_path / "spool.json"))
    clock = Clock(1_800_000_000.0)
    seen = []
    for restart in range(4):
        saved = spool.load()
        tracker = engine.Tracker(saved["states"], saved["next_seq"], clock=clock, boot="boot-1")
        fwd = engine.Forwarder(FlakySend(), tracker, spool=spool)
        fwd.restore(saved["pending"])
        for line in lines(3):
            seen.append(fwd.put_line(line)[1]["seq"])
        fwd.step()
        clock.now -= 3600  # NTP steps the clock back an hour before the next restart
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


# --------------------------------------------------------------------------------------------
# Damaged spools: property tests
# --------------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
STATE = st.sampled_from(engine.STATES)
EVENT = st.fixed_dictionaries(
    {"seq": st.integers(min_value=0, max_value=2**62), "instance": st.text(max_size=8), "state": STATE},
    optional={"vips": st.lists(st.text(max_size=15), max_size=2), "boot": st.text(max_size=36)},
)
VALID = st.fixed_dictionaries(
    {
        "version": st.just(engine.SPOOL_VERSION),
        "next_seq": st.integers(min_value=0, max_value=2**62),
        "states": st.dictionaries(st.text(max_size=8), STATE, max_size=3),
        "pending": st.lists(st.tuples(st.text(max_size=20), EVENT).map(list), max_size=4),
    }
)


@st.composite
def mutated(draw):
    """A valid spool with one part (top level, a state, an entry, a field of an entry) replaced."""
    doc = draw(VALID)
    where = draw(st.sampled_from(["top", "key", "state", "entry", "tag", "data", "seq", "drop"]))
    value = draw(JSON)
    if where == "top":
        doc = value
    elif where == "key":
        doc[draw(st.sampled_from(["version", "next_seq", "states", "pending"]))] = value
    elif where == "drop":
        del doc[draw(st.sampled_from(["version", "next_seq", "states", "pending"]))]
    elif where == "state":
        doc["states"][draw(st.text(max_size=8))] = value
    elif doc["pending"]:
        i = draw(st.integers(0, len(doc["pending"]) - 1))
        if where == "entry":
            doc["pending"][i] = value
        elif where == "tag":
            doc["pending"][i][0] = value
        elif where == "data":
            doc["pending"][i][1] = value
        else:
            doc["pending"][i][1]["seq"] = value
    return doc


def _check_load(raw, expect_valid):
    """Load ``raw`` as the spool; assert the engine's invariants; return what load gave."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "spool.json")
        with open(path, "wb") as fh:
            fh.write(raw)
        store = engine.Spool(path)
        saved = store.load()  # never raises
        damaged = [n for n in os.listdir(tmp) if n.startswith("spool.json.damaged.")]
        if expect_valid:
            assert damaged == [] and os.path.exists(path)
        else:
            assert saved == {"pending": [], "next_seq": 0, "states": {}}
            assert len(damaged) == 1 and not os.path.exists(path)
            with open(os.path.join(tmp, damaged[0]), "rb") as fh:
                assert fh.read() == raw  # kept for a post-mortem, byte for byte
        # the engine goes on: numbering, delivery and the next save work on what load returned
        tracker = engine.Tracker(saved["states"], saved["next_seq"], clock=Clock(), boot="b")
        send = FlakySend()
        fwd = engine.Forwarder(send, tracker, spool=store)
        fwd.restore(saved["pending"])
        fwd.put_line('INSTANCE "VI_web" MASTER 100')
        while fwd.step():
            pass
        assert len(send.delivered) == len(saved["pending"]) + 1
        with open(path, "rb") as fh:
            assert engine.spool_problem(json.loads(fh.read())) is None
        return saved


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(JSON)
def test_any_json_spool_loads_or_is_quarantined(doc):
    _check_load(json.dumps(doc).encode(), engine.spool_problem(doc) is None)


@SETTINGS
@given(mutated())
def test_a_spool_with_one_part_of_the_wrong_shape_is_quarantined(doc):
    _check_load(json.dumps(doc).encode(), engine.spool_problem(doc) is None)


@SETTINGS
@given(VALID)
def test_a_spool_the_engine_wrote_loads_unchanged(doc):
    saved = _check_load(json.dumps(doc).encode(), True)
    assert saved == {"pending": [tuple(item) for item in doc["pending"]], "next_seq": doc["next_seq"], "states": doc["states"]}


@SETTINGS
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_engine(raw):
    try:
        valid = engine.spool_problem(json.loads(raw.decode("utf-8"))) is None
    except (ValueError, RecursionError):
        valid = False
    _check_load(raw, valid)


@pytest.mark.parametrize(
    "doc, problem",
    [
        ([], "the document is a list, not an object"),
        ({"version": 1, "next_seq": 0, "states": {}, "pending": {}}, "pending is a dict, not a list"),
        ({"version": 1, "next_seq": 0, "states": {}, "pending": ["x"]}, "pending[0] is not a [tag, data] pair"),
        ({"version": 1, "next_seq": 0, "states": {}, "pending": [["t", []]]}, "pending[0] is not a [tag, data] pair"),
        ({"version": 1, "next_seq": 0, "states": {}, "pending": [["t", {"seq": "1"}]]}, "pending[0] has no integer seq"),
        ({"version": 1, "next_seq": "5", "states": {}, "pending": []}, "next_seq is '5', not an integer >= 0"),
        ({"version": 1, "next_seq": True, "states": {}, "pending": []}, "next_seq is True, not an integer >= 0"),
        ({"version": 1, "next_seq": 1.5, "states": {}, "pending": []}, "next_seq is 1.5, not an integer >= 0"),
        ({"version": 1, "next_seq": 0, "states": [], "pending": []}, "states is a list, not an object"),
        ({"version": 1, "next_seq": 0, "states": {"VI": 3}, "pending": []}, "states['VI'] is 3"),
        ({"next_seq": 0, "states": {}, "pending": []}, "version is None, not 1"),
    ],
)
def test_wrong_shapes_are_named_in_the_error_log(tmp_path, caplog, doc, problem):
    path = tmp_path / "spool.json"
    path.write_text(json.dumps(doc))
    assert engine.Spool(str(path)).load() == {"pending": [], "next_seq": 0, "states": {}}
    message = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(message) == 1 and problem in message[0] and "moved to" in message[0], message


def test_deeply_nested_json_is_quarantined(tmp_path):
    path = tmp_path / "spool.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert engine.Spool(str(path)).load()["pending"] == []
    assert len(list(tmp_path.glob("spool.json.damaged.*"))) == 1


def test_two_quarantines_in_the_same_second_keep_both(tmp_path, monkeypatch):
    monkeypatch.setattr(engine.time, "gmtime", lambda *a: time.struct_time((2030, 1, 2, 3, 4, 5, 0, 2, 0)))
    path = tmp_path / "spool.json"
    for text in ("first", "second"):
        path.write_text(text)
        engine.Spool(str(path)).load()
    assert sorted(p.read_text() for p in tmp_path.glob("spool.json.damaged.20300102T030405Z*")) == ["first", "second"]


def test_an_unreadable_spool_is_moved_aside(tmp_path, caplog):
    path = tmp_path / "spool.json"
    path.mkdir()  # reading it fails with EISDIR
    assert engine.Spool(str(path)).load()["next_seq"] == 0
    assert not path.exists() and len(list(tmp_path.glob("spool.json.damaged.*"))) == 1
    assert any("cannot be read" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
