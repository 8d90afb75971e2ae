"""
nginx-ha: keepalived's VRRP transitions onto the Salt master's event bus.

keepalived writes one line per transition to its ``notify_fifo`` (global_defs), in order, e.g.
``INSTANCE "VI_web" MASTER 100``. This engine, running inside salt-minion, reads that FIFO and
fires, for every INSTANCE line, an event on the **master's** bus:

* tag ``nginx_ha/vrrp/<instance>/<state lowercase>`` (master, backup, fault, stop)
* data ``{instance, state, previous_state, priority, vips, time, seq, boot, sig}``: ``time`` is
  this host's epoch at read, ``seq`` a per-minion number that only grows (also across engine and
  minion restarts: it continues from the spool and never goes below the epoch in milliseconds;
  gaps are normal), ``boot`` the kernel's boot id (``/proc/sys/kernel/random/boot_id``, read once;
  omitted when unreadable), so a consumer can demand that ``seq`` advance per node boot, ``sig``
  the minion key's signature over ``{id, tag, data}`` (``boot`` included; see below). Tag,
  states, the signed form and the signature are defined once, in ``_utils/nginx_ha_event.py``.

The sender is the minion id Salt authenticated, ``data['id']`` on the master; the payload never
names it.

Delivery: a reader thread only parses and queues (keepalived is never slowed: the FIFO is opened
``O_RDWR`` so it never sees EOF or blocks on open when keepalived restarts); a sender thread
delivers in order over the minion's request channel to the master, waits for the master's ACK and
retries with exponential backoff while the master is down. Unsent events are kept in memory
(bounded; the oldest are dropped first, with a warning) and in a spool file, so a minion restart
loses nothing that was read. Delivery is at least once: ``seq`` lets consumers drop repeats.

Configure it in the minion config (the ``nginx_ha.events`` state writes this; the minion must be
restarted once to start an engine)::

    engines:
      - nginx_ha_events:
          fifo: /run/nginx_ha_vrrp.fifo     # keepalived's notify_fifo
          vips: {VI_web: [203.0.113.100]}    # optional: else nginx_ha.node_config, else []
          spool: /var/cache/salt/minion/nginx_ha_events.spool
          buffer_size: 1000                  # events kept while the master is unreachable
          send_timeout: 5                    # seconds per delivery attempt
          backoff_max: 30                    # longest pause between attempts
          sign: true                         # sign with the minion key (the reactor requires it;
                                             # read when there is an event, until it can be)
          boot_id_file: /proc/sys/kernel/random/boot_id

The FIFO is kept root-only (``0600``, ``0:0``) whoever created it: a FIFO found with another mode
or owner is fixed in place (keepalived may hold it open), anything else at the path (a regular
file, a symlink, a socket) is replaced; each with a log line. A spool that cannot be read or does
not have the shape this engine writes is renamed ``<spool>.damaged.<UTC timestamp>`` (logged at
error level) and the engine goes on with an empty state.

Why the signature: Salt's ``_minion_event`` request also accepts a batch (``events``) whose
entries the master fires with whatever data the minion wrote, so a compromised minion can put
another minion's id into ``data['id']`` of an event it fires that way. The ``nginx_ha_reactor``
runner therefore acts only on events whose ``sig`` verifies with the accepted key of
``data['id']``.
"""

import collections
import errno
import importlib.util
import json
import logging
import os
import random
import re
import select
import stat
import sys
import threading
import time

# The wire format (tag, states, canonical form, signature) is _utils/nginx_ha_event.py, shared with
# the nginx_ha_reactor runner as ordinary Python: on the loader's sys.path, else in the _utils folder
# beside this module's folder (how and why: saltext/nginx_ha/__init__.py, "Shared Python").
if importlib.util.find_spec("nginx_ha_event") is None:
    sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "_utils"))
from nginx_ha_event import BOOT_ID_MAX, INSTANCE_NAME, STATES, Signer, make_tag  # pylint: disable=wrong-import-position

log = logging.getLogger(__name__)

__virtualname__ = "nginx_ha_events"

DEFAULT_FIFO = "/run/nginx_ha_vrrp.fifo"
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
SPOOL_VERSION = 1

