"""
The lab's own cgroups, for hosts whose PID 1 is systemd: ``<cgroup2>/nginx-ha-lab/<run id>/<host>``.

``<cgroup2>`` is where this machine mounts its cgroup2 (unified) hierarchy: ``/sys/fs/cgroup`` on a
unified machine, ``/sys/fs/cgroup/unified`` on a hybrid one. The lab makes a host's cgroup in the
root namespace before booting it; the host's PID 1 enters it and a cgroup namespace rooted there
(``lab.init``), so systemd in the host manages that subtree only (init.scope, system.slice/...).
Nothing outside ``nginx-ha-lab/`` is ever written or removed; no controller is enabled anywhere.
Standard library only.
"""

import contextlib
import errno
import os
import signal
import time

PARENT = "nginx-ha-lab"


def cgroup2_root():
    """Mount point of the machine's cgroup2 hierarchy (its root mounted, in this namespace), or None."""
    try:
        with open("/proc/self/mountinfo") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if right.split()[:1] == ["cgroup2"] and len(fields) > 4 and fields[3] == "/":
            return fields[4].encode().decode("unicode_escape")
    return None


def parent_dir():
    root = cgroup2_root()
    return os.path.join(root, PARENT) if root else None


def run_cgroup(run_id):
    parent = parent_dir()
    return os.path.join(parent, run_id) if parent else None


def host_cgroup(run_id, host):
    """(absolute path in this namespace, path in the cgroup2 hierarchy) of a host's cgroup."""
    parent = parent_dir()
    if parent is None:
        return None, None
    return os.path.join(parent, run_id, host), f"/{PARENT}/{run_id}/{host}"


def make(run_id, host):
    """Create the host's (empty) cgroup; returns its path in the cgroup2 hierarchy."""
    path, rel = host_cgroup(run_id, host)
    if path is None:
        raise OSError(errno.ENOENT, "no cgroup2 hierarchy mounted on this machine")
    os.makedirs(path, mode=0o755, exist_ok=True)
    return rel


def run_ids():
    """Run ids that have a cgroup directory under nginx-ha-lab/."""
    parent = parent_dir()
    try:
        return {n for n in os.listdir(parent) if os.path.isdir(os.path.join(parent, n))} if parent else set()
    except FileNotFoundError:
        return set()


def _dirs_bottom_up(path):
    out = []
    for dirpath, dirnames, _ in os.walk(path):
        out.append(dirpath)
    return sorted(out, key=lambda p: p.count("/"), reverse=True)


def procs(path):
    """PIDs (root namespace) of every process in the cgroup ``path`` and below it."""
    pids = set()
    if not path or not os.path.isdir(path):
        return pids
    for d in _dirs_bottom_up(path):
        with contextlib.suppress(OSError):
            with open(os.path.join(d, "cgroup.procs")) as fh:
                pids.update(int(x) for x in fh.read().split())
    return pids


def remove(path, timeout=5):
    """
    Kill what is left in the cgroup subtree ``path`` (which must be one of the lab's) and remove
    it, deepest first. Returns the directories that could not be removed (empty list: gone).
    """
    if not path or not os.path.isdir(path):
        return []
    parent = parent_dir()
    if not parent or not path.startswith(parent + "/"):
        raise ValueError(f"{path} is not one of the lab's cgroups")
    deadline = time.monotonic() + timeout
    while True:
        pids = procs(path)
        if pids:
            kill = os.path.join(path, "cgroup.kill")
            try:
                with open(kill, "w") as fh:  # the whole subtree at once (Linux >= 5.14)
                    fh.write("1")
            except OSError:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        left = []
        for d in _dirs_bottom_up(path):
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError:
                left.append(d)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def remove_parent_if_empty():
    """rmdir nginx-ha-lab/ when no run has a cgroup left in it (it is the lab's own)."""
    parent = parent_dir()
    if parent:
        with contextlib.suppress(OSError):
            os.rmdir(parent)
