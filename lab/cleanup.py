"""
Find and remove what lab runs leave behind: ``python -m lab.cleanup [--all] [--check]``.

A run owns everything named ``nhl<run id>...`` (network namespaces, root-side bridges and veths),
the processes living in those namespaces, its systemd hosts' cgroups
``<cgroup2>/nginx-ha-lab/<run id>/`` (``lab.cgroup``), and its directory ``/var/lib/nginx-ha-lab/<run id>``
whose ``owner.json`` names the owning process (PID + start time). A run is *dead* when that
process is gone; everything of a dead run, and anything with the prefix but no run directory, is
a leftover. The mount points the lab had to create in the root file system (``/etc/salt``,
``/var/cache/salt``, ``/var/lib/keepalived``, an empty ``/dev/log`` file, when they did not exist)
are removed again, when empty, once no run is alive; so is ``/run/netns`` (which ``ip netns add``
creates and bind-mounts on itself) when it did not exist before the lab.

``--all`` also removes live runs (only when you know their owner is stuck); ``--check`` only
lists leftovers and exits 1 if there are any.
"""

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import stat
import sys
import time

from . import cgroup as _cgroup
from .common import (
    DEVLOG,
    NETNS_DIR,
    LAB_ROOT,
    MOUNTPOINTS_FILE,
    NAME_RE,
    RUN_ID_RE,
    LabError,
    live_runs,
    log,
    netns_names,
    root_links,
    run_dirs,
    sh,
    wait_for,
)



