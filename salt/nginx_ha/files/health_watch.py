#!/usr/bin/python3
# Managed by Salt (nginx_ha formula). Local edits are overwritten.
"""
nginx_ha health watcher: keepalived's fast path to a failed nginx.

keepalived's vrrp_script runs at most once a second (whole seconds in keepalived 2.2), and
vrrp_track_process needs the kernel's process-event connector, which only works in the initial
PID and network namespaces (containers and the lab get "Failed to set/clear process event listen
- errno 111"). So this small loop probes nginx's local health endpoint every ``--interval``
seconds (HTTP GET, ``--timeout`` for the whole request) and writes ``0`` (healthy) or ``1``
(unhealthy) to ``--state-file``, a keepalived ``track_file``: keepalived reads it on change
(inotify) and moves the VIP at once.

* ``--fall`` consecutive failed probes make the node unhealthy; after a failed probe the next one
  comes after ``--retry-interval`` (a dead nginx is confirmed in tens of milliseconds, a hung one
  in about ``fall * timeout``).
* With ``--pidfile`` (nginx's), the watcher also holds a pidfd on the nginx master (Linux 5.3+,
  Python 3.9+; otherwise it only polls): the moment the master exits it probes at once and every
  ``--retry-interval`` for a short while, and there a single failed probe is enough (the master
  is gone and nothing answers: nginx is down, no need to confirm). A crash is noticed in
  milliseconds instead of up to an ``--interval``.
* ``--rise`` consecutive good probes make it healthy again.
* The file starts as keepalived's ``init_file`` value (1: a node proves its health before it may
  hold a VIP); the watcher keeps the file's value as its state when it starts, so a restarted
  watcher does not flap a healthy node. It rewrites the file whenever the content differs from
  its state.
* One watcher per host: it holds an exclusive ``flock`` on ``<state file>.lock`` (and writes its
  PID there). keepalived's check script starts it when that lock is free, so keepalived is its
  supervisor: a watcher that died is back within one check interval.
* It exits when the keepalived process given by ``--keepalived-pid`` is gone, writing ``1``
  first (the next keepalived must see nginx healthy again before the node takes a VIP), and on
  SIGTERM without touching the file (the formula restarts it this way after an update).
* The check also keeps the optional metrics writer running (``nginx_ha_metrics.py``, when its
  ``metrics.json`` lies beside the settings file), the same way: started when its lock is free.
  Best effort, after the probe: nothing about the metrics changes the check's answer or delays it.

Standard library only (Python 3.5+). Logs transitions to syslog (daemon facility).
"""

import argparse
import errno
import fcntl
import json
import os
import select
import signal
import socket
import stat
import sys
import syslog
import time

HEALTHY, UNHEALTHY = "0", "1"


class Health:
    """The fall/rise state machine (pure, unit-tested)."""

    def __init__(self, fall, rise, healthy):
        self.fall, self.rise = fall, rise
        self.healthy = healthy
        self.good = 0
        self.bad = 0

    def update(self, ok):
        """Record one probe; return True when the state flips."""
        if ok:
            self.good, self.bad = self.good + 1, 0
            if not self.healthy and self.good >= self.rise:
                self.healthy = True
                return True
        else:
            self.good, self.bad = 0, self.bad + 1
            if self.healthy and self.bad >= self.fall:
                self.healthy = False
                return True
        return False

    def fail_now(self):
        """A failure that needs no confirmation; return True when the state flips."""
        self.good, self.bad = 0, max(self.bad, self.fall)
        if self.healthy:
            self.healthy = False
            return True
        return False

    def delay(self, interval, retry_interval):
        """Seconds until the next probe: quicker while a failure is being confirmed."""
        return retry_interval if self.healthy and self.bad else interval


def probe(host, port, path, timeout):
    """True when ``GET path`` answers HTTP 200 within ``timeout`` seconds in total."""
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return False
    try:
        sock.sendall(("GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: nginx_ha-watch\r\n\r\n" % (path, host)).encode("ascii"))
        data = b""
        while b"\r\n" not in data and len(data) < 4096:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            sock.settimeout(left)
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        parts = data.split(b"\r\n", 1)[0].split()
        return len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1] == b"200"
    except OSError:
        return False
    finally:
        sock.close()


class MasterWatch:
    """A pidfd on nginx's master process (from its pidfile): readable the moment it exits."""

    def __init__(self, pidfile):
        self.pidfile = pidfile
        self.pid = None
        self.fd = None
        self.dead = None  # the master we saw exit: never watched again (its zombie or a stale pidfile)
        self.supported = bool(pidfile) and hasattr(os, "pidfd_open")

    def arm(self):
        """(Re)open the pidfd when the pidfile names another live nginx process."""
        if not self.supported:
            return
        try:
            with open(self.pidfile) as fh:
                pid = int(fh.read().split()[0])
            with open("/proc/%d/comm" % pid) as fh:
                if fh.read().strip() != "nginx":
                    return
        except (OSError, ValueError, IndexError):
            return
        if pid == self.dead or (pid == self.pid and self.fd is not None):
            return
        self.close()
        try:
            self.fd = os.pidfd_open(pid)
            self.pid = pid
        except OSError as exc:
            if exc.errno in (errno.ENOSYS, errno.EPERM):
                self.supported = False

    def wait(self, seconds):
        """Sleep up to ``seconds``; return True (early) when the master exited."""
        if self.fd is None:
            time.sleep(max(0.0, seconds))
            return False
        readable, _, _ = select.select([self.fd], [], [], max(0.0, seconds))
        if readable:
            self.dead = self.pid
            self.close()
            return True
        return False

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
        self.fd = None
        self.pid = None


