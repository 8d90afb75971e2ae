"""
PID 1 of one lab host: ``python -m lab.init <hostdir> <hostname>``.

Started by :class:`lab.Lab` as
``ip netns exec <ns> unshare --mount --uts --pid --fork --mount-proc --propagation private ...``,
so it runs in the host's own network, mount, PID and UTS namespaces. It reads
``<hostdir>/boot.json`` (the host kind, the directories to share, a systemd host's cgroup and
console), then

1. sets the hostname; a systemd host's PID 1 also moves into the cgroup the lab made for it and
   into a new cgroup namespace rooted there, and mounts that view of cgroup2 at /sys/fs/cgroup;
2. drops its copies of the root namespace's ``/run/netns`` mounts (they would keep other hosts'
   network namespaces alive after those hosts are powered off);
3. bind-mounts the per-host directories of :data:`PRIVATE` (prepared on disk by the lab under
   ``<hostdir>/root``) over the real paths, then binds back, at their own path, the machine's
   directories the lab shares that those private paths cover (a checkout in /tmp or /srv, its
   venv, the master's pillar: ``boot.json`` "shares");
4. sysvinit kind: overlays ``/usr/sbin`` to put a ``runlevel`` that prints ``N 2`` there, and
   hides ``systemctl`` behind ``/dev/null``, so that Salt picks its Debian (sysvinit) service
   module and really runs ``/etc/init.d`` scripts; binds a syslog socket of its own over
   ``/dev/log`` and appends every message to the host's ``/var/log/syslog`` (keepalived logs
   only to syslog; the machine has no syslog daemon);
5. writes ``<hostdir>/ready``;
6. sysvinit kind: reaps orphans forever (daemons re-parent to it; unreaped zombies would fool
   pidfiles and ``ps``). On SIGTERM it sends SIGTERM to everything in the host, waits a short
   grace period, SIGKILLs the rest and exits (the kernel then kills whatever is left in the PID
   namespace). systemd kind: makes /sys and /proc/sys read-only (not /proc/sys/net), gives the
   host a /dev of its own with the lab's pseudo-terminal as /dev/console, binds the host's
   /etc/hostname and /etc/machine-id, and execs ``/lib/systemd/systemd`` with
   ``container=nginx-ha-lab`` (see ``lab.systemd``). There, ``python -m lab.init --syslog
   <hostdir>`` is the syslog daemon (a unit).

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
# Also private on systemd hosts: the manager's own state (timers, enablement records, ...).
PRIVATE_SYSTEMD = (
    ("/var/lib/systemd", "empty"),
)


def private_paths(init=None):
    """The private paths of a host of kind ``init`` ("sysvinit", the default, or "systemd")."""
    return PRIVATE + (PRIVATE_SYSTEMD if init == "systemd" else ())


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

BOOT_FILE = "boot.json"  # <hostdir>/boot.json: what the lab tells the host's init (see read_boot)

MS_BIND = 4096
MS_REC = 16384
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


def read_boot(hostdir):
    """
    ``<hostdir>/boot.json`` written by the lab before every boot: ``{"shares": [path, ...]}``, the
    root file system's directories that must stay visible at their own path in the host although
    they lie under one of its private paths (the checkout, its venv, the master's file_roots and
    pillar when cloned under /tmp or /srv). Missing file: nothing to share.
    """
    try:
        with open(os.path.join(hostdir, BOOT_FILE)) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return {}


def under_private(path):
    """The private path (of PRIVATE) strictly containing ``path``, or None."""
    for private, _ in PRIVATE:
        if path.startswith(private + "/"):
            return private
    return None


def _open_shares(paths):
    """O_PATH descriptors of ``paths`` taken before the private mounts hide them: {path: fd}."""
    fds = {}
    for path in paths:
        try:
            fds[path] = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            print(f"[init] cannot share {path}: {exc}", flush=True)
    return fds


def _bind_shares(fds):
    """
    Bind each shared directory (recursively: a venv bound below the checkout comes along) at its
    own path inside the private tree now mounted over it. The mount point is created in the
    host's private copy (its /tmp is emptied at every boot; its /srv is on the host's "disk").
    """
    for path, fd in fds.items():
        try:
            os.makedirs(path, mode=0o755, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", path, flags=MS_BIND | MS_REC)
        finally:
            os.close(fd)


def setup(hostdir, hostname, boot=None):
    """Everything before the host's first process runs; returns the syslog socket (sysvinit kind)."""
    boot = read_boot(hostdir) if boot is None else boot
    systemd = boot.get("init") == "systemd"
    socket.sethostname(hostname)
    if systemd:
        _enter_cgroup(boot["cgroup"])

    # Copies of the root namespace's netns bind mounts hold those namespaces alive.
    for point in sorted((p for p in _mountpoints() if p == "/run/netns" or p.startswith("/run/netns/")),
                        key=len, reverse=True):
        _umount_lazy(point)

    # shallow first: a share below another one comes along with it (the lab drops such nesting)
    shares = _open_shares(sorted(boot.get("shares", ()), key=len))
    for path, kind in private_paths(boot.get("init")):
        src = private_dir(hostdir, path)
        os.makedirs(src, exist_ok=True)
        if kind == "boot":
            _empty_dir(src)
        os.chmod(src, MODES.get(path, os.stat(src).st_mode & 0o7777))
        _mount(src, path, flags=MS_BIND)
    for path, mode in BOOT_DIRS:
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)
    _bind_shares(shares)

    hosts = os.path.join(hostdir, HOSTS_FILE)
    if os.path.exists(hosts):
        _mount(hosts, "/etc/hosts", flags=MS_BIND)

    if systemd:
        _systemd_host(hostdir, hostname, boot)
        os.chdir("/")
        return None

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