# keepalived: INSTANCE "<name>" <STATE> <priority>  (GROUP, VS, RS lines are ignored)
_INSTANCE_LINE = re.compile(r'^INSTANCE\s+(?:"(?P<quoted>[^"]*)"|(?P<bare>\S+))\s+(?P<state>[A-Z_]+)(?:\s+(?P<priority>-?\d+))?\s*$')


def __virtual__():
    return __virtualname__


# ---------------------------------------------------------------------------------------------
# Pure parts (unit-tested): parsing, event building, signing, spool, in-order delivery.
# ---------------------------------------------------------------------------------------------


def parse_line(line):
    """
    Parse one notify_fifo line. Returns ``{instance, state, priority}`` for an INSTANCE transition
    keepalived reports (MASTER, BACKUP, FAULT, STOP), else None (GROUP/VS/RS lines, other states,
    names that cannot be a tag segment, garbage).
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    match = _INSTANCE_LINE.match(line.strip())
    if not match:
        return None
    name = match.group("quoted") if match.group("quoted") is not None else match.group("bare")
    state = match.group("state")
    if state not in STATES or not INSTANCE_NAME.match(name):
        return None
    priority = match.group("priority")
    return {"instance": name, "state": state, "priority": int(priority) if priority is not None else None}


def read_boot_id(path=BOOT_ID_FILE):
    """This boot's id (stripped), or None when it cannot be read (then events carry no ``boot``)."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            value = fh.read(BOOT_ID_MAX).strip()
    except OSError as exc:
        log.warning("nginx_ha_events: cannot read the boot id from %s (%s); events carry no boot field", path, exc)
        return None
    return value or None


class Tracker:
    """Turns parsed lines into events: previous state per instance and the sequence number."""

    def __init__(self, states=None, next_seq=0, clock=time.time, boot=None):
        self.states = dict(states or {})
        self._clock = clock
        self.boot = boot
        # Never reuse a number: continue from the spool, and never below the epoch in ms (so a
        # lost spool cannot restart the count under numbers a consumer has already seen).
        self.next_seq = max(int(next_seq or 0), int(clock() * 1000))

    def event(self, parsed):
        name = parsed["instance"]
        data = {
            "instance": name,
            "state": parsed["state"],
            "previous_state": self.states.get(name),
            "priority": parsed["priority"],
            "vips": [],
            "time": self._clock(),
            "seq": self.next_seq,
        }
        if self.boot:
            data["boot"] = self.boot
        self.next_seq += 1
        self.states[name] = parsed["state"]
        return make_tag(name, parsed["state"]), data


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def spool_problem(doc):
    """
    Why ``doc`` (a parsed spool) is not what :meth:`Spool.save` writes, or None when it is:
    ``{version: 1, next_seq: int >= 0, states: {instance: state}, pending: [[tag, data], ...]}``
    where every ``data`` is a dict with an integer ``seq``.
    """
    if not isinstance(doc, dict):
        return f"the document is a {type(doc).__name__}, not an object"
    if doc.get("version") != SPOOL_VERSION:
        return f"version is {doc.get('version')!r}, not {SPOOL_VERSION}"
    next_seq = doc.get("next_seq")
    if not _is_int(next_seq) or next_seq < 0:
        return f"next_seq is {next_seq!r}, not an integer >= 0"
    states = doc.get("states")
    if not isinstance(states, dict):
        return f"states is a {type(states).__name__}, not an object"
    for name, value in states.items():
        if value not in STATES:
            return f"states[{name!r}] is {value!r}, not one of {', '.join(STATES)}"
    pending = doc.get("pending")
    if not isinstance(pending, list):
        return f"pending is a {type(pending).__name__}, not a list"
    for index, item in enumerate(pending):
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], dict)):
            return f"pending[{index}] is not a [tag, data] pair"
        if not _is_int(item[1].get("seq")):
            return f"pending[{index}] has no integer seq"
    return None


def _empty_spool():
    return {"pending": [], "next_seq": 0, "states": {}}


