#!/usr/bin/python3
# Managed by Salt (nginx_ha formula). Local edits are overwritten.
"""
nginx_ha metrics writer: this node's VRRP and health state for Prometheus.

For each VRRP instance of the node: keepalived's state, base and effective priority, which VIPs the
kernel holds, the time of the last transition and transition counts; for the node: the health
watcher's and keepalived's check verdicts, maintenance, keepalived up. Written in Prometheus' text
exposition format (0.0.4) as a node_exporter textfile (``textfile``: a temporary file in the same
directory renamed over it, on every change and every ``interval``) and/or served as HTTP
``GET /metrics`` on ``listen`` (default address 127.0.0.1).

Its own process, never on the HA path: keepalived's check (``health_watch.py check``) starts it
when ``metrics.json`` lies beside ``health.json`` and no writer holds ``lock_file``, so keepalived
is its supervisor as it is the watcher's (a writer that died is back within a check interval, on
sysvinit and systemd hosts alike); the check never waits for it, never reads what it writes, and
answers the same whatever happens here. The writer runs at nice 10, bounds every step with a
timeout, and exits when keepalived is gone (the pid it was started by) and on SIGTERM, removing
its textfile and closing its port first: node_exporter never serves a stale picture of a node
whose writer is gone (alert on the metrics' absence or staleness). It also exits when its
settings file changes or disappears; the check starts the next one.

Refreshed every ``interval`` seconds, and at once when something changes: a VIP comes or goes or a
link changes (netlink), the watcher's track file, the maintenance file, keepalived's pid or
keepalived.conf changes; then every second for a few seconds, while keepalived's check confirms
the change. Sources:

* the kernel (``ip -j addr``), at every refresh: a VIP is held when it is on its VRRP interface
  (not the ``lo`` copy of ``local_vip``);
* the watcher's track file (0: healthy) and the maintenance file (a non-zero priority offset), at
  every refresh;
* keepalived's JSON state dump (``keepalived --signum=JSON``: state, priorities, last transition,
  ``stats.become_master`` / ``release_master``) and its data dump (``--signum=DATA``: the
  ``Status`` of the ``nginx_ha_check`` vrrp_script), under the lock the nginx_ha execution module
  uses for the same dumps. keepalived logs a line ("Printing VRRP ... on signal") for every dump,
  so it is asked only at the start, on a change (and while it settles), after a failed answer, and
  otherwise every max(interval, 60) seconds: every VRRP change that moves a VIP, follows a health,
  maintenance, link or configuration change shows at once; one that does not (a BACKUP whose
  vrrp_script alone changes its verdict) within that minute.

Standard library only (Python 3.5+). Errors go to syslog (daemon facility), each once until it
changes. ``render`` mode prints one exposition to stdout (for a look by hand).
"""

import argparse
import errno
import fcntl
import http.server
import json
import os
import select
import signal
import socket
import socketserver
import stat
import struct
import subprocess
import sys
import syslog
import threading
import time

# keepalived's vrrp.h: VRRP_STATE_INIT 0, BACK 1, MAST 2, FAULT 3, (DELETED 97), STOP 98.
KEEPALIVED_STATES = {0: "INIT", 1: "BACKUP", 2: "MASTER", 3: "FAULT", 98: "STOP"}
# every value nginx_ha_vrrp_state takes; STOP: keepalived is not running, UNKNOWN: it did not say
STATES = ("MASTER", "BACKUP", "FAULT", "INIT", "STOP", "UNKNOWN")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

MIN_GAP = 1.0  # seconds: at most one refresh a second, whatever triggers it
SETTLE = 6.0  # seconds of refreshes every MIN_GAP after a change (the check confirms it: fall/rise)
POLL = 0.25  # seconds between the cheap looks at the track file, maintenance file, keepalived pid and config
ASK_EVERY = 60.0  # seconds: keepalived is asked at least this often (or every interval, when longer)
DUMP_TIMEOUT = 2.0  # seconds keepalived has to write a dump
LOCK_TIMEOUT = 3.5  # seconds to wait for the dump lock (a query of the execution module holds it up to 3 s)
COMMAND_TIMEOUT = 5.0  # seconds for ip -j addr, keepalived --signum
MAX_SETTINGS = 1 << 20


