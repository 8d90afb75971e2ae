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

Standard library only (Python 3.5+). Logs transitions to syslog (daemon facility).
"""

import argparse
import errno
import fcntl
import os
import select
import signal
import socket
import sys
import syslog
import time
from urllib.parse import urlsplit

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


def take_lock(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, ("%d\n" % os.getpid()).encode("ascii"))
    return fd


def parse_args(argv):
    p = argparse.ArgumentParser(description="nginx_ha health watcher (keepalived track_file writer)")
    p.add_argument("--url", required=True, help="health endpoint, http://HOST:PORT/PATH")
    p.add_argument("--state-file", required=True)
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--retry-interval", type=float, default=0.02)
    p.add_argument("--timeout", type=float, default=0.25)
    p.add_argument("--fall", type=int, default=2)
    p.add_argument("--rise", type=int, default=5)
    p.add_argument("--pidfile", default=None, help="nginx's pidfile: watch its master process for an instant crash signal")
    p.add_argument("--suspect-window", type=float, default=0.5,
                   help="seconds of quick probes (single failure counts) after the nginx master exited")
    p.add_argument("--keepalived-pid", type=int, default=0, help="exit when this process is gone (0: never)")
    p.add_argument("--once", action="store_true", help="probe once, print healthy/unhealthy, exit 0/1")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    url = urlsplit(args.url)
    host, port, path = url.hostname or "127.0.0.1", url.port or 80, url.path or "/"
    if args.once:
        ok = probe(host, port, path, args.timeout)
        print("healthy" if ok else "unhealthy")
        return 0 if ok else 1

    lock = take_lock(args.state_file + ".lock")
    if lock is None:
        return 0  # another watcher runs
    syslog.openlog("nginx_ha_watch", syslog.LOG_PID, syslog.LOG_DAEMON)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    parent = args.keepalived_pid
    parent_start = starttime(parent) if parent > 0 else None
    if parent > 0 and parent_start is None:
        return 0  # keepalived is already gone
    health = Health(args.fall, args.rise, healthy=read_state(args.state_file) == HEALTHY)
    state = HEALTHY if health.healthy else UNHEALTHY
    syslog.syslog(syslog.LOG_INFO, "watching %s every %gs (timeout %gs, fall %d, rise %d); starting %s"
                  % (args.url, args.interval, args.timeout, args.fall, args.rise,
                     "healthy" if health.healthy else "unhealthy"))
    master = MasterWatch(args.pidfile)
    suspect_until = 0.0
    checked_parent = time.monotonic()
    next_probe = time.monotonic()
    while True:
        master.arm()
        if master.wait(next_probe - time.monotonic()):
            suspect_until = time.monotonic() + args.suspect_window
        started = time.monotonic()
        suspect = started < suspect_until
        ok = probe(host, port, path, args.timeout)
        if ok:
            flipped = health.update(True)
        elif suspect:
            flipped = health.fail_now()
        else:
            flipped = health.update(False)
        if flipped:
            state = HEALTHY if health.healthy else UNHEALTHY
            if health.healthy:
                why = "%d good probes" % args.rise
            elif suspect:
                why = "its master process exited and it does not answer"
            else:
                why = "%d failed probes (timeout %gs)" % (args.fall, args.timeout)
            syslog.syslog(syslog.LOG_INFO if health.healthy else syslog.LOG_WARNING,
                          "nginx %s: %s" % ("healthy again" if health.healthy else "unhealthy", why))
        if read_state(args.state_file) != state:
            write_state(args.state_file, state)
        now = time.monotonic()
        if parent_start is not None and now - checked_parent >= 0.5:
            checked_parent = now
            if starttime(parent) != parent_start:
                write_state(args.state_file, UNHEALTHY)
                syslog.syslog(syslog.LOG_INFO, "keepalived (pid %d) is gone; exiting" % parent)
                return 0
        delay = args.retry_interval if suspect else health.delay(args.interval, args.retry_interval)
        next_probe = started + delay


if __name__ == "__main__":
    sys.exit(main())
