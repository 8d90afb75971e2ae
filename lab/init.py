"""
PID 1 of one lab host: ``python -m lab.init <hostdir> <hostname>``.

Started by :class:`lab.Lab` as
``ip netns exec <ns> unshare --mount --uts --pid --fork --mount-proc --propagation private ...``,
so it runs in the host's own network, mount, PID and UTS namespaces. It

1. sets the hostname;
2. drops its copies of the root namespace's ``/run/netns`` mounts (they would keep other hosts'
   network namespaces alive after those hosts are powered off);
3. bind-mounts the per-host directories of :data:`PRIVATE` (prepared on disk by the lab under
   ``<hostdir>/root``) over the real paths, overlays ``/usr/sbin`` to put a ``runlevel`` that
   prints ``N 2`` there, and hides ``systemctl`` behind ``/dev/null``, so that Salt picks its
   Debian (sysvinit) service module and really runs ``/etc/init.d`` scripts;
4. binds a syslog socket of its own over ``/dev/log`` and appends every message to the host's
   ``/var/log/syslog`` (keepalived logs only to syslog; the machine has no syslog daemon);
5. writes ``<hostdir>/ready``;
6. reaps orphans forever (daemons re-parent to it; unreaped zombies would fool pidfiles and
   ``ps``). On SIGTERM it sends SIGTERM to everything in the host, waits a short grace period,
   SIGKILLs the rest and exits (the kernel then kills whatever is left in the PID namespace).

Only the standard library is used. Output goes to ``<hostdir>/init.log``.
"""

import contextlib
import ctypes
import ctypes.util
import datetime
import errno
import json
import os
import re
import select
import shutil
import signal
import socket
import sys
import time

# (path, kind). kind: "copy" = the root file system's content copied once, on the host's first
# boot, then private and persistent (survives power_off/power_on like a disk); "empty" = starts
# empty, persistent; "boot" = emptied at every boot (what tmpfs gives a real machine).
PRIVATE = (
    ("/etc/nginx", "copy"),
    ("/etc/keepalived", "copy"),
    ("/etc/default", "copy"),
    ("/etc/rc0.d", "copy"),
    ("/etc/rc1.d", "copy"),
    ("/etc/rc2.d", "copy"),
    ("/etc/rc3.d", "copy"),
    ("/etc/rc4.d", "copy"),
    ("/etc/rc5.d", "copy"),
    ("/etc/rc6.d", "copy"),
    ("/etc/rcS.d", "copy"),
    ("/etc/sysctl.d", "copy"),
    # update-rc.d (no runnable systemctl) writes /etc/systemd/system/*.wants links itself
    ("/etc/systemd", "copy"),
    ("/var/www", "copy"),
    ("/etc/salt", "empty"),
    ("/run", "boot"),
    ("/tmp", "boot"),
    ("/var/log", "empty"),
    ("/var/lib/nginx", "empty"),
    ("/var/cache/salt", "empty"),
    ("/var/lib/keepalived", "empty"),
    ("/srv", "empty"),
)
# Directories made inside the private trees at every boot: (path, mode).
BOOT_DIRS = (
    ("/run/lock", 0o1777),
    ("/var/log/nginx", 0o755),
    ("/var/log/salt", 0o755),
)
MODES = {"/tmp": 0o1777, "/run": 0o755}
HOSTS_FILE = "hosts"  # <hostdir>/hosts is bound over /etc/hosts
DEVLOG = "/dev/log"  # the host's syslog socket: PID 1 writes what arrives to /var/log/syslog (= common.DEVLOG)
DEVLOG_SOCKET = "devlog"  # <hostdir>/devlog, bound over /dev/log
SYSLOG_FILE = "/var/log/syslog"
SYSTEMCTL = "/usr/bin/systemctl"
SBIN = "/usr/sbin"
RUNLEVEL_SCRIPT = "#!/bin/sh\n# nginx-ha lab: no systemd here; Debian's default runlevel\necho 'N 2'\n"

MS_BIND = 4096
MNT_DETACH = 2


def private_dir(hostdir, path):
    """Where the per-host copy of ``path`` lives on disk."""
    return os.path.join(hostdir, "root", path.lstrip("/"))


def sbin_dirs(hostdir):
    base = os.path.join(hostdir, "usr-sbin")
    return os.path.join(base, "upper"), os.path.join(base, "work")


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _mount(source, target, fstype=None, flags=0, data=None):
    enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
    if _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target} ({fstype or 'bind'}): {os.strerror(err)}")


def _umount_lazy(target):
    if _libc.umount2(os.fsencode(target), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, f"umount {target}: {os.strerror(err)}")


def _mountpoints():
    points = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = line.split()[4].encode().decode("unicode_escape")
            points.append(point)
    return points


def _empty_dir(path):
    for entry in os.listdir(path):
        full = os.path.join(path, entry)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        else:
            os.unlink(full)