class Spool:
    """Unsent events, the next sequence number and the last states, in one JSON file (atomic)."""

    def __init__(self, path):
        self.path = path

    def load(self):
        """
        The saved state; never raises. A spool that cannot be read or parsed, or has another
        shape than :meth:`save` writes, is quarantined (renamed ``<spool>.damaged.<timestamp>``)
        and the state is empty.
        """
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return _empty_spool()
        except OSError as exc:
            return self._quarantine(f"cannot be read ({exc})")
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            return self._quarantine(f"is not valid JSON ({exc.__class__.__name__}: {str(exc)[:200]})")
        try:
            problem = spool_problem(doc)
        except Exception as exc:  # pylint: disable=broad-except
            problem = f"cannot be checked ({exc!r})"
        if problem is not None:
            return self._quarantine(f"has the wrong shape: {problem[:300]}")
        pending = [(tag, data) for tag, data in doc["pending"]]
        return {"pending": pending, "next_seq": doc["next_seq"], "states": dict(doc["states"])}

    def _quarantine(self, why):
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = f"{self.path}.damaged.{stamp}"
        counter = 0
        while os.path.lexists(target):
            counter += 1
            target = f"{self.path}.damaged.{stamp}.{counter}"
        try:
            os.rename(self.path, target)
        except OSError as exc:
            log.error("nginx_ha_events: spool %s %s; cannot move it aside (%s); starting empty", self.path, why, exc)
        else:
            log.error("nginx_ha_events: spool %s %s; moved to %s, starting empty", self.path, why, target)
        return _empty_spool()

    def save(self, pending, next_seq, states):
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        tmp = f"{self.path}.tmp"
        doc = {"version": SPOOL_VERSION, "next_seq": next_seq, "states": states, "pending": [list(item) for item in pending]}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


class Forwarder:
    """
    In-order, at-least-once delivery. ``put`` (reader side) never blocks; ``run`` (sender thread)
    moves queued events into the bounded pending buffer, saves the spool, and sends the oldest
    until ``send`` returns without raising (the master's ACK), backing off between failures.

    send(tag, data)
        Deliver one event; raise on failure.
    prepare(tag, data)
        Called once per event before it is spooled (fills ``vips``, signs); returns data.
    """

    def __init__(self, send, tracker, spool=None, prepare=None, buffer_size=1000, backoff_min=0.2, backoff_max=30.0, sleep=None):
        self._send = send
        self._prepare = prepare or (lambda tag, data: data)
        self.tracker = tracker
        self.spool = spool
        self.buffer_size = max(1, int(buffer_size))
        self.backoff_min = float(backoff_min)
        self.backoff_max = float(backoff_max)
        self._incoming = collections.deque()
        self._wake = threading.Condition()
        self.pending = collections.deque()
        self.dropped = 0
        self.delivered = 0
        self.failures = 0
        self.stop_event = threading.Event()
        self._sleep = sleep
        self._last_ack_save = 0.0

    def restore(self, pending):
        for item in pending:
            self.pending.append(tuple(item))
        self._trim()

    def put_line(self, line):
        """Reader side: parse, number and queue one FIFO line; never blocks, never raises."""
        try:
            parsed = parse_line(line)
        except Exception:  # pylint: disable=broad-except
            log.exception("nginx_ha_events: cannot parse %r", line)
            return None
        if parsed is None:
            if line.strip():
                log.debug("nginx_ha_events: ignoring %r", line)
            return None
        with self._wake:
            item = self.tracker.event(parsed)
            self._incoming.append(item)
            if len(self._incoming) > self.buffer_size:
                tag, data = self._incoming.popleft()
                self.dropped += 1
                log.warning("nginx_ha_events: queue full (%d): dropped %s seq %s", self.buffer_size, tag, data.get("seq"))
            self._wake.notify()
        return item

    def _trim(self):
        while len(self.pending) > self.buffer_size:
            tag, data = self.pending.popleft()
            self.dropped += 1
            log.warning("nginx_ha_events: buffer full (%d): dropped the oldest unsent event %s seq %s", self.buffer_size, tag, data.get("seq"))

    def _drain(self):
        with self._wake:
            items = list(self._incoming)
            self._incoming.clear()
            states = dict(self.tracker.states)
            next_seq = self.tracker.next_seq
        if not items:
            return False
        for tag, data in items:
            try:
                data = self._prepare(tag, data)
            except Exception:  # pylint: disable=broad-except
                log.exception("nginx_ha_events: cannot prepare %s", tag)
            self.pending.append((tag, data))
        self._trim()
        self._save(next_seq, states)
        return True

    def _save(self, next_seq=None, states=None):
        if self.spool is None:
            return
        if next_seq is None:
            with self._wake:
                next_seq, states = self.tracker.next_seq, dict(self.tracker.states)
        try:
            self.spool.save(list(self.pending), next_seq, states)
        except OSError as exc:
            log.error("nginx_ha_events: cannot write spool %s: %s", self.spool.path, exc)

    def _wait(self, seconds):
        """Sleep up to ``seconds``, waking early on stop (not on new events: order first)."""
        if self._sleep is not None:
            self._sleep(seconds)
            return
        self.stop_event.wait(seconds)

    def step(self):
        """One round: take what the reader queued, then try the oldest pending event once."""
        self._drain()
        if not self.pending:
            return None
        tag, data = self.pending[0]
        try:
            self._send(tag, data)
        except Exception as exc:  # pylint: disable=broad-except
            self.failures += 1
            level = logging.WARNING if self.failures == 1 or self.failures % 100 == 0 else logging.DEBUG
            log.log(level, "nginx_ha_events: master did not acknowledge %s seq %s (attempt %d): %s; %d unsent",
                    tag, data.get("seq"), self.failures, exc, len(self.pending))
            return False
        self.pending.popleft()
        if self.failures:
            log.info("nginx_ha_events: master reachable again after %d failed attempts", self.failures)
        self.failures = 0
        self.delivered += 1
        # Record the ACK (a lost record only means a repeat, which seq identifies). While catching
        # up on a backlog, at most once a second rather than once per event.
        now = time.monotonic()
        if not self.pending or now - self._last_ack_save >= 1.0:
            self._last_ack_save = now
            self._save()
        return True

    def run(self):
        backoff = self.backoff_min
        while not self.stop_event.is_set():
            with self._wake:
                if not self._incoming and not self.pending:
                    self._wake.wait(0.5)
            result = self.step()
            if result is False:
                self._wait(backoff * random.uniform(0.8, 1.2))
                backoff = min(self.backoff_max, backoff * 2)
            elif result is True:
                backoff = self.backoff_min

    def stop(self):
        self.stop_event.set()
        with self._wake:
            self._wake.notify_all()


