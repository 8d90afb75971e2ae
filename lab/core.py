"""The lab: hosts made of Linux namespaces on two bridged networks, with real Salt daemons."""

import atexit
import concurrent.futures
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time

from . import cgroup as _cgroup
from . import cleanup as _cleanup
from . import systemd as _systemd
from . import INIT_KINDS, default_init, minion_restart_cmd
from .common import (
    HOST_PATH,
    IFNAMES,
    LAB_ROOT,
    NETS,
    PREFIX,
    LabError,
    check_root_netns_live,
    log,
    netns_names,
    proc_starttime,
    root_links,
    run_dirs,
    sh,
    wait_for,
)
from .init import BOOT_FILE, DEVLOG, PRIVATE, SYSTEMD, private_dir, private_paths, under_private

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASTER_OCTET = 2
CLIENT_OCTET = 50
FIRST_MINION_OCTET = 11
HOSTNAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")

MINION_DEFAULTS = {
    "acceptance_wait_time": 1,
    "acceptance_wait_time_max": 1,
    "random_reauth_delay": 0,
    "random_startup_delay": 0,
    "auth_timeout": 10,
    "auth_tries": 10,
    "master_tries": -1,
    "recon_default": 500,
    "recon_max": 2000,
    "recon_randomize": False,
    # notice a vanished master (power_off/power_on of the master host, a cut management link)
    # within seconds: without it the minion waits on a dead TCP connection for hours
    "tcp_keepalive": True,
    "tcp_keepalive_idle": 2,
    "tcp_keepalive_cnt": 3,
    "tcp_keepalive_intvl": 1,
    "return_retry_timer": 1,
    "return_retry_timer_max": 2,
    "enable_fqdns_grains": False,
    "enable_gpu_grains": False,
    "log_level": "warning",
    "log_level_logfile": "warning",
    "log_file": "/var/log/salt/minion",
}
MASTER_DEFAULTS = {
    "auto_accept": True,
    "tcp_keepalive": True,
    "tcp_keepalive_idle": 2,
    "tcp_keepalive_cnt": 3,
    "tcp_keepalive_intvl": 1,
    "user": "root",
    "worker_threads": 3,
    "log_level": "warning",
    "log_level_logfile": "warning",
    "log_file": "/var/log/salt/master",
}


class CommandError(LabError, subprocess.CalledProcessError):
    """A command run in a host with ``check=True`` exited non-zero."""

    def __init__(self, host, cmd, returncode, stdout, stderr):
        subprocess.CalledProcessError.__init__(self, returncode, cmd, stdout, stderr)
        self.host = host

    def __str__(self):
        cmd = self.cmd if isinstance(self.cmd, str) else shlex.join(self.cmd)
        return (f"[{self.host}] {cmd!r} exited {self.returncode}\n"
                f"--- stdout ---\n{_tail(self.stdout)}\n--- stderr ---\n{_tail(self.stderr)}")


class CommandTimeout(LabError):
    """A command run in a host did not finish within its timeout (it was killed)."""


def _tail(text, lines=40):
    text = text or ""
    parts = text.rstrip("\n").splitlines()
    return "\n".join(parts[-lines:])


def _merge(base, extra):
    """Recursive dict merge (extra wins); returns a new dict."""
    out = dict(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class Host:
    """
    One lab host: its own network, mount, PID and UTS namespaces, with PID 1 = ``lab.init``.

    ``name``, ``role`` ("master", "minion", "client"), ``netns``, ``dir`` (per-host directory on
    disk), ``pid`` (its PID 1 as seen from the root namespace, None while powered off).
    """

    def __init__(self, lab, name, role, octet, nets):
        self.lab = lab
        self.name = name
        self.role = role
        self.octet = octet
        self.nets = tuple(nets)  # subset of ("svc", "mgmt")
        self.netns = f"{lab.prefix}-{name}"
        self.dir = os.path.join(lab.run_dir, "hosts", name)
        self.pid = None
        self._starttime = None  # of PID 1, to never signal a recycled PID
        self._unshare = None  # Popen of `ip netns exec ... unshare ...`
        self._log = None
        self._console = None  # systemd kind: the lab's side of the host's console (a pty) and its reader

    def __repr__(self):
        state = f"pid {self.pid}" if self.pid else "off"
        return f"<Host {self.name} ({self.role}, {self.init}, {state})>"

    @property
    def init(self):
        """The host kind: "sysvinit" (PID 1 is lab.init) or "systemd" (PID 1 is systemd)."""
        return self.lab.init

    # -- addresses and links ------------------------------------------------------------
    def addr(self, net="svc"):
        """The host's IPv4 address on ``net`` ("svc" or "mgmt"), e.g. '203.0.113.11'."""
        if net not in self.nets:
            raise LabError(f"{self.name} has no {net} interface (it has: {', '.join(self.nets)})")
        return str(NETS[net].network_address + self.octet)

    def ifname(self, net="svc"):
        """Interface name inside the host: eth0 (svc) or eth1 (mgmt)."""
        self.addr(net)
        return IFNAMES[net]

    def veth(self, net):
        """Name of the root-side end of the host's ``net`` link (a port of the lab bridge)."""
        return f"{self.lab.prefix}h{self.octet}{net[0]}"

    def mac(self, net):
        return "02:4e:48:%02x:%02x:%02x" % (0 if net == "svc" else 1, int(self.lab.run_id[:2], 16), self.octet)

    @property
    def running(self):
        return self.pid is not None

    def signal_init(self, sig):
        """Send ``sig`` to the host's PID 1 if it is still that process (SIGKILL = power loss)."""
        if self.pid and proc_starttime(self.pid) == self._starttime:
            os.kill(self.pid, sig)

    # -- commands -------------------------------------------------------------------------
    def _argv(self, cmd):
        if not self.running:
            raise LabError(f"{self.name} is powered off")
        body = ["sh", "-c", cmd] if isinstance(cmd, str) else [str(c) for c in cmd]
        if self.init != "systemd":
            return ["nsenter", "-t", str(self.pid), "-n", "-m", "-p", "-u", "--wd=/", "--", *body]
        # a systemd host: also into its cgroup (the root of its cgroup namespace, where `docker exec`
        # puts a command) and that namespace, so that /proc/*/cgroup reads as on a real machine
        procs = os.path.join(_cgroup.host_cgroup(self.lab.run_id, self.name)[0], "cgroup.procs")
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', procs,
                "nsenter", "-t", str(self.pid), "-n", "-m", "-p", "-u", "-C", "--wd=/", "--", *body]

    def env(self, extra=None):
        env = {"PATH": f"{self.lab.venv}/bin:{HOST_PATH}", "HOME": "/root", "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1"}
        env.update(extra or {})
        return env

    def run(self, cmd, check=False, timeout=60, input=None, env=None):
        """
        Run ``cmd`` in the host (a string goes through ``sh -c``; a list is run as is). Returns a
        CompletedProcess with text stdout/stderr. ``check=True`` raises CommandError (a LabError
        and a CalledProcessError) on a non-zero exit; a timeout kills the command and raises
        CommandTimeout. Background daemons must not keep stdout/stderr open (use ``spawn``).
        """
        argv = self._argv(cmd)
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env(env), start_new_session=True)
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise CommandTimeout(f"[{self.name}] {cmd!r} did not finish within {timeout}s (killed)\n"
                                 f"--- stdout ---\n{_tail(out)}\n--- stderr ---\n{_tail(err)}") from None
        result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
        if check and proc.returncode != 0:
            raise CommandError(self.name, cmd, proc.returncode, out, err)
        return result

    def spawn(self, cmd, log_path=None):
        """
        Start ``cmd`` (shell string) in the background in its own session, output to
        ``log_path`` (default /tmp/spawn-<n>.log in the host). Returns its PID inside the host.
        The host's PID 1 reaps it when it exits; it dies with the host.
        """
        log_path = log_path or f"/tmp/spawn-{secrets.token_hex(3)}.log"
        script = f"setsid sh -c {shlex.quote(cmd)} >{shlex.quote(log_path)} 2>&1 </dev/null & echo $!"
        return int(self.run(script, check=True, timeout=30).stdout.strip())

    def read_file(self, path, missing_ok=False):
        """Text of ``path`` as the host sees it (its private mounts included)."""
        proc = self.run(["cat", "--", path], timeout=30)
        if proc.returncode != 0:
            if missing_ok:
                return None
            raise LabError(f"[{self.name}] cannot read {path}: {proc.stderr.strip()}")
        return proc.stdout

    def write_file(self, path, text, mode=0o644):
        """Write ``text`` to ``path`` inside the host (parent directory must exist)."""
        self.run(["sh", "-c", f'cat > "$1" && chmod {mode:o} "$1"', "sh", path], input=text, check=True, timeout=30)

    def log_tail(self, path, lines=40):
        """Last lines of a file in the host, or a note why not (for error messages)."""
        if not self.running:
            return f"({self.name} is powered off)"
        text = self.read_file(path, missing_ok=True)
        return f"({path} missing)" if text is None else _tail(text, lines)