def read_state(path):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def write_state(path, value):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as fh:
        fh.write(value + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)  # one inotify event, never a half-written file


def starttime(pid):
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError, ValueError):
        return None


def take_lock(path, write_pid=True):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise
    if not write_pid:
        return fd
    os.ftruncate(fd, 0)
    os.write(fd, ("%d\n" % os.getpid()).encode("ascii"))
    return fd


SETTINGS_KEYS = {
    "host": str, "port": int, "request": str, "check_timeout": (int, float),
    "enabled": bool, "interval": (int, float), "retry_interval": (int, float), "timeout": (int, float),
    "fall": int, "rise": int, "state_file": str, "pidfile": (str, type(None)),
}


def load_settings(path):
    """The settings Salt wrote (JSON, root-owned): a dict, or raise ValueError saying what is wrong."""
    try:
        st = os.stat(path)
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ValueError("cannot read %s: %s" % (path, exc))
    if st.st_uid != 0 or st.st_mode & 0o022:
        raise ValueError("%s must be owned by root and writable by root only" % path)
    if not isinstance(data, dict):
        raise ValueError("%s is not a JSON object" % path)
    for key, kind in SETTINGS_KEYS.items():
        value = data.get(key)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ValueError("%s: %s is %r" % (path, key, value))
    if not data["request"].startswith("/") or any(c in data["request"] for c in " \r\n\t\0"):
        raise ValueError("%s: request %r is not a URL path" % (path, data["request"]))
    if not data["state_file"].startswith("/"):
        raise ValueError("%s: state_file %r is not absolute" % (path, data["state_file"]))
    return data


def settings_stamp(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def connect_host(host):
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def spawn_watcher(settings_path, keepalived_pid):
    """Start the watcher in its own session (keepalived's script timeout never kills it)."""
    import subprocess  # only the check needs it

    with open(os.devnull, "r+b") as null:
        subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "watch", settings_path, "--keepalived-pid", str(keepalived_pid)],
            stdin=null, stdout=null, stderr=null, close_fds=True, start_new_session=True,
        )


def check(settings_path):
    """keepalived's vrrp_script: keep the watcher running, then probe once (exit 0 healthy, 1 not)."""
    try:
        cfg = load_settings(settings_path)
    except ValueError as exc:
        syslog.openlog("nginx_ha_check", syslog.LOG_PID, syslog.LOG_DAEMON)
        syslog.syslog(syslog.LOG_ERR, "unhealthy: %s" % exc)
        return 1
    if cfg["enabled"]:
        lock = cfg["state_file"] + ".lock"
        fd = take_lock(lock, write_pid=False)
        if fd is not None:  # free: no watcher runs; start one (it takes the lock itself)
            os.close(fd)
            spawn_watcher(settings_path, os.getppid())
    ok = probe(connect_host(cfg["host"]), cfg["port"], cfg["request"], float(cfg["check_timeout"]))
    try:
        ensure_metrics(settings_path, os.getppid())
    except Exception:  # pylint: disable=broad-except  # the metrics never change the check's answer
        pass
    return 0 if ok else 1


METRICS_SETTINGS, METRICS_PROGRAM = "metrics.json", "nginx_ha_metrics.py"


def _root_only(st):
    """True for the stat of a regular file owned by root and writable by root only."""
    return stat.S_ISREG(st.st_mode) and st.st_uid == 0 and not st.st_mode & 0o022


