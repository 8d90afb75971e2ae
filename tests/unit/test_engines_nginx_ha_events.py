"""The nginx_ha_events engine without Salt: parsing, numbering, ordering, buffering, spool, FIFO."""

import os
import stat
import threading
import time
import types

import pytest

from tests.support import formula

engine = formula.load_module("_engines", "nginx_ha_events")
runner = formula.load_module("_runners", "nginx_ha_reactor")

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


def test_corrupt_spool_starts_empty(tmp_path):
    path = tmp_path / "spool.json"
    path.write_text("{not json")
    assert engine.Spool(str(path)).load() == {"pending": [], "next_seq": 0, "states": {}}


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
    assert engine.canonical("web-a", tag, data) == runner.canonical("web-a", tag, data)
    assert runner.verify_signature("web-a", tag, data, pub)
    assert not runner.verify_signature("web-b", tag, data, pub)  # claimed by another minion
    assert not runner.verify_signature("web-a", "nginx_ha/vrrp/VI_web/master", data, pub)
    assert not runner.verify_signature("web-a", tag, dict(data, priority=1), pub)
    assert not runner.verify_signature("web-a", tag, dict(data, sig="bm90IGEgc2lnbmF0dXJl"), pub)


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


def test_open_fifo_refuses_a_regular_file(tmp_path):
    path = tmp_path / "notify.fifo"
    path.write_text("")
    with pytest.raises(OSError, match="not a FIFO"):
        engine.open_fifo(str(path))


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