# -- the systemd kind ------------------------------------------------------------------------

CLONE_NEWCGROUP = 0x02000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_MOVE = 8192
CGROUP_MOUNT = "/sys/fs/cgroup"
SYSTEMD = "/lib/systemd/systemd"
CONTAINER = "nginx-ha-lab"  # $container for systemd: it then behaves as in a container (nspawn's rules)
# Device nodes of the host's own /dev (a tmpfs, as systemd-nspawn gives a container): bound from the machine's
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")


def _enter_cgroup(cgroup):
    """
    Move this process (the host's PID 1 to be) into its cgroup, made by the lab in the root
    namespace (``cgroup``: its path in the cgroup2 hierarchy, e.g. /nginx-ha-lab/<run>/<host>),
    then into a cgroup namespace rooted there, and mount that namespace's view of cgroup2 at
    /sys/fs/cgroup (``ip netns exec`` gave us a fresh /sys without the machine's cgroup mounts).
    systemd then sees a unified hierarchy whose root is the host's subtree and creates init.scope,
    system.slice ... in it, never at the machine's root.
    """
    _mount("cgroup2", CGROUP_MOUNT, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    try:
        with open(os.path.join(CGROUP_MOUNT, cgroup.lstrip("/"), "cgroup.procs"), "w") as fh:
            fh.write("0")
    finally:
        _umount_lazy(CGROUP_MOUNT)
    if _libc.unshare(CLONE_NEWCGROUP) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWCGROUP): {os.strerror(err)}")
    _mount("cgroup2", CGROUP_MOUNT, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _systemd_host(hostdir, hostname, boot):
    """
    What a container manager does before starting systemd: read-only /sys (its cgroup2 mount stays
    writable) and /proc/sys (except /proc/sys/net, this host's own network namespace: sysctl
    states work, kernel-wide settings stay the machine's), a /dev of its own (systemd and its
    units create nodes, sockets and links there: /dev/log is the host's syslog), the console on
    the lab's pseudo-terminal, and the host's own /etc/hostname and /etc/machine-id.
    """
    _mount(None, "/sys", flags=MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    proc = MS_NOSUID | MS_NODEV | MS_NOEXEC
    _mount("/proc/sys", "/proc/sys", flags=MS_BIND)
    _mount(None, "/proc/sys", flags=MS_REMOUNT | MS_BIND | MS_RDONLY | proc)
    _mount("/proc/sys/net", "/proc/sys/net", flags=MS_BIND)
    _mount(None, "/proc/sys/net", flags=MS_REMOUNT | MS_BIND | proc)
    _private_dev(hostdir, boot.get("console"))
    for name in ("hostname", "machine-id"):
        path = os.path.join(hostdir, name)
        if os.path.exists(path):
            _mount(path, f"/etc/{name}", flags=MS_BIND)


def _private_dev(hostdir, console):
    staging = os.path.join(hostdir, "dev")
    os.makedirs(staging, exist_ok=True)
    _mount("tmpfs", staging, "tmpfs", MS_NOSUID, "mode=755,size=4m")
    for name in DEV_NODES:
        node = os.path.join(staging, name)
        open(node, "w").close()
        _mount(f"/dev/{name}", node, flags=MS_BIND)
    node = os.path.join(staging, "console")
    open(node, "w").close()
    _mount(console or "/dev/null", node, flags=MS_BIND)
    for name in ("pts", "shm", "mqueue"):
        os.mkdir(os.path.join(staging, name))
    _mount("devpts", os.path.join(staging, "pts"), "devpts", MS_NOSUID | MS_NOEXEC,
           "newinstance,ptmxmode=0666,mode=0620,gid=5")
    os.symlink("pts/ptmx", os.path.join(staging, "ptmx"))
    _mount("tmpfs", os.path.join(staging, "shm"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("core", "/proc/kcore")):
        os.symlink(target, os.path.join(staging, name))
    _mount(staging, "/dev", flags=MS_MOVE)


def exec_systemd(hostname):
    """Replace this process (PID 1) with systemd; its manager logs go to the console (the lab's pty)."""
    env = {"container": CONTAINER, "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "LANG": "C.UTF-8"}
    print(f"[init {hostname}] exec {SYSTEMD}", flush=True)
    os.execve(SYSTEMD, [SYSTEMD, "--log-target=console", "--log-level=info", "--show-status=false"], env)


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


def _serve_syslog(sock, stop):
    """Append what arrives on ``sock`` to /var/log/syslog until ``stop``; reap orphans meanwhile."""
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


def _sd_notify(message):
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(path)
        sock.sendall(message.encode())


def syslog_main(hostdir):
    """
    ``python -m lab.init --syslog <hostdir>``: the syslog daemon of a systemd host (unit
    nginx-ha-lab-syslog.service, Type=notify): /dev/log (the host's own /dev) into
    /var/log/syslog, lines as PID 1 of a sysvinit host writes them.
    """
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(DEVLOG)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(DEVLOG)
    os.chmod(DEVLOG, 0o666)
    sock.setblocking(False)
    _sd_notify("READY=1")
    _serve_syslog(sock, stop)
    return 0


def main(argv):
    if argv[1] == "--syslog":
        return syslog_main(argv[2])
    hostdir, hostname = argv[1], argv[2]
    boot = read_boot(hostdir)
    grace = float(os.environ.get("LAB_INIT_GRACE", "1.0"))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    try:
        sock = setup(hostdir, hostname, boot)
    except Exception as exc:  # noqa: BLE001 - reported through init.log, the lab shows it
        print(f"[init {hostname}] setup failed: {exc!r}", flush=True)
        return 1
    ready_file = os.path.join(hostdir, "ready")
    with open(ready_file + ".tmp", "w") as fh:
        json.dump({"hostname": hostname, "time": time.time(), "init": boot.get("init", "sysvinit")}, fh)
    os.rename(ready_file + ".tmp", ready_file)
    print(f"[init {hostname}] ready", flush=True)
    if boot.get("init") == "systemd":
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        try:
            exec_systemd(hostname)
        except OSError as exc:
            print(f"[init {hostname}] cannot exec systemd: {exc!r}", flush=True)
            return 1

    _serve_syslog(sock, stop)
    print(f"[init {hostname}] SIGTERM: stopping everything", flush=True)
    shutdown(grace)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
