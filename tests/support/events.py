"""Helpers for the event-bus tests: write keepalived lines into a FIFO, collect events in order."""

import os
import stat
import time


def wait_for_fifo(path, timeout=60):
    """Wait until the engine has created (and opened) its FIFO."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if stat.S_ISFIFO(os.stat(path).st_mode):
                # Opening for writing without blocking succeeds only once a reader has it open.
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the engine did not open {path} within {timeout}s")


def write_fifo(path, *lines):
    """Write lines as keepalived does: open, write, close (non-blocking: never wait on a reader)."""
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, "".join(f"{line}\n" for line in lines).encode())
    finally:
        os.close(fd)
    return time.time()


def collect(event_listener, daemon_id, pattern, after, count, timeout=60, where=None, key=None):
    """
    Events matching ``pattern`` on ``daemon_id`` stamped after ``after`` (and ``where(event)``),
    in the order the daemon fired them (its ``_stamp``); waits until ``count`` are there. With
    ``key(event)``, later events with a key already seen are dropped (redeliveries: at least once).
    """
    deadline = time.monotonic() + timeout
    found = []
    while True:
        found = sorted(
            (e for e in event_listener.get_events([(daemon_id, pattern)], after_time=after) if where is None or where(e)),
            key=lambda e: e.stamp,
        )
        if key is not None:
            seen, unique = set(), []
            for event in found:
                if key(event) not in seen:
                    seen.add(key(event))
                    unique.append(event)
            found = unique
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def runner_returns(event_listener, master_id, after, count, timeout=90, where=None):
    """Returns of nginx_ha_reactor.vrrp_event run by the reactor, oldest first."""

    def match(event):
        return event.data.get("fun") == "runner.nginx_ha_reactor.vrrp_event" and (where is None or where(event.data.get("return") or {}))

    return [e.data["return"] for e in collect(event_listener, master_id, "salt/run/*/ret", after, count, timeout, match)]