# ---------------------------------------------------------------------------------------------
# The exposition format
# ---------------------------------------------------------------------------------------------


def escape_label(value):
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text):
    """HELP text: backslash and newline escaped."""
    return str(text).replace("\\", "\\\\").replace("\n", "\\n")


def number(value):
    """A sample value: integers as such, floats in full precision (repr), NaN/Inf as Prometheus spells them."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class Exposition:
    """Metric families in order, each with HELP, TYPE and its samples; ``text()`` renders them."""

    def __init__(self):
        self.families = []

    def family(self, name, kind, help_text):
        samples = []
        self.families.append((name, kind, help_text, samples))
        return samples

    def text(self):
        lines = []
        for name, kind, help_text, samples in self.families:
            lines.append("# HELP %s %s" % (name, escape_help(help_text)))
            lines.append("# TYPE %s %s" % (name, kind))
            for labels, value in samples:
                if labels:
                    inner = ",".join('%s="%s"' % (key, escape_label(val)) for key, val in labels)
                    lines.append("%s{%s} %s" % (name, inner, number(value)))
                else:
                    lines.append("%s %s" % (name, number(value)))
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# What keepalived, the kernel and the files say
# ---------------------------------------------------------------------------------------------


def parse_keepalived_json(text):
    """keepalived's JSON dump -> ``{instance: {state, base_priority, effective_priority, last_transition, stats}}``.
    Raises ValueError when the text is not (yet) a whole dump."""
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError("keepalived's JSON dump is not a list of instances")
    out = {}
    for entry in data:
        inst = entry.get("data") if isinstance(entry, dict) else None
        if not isinstance(inst, dict) or not isinstance(inst.get("iname"), str):
            raise ValueError("keepalived's JSON dump has an entry without data.iname")
        stats = entry.get("stats")
        out[inst["iname"]] = {
            "state": KEEPALIVED_STATES.get(inst.get("state"), "UNKNOWN"),
            "base_priority": inst.get("base_priority"),
            "effective_priority": inst.get("effective_priority"),
            "last_transition": inst.get("last_transition"),
            "stats": stats if isinstance(stats, dict) else {},
        }
    return out


def parse_script_status(text, script):
    """
    keepalived's data dump -> the ``Status`` of vrrp_script ``script`` (``GOOD``, ``BAD``, ...), or
    None when the complete dump has no such script. keepalived writes the file in place, so a
    reader may see the start of it: ValueError until the answer is in the part written so far.
    """
    marker = "VRRP Script = %s\n" % script
    at = text.find(marker)
    if at < 0:
        header = text.find("------< VRRP Scripts >------")
        if header >= 0 and text.find("------<", header + 1) >= 0:
            return None  # the scripts section is complete and does not list it
        raise ValueError("the data dump has no (complete) VRRP Scripts section yet")
    for line in text[at + len(marker):].split("\n")[:-1]:  # whole lines only
        line = line.strip()
        if line.startswith("VRRP Script = ") or line.startswith("------<"):
            break
        if line.startswith("Status = "):
            return line[len("Status = "):].strip()
    raise ValueError("the data dump has no Status for %s yet" % script)


def parse_ip_addr(text):
    """``ip -j addr`` -> ``{address: [interface, ...]}``."""
    out = {}
    for link in json.loads(text or "[]"):
        for info in link.get("addr_info", []) or []:
            if "local" in info:
                out.setdefault(str(info["local"]), []).append(link.get("ifname"))
    return out


def read_text(path, limit=4096):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def starttime(pid):
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError, ValueError):
        return None


class DumpError(Exception):
    pass


class Keepalived:
    """The running keepalived (from its pidfile) and its state dumps."""

    def __init__(self, cfg, dump_lock):
        self.binary = cfg["binary"]
        self.pidfile = cfg["pidfile"]
        self.json_dump = cfg["json_dump"]
        self.data_dump = cfg["data_dump"]
        self.dump_lock = dump_lock
        self.signums = {}

    def pid(self):
        text = read_text(self.pidfile, 64)
        try:
            pid = int((text or "").split()[0])
        except (ValueError, IndexError):
            return None
        comm = read_text("/proc/%d/comm" % pid, 64)
        return pid if comm is not None and comm.strip() == "keepalived" else None

    def signum(self, name):
        if name not in self.signums:
            try:
                out = subprocess.run([self.binary, "--signum=%s" % name], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT).stdout
                self.signums[name] = int(out.decode("ascii", "replace").strip())
            except (OSError, ValueError, subprocess.SubprocessError) as exc:
                raise DumpError("%s --signum=%s: %s" % (self.binary, name, exc))
        return self.signums[name]

    def dump(self, pid, name, path, parse):
        """Ask keepalived (``pid``) for a dump and parse it, under the execution module's dump lock."""
        fd = os.open(self.dump_lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + LOCK_TIMEOUT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        raise DumpError("%s is held by someone else for %gs" % (self.dump_lock, LOCK_TIMEOUT))
                    time.sleep(0.02)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            try:
                os.kill(pid, self.signum(name))
            except ProcessLookupError:
                raise DumpError("keepalived (pid %d) is gone" % pid)
            deadline = time.monotonic() + DUMP_TIMEOUT
            last = None
            while True:
                text = read_text(path, 16 << 20)
                if text is not None:
                    try:
                        return parse(text)
                    except ValueError as exc:  # still being written
                        last = exc
                if time.monotonic() >= deadline:
                    raise DumpError("keepalived (pid %d) did not write %s within %gs%s" % (
                        pid, path, DUMP_TIMEOUT, ": %s" % last if last else ""))
                time.sleep(0.02)
        finally:
            os.close(fd)  # releases the lock


def ask_keepalived(cfg, keepalived, pid):
    """keepalived's own view (two dumps): ``{vrrp, dump_ok, check, errors}``; nothing when ``pid`` is None."""
    out = {"vrrp": {}, "dump_ok": False, "check": None, "errors": []}
    if pid is None:
        return out
    try:
        out["vrrp"] = keepalived.dump(pid, "JSON", keepalived.json_dump, parse_keepalived_json)
        out["dump_ok"] = True
    except (DumpError, OSError) as exc:
        out["errors"].append("keepalived state: %s" % exc)
    try:
        out["check"] = keepalived.dump(pid, "DATA", keepalived.data_dump, lambda text: parse_script_status(text, cfg["check_script"]))
    except (DumpError, OSError) as exc:
        out["errors"].append("keepalived check status: %s" % exc)
    return out


def collect(cfg, keepalived, asked=None, now=None):
    """
    One look at everything the metrics show: a snapshot dict (``errors`` lists what failed).
    ``asked``: keepalived's last answer (``ask_keepalived``) to reuse; None asks it now.
    """
    snap = {"time": time.time() if now is None else now, "errors": [], "addresses": None}
    pid = keepalived.pid()
    snap["keepalived_up"] = pid is not None
    if asked is None or pid is None:
        asked = ask_keepalived(cfg, keepalived, pid)
    snap.update(vrrp=asked["vrrp"], dump_ok=asked["dump_ok"], check=asked["check"])
    snap["errors"].extend(asked["errors"])
    snap["asked"] = asked
    try:
        res = subprocess.run([cfg["ip"], "-j", "addr"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=COMMAND_TIMEOUT)
        if res.returncode != 0:
            raise ValueError(res.stderr.decode("utf-8", "replace").strip() or "exit %d" % res.returncode)
        snap["addresses"] = parse_ip_addr(res.stdout.decode("utf-8", "replace"))
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        snap["errors"].append("ip -j addr: %s" % exc)
    snap["watcher"] = None
    if cfg["watcher_state_file"]:
        snap["watcher"] = (read_text(cfg["watcher_state_file"], 64) or "").strip() == "0"
    snap["maintenance"] = maintenance_on(cfg["maintenance_file"])
    return snap


def maintenance_on(path):
    try:
        return int((read_text(path, 64) or "0").strip() or 0) != 0
    except ValueError:
        return False


class Transitions:
    """VRRP transitions this writer has seen: a change of keepalived's state or last transition time
    between two looks counts one (a flap between two looks counts once)."""

    def __init__(self, names):
        self.counts = dict((name, 0) for name in names)
        self.seen = {}

    def observe(self, vrrp):
        for name in self.counts:
            inst = vrrp.get(name)
            if inst is None:
                continue  # keepalived did not say: neither a transition nor a new baseline
            key = (inst["state"], inst["last_transition"])
            if name in self.seen and self.seen[name] != key:
                self.counts[name] += 1
            self.seen[name] = key


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def render(cfg, snap, transitions, started):
    """The exposition text for ``snap`` (from ``collect``)."""
    ex = Exposition()
    ex.family("nginx_ha_node_info", "gauge", "The node (minion id) these nginx_ha metrics describe; always 1.").append(
        ((("node", cfg["node"]),), 1))
    ex.family("nginx_ha_keepalived_up", "gauge", "1 when keepalived runs (its pidfile names a live keepalived).").append(
        ((), snap["keepalived_up"]))
    ex.family("nginx_ha_keepalived_dump_success", "gauge",
              "1 when keepalived answered the last state dump (else the VRRP states are UNKNOWN or STOP).").append(
        ((), snap["dump_ok"]))
    state = ex.family("nginx_ha_vrrp_state", "gauge",
                      "VRRP state of the instance as keepalived reports it: 1 for the current state, 0 for the others"
                      " (STOP: keepalived is not running; UNKNOWN: it did not answer or does not know the instance).")
    role = ex.family("nginx_ha_vrrp_role_info", "gauge", "The node's role in the instance in the pillar (MASTER or BACKUP); always 1.")
    prio = ex.family("nginx_ha_vrrp_priority", "gauge",
                     "VRRP priority: kind=base as configured, kind=effective after the check, track files and maintenance.")
    held = ex.family("nginx_ha_vip_held", "gauge", "1 when the kernel has the VIP on the instance's VRRP interface on this node.")
    count = ex.family("nginx_ha_vrrp_transitions_total", "counter",
                      "VRRP transitions of the instance this writer saw (a change of state or of keepalived's last transition"
                      " time between two looks counts one); counts from the writer's start (nginx_ha_metrics_start_time_seconds).")
    become = ex.family("nginx_ha_vrrp_become_master_total", "counter",
                       "Times the instance became MASTER, from keepalived's stats (since keepalived started or reloaded).")
    release = ex.family("nginx_ha_vrrp_release_master_total", "counter",
                        "Times the instance left MASTER, from keepalived's stats (since keepalived started or reloaded).")
    last = ex.family("nginx_ha_vrrp_last_transition_timestamp_seconds", "gauge",
                     "Unix time of the instance's last VRRP transition, as keepalived reports it.")
    for inst in cfg["instances"]:
        name = inst["name"]
        ka = snap["vrrp"].get(name)
        if not snap["keepalived_up"]:
            current = "STOP"
        elif ka is None:
            current = "UNKNOWN"
        else:
            current = ka["state"] if ka["state"] in STATES else "UNKNOWN"
        for value in STATES:
            state.append(((("vrrp_instance", name), ("state", value)), value == current))
        role.append(((("vrrp_instance", name), ("role", inst["role"])), 1))
        if ka is not None:
            for kind in ("base", "effective"):
                if isinstance(ka.get(kind + "_priority"), (int, float)):
                    prio.append(((("vrrp_instance", name), ("kind", kind)), ka[kind + "_priority"]))
        if snap["addresses"] is not None:
            for vip in inst["vips"]:
                on = vip["interface"] in snap["addresses"].get(vip["ip"], [])
                held.append(((("vrrp_instance", name), ("vip", vip["ip"])), on))
        count.append(((("vrrp_instance", name),), transitions.counts.get(name, 0)))
        if ka is not None:
            for family, key in ((become, "become_master"), (release, "release_master")):
                if isinstance(ka["stats"].get(key), int):
                    family.append(((("vrrp_instance", name),), ka["stats"][key]))
            if isinstance(ka.get("last_transition"), (int, float)) and ka["last_transition"] > 0:
                last.append(((("vrrp_instance", name),), ka["last_transition"]))
    health = ex.family("nginx_ha_health_ok", "gauge",
                       "nginx health: source=watcher is the fast watcher's verdict (its track file says 0), source=check"
                       " is keepalived's verdict on its vrrp_script (Status GOOD); 1 healthy, 0 not.")
    if snap.get("watcher") is not None:
        health.append(((("source", "watcher"),), snap["watcher"]))
    if snap.get("check") is not None:
        health.append(((("source", "check"),), snap["check"] == "GOOD"))
    ex.family("nginx_ha_maintenance", "gauge", "1 while the node is in maintenance (nginx_ha.maintenance on), else 0.").append(
        ((), snap["maintenance"]))
    ex.family("nginx_ha_metrics_last_update_timestamp_seconds", "gauge",
              "Unix time these metrics were collected (alert when it lags: the writer is gone or stuck).").append(
        ((), round(snap["time"], 3)))
    ex.family("nginx_ha_metrics_start_time_seconds", "gauge", "Unix time the metrics writer started.").append(((), round(started, 3)))
    return ex.text()


def body_of(text):
    """The exposition without its collection time: what decides whether the textfile changed."""
    return "\n".join(line for line in text.split("\n") if not line.startswith("nginx_ha_metrics_last_update_timestamp_seconds "))


# ---------------------------------------------------------------------------------------------
# Output: the textfile and the port
# ---------------------------------------------------------------------------------------------


def temp_path(path):
    return "%s.%d.tmp" % (path, os.getpid())  # never *.prom: the textfile collector skips it


def write_textfile(path, text):
    """Replace ``path`` by ``text`` atomically (temporary file in the same directory, then rename), 0644.
    A missing directory (a textfile under /run after a reboot) is made, 0755."""
    tmp = temp_path(path)
    try:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fchmod(fh.fileno(), 0o644)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class Handler(http.server.BaseHTTPRequestHandler):
    timeout = 5  # a slow client never holds the port longer
    server_version = "nginx_ha_metrics"
    sys_version = ""

    def answer(self, with_body):
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            code, ctype, body = 200, CONTENT_TYPE, self.server.current()
        elif path == "/":
            code, ctype, body = 200, "text/plain; charset=utf-8", b"nginx_ha metrics: /metrics\n"
        else:
            code, ctype, body = 404, "text/plain; charset=utf-8", b"not found\n"
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        self.answer(True)

    def do_HEAD(self):  # noqa: N802
        self.answer(False)

    def log_message(self, *args):
        pass


class Server(socketserver.TCPServer):
    """One request at a time in its own thread: a scrape never waits for a refresh, nor the reverse."""

    allow_reuse_address = True

    def __init__(self, host, port):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.lock = threading.Lock()
        self.text = b""
        socketserver.TCPServer.__init__(self, (host, port), Handler)

    def publish(self, text):
        with self.lock:
            self.text = text.encode("utf-8")

    def current(self):
        with self.lock:
            return self.text


def start_server(listen):
    server = Server(listen["host"], listen["port"])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="metrics-http", daemon=True)
    thread.start()
    return server


# ---------------------------------------------------------------------------------------------
# Settings and the process
# ---------------------------------------------------------------------------------------------

SETTINGS_KEYS = {
    "node": str, "textfile": (str, type(None)), "listen": (dict, type(None)), "interval": (int, float),
    "lock_file": str, "dump_lock": str, "keepalived": dict, "ip": str, "check_script": str,
    "watcher_state_file": (str, type(None)), "maintenance_file": str, "instances": list,
}


def load_settings(path):
    """The settings Salt wrote (JSON, root-owned, writable by root only): a dict, or raise ValueError saying what is wrong."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ValueError("%s is not a regular file" % path)
            data = json.loads(os.read(fd, MAX_SETTINGS).decode("utf-8"))
        finally:
            os.close(fd)
    except (OSError, ValueError) as exc:
        raise ValueError("cannot read %s: %s" % (path, exc))
    if st.st_uid != 0 or st.st_mode & 0o022:
        raise ValueError("%s must be owned by root and writable by root only" % path)
    if not isinstance(data, dict):
        raise ValueError("%s is not a JSON object" % path)

    def bad(key, value):
        return ValueError("%s: %s is %r" % (path, key, value))

    for key, kind in SETTINGS_KEYS.items():
        value = data.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise bad(key, value)
    for key in ("textfile", "lock_file", "dump_lock", "ip", "watcher_state_file", "maintenance_file"):
        if data[key] is not None and not data[key].startswith("/"):
            raise bad(key, data[key])
    if data["textfile"] is None and data["listen"] is None:
        raise ValueError("%s: neither textfile nor listen is set" % path)
    listen = data["listen"]
    if listen is not None and (not isinstance(listen.get("host"), str) or not isinstance(listen.get("port"), int)
                               or isinstance(listen.get("port"), bool) or not 0 <= listen["port"] <= 65535):
        raise bad("listen", listen)
    if not 0 < data["interval"] <= 86400:
        raise bad("interval", data["interval"])
    for key in ("binary", "pidfile", "config", "json_dump", "data_dump"):
        value = data["keepalived"].get(key)
        if not isinstance(value, str) or not value.startswith("/"):
            raise bad("keepalived:" + key, value)
    for inst in data["instances"]:
        ok = (isinstance(inst, dict) and isinstance(inst.get("name"), str) and isinstance(inst.get("role"), str)
              and isinstance(inst.get("vips"), list)
              and all(isinstance(v, dict) and isinstance(v.get("ip"), str) and isinstance(v.get("interface"), str) for v in inst["vips"]))
        if not ok:
            raise bad("instances", inst)
    return data


def settings_stamp(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def take_lock(path):
    """Hold ``path`` exclusively (one writer per host) and write our pid there; None when another holds it."""
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


RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100


def open_netlink():
    """A socket that turns readable when an address comes or goes or a link changes on this host (None if unavailable)."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
    except (AttributeError, OSError):
        return None
    try:
        sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        sock.setblocking(False)
    except OSError:
        sock.close()
        return None
    return sock


RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR = 16, 17, 20, 21
IFA_ADDRESS, IFA_LOCAL, IFLA_IFNAME = 1, 2, 3


def _attributes(data, offset, end):
    """(type, payload) of the rtattrs in ``data[offset:end]``."""
    while offset + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4 or offset + length > end:
            return
        yield kind & 0x3FFF, data[offset + 4:offset + length]
        offset += (length + 3) & ~3


def netlink_relevant(data, vips, interfaces):
    """
    True when the rtnetlink messages in ``data`` concern us: an address event for one of ``vips``
    (packed addresses) or a link event of one of ``interfaces`` (names). Other hosts' churn (a
    container's veth coming and going) never costs a refresh.
    """
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16 or offset + length > len(data):
            return False
        body, end = offset + 16, offset + length
        if kind in (RTM_NEWADDR, RTM_DELADDR) and end - body >= 8:
            for attr, payload in _attributes(data, body + 8, end):
                if attr in (IFA_ADDRESS, IFA_LOCAL) and payload in vips:
                    return True
        elif kind in (RTM_NEWLINK, RTM_DELLINK) and end - body >= 16:
            for attr, payload in _attributes(data, body + 16, end):
                if attr == IFLA_IFNAME and payload.split(b"\0", 1)[0].decode("utf-8", "replace") in interfaces:
                    return True
        offset += (length + 3) & ~3
    return False


def packed(address):
    """An IP address as the kernel's netlink messages carry it (4 or 16 bytes), None if it is none."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_pton(family, address)
        except (OSError, ValueError):
            continue
    return None


def drain(sock, vips, interfaces):
    """Read what the netlink socket has; True when any of it concerns us (lost events count)."""
    got = False
    for _ in range(1000):
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            break
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:  # events were lost: one of them may have been ours
                got = True
                continue
            break
        if not data:
            break
        got = got or netlink_relevant(data, vips, interfaces)
    return got


class Log:
    """syslog, each distinct message once (a failing source does not flood the log every refresh)."""

    def __init__(self):
        syslog.openlog("nginx_ha_metrics", syslog.LOG_PID, syslog.LOG_DAEMON)
        self.last = {}

    def say(self, priority, message, key=None):
        key = key or message
        if self.last.get(key) != message:
            self.last[key] = message
            syslog.syslog(priority, message)

    def clear(self, key):
        self.last.pop(key, None)


class Stop(Exception):
    pass


def _stop(*_):
    raise Stop()


def run(settings_path, keepalived_pid):
    """The writer: refresh on change and every interval, write/serve, exit with keepalived."""
    try:
        cfg = load_settings(settings_path)
    except ValueError as exc:
        syslog.openlog("nginx_ha_metrics", syslog.LOG_PID, syslog.LOG_DAEMON)
        syslog.syslog(syslog.LOG_ERR, "not starting: %s" % exc)
        return 1
    lock = take_lock(cfg["lock_file"])
    if lock is None:
        return 0  # another writer runs
    parent_start = starttime(keepalived_pid) if keepalived_pid > 0 else None
    if keepalived_pid > 0 and parent_start is None:
        return 0  # keepalived is already gone
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    os.umask(0o022)  # not keepalived's 0177: node_exporter (another user) reads the textfile and its directory
    log = Log()
    try:
        os.nice(10)  # the HA path (keepalived, the watcher) comes first
    except OSError:
        pass
    started = time.time()
    stamp = settings_stamp(settings_path)
    keepalived = Keepalived(cfg["keepalived"], cfg["dump_lock"])
    transitions = Transitions([inst["name"] for inst in cfg["instances"]])
    netlink = open_netlink()
    vips = set(filter(None, (packed(v["ip"]) for inst in cfg["instances"] for v in inst["vips"])))
    interfaces = set(v["interface"] for inst in cfg["instances"] for v in inst["vips"])
    server = None
    written = None  # (body, monotonic time) of the last textfile write
    textfile, listen, interval = cfg["textfile"], cfg["listen"], float(cfg["interval"])
    log.say(syslog.LOG_INFO, "started: %s every %gs" % (
        " and ".join(x for x in ((textfile and "writing %s" % textfile), (listen and "serving http://%s:%d/metrics" % (
            ("[%s]" % listen["host"]) if ":" in listen["host"] else listen["host"], listen["port"]))) if x), interval))

    def cheap():
        return (read_text(cfg["watcher_state_file"], 64) if cfg["watcher_state_file"] else None,
                read_text(cfg["maintenance_file"], 64), keepalived.pid(), settings_stamp(cfg["keepalived"]["config"]))

    # keepalived logs a line for each dump it is asked for: asked at the start, after every change
    # noticed here (then every second while it settles), and otherwise every ASK_EVERY seconds;
    # the kernel's VIPs and the health and maintenance files are read at every refresh.
    ask_every = max(interval, ASK_EVERY)
    try:
        last_cheap = cheap()
        next_full, last_full, settle_until = time.monotonic(), 0.0, 0.0
        asked, asked_at = None, 0.0
        while True:
            now = time.monotonic()
            if now >= next_full:
                if listen is not None and server is None:
                    try:
                        server = start_server(listen)
                        log.clear("listen")
                    except OSError as exc:
                        log.say(syslog.LOG_ERR, "cannot listen on %s:%d: %s" % (listen["host"], listen["port"], exc), "listen")
                try:
                    if asked is not None and (now < settle_until or now - asked_at >= ask_every - 0.5 or not asked["dump_ok"]):
                        asked = None  # ask keepalived again
                    snap = collect(cfg, keepalived, asked)
                    if snap["asked"] is not asked:
                        asked, asked_at = snap["asked"], now
                    transitions.observe(snap["vrrp"])
                    text = render(cfg, snap, transitions, started)
                    for error in snap["errors"]:
                        log.say(syslog.LOG_WARNING, error, error.split(":", 1)[0])
                    for source in ("keepalived state", "keepalived check status", "ip -j addr"):
                        if not any(e.startswith(source + ":") for e in snap["errors"]):
                            log.clear(source)
                    if server is not None:
                        server.publish(text)
                    if textfile:
                        body = body_of(text)
                        if written is None or written[0] != body or now - written[1] >= interval - 0.5:
                            try:
                                write_textfile(textfile, text)
                                written = (body, now)
                                log.clear("textfile")
                            except OSError as exc:
                                log.say(syslog.LOG_ERR, "cannot write %s: %s" % (textfile, exc), "textfile")
                    log.clear("refresh")
                except Stop:
                    raise
                except Exception as exc:  # pylint: disable=broad-except  # never die of one bad look
                    log.say(syslog.LOG_ERR, "refresh failed: %s: %s" % (type(exc).__name__, exc), "refresh")
                last_full = time.monotonic()
                next_full = last_full + (MIN_GAP if last_full < settle_until else interval)
            timeout = max(0.0, min(next_full, time.monotonic() + POLL) - time.monotonic())
            changed = False
            if netlink is not None:
                readable, _, _ = select.select([netlink], [], [], timeout)
                changed = bool(readable) and drain(netlink, vips, interfaces)
            else:
                time.sleep(timeout)
            now_cheap = cheap()
            if now_cheap != last_cheap:
                changed, last_cheap = True, now_cheap
            now = time.monotonic()
            if changed:
                settle_until = now + SETTLE
                next_full = min(next_full, max(now, last_full + MIN_GAP))
            if parent_start is not None and starttime(keepalived_pid) != parent_start:
                log.say(syslog.LOG_INFO, "keepalived (pid %d) is gone; exiting" % keepalived_pid)
                return 0
            if settings_stamp(settings_path) != stamp:
                log.say(syslog.LOG_INFO, "%s changed; exiting (keepalived's check starts the next writer)" % settings_path)
                return 0
    except Stop:
        log.say(syslog.LOG_INFO, "stopped")
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if server is not None:
            server.server_close()
        if textfile:
            for path in (temp_path(textfile), textfile):  # no stale picture of this node stays behind
                try:
                    os.unlink(path)
                except OSError:
                    pass
        os.close(lock)


def parse_args(argv):
    p = argparse.ArgumentParser(description="nginx_ha metrics writer (Prometheus text format: node_exporter textfile and/or HTTP /metrics)")
    p.add_argument("mode", choices=("run", "render"),
                   help="run: the writer (started by keepalived's check); render: print the metrics once")
    p.add_argument("settings", help="the JSON settings file Salt writes (root-owned), metrics.json")
    p.add_argument("--keepalived-pid", type=int, default=0, help="run: exit when this process is gone (0: never)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.mode == "run":
        return run(args.settings, args.keepalived_pid)
    try:
        cfg = load_settings(args.settings)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    snap = collect(cfg, Keepalived(cfg["keepalived"], cfg["dump_lock"]))
    sys.stdout.write(render(cfg, snap, Transitions([i["name"] for i in cfg["instances"]]), time.time()))
    for error in snap["errors"]:
        print(error, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