# ---------------------------------------------------------------------------------------------
# The FIFO
# ---------------------------------------------------------------------------------------------


FIFO_MODE = 0o600
FIFO_OWNER = (0, 0)


def open_fifo(path):
    """
    Open (creating it when missing) the FIFO keepalived writes, O_RDWR | O_NONBLOCK: holding a
    write end ourselves means no EOF when keepalived closes it, and keepalived's open for writing
    never fails for want of a reader.

    The FIFO is made root-only (0600, 0:0) whoever created it, through the open descriptor (no
    race with the path): a FIFO with another mode or owner is fixed in place, so a keepalived
    that holds it open keeps writing to us; anything else at the path but a directory (a regular
    file, a symlink, a socket, a device) is removed and a FIFO made instead. Each with a log line.
    """
    for _ in range(5):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISFIFO(st.st_mode):
            if stat.S_ISDIR(st.st_mode):
                raise OSError(errno.EISDIR, f"{path} exists and is a directory, not a FIFO")
            log.error("nginx_ha_events: %s exists and is not a FIFO (mode %o); replacing it with one", path, st.st_mode)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            st = None
        if st is None:
            try:
                os.mkfifo(path, FIFO_MODE)
            except FileExistsError:
                continue
        try:
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO):  # became a symlink / socket meanwhile
                continue
            raise
        try:
            fst = os.fstat(fd)
            if not stat.S_ISFIFO(fst.st_mode):  # swapped between lstat and open
                os.close(fd)
                continue
            if stat.S_IMODE(fst.st_mode) != FIFO_MODE or (fst.st_uid, fst.st_gid) != FIFO_OWNER:
                log.warning(
                    "nginx_ha_events: FIFO %s was mode %04o owner %d:%d; making it root-only (%04o %d:%d)",
                    path, stat.S_IMODE(fst.st_mode), fst.st_uid, fst.st_gid, FIFO_MODE, *FIFO_OWNER,
                )
                try:
                    os.fchown(fd, *FIFO_OWNER)
                except PermissionError as exc:
                    log.error("nginx_ha_events: cannot give %s to root: %s", path, exc)
                os.fchmod(fd, FIFO_MODE)
        except BaseException:
            os.close(fd)
            raise
        return fd
    raise OSError(errno.EAGAIN, f"{path} keeps changing; cannot open a FIFO there")


def _same_file(path, fd):
    try:
        st, fst = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


