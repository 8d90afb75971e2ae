"""nginx_ha_health.settings: the health path switches only once nginx answers the new endpoint."""

import http.server
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from tests.support import formula

mod = formula.load_module("_states", "nginx_ha_health")
PROGRAM = "#!/usr/bin/python3\nprint('watcher v2')\n"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.server.paths.append(self.path)
        self.send_response(200 if self.path.startswith(self.server.serves) else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def nginx():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.paths, srv.serves = [], "/new"
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def opts():
    return {"test": False}


@pytest.fixture
def configure_loader_modules(opts):
    return {mod: {"__salt__": {"cp.get_file_str": lambda url, saltenv=None: PROGRAM}, "__opts__": opts, "__env__": "base"}}


def wanted(tmp_path, port, request="/new?a=1&b=2", **over):
    settings = {
        "host": "127.0.0.1", "port": port, "request": request, "listen": f"127.0.0.1:{port}", "location": request.split("?")[0],
        "check_timeout": 1, "enabled": True, "interval": 0.1, "retry_interval": 0.02, "timeout": 0.25, "fall": 2, "rise": 5,
        "state_file": str(tmp_path / "health"), "pidfile": "/run/nginx.pid",
    }
    settings.update(over)
    return settings


def run(tmp_path, settings, wait=1):
    return mod.settings(str(tmp_path / "health.json"), settings, "salt://nginx_ha/files/health_watch.py", str(tmp_path / "health_watch.py"), wait=wait)


def test_first_switch_writes_both_files_once_nginx_answers(tmp_path, nginx):
    ret = run(tmp_path, wanted(tmp_path, nginx.server_address[1]))
    assert ret["result"] is True, ret
    assert json.loads((tmp_path / "health.json").read_text())["request"] == "/new?a=1&b=2"
    assert "/new?a=1&b=2" in nginx.paths  # the new endpoint was asked, query string and all
    assert oct((tmp_path / "health.json").stat().st_mode & 0o777) == "0o644"
    assert oct((tmp_path / "health_watch.py").stat().st_mode & 0o777) == "0o755"
    again = run(tmp_path, wanted(tmp_path, nginx.server_address[1]))
    assert again["result"] is True and again["changes"] == {}, again


def test_an_endpoint_nginx_does_not_answer_leaves_the_health_path_unchanged(tmp_path, nginx):
    assert run(tmp_path, wanted(tmp_path, nginx.server_address[1]))["result"] is True
    before = (tmp_path / "health.json").read_bytes()
    start = time.monotonic()
    ret = run(tmp_path, wanted(tmp_path, nginx.server_address[1], request="/not-served"), wait=0.5)
    assert ret["result"] is False and "does not answer the new health endpoint" in ret["comment"], ret
    assert 0.4 < time.monotonic() - start < 5
    assert (tmp_path / "health.json").read_bytes() == before


def test_a_port_nothing_listens_on_is_refused(tmp_path, nginx):
    assert run(tmp_path, wanted(tmp_path, nginx.server_address[1]))["result"] is True
    before = (tmp_path / "health.json").read_bytes()
    ret = run(tmp_path, wanted(tmp_path, 9), wait=0.3)  # nginx has not loaded a server there
    assert ret["result"] is False and (tmp_path / "health.json").read_bytes() == before


def test_test_mode_reports_and_writes_nothing(tmp_path, nginx, opts):
    opts["test"] = True
    ret = run(tmp_path, wanted(tmp_path, nginx.server_address[1]))
    assert ret["result"] is None and "settings" in ret["changes"] and "watcher" in ret["changes"], ret
    assert not (tmp_path / "health.json").exists() and not (tmp_path / "health_watch.py").exists()


def test_a_new_track_file_starts_with_the_current_health(tmp_path, nginx):
    assert run(tmp_path, wanted(tmp_path, nginx.server_address[1]))["result"] is True
    (tmp_path / "health").write_text("0\n")
    moved = wanted(tmp_path, nginx.server_address[1], state_file=str(tmp_path / "health2"))
    assert run(tmp_path, moved)["result"] is True
    assert (tmp_path / "health2").read_text() == "0\n"  # no flap to unhealthy at the switch


def test_a_changed_program_stops_the_running_watcher(tmp_path, nginx):
    settings = wanted(tmp_path, nginx.server_address[1])
    assert run(tmp_path, settings)["result"] is True
    # a stand-in watcher: holds <state_file>.lock with its pid written there, as health_watch.py does
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nos.ftruncate(fd, 0)\nos.write(fd, b'%d\\n' % os.getpid())\n"
            "print('locked', flush=True)\ntime.sleep(60)\n"
        ), str(tmp_path / "health.lock"), "health_watch.py"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert mod.watcher_pid(settings["state_file"]) == holder.pid
        (tmp_path / "health_watch.py").write_text("old program\n")
        ret = run(tmp_path, settings)
        assert ret["result"] is True and "watcher_restarted" in ret["changes"], ret
        assert holder.wait(5) != 0  # SIGTERM
        assert (tmp_path / "health_watch.py").read_text() == PROGRAM
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_no_watcher_running_means_no_pid(tmp_path):
    assert mod.watcher_pid(str(tmp_path / "health")) is None
    (tmp_path / "health.lock").write_text(f"{os.getpid()}\n")  # a stale lock file nobody holds
    assert mod.watcher_pid(str(tmp_path / "health")) is None