def ensure_metrics(settings_path, keepalived_pid):
    """Start the metrics writer when ``metrics.json`` lies beside the settings and no writer holds its lock."""
    directory = os.path.dirname(os.path.abspath(settings_path))
    conf = os.path.join(directory, METRICS_SETTINGS)
    program = os.path.join(directory, METRICS_PROGRAM)
    try:
        fd = os.open(conf, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False  # metrics are off
    try:
        data = json.loads(os.read(fd, 1 << 20).decode("utf-8")) if _root_only(os.fstat(fd)) else None
    finally:
        os.close(fd)
    lock = data.get("lock_file") if isinstance(data, dict) else None
    if not isinstance(lock, str) or not lock.startswith("/") or not _root_only(os.lstat(program)):
        return False  # not what the formula writes: never run it
    fd = take_lock(lock, write_pid=False)
    if fd is None:
        return False  # the writer runs
    os.close(fd)
    import subprocess  # only here and in spawn_watcher

    with open(os.devnull, "r+b") as null:
        subprocess.Popen(
            [sys.executable, program, "run", conf, "--keepalived-pid", str(keepalived_pid)],
            stdin=null, stdout=null, stderr=null, close_fds=True, start_new_session=True,
        )
    return True


def watch(settings_path, keepalived_pid, suspect_window=0.5):
    """The fast path: probe every interval, write the track file, follow settings changes."""
    cfg = load_settings(settings_path)
    if not cfg["enabled"]:
        return 0
    lock = take_lock(cfg["state_file"] + ".lock")
    if lock is None:
        return 0  # another watcher runs
    syslog.openlog("nginx_ha_watch", syslog.LOG_PID, syslog.LOG_DAEMON)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    parent = keepalived_pid
    parent_start = starttime(parent) if parent > 0 else None
    if parent > 0 and parent_start is None:
        return 0  # keepalived is already gone
    state_file = cfg["state_file"]
    health = Health(cfg["fall"], cfg["rise"], healthy=read_state(state_file) == HEALTHY)
    state = HEALTHY if health.healthy else UNHEALTHY
    stamp = settings_stamp(settings_path)

    def describe(c):
        return "http://%s:%d%s every %gs (timeout %gs, fall %d, rise %d)" % (
            c["host"], c["port"], c["request"], c["interval"], c["timeout"], c["fall"], c["rise"])

    syslog.syslog(syslog.LOG_INFO, "watching %s; starting %s" % (describe(cfg), "healthy" if health.healthy else "unhealthy"))
    master = MasterWatch(cfg["pidfile"])
    suspect_until = 0.0
    checked_parent = time.monotonic()
    next_probe = time.monotonic()
    while True:
        master.arm()
        if master.wait(next_probe - time.monotonic()):
            suspect_until = time.monotonic() + suspect_window
        now_stamp = settings_stamp(settings_path)
        if now_stamp != stamp:
            stamp = now_stamp
            try:
                new = load_settings(settings_path)
            except ValueError as exc:
                syslog.syslog(syslog.LOG_ERR, "keeping the current settings: %s" % exc)
            else:
                if new["state_file"] != state_file or not new["enabled"] or new["pidfile"] != cfg["pidfile"]:
                    syslog.syslog(syslog.LOG_INFO, "settings changed where a new watcher is needed; exiting")
                    return 0  # keepalived's check starts the next one within a check interval
                cfg = new
                health.fall, health.rise = cfg["fall"], cfg["rise"]
                syslog.syslog(syslog.LOG_INFO, "now watching %s" % describe(cfg))
        started = time.monotonic()
        suspect = started < suspect_until
        ok = probe(connect_host(cfg["host"]), cfg["port"], cfg["request"], float(cfg["timeout"]))
        if ok:
            flipped = health.update(True)
        elif suspect:
            flipped = health.fail_now()
        else:
            flipped = health.update(False)
        if flipped:
            state = HEALTHY if health.healthy else UNHEALTHY
            if health.healthy:
                why = "%d good probes" % cfg["rise"]
            elif suspect:
                why = "its master process exited and it does not answer"
            else:
                why = "%d failed probes (timeout %gs)" % (cfg["fall"], cfg["timeout"])
            syslog.syslog(syslog.LOG_INFO if health.healthy else syslog.LOG_WARNING,
                          "nginx %s: %s" % ("healthy again" if health.healthy else "unhealthy", why))
        if read_state(state_file) != state:
            write_state(state_file, state)
        now = time.monotonic()
        if parent_start is not None and now - checked_parent >= 0.5:
            checked_parent = now
            if starttime(parent) != parent_start:
                write_state(state_file, UNHEALTHY)
                syslog.syslog(syslog.LOG_INFO, "keepalived (pid %d) is gone; exiting" % parent)
                return 0
        delay = cfg["retry_interval"] if suspect else health.delay(cfg["interval"], cfg["retry_interval"])
        next_probe = started + delay


def parse_args(argv):
    p = argparse.ArgumentParser(description="nginx_ha health check and watcher (keepalived vrrp_script and track_file writer)")
    p.add_argument("mode", choices=("check", "watch", "probe"),
                   help="check: keepalived's vrrp_script (starts the watcher, probes once); watch: the watcher loop;"
                        " probe: probe once and print healthy/unhealthy")
    p.add_argument("settings", help="the JSON settings file Salt writes (root-owned)")
    p.add_argument("--keepalived-pid", type=int, default=0, help="watch: exit when this process is gone (0: never)")
    p.add_argument("--suspect-window", type=float, default=0.5,
                   help="watch: seconds of quick probes (single failure counts) after the nginx master exited")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.mode == "check":
        return check(args.settings)
    if args.mode == "watch":
        return watch(args.settings, args.keepalived_pid, args.suspect_window)
    cfg = load_settings(args.settings)
    ok = probe(connect_host(cfg["host"]), cfg["port"], cfg["request"], float(cfg["timeout"]))
    print("healthy" if ok else "unhealthy")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