def read_fifo(fd, on_line, stop_event, poll=0.5, path=None):
    """
    Read lines from ``fd`` until ``stop_event``; hand each complete line to ``on_line``. Returns
    early when ``path`` no longer names the FIFO ``fd`` reads (removed or replaced), so the caller
    reopens it: keepalived writes to whatever the path names when it (re)starts.
    """
    buf = b""
    while not stop_event.is_set():
        ready, _, _ = select.select([fd], [], [], poll)
        if not ready:
            if path is not None and not _same_file(path, fd):
                log.warning("nginx_ha_events: %s was removed or replaced; reopening", path)
                return
            continue
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            continue
        except InterruptedError:
            continue
        if not chunk:  # cannot happen while we hold a write end; be safe
            time.sleep(poll)
            continue
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            on_line(raw.decode("utf-8", "replace"))
        if len(buf) > 65536:  # a "line" without newline this long is not keepalived's
            log.warning("nginx_ha_events: discarding %d bytes without a newline", len(buf))
            buf = b""


# ---------------------------------------------------------------------------------------------
# Salt side
# ---------------------------------------------------------------------------------------------


class MasterSender:
    """
    Send ``_minion_event`` requests over a request channel to the master, as ``event.send`` does
    from ``salt-call``; returning means the master answered (ACK). One channel is reused while it
    works; any failure closes it, so the next attempt authenticates and connects afresh.
    """

    def __init__(self, opts, timeout=5.0):
        self.opts = opts
        self.timeout = float(timeout)
        self._channel = None

    def _masters(self):
        masters = self.opts.get("master")
        if self.opts.get("multimaster") and self.opts.get("conf_file"):
            # Hot multi-master starts this engine once per master, with that master alone in its
            # opts: the minion's own list is in its configuration (failover in its order).
            try:
                import salt.config  # pylint: disable=import-outside-toplevel

                listed = salt.config.minion_config(self.opts["conf_file"]).get("master")
                masters = listed if isinstance(listed, list) and listed else masters
            except Exception as exc:  # pylint: disable=broad-except
                log.warning("nginx_ha_events: cannot read the master list from %s: %s", self.opts["conf_file"], exc)
        return masters if isinstance(masters, list) else [masters]

    def _connect(self, master):
        import salt.channel.client  # pylint: disable=import-outside-toplevel
        import salt.minion  # pylint: disable=import-outside-toplevel

        opts = dict(self.opts)
        opts["master"] = master
        opts.pop("master_uri", None)
        opts["retry_dns"] = 0
        opts.update(salt.minion.resolve_dns(opts, fallback=False))
        return salt.channel.client.ReqChannel.factory(opts)

    def close(self):
        channel, self._channel = self._channel, None
        if channel is not None:
            try:
                channel.close()
            except Exception:  # pylint: disable=broad-except
                log.debug("nginx_ha_events: error closing the channel", exc_info=True)

    def __call__(self, tag, data):
        load = {"id": self.opts["id"], "cmd": "_minion_event", "tag": tag, "data": data}
        errors = []
        for master in self._masters() if self._channel is None else [None]:
            try:
                if self._channel is None:
                    self._channel = self._connect(master)
                channel = self._channel
                # The channel's own retries are off: our loop retries, in order, with backoff.
                channel.io_loop.run_sync(lambda: channel.obj.send(load, tries=1, timeout=self.timeout), timeout=self.timeout * 2)
                return True
            except Exception as exc:  # pylint: disable=broad-except
                self.close()
                errors.append(f"{master or 'master'}: {exc!r}")
        raise RuntimeError("; ".join(errors))


class KeySigner:
    """
    Signs with the minion's key once it can be read. A minion started for the first time starts
    its engines before it generates its key: until the key is there, events go unsigned (other
    consumers of the bus still get them; the reactor does not act on them), and the key is tried
    again for every event, so the engine never has to be restarted for it.
    """

    def __init__(self, key_path, minion_id):
        self.key_path = key_path
        self.minion_id = minion_id
        self._signer = None
        self._failed = False

    def __call__(self, tag, data):
        """The signature of ``data``, or None while the key cannot be read."""
        if self._signer is None:
            try:
                self._signer = Signer(self.key_path, self.minion_id)
            except (OSError, ValueError) as exc:
                if not self._failed:
                    log.error("nginx_ha_events: cannot load the minion key to sign events (%s); sending them unsigned until it can be read", exc)
                    self._failed = True
                return None
            if self._failed:
                log.warning("nginx_ha_events: minion key %s loaded: events are signed from now on", self.key_path)
        return self._signer(tag, data)