@contextlib.contextmanager
def lock():
    """Serialise run creation and cleanup between lab processes (flock on LAB_ROOT)."""
    os.makedirs(LAB_ROOT, mode=0o755, exist_ok=True)
    fd = os.open(LAB_ROOT, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _run_id(name):
    m = NAME_RE.match(name)
    return m.group(1) if m else None


def _ns_key(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def processes():
    """Yield dicts (pid, comm, cmdline, net, pidns) for every process in the root PID namespace's view."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{pid}/comm") as fh:
                comm = fh.read().strip()
        except OSError:
            continue
        yield {
            "pid": pid,
            "comm": comm,
            "cmdline": cmdline,
            "net": _ns_key(f"/proc/{pid}/ns/net"),
            "pidns": _ns_key(f"/proc/{pid}/ns/pid"),
        }


def _init_run_id(cmdline):
    """Run id of a ``lab.init`` process (from its host directory argument)."""
    if "lab.init" not in cmdline:
        return None
    marker = LAB_ROOT + "/"
    idx = cmdline.find(marker)
    if idx < 0:
        return None
    rid = cmdline[idx + len(marker):].split("/", 1)[0]
    return rid if len(rid) == 4 else None


def owned_processes(run_ids):
    """Processes belonging to ``run_ids``: in one of their netns or cgroups, or one of their lab.init."""
    ns_keys = {}
    for name in netns_names():
        rid = _run_id(name)
        if rid in run_ids:
            key = _ns_key(f"/run/netns/{name}")
            if key:
                ns_keys[key] = name
    in_cgroups = set()
    for rid in run_ids:
        in_cgroups |= _cgroup.procs(_cgroup.run_cgroup(rid))
    me = os.getpid()
    found = []
    for proc in processes():
        if proc["pid"] == me:
            continue
        if proc["net"] in ns_keys or _init_run_id(proc["cmdline"]) in run_ids or proc["pid"] in in_cgroups:
            found.append(proc)
    return found


def _kill_all(run_ids, say):
    procs = owned_processes(run_ids)
    if not procs:
        return
    say(f"killing {len(procs)} process(es): " + ", ".join(f"{p['pid']}:{p['comm']}" for p in procs[:12])
        + (" ..." if len(procs) > 12 else ""))
    # PID 1s first (lab.init, or systemd, which was one): SIGKILL to a PID namespace's init kills
    # the whole namespace at once
    for proc in sorted(procs, key=lambda p: "lab.init" not in p["cmdline"] and "systemd" not in p["comm"]):
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc["pid"], signal.SIGKILL)

    def gone():
        return not [p for p in owned_processes(run_ids) if _state(p["pid"]) not in ("Z", None)]

    if not wait_for(gone, 5):
        left = owned_processes(run_ids)
        raise LabError("processes survive SIGKILL: " + ", ".join(f"{p['pid']}:{p['comm']}" for p in left))


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def _unmounted_under(path):
    """Refuse to rmtree a directory that has something mounted below it (in our namespace)."""
    with open("/proc/self/mountinfo") as fh:
        points = [line.split()[4] for line in fh]
    return not [p for p in points if p == path or p.startswith(path + "/")]


def remove_runs(run_ids, say=log):
    """Remove every trace of ``run_ids`` (a set of 4-hex run ids)."""
    run_ids = set(run_ids)
    if not run_ids:
        return
    _kill_all(run_ids, say)
    for name in netns_names():
        if _run_id(name) in run_ids:
            sh(["ip", "netns", "del", name], check=False)
    # bridges last: deleting a netns deletes its veth ends (and so the root-side peers)
    links = [n for n in root_links() if _run_id(n) in run_ids]
    for name in sorted(links, key=lambda n: len(n), reverse=True):
        sh(["ip", "link", "del", name], check=False)
    for rid in run_ids:
        left = _cgroup.remove(_cgroup.run_cgroup(rid))
        if left:
            raise LabError(f"could not remove the cgroups {', '.join(left)}")
    dirs = run_dirs()
    for rid in run_ids:
        path = dirs.get(rid)
        if path is None:
            continue
        if not _unmounted_under(path):
            raise LabError(f"not removing {path}: something is mounted below it")
        shutil.rmtree(path, ignore_errors=True)
        if os.path.exists(path):
            raise LabError(f"could not remove {path}")


def ensure_mountpoints(paths, files=()):
    """
    Create missing mount points in the root fs (``paths``: directories, ``files``: empty files),
    remembering which we created, so that release_mountpoints() removes exactly those.
    """
    created = _read_mountpoints()
    if not os.path.lexists(NETNS_DIR) and NETNS_DIR not in created:
        # `ip netns add` will create it and bind-mount it on itself: ours to undo at the end
        created.append(NETNS_DIR)
    for path in paths:
        if not os.path.exists(path):
            os.makedirs(path, mode=0o755)
            if path not in created:
                created.append(path)
    for path in files:
        if not os.path.lexists(path):
            with open(path, "x"):
                pass
            os.chmod(path, 0o644)
            if path not in created:
                created.append(path)
    if created:
        with open(MOUNTPOINTS_FILE + ".tmp", "w") as fh:
            json.dump(created, fh)
        os.rename(MOUNTPOINTS_FILE + ".tmp", MOUNTPOINTS_FILE)


def _read_mountpoints():
    try:
        with open(MOUNTPOINTS_FILE) as fh:
            return list(json.load(fh))
    except (OSError, ValueError):
        return []


def _is_mountpoint(path):
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == path for line in fh)


def _release_netns_dir(say):
    """Undo what `ip netns add` did to a /run/netns that did not exist before the lab (if empty)."""
    try:
        if os.listdir(NETNS_DIR):
            say(f"leaving {NETNS_DIR} in place: not empty")
            return
    except FileNotFoundError:
        return
    while _is_mountpoint(NETNS_DIR):  # (os.path.ismount misses bind mounts within one fs)
        if sh(["umount", NETNS_DIR], check=False).returncode != 0:
            say(f"leaving {NETNS_DIR} mounted: umount failed")
            return
    with contextlib.suppress(OSError):
        os.rmdir(NETNS_DIR)


def release_mountpoints(say=log):
    """Once no run is alive: rmdir the mount points we created (if still empty), tidy LAB_ROOT."""
    if live_runs():
        return
    for path in sorted(_read_mountpoints(), key=len, reverse=True):
        if path == NETNS_DIR:
            _release_netns_dir(say)
            continue
        try:
            if os.path.isfile(path) and not os.path.islink(path):
                if os.path.getsize(path) == 0:
                    os.unlink(path)
                continue
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            say(f"leaving {path} in place: {exc.strerror}")
    # an empty regular file at /dev/log is only ever the lab's mount point (a real one is a
    # socket or a symlink), even if a run that did not record it created it
    with contextlib.suppress(OSError):
        st = os.lstat(DEVLOG)
        if stat.S_ISREG(st.st_mode) and st.st_size == 0:
            os.unlink(DEVLOG)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(MOUNTPOINTS_FILE)
    _cgroup.remove_parent_if_empty()
    with contextlib.suppress(OSError):
        os.rmdir(LAB_ROOT)  # only if empty


def stale_run_ids(include_live=False):
    """Run ids with a leftover (netns, link, directory or lab.init process) and no live owner."""
    ids = set(run_dirs())
    ids |= {_run_id(n) for n in netns_names()}
    ids |= {_run_id(n) for n in root_links()}
    ids |= {_init_run_id(p["cmdline"]) for p in processes()}
    ids |= {rid for rid in _cgroup.run_ids() if RUN_ID_RE.match(rid)}
    ids.discard(None)
    if not include_live:
        ids -= live_runs()
    return ids


def cleanup(include_live=False, say=log):
    """Remove leftovers of dead runs (and of live ones too with ``include_live``). Returns the ids."""
    with lock():
        ids = stale_run_ids(include_live)
        if ids:
            say(f"removing leftovers of run(s) {', '.join(sorted(ids))}")
        remove_runs(ids, say)
        release_mountpoints(say)
    return ids


def leftovers(run_ids=None):
    """
    Human-readable list of what exists of ``run_ids`` (default: of any run, live or dead):
    namespaces, root-side links, run directories, processes in lab namespaces, lab.init
    processes. Empty when everything is gone.
    """
    def mine(rid):
        return rid is not None and (run_ids is None or rid in run_ids)

    found = [f"netns {n}" for n in netns_names() if mine(_run_id(n))]
    found += [f"link {n}" for n in root_links() if mine(_run_id(n))]
    found += [f"run dir {p}" for rid, p in run_dirs().items() if mine(rid)]
    found += [f"cgroup {_cgroup.run_cgroup(rid)}" for rid in sorted(_cgroup.run_ids()) if mine(rid)]
    ids = {_run_id(n) for n in netns_names()}
    ids.discard(None)
    ids = {i for i in ids if mine(i)} | ({*run_dirs(), *_cgroup.run_ids()} if run_ids is None else set(run_ids))
    found += [f"process {p['pid']} {p['comm']}: {p['cmdline'][:100]}" for p in owned_processes(ids)
              if _state(p["pid"]) != "Z"]
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lab.cleanup", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--all", action="store_true", help="also remove runs whose owner is still alive")
    parser.add_argument("--check", action="store_true", help="only list leftovers; exit 1 if any")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("lab.cleanup: must run as root", file=sys.stderr)
        return 2
    if args.check:
        found = leftovers()
        for line in found:
            print(line)
        return 1 if found else 0
    start = time.monotonic()
    ids = cleanup(include_live=args.all)
    found = leftovers(ids) if ids else []
    if found:
        log("still present:\n  " + "\n  ".join(found))
        return 1
    log(f"clean ({len(ids)} run(s) removed, {time.monotonic() - start:.1f}s)")
    live = live_runs()
    if live:
        log(f"live run(s) left alone: {', '.join(sorted(live))} (use --all to remove them too)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