class Lab:
    """
    Hosts on two networks, each with its own network/mount/PID/UTS namespaces::

        with Lab(minions=("web-a", "web-b"), pillar_dir="pillar/") as lab:
            lab.salt("web-a", "test.ping")          # -> True
            lab.client.run("curl -s http://203.0.113.11/")

    Hosts: ``master`` (198.51.100.2, management only, runs salt-master when ``salt``), one host
    per name in ``minions`` (management 198.51.100.11.., service 203.0.113.11.., salt-minion)
    and ``client`` (203.0.113.50 and 198.51.100.50). Inside every host the service interface is
    ``eth0`` and the management interface ``eth1``; there are no default routes.

    ``pillar_dir`` (default ``<repo>/pillar``) and ``file_roots`` (default ``[<repo>/salt]``) are
    the master's pillar_roots/file_roots base; or pass ``pillar_dir`` as a dict {relative path:
    text} to have the lab write the files to ``<run dir>/pillar`` (``lab.pillar_dir`` then names
    it; edit files there and ``saltutil.refresh_pillar``). ``master_extra`` / ``minion_extra``
    are merged (recursively) into the generated /etc/salt/master and /etc/salt/minion.
    ``salt=False`` builds the network and hosts only (about 1 s).

    ``masters`` (default 1: the one host ``master``) asks for several Salt masters in hot
    multi-master: a number (``2``: ``master`` and ``master2``) or the hosts' names (the first is
    ``lab.master``). They are on the management network only (198.51.100.2, .3, ...), share one
    master key pair (generated by the lab, as an operator copies master.pem/master.pub to every
    master), get the same configuration (file_roots, pillar_roots, ``master_extra``: reactor,
    runner_dirs, schedule...), each auto-accepts the minion keys; every minion has
    ``master: [<each master's address>]``. ``lab.salt``/``lab.salt_run``/``lab.wait_minions``/
    ``lab.restart_master`` take ``master=<name>``; ``lab.masters`` lists them; ``power_off``/
    ``power_on`` work on them.

    Any checkout path works: every host has private copies of /tmp, /srv, /run, ... (see
    ``lab.init.PRIVATE``), so the checkout, its venv, ``pillar_dir``, ``file_roots`` and the
    directories in ``share`` (e.g. a ``runner_dirs`` entry of ``master_extra`` outside the
    checkout) are bound, inside each host's own mount namespace, at their own path over the
    private copy when they lie below one of those (a clone in /tmp/x/nginx-ha or /srv/nginx-ha;
    pytest's ``tmp_path`` as ``pillar_dir``). They are the machine's directories, read-write, the
    same files in every host (``lab.shares`` lists what was bound). A path that *is* a private
    path (``pillar_dir="/tmp"``) is refused with a LabError, as the hosts' own copy is there.

    ``init`` is the host kind (default: $NGINX_HA_LAB_INIT, else "sysvinit"): "sysvinit" hosts
    have ``lab.init`` as PID 1, no systemctl and ``salt-minion -d``; "systemd" hosts boot Debian's
    systemd as PID 1 in a cgroup subtree of the lab's own (``<cgroup2>/nginx-ha-lab/<id>/<host>``)
    and cgroup namespace, with salt-master / salt-minion as enabled units, keepalived and nginx
    from Debian's units (installed, disabled, stopped until Salt's ``systemd_service`` enables and
    starts them), ``lab.minion_restart_cmd`` through the unit, systemd's console in
    ``<host.dir>/console.log`` (see ``lab.systemd``).

    Everything is created under a run id: netns ``nhl<id>-<host>``, bridges ``nhl<id>m`` and
    ``nhl<id>s``, directory /var/lib/nginx-ha-lab/<id>, the systemd hosts' cgroups. It is all
    removed on exit, on an exception, on Ctrl-C and on SIGTERM; leftovers of crashed runs are
    removed on start (and by ``python -m lab.cleanup``).
    """

    def __init__(self, minions=("web-a", "web-b"), pillar_dir=None, file_roots=None, master_extra=None,
                 minion_extra=None, salt=True, client=True, venv=None, salt_timeout=60, share=(), init=None,
                 masters=1):
        minions = list(minions)
        self.master_names = _master_names(masters)
        for name in minions:
            if not HOSTNAME_RE.match(name) or name in ("master", "client", *self.master_names):
                raise LabError(f"bad minion name {name!r}: lowercase letters, digits, '-', max 20; not master/client")
        if len(set(minions)) != len(minions):
            raise LabError("minion names must be unique")
        if len(minions) > CLIENT_OCTET - FIRST_MINION_OCTET:
            raise LabError("too many minions")
        self.minion_names = minions
        self._pillar_files = None
        if isinstance(pillar_dir, dict):  # {relative path: text}, written to <run dir>/pillar on start
            self._pillar_files = dict(pillar_dir)
            self.pillar_dir = None
        else:
            self.pillar_dir = os.path.abspath(pillar_dir or os.path.join(REPO, "pillar"))
        self.file_roots = [os.path.abspath(p) for p in (file_roots or [os.path.join(REPO, "salt")])]
        self.master_extra = master_extra or {}
        self.minion_extra = minion_extra or {}
        self.use_salt = salt
        self.with_client = client
        self.venv = os.path.abspath(venv or (os.path.join(REPO, ".venv") if os.path.isdir(os.path.join(REPO, ".venv"))
                                            else sys.prefix))
        self.salt_timeout = salt_timeout
        self.share = [os.path.abspath(p) for p in share]
        self.init = init or default_init()
        if self.init not in INIT_KINDS:
            raise LabError(f"init={self.init!r}: expected one of {', '.join(INIT_KINDS)}")
        self.shares = []  # set by start(): what every host sees at its own path (see _shares)
        self.run_id = None
        self.prefix = None
        self.run_dir = None
        self.hosts = {}
        self.bridges = {}
        self.timings = {}
        self._closed = False
        self._started = False
        self._old_handlers = {}
        self._mutex = threading.RLock()

    # -- context manager ----------------------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- accessors ----------------------------------------------------------------------
    def host(self, name):
        try:
            return self.hosts[name]
        except KeyError:
            raise LabError(f"no host {name!r} (hosts: {', '.join(self.hosts)})") from None

    @property
    def master(self):
        """The (first) master host."""
        return self.hosts[self.master_names[0]]

    @property
    def masters(self):
        """Every master host (one unless ``masters=`` asked for more)."""
        return [self.hosts[n] for n in self.master_names]

    def _master_host(self, master):
        """The master host named ``master`` (default: the first)."""
        host = self.master if master is None else self.host(master)
        if host.role != "master":
            raise LabError(f"{host.name} is not a master (masters: {', '.join(self.master_names)})")
        return host

    @property
    def client(self):
        return self.host("client")

    @property
    def minions(self):
        return [self.hosts[n] for n in self.minion_names]

    # -- start ----------------------------------------------------------------------------
    def _preflight(self):
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, bridges, mounts)")
        for tool in ("ip", "unshare", "nsenter"):
            if not shutil.which(tool):
                raise LabError(f"{tool} not found")
        if not os.access(os.path.join(self.venv, "bin", "python"), os.X_OK):
            raise LabError(f"no python in venv {self.venv}")
        if self.use_salt:
            for tool in ("salt-master", "salt-minion", "salt"):
                if not os.access(os.path.join(self.venv, "bin", tool), os.X_OK):
                    raise LabError(f"{tool} not in {self.venv}/bin (run scripts/setup.sh)")
            if self.pillar_dir and not os.path.isdir(self.pillar_dir):
                raise LabError(f"pillar_dir {self.pillar_dir} does not exist")
        self.shares = self._shares()
        if self.init == "systemd":
            if not os.access(SYSTEMD, os.X_OK):
                raise LabError(f"init='systemd' needs {SYSTEMD} (Debian's systemd package)")
            root = _cgroup.cgroup2_root()
            if root is None:
                raise LabError("init='systemd' needs a cgroup2 hierarchy mounted on this machine "
                               "(unified /sys/fs/cgroup, or /sys/fs/cgroup/unified in hybrid mode)")
            if not os.access(root, os.W_OK):
                raise LabError(f"init='systemd' needs to make cgroups under {root}, which is read-only here")
        if os.path.isdir("/run/systemd/system"):
            log("warning: this machine runs systemd; hosts still get an empty private /run")
        check_root_netns_live()

    def _shares(self):
        """
        The directories the hosts must see at their own path although one of the hosts' private
        paths (/tmp, /srv, ...) covers them: the checkout (lab.init runs from it), the venv, the
        master's pillar_dir and file_roots, and ``share``. Each is given by its absolute path
        and its real path; nested ones are dropped (the outer one is bound recursively). A path
        that *is* a private path (pillar_dir="/tmp") is refused: the hosts' own copy is there.
        """
        wanted = [REPO, self.venv, *self.file_roots, *self.share]
        if self.pillar_dir:
            wanted.append(self.pillar_dir)
        paths = set()
        for path in wanted:
            for form in (os.path.abspath(path), os.path.realpath(path)):
                for private, _ in PRIVATE:
                    if form == private:
                        raise LabError(f"{path} is {private}, which every lab host has its own private copy "
                                       f"of: the Salt master would not see it (use a directory below it or "
                                       f"elsewhere, or pass pillar_dir as a dict of files)")
                if under_private(form):
                    if not os.path.isdir(form):
                        raise LabError(f"{path} is under {under_private(form)} (private in every lab host) and is "
                                       f"not a directory the lab could share with the hosts")
                    paths.add(form)
        kept = []
        for path in sorted(paths, key=len):
            if not any(path.startswith(k + "/") for k in kept):
                kept.append(path)
        return kept

    def start(self):
        if self._started:
            raise LabError("a Lab can be started once")
        self._started = True
        t0 = time.monotonic()
        self._preflight()
        _cleanup.cleanup(say=log)
        self._install_signal_handlers()
        atexit.register(self.close)
        try:
            with _cleanup.lock():
                self._create_run_dir()
                _cleanup.ensure_mountpoints([p for p, _ in private_paths(self.init)], files=[DEVLOG])
            if self._pillar_files is not None:
                self.pillar_dir = os.path.join(self.run_dir, "pillar")
                for rel, text in self._pillar_files.items():
                    path = os.path.join(self.pillar_dir, rel)
                    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                    with open(path, "w") as fh:
                        fh.write(text)
            self._make_hosts()
            log(f"run {self.run_id}: {', '.join(self.hosts)} in {self.run_dir}")
            self._make_bridges()
            for host in self.hosts.values():
                self._prepare_dirs(host)
                self._plug(host)
            if self.use_salt:  # before the boot: a systemd host starts its Salt daemon by itself
                self._write_salt_config()
            for host in self.hosts.values():
                self._boot(host)
            for host in self.hosts.values():
                self._wait_ready(host)
            self._wait_booted(list(self.hosts.values()))
            self.timings["hosts"] = time.monotonic() - t0
            log(f"{len(self.hosts)} {self.init} hosts up in {self.timings['hosts']:.1f}s")
            if self.use_salt:
                t1 = time.monotonic()
                self._start_salt(list(self.hosts.values()))
                self.wait_minions()
                self.timings["salt"] = time.monotonic() - t1
                log(f"salt master + {len(self.minions)} minion(s) answer test.ping ({self.timings['salt']:.1f}s)")
            self.timings["start"] = time.monotonic() - t0
        except BaseException:
            self.close()
            raise
        return self

    def _create_run_dir(self):
        os.makedirs(LAB_ROOT, mode=0o755, exist_ok=True)
        os.chmod(LAB_ROOT, 0o755)
        taken = set(run_dirs()) | {n[len(PREFIX):len(PREFIX) + 4] for n in netns_names() + root_links()
                                   if n.startswith(PREFIX)}
        for _ in range(100):
            rid = secrets.token_hex(2)
            if rid not in taken:
                break
        else:
            raise LabError("no free run id")
        path = os.path.join(LAB_ROOT, rid)
        os.mkdir(path, 0o755)
        with open(os.path.join(path, "owner.json"), "w") as fh:
            json.dump({"pid": os.getpid(), "starttime": proc_starttime(os.getpid()), "time": time.time(),
                       "argv": sys.argv}, fh)
        self.run_id, self.prefix, self.run_dir = rid, f"{PREFIX}{rid}", path

    def _make_hosts(self):
        specs = [(n, "master", MASTER_OCTET + i, ("mgmt",)) for i, n in enumerate(self.master_names)]
        specs += [(n, "minion", FIRST_MINION_OCTET + i, ("svc", "mgmt")) for i, n in enumerate(self.minion_names)]
        if self.with_client:
            specs.append(("client", "client", CLIENT_OCTET, ("svc", "mgmt")))
        for name, role, octet, nets in specs:
            self.hosts[name] = Host(self, name, role, octet, nets)

    def _make_bridges(self):
        for net in ("mgmt", "svc"):
            name = f"{self.prefix}{net[0]}"
            sh(["ip", "link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0",
                "mcast_snooping", "0", "nf_call_iptables", "0", "nf_call_ip6tables", "0", "nf_call_arptables", "0"])
            self._root_link_quiet(name)
            sh(["ip", "link", "set", name, "arp", "off", "up"])
            self.bridges[net] = name

    @staticmethod
    def _root_link_quiet(name):
        """No IPv6 (no link-local address, no ND/MLD) on a root-side lab link."""
        path = f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6"
        if os.path.exists(path):
            with open(path, "w") as fh:
                fh.write("1")
        sh(["ip", "link", "set", name, "addrgenmode", "none"], check=False)

    def _hosts_file(self):
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", ""]
        for host in self.hosts.values():
            if "svc" in host.nets:
                lines.append(f"{host.addr('svc')}\t{host.name}")
                lines.append(f"{host.addr('mgmt')}\t{host.name}-mgmt")
            else:
                lines.append(f"{host.addr('mgmt')}\t{host.name}" + ("\tsalt" if host is self.master else ""))
        return "\n".join(lines) + "\n"

    def _prepare_dirs(self, host):
        """Per-host directories on disk (first boot only: what exists survives power cycles)."""
        os.makedirs(host.dir, mode=0o755, exist_ok=True)
        for path, kind in private_paths(self.init):
            dst = private_dir(host.dir, path)
            if os.path.exists(dst):
                continue
            os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
            if kind == "copy" and os.path.isdir(path):
                shutil.copytree(path, dst, symlinks=True)
                shutil.copystat(path, dst)
            else:
                os.makedirs(dst, mode=0o755)
            if self.init == "systemd" and path == "/etc/systemd":
                _systemd.prepare_etc(dst, host.role, self.venv, REPO, host.dir, salt=self.use_salt)
        with open(os.path.join(host.dir, "hosts"), "w") as fh:
            fh.write(self._hosts_file())
        if self.init == "systemd":
            with open(os.path.join(host.dir, "hostname"), "w") as fh:
                fh.write(f"{host.name}\n")
            if not os.path.exists(os.path.join(host.dir, "machine-id")):
                with open(os.path.join(host.dir, "machine-id"), "w") as fh:
                    fh.write(secrets.token_hex(16) + "\n")

    def _plug(self, host):
        """Create the host's netns and its links (veth: root side on the bridge, eth0/eth1 inside)."""
        sh(["ip", "netns", "add", host.netns])
        sh(["ip", "-n", host.netns, "link", "set", "lo", "up"])
        for net in host.nets:
            outer, inner = host.veth(net), IFNAMES[net]
            sh(["ip", "link", "add", outer, "type", "veth", "peer", "name", inner, "address", host.mac(net),
                "netns", host.netns])
            self._root_link_quiet(outer)
            sh(["ip", "link", "set", outer, "arp", "off", "master", self.bridges[net], "up"])
            sh(["ip", "-n", host.netns, "addr", "add", f"{host.addr(net)}/{NETS[net].prefixlen}", "dev", inner])
            sh(["ip", "-n", host.netns, "link", "set", inner, "up"])

    def _boot(self, host):
        """Start the host's PID 1 (lab.init) in fresh mount/PID/UTS namespaces inside its netns."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(host.dir, "ready"))
        boot = {"shares": self.shares, "init": self.init}
        if self.init == "systemd":
            _cgroup.remove(_cgroup.host_cgroup(self.run_id, host.name)[0])  # a previous boot's, if any
            boot["cgroup"] = _cgroup.make(self.run_id, host.name)
            boot["console"] = self._open_console(host)
        with open(os.path.join(host.dir, BOOT_FILE), "w") as fh:
            json.dump(boot, fh)
        host._log = open(os.path.join(host.dir, "init.log"), "ab")
        argv = []
        if _main_thread() and shutil.which("setpriv"):
            # if this process is SIGKILLed, unshare gets SIGKILL and (--kill-child) so does the
            # host's PID 1: no host outlives its lab (the next run removes netns, links, dirs).
            # Main thread only: the death signal fires when the creating *thread* exits.
            argv = ["setpriv", "--pdeathsig", "KILL"]
        argv += ["ip", "netns", "exec", host.netns,
                "unshare", "--mount", "--uts", "--pid", "--fork", "--mount-proc", "--propagation", "private",
                "--kill-child=SIGKILL",
                os.path.join(self.venv, "bin", "python"), "-m", "lab.init", host.dir, host.name]
        env = host.env({"PYTHONPATH": REPO})
        host._unshare = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=host._log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    @staticmethod
    def _open_console(host):
        """
        A pseudo-terminal for a systemd host's /dev/console (systemd writes its messages and, here,
        its units' output there): the lab keeps the master side and copies what arrives to
        ``<hostdir>/console.log``. Returns the path of the terminal for lab.init to bind.
        """
        master, slave = os.openpty()
        path = os.ttyname(slave)
        out = open(os.path.join(host.dir, "console.log"), "ab", buffering=0)

        def pump():
            try:
                while True:
                    try:
                        data = os.read(master, 65536)
                    except OSError:  # EIO: the lab closed its side of the terminal (power off)
                        return
                    if not data:
                        return
                    out.write(data.replace(b"\r\n", b"\n"))  # the terminal's ONLCR
            finally:
                out.close()
                with contextlib.suppress(OSError):
                    os.close(master)

        thread = threading.Thread(target=pump, name=f"console-{host.name}", daemon=True)
        thread.start()
        host._console = (slave, thread)  # the slave stays open here until power off: no EIO meanwhile
        return path

    @staticmethod
    def _close_console(host):
        if host._console is None:
            return
        slave, thread = host._console
        host._console = None
        with contextlib.suppress(OSError):
            os.close(slave)
        thread.join(2)

    def _wait_booted(self, hosts, timeout=60):
        """systemd hosts: wait until their boot is done (``systemctl is-system-running --wait``)."""
        hosts = [h for h in hosts if h.init == "systemd"]
        if not hosts:
            return

        def one(host):
            deadline = time.monotonic() + timeout
            state = "timeout"
            while time.monotonic() < deadline:
                # "offline" until systemd, just exec'd by lab.init, listens on /run/systemd/private
                try:
                    res = host.run(["systemctl", "is-system-running", "--wait"],
                                   timeout=max(1.0, deadline - time.monotonic()))
                except CommandTimeout:
                    break
                state = res.stdout.strip() or "offline"
                if state != "offline":
                    break
                time.sleep(0.05)
            if state == "running":
                return
            failed = host.run(["systemctl", "--failed", "--no-legend", "--plain"], timeout=30).stdout.strip()
            if state == "degraded":
                log(f"warning: {host.name} booted degraded; failed units:\n{failed}")
                return
            raise LabError(f"{host.name}: systemd did not finish booting ({state}); failed units:\n{failed}\n"
                           f"console.log:\n{_tail(_read(os.path.join(host.dir, 'console.log')))}")

        with concurrent.futures.ThreadPoolExecutor(len(hosts)) as pool:
            for future in [pool.submit(one, h) for h in hosts]:
                future.result()

    def _wait_ready(self, host, timeout=20):
        ready = os.path.join(host.dir, "ready")

        def check():
            if host._unshare.poll() is not None:
                return "dead"
            return os.path.exists(ready) and "ok"

        state = wait_for(check, timeout, 0.01)
        if state != "ok":
            with open(os.path.join(host.dir, "init.log"), errors="replace") as fh:
                text = _tail(fh.read())
            raise LabError(f"host {host.name} did not come up ({state or 'timeout'}); init.log:\n{text}")
        pid = wait_for(lambda: self._child_of(host._unshare.pid), 5, 0.01)
        if not pid:
            raise LabError(f"host {host.name}: cannot find its PID 1")
        host.pid = pid
        host._starttime = proc_starttime(pid)

    @staticmethod
    def _child_of(ppid):
        try:
            with open(f"/proc/{ppid}/task/{ppid}/children") as fh:
                kids = fh.read().split()
            if kids:
                return int(kids[0])
        except OSError:
            pass
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as fh:
                        if int(fh.read().rsplit(")", 1)[1].split()[1]) == ppid:
                            return int(entry)
                except (OSError, ValueError, IndexError):
                    continue
        return None

    # -- salt ------------------------------------------------------------------------------
    def _write_salt_config(self):
        self._write_master_config()
        if len(self.master_names) > 1:
            self._share_master_key()
        addrs = [m.addr("mgmt") for m in self.masters]
        for host in self.minions:
            # several masters: a list (hot multi-master: the minion connects to each of them)
            conf = _merge(MINION_DEFAULTS, {"id": host.name, "master": addrs if len(addrs) > 1 else addrs[0]})
            self._write_conf(host, "minion", _merge(conf, self.minion_extra))

    def _write_master_config(self):
        for host in self.masters:
            master = _merge(MASTER_DEFAULTS, {
                "interface": host.addr("mgmt"),
                "file_roots": {"base": self.file_roots},
                "pillar_roots": {"base": [self.pillar_dir]},
            })
            self._write_conf(host, "master", _merge(master, self.master_extra))

    def _share_master_key(self):
        """
        One master key pair for every master (Salt's multi-master needs it: a minion checks the
        key of each master it connects to against the one it cached): generated once with Salt's
        own ``salt.crypt.gen_keys`` in the lab's venv, written to each master's pki dir (kept
        across power cycles, like the rest of the host's /etc).
        """
        dirs = [os.path.join(private_dir(m.dir, "/etc/salt"), "pki", "master") for m in self.masters]
        if all(os.path.exists(os.path.join(d, "master.pem")) for d in dirs):
            return
        code = ("import json, salt.crypt; priv, pub = salt.crypt.gen_keys(2048); "
                "print(json.dumps([priv, pub]))")
        proc = subprocess.run([os.path.join(self.venv, "bin", "python"), "-c", code], capture_output=True,
                              text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise LabError(f"cannot generate the shared master key: {_tail(proc.stderr)}")
        priv, pub = json.loads(proc.stdout)
        for path in dirs:
            os.makedirs(path, mode=0o700, exist_ok=True)
            for name, text, mode in (("master.pem", priv, 0o400), ("master.pub", pub, 0o644)):
                target = os.path.join(path, name)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(target)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
                with os.fdopen(fd, "w") as fh:
                    fh.write(text)

    @staticmethod
    def _write_conf(host, name, data):
        path = os.path.join(private_dir(host.dir, "/etc/salt"), name)
        with open(path, "w") as fh:
            fh.write(f"# written by the nginx-ha lab (JSON is YAML)\n{json.dumps(data, indent=2)}\n")

    def _start_salt(self, hosts):
        jobs = [(h, "salt-master" if h.role == "master" else "salt-minion") for h in hosts
                if h.role in ("master", "minion")]
        if not jobs:
            return
        log("starting " + ", ".join(f"{d} on {h.name}" for h, d in jobs))
        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
            # systemd hosts start their enabled unit at boot: `systemctl start` only waits for it
            futures = [pool.submit(h.run, ["systemctl", "start", d] if h.init == "systemd" else [d, "-d"], True, 60)
                       for h, d in jobs]
            for future in futures:
                future.result()

    def start_salt(self, name):
        """Start the Salt daemon of host ``name`` (salt-master / salt-minion) its kind's way, as the
        lab does at boot: ``<daemon> -d`` on sysvinit hosts, ``systemctl start <daemon>`` (its unit,
        also after a failure) on systemd hosts. Does not wait for minions to answer."""
        host = self.host(name)
        if host.role not in ("master", "minion"):
            raise LabError(f"{name} runs no Salt daemon")
        self._start_salt([host])

    def wait_minions(self, names=None, timeout=None, master=None):
        """
        Wait until the master accepted the minions' keys and they answer test.ping: through
        ``master`` (a master's name), else through every running master.
        """
        if master is None and len(self.master_names) > 1:
            for host in [m for m in self.masters if m.running]:
                self.wait_minions(names, timeout, master=host.name)
            return
        master = self._master_host(master)
        names = list(names or self.minion_names)
        timeout = timeout or self.salt_timeout
        deadline = time.monotonic() + timeout
        pki = os.path.join(private_dir(master.dir, "/etc/salt"), "pki", "master", "minions")
        wait_for(lambda: all(os.path.exists(os.path.join(pki, n)) for n in names), timeout, 0.1)
        pending = set(names)
        last = None
        while pending and time.monotonic() < deadline:
            # a minion that is not connected yet costs -t plus the master's gather_job_timeout
            # (10 s) before salt gives up: stop waiting after 5 s and ask again instead
            try:
                proc = master.run(["salt", "-L", ",".join(sorted(pending)), "test.ping", "--out", "json",
                                        "--static", "-t", "3"], timeout=5)
            except CommandTimeout:
                continue
            last = proc
            data = _parse_json(proc.stdout)
            if isinstance(data, dict):
                pending -= {n for n, v in data.items() if v is True}
            if pending:
                time.sleep(0.3)
        if pending:
            details = [f"minions not answering test.ping after {timeout}s: {', '.join(sorted(pending))}"]
            if last is not None:
                details.append(f"last salt output: {_tail(last.stdout, 10)} {_tail(last.stderr, 10)}")
            keys = master.run(["salt-key", "-L"], timeout=30)
            details.append(f"salt-key -L:\n{keys.stdout}{keys.stderr}")
            details.append(f"{master.name} log:\n{master.log_tail('/var/log/salt/master')}")
            for name in sorted(pending):
                details.append(f"{name} minion log:\n{self.host(name).log_tail('/var/log/salt/minion')}")
            raise LabError("\n".join(details))

    def salt(self, target, fun, *args, timeout=300, job_timeout=15, tgt_type=None, check=False, master=None, **kwargs):
        """
        ``salt <target> <fun> <args> <key=value...> --out json --static`` on the master host
        (``master``: that master's name; default the first).

        Returns the return of minion ``target`` when ``target`` is one minion id, else the dict
        {minion: return}. Raises LabError with the output when the CLI gives no parsable answer,
        when no minion (or not the targeted one) returned, and with ``check=True`` also on a
        non-zero exit (state failures, for example; by default a failed state run still returns
        its dict). Keyword values that are not strings are passed as JSON.

        ``timeout`` bounds the whole command (CommandTimeout). ``job_timeout`` is salt's ``-t``:
        after it, salt asks the minions whether the job still runs and keeps waiting for those
        that say so, so long states are fine; a powered-off minion costs about ``job_timeout``
        plus the master's gather_job_timeout (10 s) before "no return".
        """
        argv = ["salt", "--out", "json", "--static", "-t", str(job_timeout)]
        if tgt_type:
            argv += [f"--{tgt_type}" if len(tgt_type) > 1 else f"-{tgt_type}"]
        argv += [target, fun, *map(str, args)]
        argv += [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in kwargs.items()]
        proc = self._master_host(master).run(argv, timeout=timeout)
        data = _parse_json(proc.stdout)
        single = target in self.minion_names and not tgt_type
        problem = None
        if not isinstance(data, dict):
            problem = "no JSON answer"
        elif not data:
            problem = "no minion returned"
        elif single and target not in data:
            problem = f"no return from {target}"
        elif check and proc.returncode != 0:
            problem = f"exit code {proc.returncode}"
        if problem:
            raise LabError(f"{shlex.join(argv)}: {problem}\n--- stdout ---\n{_tail(proc.stdout)}\n"
                           f"--- stderr ---\n{_tail(proc.stderr)}")
        return data[target] if single else data

    def minion_pid(self, name):
        """PID (as a string) of ``name``'s running salt-minion per its pidfile, or None."""
        host = self.host(name)
        if host.init == "systemd":  # the unit's main process (the pidfile is its child's) ...
            res = host.run(["systemctl", "show", "--property=MainPID", "--value", "salt-minion"], timeout=30)
            if res.stdout.strip() not in ("", "0"):
                return res.stdout.strip()
        # ... or, with the unit not running (a `salt-minion -d` started by hand), the pidfile
        res = host.run("cat /run/salt-minion.pid 2>/dev/null", timeout=30)
        return res.stdout.strip() or None

    def wait_minion_restart(self, name, old_pid, timeout=60):
        """
        After a state run restarted ``name``'s minion (``minion_restart_cmd``, in the background): until
        the old process has exited it still answers test.ping, so wait for a new, live process and
        then for it to answer.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.minion_pid(name)
            if pid and pid != old_pid and self.host(name).run(f"kill -0 {pid}", timeout=30).returncode == 0:
                break
            time.sleep(0.3)
        else:
            raise LabError(f"{name}'s salt-minion was not restarted within {timeout}s (still pid {old_pid})")
        self.wait_minions([name])

    @property
    def minion_restart_cmd(self):
        """The nginx_ha pillar's events:minion_restart_cmd for this lab's hosts (argv list):
        lab.MINION_RESTART_CMD on sysvinit hosts, lab.SYSTEMD_MINION_RESTART_CMD (through the unit)
        on systemd hosts."""
        return minion_restart_cmd(self.init)

    @property
    def salt_call(self):
        """Path of the lab's salt-call (in its virtualenv): for what runs without the hosts' PATH, e.g.
        keepalived's notify scripts, which get the init script's /sbin:/bin:/usr/sbin:/usr/bin."""
        return os.path.join(self.venv, "bin", "salt-call")

    def restart_master(self, master_extra=None, timeout=30, master=None):
        """
        Restart salt-master, first merging ``master_extra`` (recursively) into its configuration:
        for settings read only at start (reactor, event_return...). Waits until the minions,
        which reconnect on their own, answer test.ping again. With several masters: the one named
        ``master`` (default: each running master in turn; every master's configuration is
        rewritten, as they share it).
        """
        if master_extra:
            self.master_extra = _merge(self.master_extra, master_extra)
        if master is None and len(self.master_names) > 1:
            self._write_master_config()
            for host in [m for m in self.masters if m.running]:
                self.restart_master(timeout=timeout, master=host.name)
            return
        host = self._master_host(master)
        self._write_master_config()
        # '[s]alt-master' matches the daemon's processes but not this shell's own command line
        stop = ("kill -TERM $(cat /run/salt-master.pid) 2>/dev/null; pkill -TERM -f 'bin/[s]alt-master'; i=0; "
                "while pgrep -f 'bin/[s]alt-master' >/dev/null; do i=$((i+1)); "
                f"[ $i -gt {int(timeout * 5)} ] && pkill -KILL -f 'bin/[s]alt-master'; sleep 0.2; done; "
                "rm -f /run/salt-master.pid")
        t0 = time.monotonic()
        if host.init == "systemd":
            host.run(["systemctl", "restart", "salt-master"], check=True, timeout=timeout + 30)
        else:
            host.run(stop, check=True, timeout=timeout + 30)
            self._start_salt([host])
        self.wait_minions(master=host.name)
        log(f"salt-master on {host.name} restarted ({time.monotonic() - t0:.1f}s)")

    def salt_run(self, fun, *args, timeout=300, master=None, **kwargs):
        """
        ``salt-run --out json <fun> <args> <key=value...>`` on the master host (``master``: that
        master's name; default the first): (exit code, parsed
        JSON, None when there is no output). Raises LabError when the output is not JSON and
        CommandTimeout after ``timeout`` seconds.
        """
        argv = ["salt-run", "--out", "json", fun, *map(str, args)]
        argv += [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in kwargs.items()]
        proc = self._master_host(master).run(argv, timeout=timeout)
        data = _parse_json(proc.stdout)
        if data is None and proc.stdout.strip():
            raise LabError(f"{shlex.join(argv)}: output is not JSON (exit {proc.returncode})\n"
                           f"--- stdout ---\n{_tail(proc.stdout)}\n--- stderr ---\n{_tail(proc.stderr)}")
        return proc.returncode, data

    def logs(self, lines=30, paths=("/var/log/syslog", "/var/log/salt/master", "/var/log/salt/minion",
                                    "/var/log/nginx/error.log")):
        """Tails of the usual logs of every running host, as one string (for failure messages)."""
        out = []
        for host in self.hosts.values():
            if not host.running:
                out.append(f"===== {host.name}: powered off")
                continue
            for path in paths:
                text = host.read_file(path, missing_ok=True)
                if text:
                    out.append(f"===== {host.name}:{path}\n{_tail(text, lines)}")
            if host.init == "systemd":  # systemd's own messages and its units' output
                text = _read(os.path.join(host.dir, "console.log"))
                if text:
                    out.append(f"===== {host.name}: console (systemd)\n{_tail(text, lines)}")
        return "\n".join(out)

    # -- faults -----------------------------------------------------------------------------
    def set_link(self, name, net="svc", up=True, keep_carrier=False):
        """
        Cut (``up=False``) or restore a host's ``net`` link ("svc" or "mgmt").

        Default: the root-side veth goes down, so the host sees NO-CARRIER on eth0/eth1 (a pulled
        cable). ``keep_carrier=True`` instead detaches the veth from the bridge: the interface
        stays up but nothing reaches the other hosts (a dead switch port, the split-brain case).
        """
        host = self.host(name)
        host.addr(net)
        if not host.running:
            raise LabError(f"{name} is powered off")
        veth = host.veth(net)
        if keep_carrier:
            if up:
                sh(["ip", "link", "set", veth, "master", self.bridges[net], "up"])
            else:
                sh(["ip", "link", "set", veth, "nomaster"])
        else:
            sh(["ip", "link", "set", veth, "master", self.bridges[net]])
            sh(["ip", "link", "set", veth, "up" if up else "down"])
        log(f"{name} {net} link {'up' if up else 'cut'}{' (carrier kept)' if keep_carrier else ''}")

    def power_off(self, name):
        """Power loss: links down, then SIGKILL the host's PID 1 (all its processes die at once)."""
        with self._mutex:
            host = self.host(name)
            if not host.running:
                raise LabError(f"{name} is already powered off")
            for net in host.nets:
                sh(["ip", "link", "set", host.veth(net), "down"], check=False)
            self._kill_host(host)
            log(f"{name} powered off")

    def _kill_host(self, host, sig=signal.SIGKILL, wait=5):
        if host._unshare is not None:
            if host.pid:
                with contextlib.suppress(ProcessLookupError):
                    host.signal_init(sig)
            try:
                host._unshare.wait(wait)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    host.signal_init(signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(host._unshare.pid, signal.SIGKILL)
                host._unshare.wait(5)
        if host._log:
            host._log.close()
            host._log = None
        host.pid = None
        host._unshare = None
        self._close_console(host)
        if host.init == "systemd" and self.run_id:
            left = _cgroup.remove(_cgroup.host_cgroup(self.run_id, host.name)[0])
            if left:
                log(f"warning: {host.name}: cgroups not removed: {', '.join(left)}")
        sh(["ip", "netns", "del", host.netns], check=False)
        for net in host.nets:
            if host.veth(net) in root_links():
                sh(["ip", "link", "del", host.veth(net)], check=False)

    def power_on(self, name, wait=True):
        """
        Boot a powered-off host again: new namespaces and links, same on-disk per-host
        directories (its /etc, /var/log, keys... survive like a disk; /run and /tmp start empty).
        Restarts its Salt daemon; with ``wait`` a minion must answer test.ping again.
        """
        with self._mutex:
            host = self.host(name)
            if host.running:
                raise LabError(f"{name} is already running")
            t0 = time.monotonic()
            self._prepare_dirs(host)
            self._plug(host)
            self._boot(host)
            self._wait_ready(host)
            self._wait_booted([host])
            if self.use_salt:
                self._start_salt([host])
                if wait and host.role == "minion":
                    self.wait_minions([name])
            log(f"{name} powered on ({time.monotonic() - t0:.1f}s)")

    # -- teardown ---------------------------------------------------------------------------
    def close(self):
        """Remove everything of this run (idempotent)."""
        with self._mutex:
            if self._closed or not self._started:
                return
            self._closed = True
            saved = {}
            if _main_thread():  # a second Ctrl-C / SIGTERM must not stop the teardown half-way
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    saved[sig] = signal.getsignal(sig)
                    signal.signal(sig, signal.SIG_IGN)
            try:
                t0 = time.monotonic()
                # lab.init stops everything on SIGTERM, in about a second; a systemd host's orderly
                # power-off (SIGRTMIN+4) takes seconds and nothing of it survives the run: SIGKILL
                running = [h for h in self.hosts.values() if h.running and h.init != "systemd"]
                for host in running:
                    with contextlib.suppress(ProcessLookupError):
                        host.signal_init(signal.SIGTERM)
                deadline = time.monotonic() + 3
                for host in running:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        host._unshare.wait(max(0.0, deadline - time.monotonic()))
                for host in self.hosts.values():
                    with contextlib.suppress(Exception):
                        self._kill_host(host, wait=3)
                if self.run_id:
                    with _cleanup.lock():
                        _cleanup.remove_runs({self.run_id})
                        _cleanup.release_mountpoints()
                    log(f"run {self.run_id} removed ({time.monotonic() - t0:.1f}s)")
            finally:
                for sig, handler in saved.items():
                    signal.signal(sig, handler)
                self._restore_signal_handlers()
                with contextlib.suppress(Exception):
                    atexit.unregister(self.close)

    def _install_signal_handlers(self):
        if not _main_thread():
            return

        def on_term(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")

        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, on_term)

    def _restore_signal_handlers(self):
        if not _main_thread():
            return
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers = {}


def _main_thread():
    return threading.current_thread() is threading.main_thread()


def _read(path):
    try:
        with open(path, errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def _parse_json(text):
    text = (text or "").strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    # tolerate noise before the JSON document (e.g. a warning printed to stdout)
    idx = text.find("{")
    if idx > 0:
        try:
            return json.loads(text[idx:])
        except ValueError:
            return None
    return None


def _master_names(masters):
    """Host names of the masters: ``masters`` a count (1: "master"; 2: "master", "master2"...) or names."""
    if isinstance(masters, int) and not isinstance(masters, bool):
        if not 1 <= masters <= FIRST_MINION_OCTET - MASTER_OCTET:
            raise LabError(f"masters={masters}: 1 to {FIRST_MINION_OCTET - MASTER_OCTET}")
        return ["master"] + [f"master{i}" for i in range(2, masters + 1)]
    names = [str(n) for n in masters]
    if not 1 <= len(names) <= FIRST_MINION_OCTET - MASTER_OCTET:
        raise LabError(f"masters: 1 to {FIRST_MINION_OCTET - MASTER_OCTET} names")
    for name in names:
        if not HOSTNAME_RE.match(name) or name == "client":
            raise LabError(f"bad master name {name!r}: lowercase letters, digits, '-', max 20; not client")
    if len(set(names)) != len(names):
        raise LabError("master names must be unique")
    return names