def _vips_resolver(configured):
    """instance -> VIPs: from the engine config, else this node's nginx_ha.node_config, else []."""
    if isinstance(configured, dict):
        table = {str(k): [str(v) for v in (vals or [])] for k, vals in configured.items()}
        return lambda instance: list(table.get(instance, []))
    cache = {"table": None, "tried": None}

    def resolve(instance):
        now = time.monotonic()
        if cache["table"] is None and (cache["tried"] is None or now - cache["tried"] > 60):
            cache["tried"] = now
            try:
                node = __salt__["nginx_ha.node_config"]()  # pylint: disable=undefined-variable
                cache["table"] = {i["name"]: [v["ip"] for v in i["virtual_ipaddress"]] for i in node["instances"]}
            except Exception as exc:  # pylint: disable=broad-except
                log.debug("nginx_ha_events: no VIPs from nginx_ha.node_config: %s", exc)
        return list((cache["table"] or {}).get(instance, []))

    return resolve


def _hold_instance_lock(path):
    """
    Wait until this is the node's only running engine (an exclusive flock on ``path``, held until
    the process ends). Salt's hot multi-master starts every engine once per master: a second one
    would share the FIFO, the spool and the sequence numbers. It waits and takes over if the
    first one dies.
    """
    import fcntl  # pylint: disable=import-outside-toplevel

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if told:
                log.warning("nginx_ha_events: the other engine of this minion is gone; this one reads the FIFO now")
            return fd
        except BlockingIOError:
            if not told:
                log.info("nginx_ha_events: another engine of this minion reads the FIFO (one per master in multi-master); standing by")
                told = True
            time.sleep(1)


def start(
    fifo=DEFAULT_FIFO,
    vips=None,
    spool=None,
    buffer_size=1000,
    send_timeout=5,
    backoff_min=0.2,
    backoff_max=30,
    sign=True,
    boot_id_file=BOOT_ID_FILE,
):
    """
    Engine entry point (runs until the minion stops). See the module documentation.
    """
    opts = __opts__  # pylint: disable=undefined-variable
    if spool is None:
        spool = os.path.join(opts.get("cachedir", "/var/cache/salt/minion"), "nginx_ha_events.spool")
    _hold_instance_lock(spool + ".lock")  # one engine per node reads the FIFO (hot multi-master starts several)
    store = Spool(spool)
    saved = store.load()
    tracker = Tracker(saved["states"], saved["next_seq"], boot=read_boot_id(boot_id_file))
    vips_of = _vips_resolver(vips)
    signer = KeySigner(os.path.join(opts["pki_dir"], "minion.pem"), opts["id"]) if sign else None

    def prepare(tag, data):
        data = dict(data)
        if not data.get("vips"):
            data["vips"] = vips_of(data["instance"])
        sig = signer(tag, data) if signer is not None else None
        if sig is not None:
            data["sig"] = sig
        return data

    sender = MasterSender(opts, timeout=send_timeout)
    forwarder = Forwarder(sender, tracker, spool=store, prepare=prepare, buffer_size=buffer_size, backoff_min=backoff_min, backoff_max=backoff_max)
    forwarder.restore(saved["pending"])
    if saved["pending"]:
        log.info("nginx_ha_events: %d unsent events from the spool %s", len(saved["pending"]), spool)

    sender_thread = threading.Thread(target=forwarder.run, name="nginx_ha_events-sender", daemon=True)
    sender_thread.start()
    log.info("nginx_ha_events: reading %s", fifo)
    fd = None
    try:
        while not forwarder.stop_event.is_set():
            try:
                fd = open_fifo(fifo)
            except OSError as exc:
                log.error("nginx_ha_events: cannot open the FIFO %s: %s; retrying", fifo, exc)
                forwarder.stop_event.wait(5)
                continue
            try:
                read_fifo(fd, forwarder.put_line, forwarder.stop_event, path=fifo)
            except OSError as exc:
                log.error("nginx_ha_events: reading %s failed: %s; reopening", fifo, exc)
            finally:
                os.close(fd)
                fd = None
    finally:
        forwarder.stop()
        sender_thread.join(timeout=5)
        sender.close()
