"""
The formula's health watcher (salt/nginx_ha/files/health_watch.py): its fall/rise state machine,
its probe against real sockets on 127.0.0.1, the nginx-master pidfd, and the whole process writing
the keepalived track file.
"""

import http.server
import importlib.util
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

from tests.support import formula

WATCHER = formula.FILES / "health_watch.py"


def load():
    spec = importlib.util.spec_from_file_location("nginx_ha_health_watch", WATCHER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hw = load()


class Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802
        self.server.paths.append(self.path)
        self.send_response(self.server.status)
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.status = 200
    srv.paths = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_fall_and_rise():
    h = hw.Health(fall=2, rise=3, healthy=True)
    assert h.update(False) is False and h.healthy
    assert h.delay(0.1, 0.02) == 0.02  # confirming a failure: probe again soon
    assert h.update(True) is False  # a success resets the failure count
    assert h.update(False) is False
    assert h.update(False) is True and not h.healthy
    assert h.delay(0.1, 0.02) == 0.1
    assert [h.update(True) for _ in range(3)] == [False, False, True] and h.healthy


def test_fail_now_needs_no_confirmation():
    h = hw.Health(fall=3, rise=2, healthy=True)
    assert h.fail_now() is True and not h.healthy
    assert h.fail_now() is False


def test_probe(server):
    port = server.server_address[1]
    assert hw.probe("127.0.0.1", port, "/health", 0.5) is True
    server.status = 503
    assert hw.probe("127.0.0.1", port, "/health", 0.5) is False
    assert hw.probe("127.0.0.1", free_port(), "/health", 0.5) is False  # nothing listens: refused


def test_probe_of_a_hung_server_fails_within_the_timeout():
    with socket.socket() as listener:  # accepts (kernel backlog) but never answers, like a SIGSTOPped nginx
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        start = time.monotonic()
        assert hw.probe("127.0.0.1", listener.getsockname()[1], "/", 0.2) is False
        assert 0.15 < time.monotonic() - start < 1.0


def test_master_watch_notices_the_exit_at_once(tmp_path):
    fake = tmp_path / "nginx"  # a process whose name (comm) is nginx
    shutil.copy("/bin/sleep", fake)
    proc = subprocess.Popen([str(fake), "30"])
    try:
        comm = pathlib.Path(f"/proc/{proc.pid}/comm")
        assert wait_until(lambda: comm.read_text().strip() == "nginx", 5)  # exec'd
        pidfile = tmp_path / "nginx.pid"
        pidfile.write_text(f"{proc.pid}\n")
        watch = hw.MasterWatch(str(pidfile))
        if not watch.supported:
            pytest.skip("no pidfd here")
        watch.arm()
        assert watch.pid == proc.pid
        assert watch.wait(0.05) is False
        threading.Timer(0.1, proc.kill).start()
        start = time.monotonic()
        assert watch.wait(5) is True
        assert time.monotonic() - start < 1.0
        proc.wait()
        watch.arm()  # the pidfile still names the dead master: not watched again
        assert watch.fd is None
    finally:
        proc.kill()
        proc.wait()


def settings_file(tmp_path, port, **over):
    import json

    settings = {
        "host": "127.0.0.1", "port": port, "request": "/health", "listen": f"127.0.0.1:{port}", "location": "/health",
        "check_timeout": 1, "enabled": True, "interval": 0.05, "retry_interval": 0.01, "timeout": 0.2,
        "fall": 2, "rise": 3, "state_file": str(tmp_path / "health"), "pidfile": None,
    }
    settings.update(over)
    path = tmp_path / "health.json"
    tmp = tmp_path / "health.json.tmp"
    tmp.write_text(json.dumps(settings))
    tmp.chmod(0o644)
    os.replace(tmp, path)  # as the state writes it: atomically
    return path


def test_watcher_process_writes_the_track_file(server, tmp_path):
    state = tmp_path / "health"
    keeper = subprocess.Popen(["sleep", "30"])  # stands in for keepalived
    port = server.server_address[1]
    settings = settings_file(tmp_path, port)
    cmd = [sys.executable, str(WATCHER), "watch", str(settings), "--keepalived-pid", str(keeper.pid)]
    watcher = subprocess.Popen(cmd)
    try:
        assert wait_until(lambda: state.exists() and state.read_text().strip() == "0", 5), "never healthy"
        # a second watcher sees the lock and leaves
        assert subprocess.run(cmd, timeout=10).returncode == 0
        server.status = 500
        assert wait_until(lambda: state.read_text().strip() == "1", 2), "failure not noticed"
        server.status = 200
        assert wait_until(lambda: state.read_text().strip() == "0", 2), "recovery not noticed"
        state.write_text("1\n")  # someone else wrote the file: the watcher puts its state back
        assert wait_until(lambda: state.read_text().strip() == "0", 2)
        keeper.kill()
        keeper.wait()
        assert watcher.wait(5) == 0  # keepalived gone: the watcher leaves, the node must prove itself again
        assert state.read_text().strip() == "1"
    finally:
        for p in (watcher, keeper):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(5)
        for leftover in tmp_path.glob("health.tmp.*"):
            os.unlink(leftover)


def test_the_watcher_follows_a_settings_change_without_flapping(server, tmp_path):
    """A new endpoint (with an ordinary query string) is picked up live; the track file stays 0."""
    state = tmp_path / "health"
    keeper = subprocess.Popen(["sleep", "30"])
    settings = settings_file(tmp_path, server.server_address[1])
    watcher = subprocess.Popen([sys.executable, str(WATCHER), "watch", str(settings), "--keepalived-pid", str(keeper.pid)])
    seen = []
    try:
        assert wait_until(lambda: state.exists() and state.read_text().strip() == "0", 5)
        settings_file(tmp_path, server.server_address[1], request="/health?a=1&b=2", fall=5)
        stop = time.monotonic() + 3
        while time.monotonic() < stop and "/health?a=1&b=2" not in server.paths[-3:]:
            seen.append(state.read_text().strip())
            time.sleep(0.005)
        assert "/health?a=1&b=2" in server.paths, server.paths[-5:]
        assert set(seen) == {"0"} and watcher.poll() is None  # same process, never unhealthy
    finally:
        for p in (watcher, keeper):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(5)


def test_check_mode_starts_the_watcher_and_answers_for_the_endpoint(server, tmp_path):
    state = tmp_path / "health"
    settings = settings_file(tmp_path, server.server_address[1], request="/health?x=1;y=$(id)>/tmp/owned")
    keeper = subprocess.Popen([sys.executable, str(WATCHER), "check", str(settings)])  # parent: this test
    try:
        assert keeper.wait(10) == 0
        assert server.paths[-1] == "/health?x=1;y=$(id)>/tmp/owned"  # sent as data, never through a shell
        assert not os.path.exists("/tmp/owned")
        assert wait_until(lambda: state.exists() and state.read_text().strip() == "0", 5), "the watcher did not start"
        server.status = 503
        assert subprocess.run([sys.executable, str(WATCHER), "check", str(settings)], timeout=10).returncode == 1
    finally:
        lock = tmp_path / "health.lock"
        pid = int(lock.read_text().split()[0]) if lock.exists() and lock.read_text().strip() else None
        if pid:
            os.kill(pid, signal.SIGTERM)


@pytest.mark.parametrize(
    "damage",
    ["not json", "[]", '{"host": "127.0.0.1"}', "mode"],
)
def test_check_fails_closed_on_damaged_or_insecure_settings(server, tmp_path, damage):
    settings = settings_file(tmp_path, server.server_address[1], enabled=False)
    if damage == "mode":
        settings.chmod(0o666)  # anyone could point the check elsewhere: refused
    else:
        settings.write_text(damage)
    res = subprocess.run([sys.executable, str(WATCHER), "check", str(settings)], timeout=10)
    assert res.returncode == 1