def setup(hostdir, hostname):
    socket.sethostname(hostname)

    # Copies of the root namespace's netns bind mounts hold those namespaces alive.
    for point in sorted((p for p in _mountpoints() if p == "/run/netns" or p.startswith("/run/netns/")),
                        key=len, reverse=True):
        _umount_lazy(point)

    for path, kind in PRIVATE:
        src = private_dir(hostdir, path)
        os.makedirs(src, exist_ok=True)
        if kind == "boot":
            _empty_dir(src)
        os.chmod(src, MODES.get(path, os.stat(src).st_mode & 0o7777))
        _mount(src, path, flags=MS_BIND)
    for path, mode in BOOT_DIRS:
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)

    hosts = os.path.join(hostdir, HOSTS_FILE)
    if os.path.exists(hosts):
        _mount(hosts, "/etc/hosts", flags=MS_BIND)

    # runlevel is a symlink to systemctl: overlay /usr/sbin with an upper layer holding a script
    # of that name, then hide systemctl itself (Salt would otherwise use systemd "offline mode",
    # where service.running silently does nothing).
    upper, work = sbin_dirs(hostdir)
    os.makedirs(upper, exist_ok=True)
    if os.path.exists(work):
        shutil.rmtree(work)
    os.makedirs(work)
    runlevel = os.path.join(upper, "runlevel")
    with open(runlevel, "w") as fh:
        fh.write(RUNLEVEL_SCRIPT)
    os.chmod(runlevel, 0o755)
    _mount("overlay", SBIN, "overlay", 0, f"lowerdir={SBIN},upperdir={upper},workdir={work}")
    _mount("/dev/null", SYSTEMCTL, flags=MS_BIND)

    sock = _syslog_socket(hostdir)
    os.chdir("/")
    return sock


def _syslog_socket(hostdir):
    """A datagram socket bound over /dev/log (None, with a note, if /dev/log cannot be replaced)."""
    target = os.path.realpath(DEVLOG)
    try:
        if not os.path.exists(target):
            # e.g. /dev/log -> /run/systemd/journal/dev-log, which is now in the private /run; never
            # create anything in a shared path (the lab creates a missing /dev/log beforehand)
            if not any(target.startswith(p + "/") for p, _ in PRIVATE):
                raise FileNotFoundError(errno.ENOENT, "missing (not created from inside a host)", target)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "a").close()
        path = os.path.join(hostdir, DEVLOG_SOCKET)
        if os.path.lexists(path):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        os.chmod(path, 0o666)
        _mount(path, target, flags=MS_BIND)
    except OSError as exc:
        print(f"[init] no syslog: {exc}", flush=True)
        return None
    sock.setblocking(False)
    return sock


_BSD_STAMP = re.compile(r"^[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d ")


def _syslog_line(data, now=None):
    """
    One /var/log/syslog line: the reception time in RFC 3339 with microseconds (as rsyslog's
    default on Debian), then the message without its priority and second-resolution BSD stamp:
    ``2026-11-29T00:12:34.123456+00:00 Keepalived_vrrp[42]: (VI_web) Entering MASTER STATE``.
    The benchmark times VRRP transitions by it.
    """
    text = data.decode(errors="replace").rstrip("\n\0")
    if text.startswith("<") and ">" in text[:5]:
        text = text[text.index(">") + 1:]
    text = _BSD_STAMP.sub("", text, count=1)
    stamp = datetime.datetime.fromtimestamp(time.time() if now is None else now, datetime.timezone.utc)
    return f"{stamp.isoformat(timespec='microseconds')} {text}\n"


def _others():
    """PIDs in this PID namespace other than 1."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and p != "1"]


def _reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def shutdown(grace):
    try:
        os.kill(-1, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while _others() and time.monotonic() < deadline:
        _reap()
        time.sleep(0.05)
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 2
    while _others() and time.monotonic() < deadline:
        _reap()
        time.sleep(0.02)


def main(argv):
    hostdir, hostname = argv[1], argv[2]
    grace = float(os.environ.get("LAB_INIT_GRACE", "1.0"))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    try:
        sock = setup(hostdir, hostname)
    except Exception as exc:  # noqa: BLE001 - reported through init.log, the lab shows it
        print(f"[init {hostname}] setup failed: {exc!r}", flush=True)
        return 1
    ready_file = os.path.join(hostdir, "ready")
    with open(ready_file + ".tmp", "w") as fh:
        json.dump({"hostname": hostname, "time": time.time()}, fh)
    os.rename(ready_file + ".tmp", ready_file)
    print(f"[init {hostname}] ready", flush=True)

    # Signals wake the select() through the wakeup fd (no race between a check and the wait).
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    os.set_blocking(wfd, False)
    signal.set_wakeup_fd(wfd)
    syslog = open(SYSLOG_FILE, "a", buffering=1) if sock else None
    fds = [rfd] + ([sock] if sock else [])
    while not stop:
        _reap()
        try:
            ready, _, _ = select.select(fds, [], [], 5)
        except InterruptedError:
            continue
        if rfd in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(rfd, 4096)
        if sock in ready:
            for _ in range(256):
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                try:
                    syslog.write(_syslog_line(data))
                except OSError:
                    pass
    print(f"[init {hostname}] SIGTERM: stopping everything", flush=True)
    shutdown(grace)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
