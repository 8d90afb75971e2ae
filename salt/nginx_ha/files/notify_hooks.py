#!/usr/bin/python3
"""
nginx-ha's runner of the pillar's notify programs (vrrp_instances:<name>:notify_master, ...).

keepalived runs it (keepalived.conf: ``notify_master "<python> notify_hooks.py run SETTINGS VI_web
notify_master"``); it never goes through a shell and takes no pillar text on its command line:
the programs are data in SETTINGS (``notify_hooks.json``, written by Salt)::

    {"instances": {"VI_web": {"notify_master": [{"argv": ["/usr/local/sbin/x", "a b"], "timeout": 10}]}}}

    notify_hooks.py run SETTINGS INSTANCE KIND [TYPE NAME STATE PRIORITY]
        Start every program of INSTANCE's KIND at once, each in its own session with its argv as
        given (KIND ``notify``: keepalived's four arguments appended, as keepalived itself does),
        wait up to its timeout, then SIGTERM its process group and, 2 s later, SIGKILL. Each
        program is checked first as keepalived's script security would: root-owned, not writable by
        group or others, nor any directory above it (a sticky directory excepted); an unsafe or
        missing one is not run. Outcomes go to syslog (ident nginx_ha_notify). Exit 0 unless the
        settings are unusable.
    notify_hooks.py check SETTINGS
        The settings and every program in them, as ``run`` checks them; prints each problem and
        exits 1 if there is any (Salt's apply runs it before keepalived.conf goes live).

Python 3 standard library only.
"""

import json
import os
import signal
import stat
import subprocess
import sys
import syslog
import tempfile
import time

KINDS = ("notify_master", "notify_backup", "notify_fault", "notify_stop", "notify")
KILL_GRACE = 2.0


class Refused(Exception):
    """The settings or a program are not safe or not usable."""


def _unsafe(path, st, final):
    """Why keepalived's script security would refuse this path component (None if it would not)."""
    if st.st_uid != 0:
        return f"{path} is not owned by root"
    if stat.S_ISLNK(st.st_mode):
        return None
    sticky_dir = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
    if not sticky_dir and ((st.st_gid != 0 and st.st_mode & stat.S_IWGRP) or st.st_mode & stat.S_IWOTH):
        return f"{path} is writable by {'others' if st.st_mode & stat.S_IWOTH else 'its group'}"
    if final and not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if not final and not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    return None


def program_problem(path):
    """None when ``path`` is a program keepalived's script security would run, else why not."""
    if not isinstance(path, str) or not os.path.isabs(path):
        return f"{path!r} is not an absolute path"
    real = os.path.realpath(path)
    for candidate in dict.fromkeys([path, real]):  # the path as given (links included), then what it names
        parts = [part for part in candidate.split("/") if part]
        for i in range(len(parts) + 1):
            current = "/" + "/".join(parts[:i])
            try:
                st = os.lstat(current)
            except OSError as exc:
                return f"{current}: {exc.strerror}"
            problem = _unsafe(current, st, i == len(parts))
            if problem:
                return problem
    if not os.access(real, os.X_OK):
        return f"{real} is not executable"
    return None


def load_settings(path):
    """The settings (root-owned, not writable by group or others), checked for shape."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise Refused(f"{path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        problem = _unsafe(path, st, True)
        if problem:
            raise Refused(problem)
        try:
            data = json.loads(fh.read().decode("utf-8"))
        except ValueError as exc:
            raise Refused(f"{path}: not JSON ({exc})") from None
    instances = data.get("instances") if isinstance(data, dict) else None
    if not isinstance(instances, dict):
        raise Refused(f"{path}: no 'instances' mapping")
    for name, kinds in instances.items():
        if not isinstance(kinds, dict):
            raise Refused(f"{path}: instances.{name} is not a mapping")
        for kind, hooks in kinds.items():
            if kind not in KINDS or not isinstance(hooks, list):
                raise Refused(f"{path}: instances.{name}.{kind} is not one of {', '.join(KINDS)} with a list")
            for hook in hooks:
                argv = hook.get("argv") if isinstance(hook, dict) else None
                timeout = hook.get("timeout") if isinstance(hook, dict) else None
                if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
                    raise Refused(f"{path}: instances.{name}.{kind}: argv is not a list of strings")
                if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
                    raise Refused(f"{path}: instances.{name}.{kind}: timeout {timeout!r} is not within 0-3600 s")
    return data


def check(path):
    """Every problem of the settings and their programs (an empty list when all is well)."""
    try:
        data = load_settings(path)
    except Refused as exc:
        return [str(exc)]
    problems = []
    for name, kinds in sorted(data["instances"].items()):
        for kind, hooks in sorted(kinds.items()):
            for hook in hooks:
                problem = program_problem(hook["argv"][0])
                if problem:
                    problems.append(f"vrrp_instances:{name}:{kind}: {problem} (keepalived's script security would not run it)")
    return problems


def _log(priority, message):
    syslog.openlog("nginx_ha_notify", syslog.LOG_PID, syslog.LOG_DAEMON)
    syslog.syslog(priority, message)


def _kill(proc):
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run(path, instance, kind, extra, log=_log):
    """Run ``instance``'s ``kind`` programs; returns ``{argv0: outcome}`` (for tests and logs)."""
    data = load_settings(path)
    hooks = (data["instances"].get(instance) or {}).get(kind) or []
    started, outcomes = [], {}
    for hook in hooks:
        argv = list(hook["argv"]) + (list(extra) if kind == "notify" else [])
        problem = program_problem(argv[0])
        if problem:
            outcomes[argv[0]] = f"not run: {problem}"
            log(syslog.LOG_ERR, f"{instance} {kind}: {argv[0]} not run: {problem}")
            continue
        err = tempfile.TemporaryFile()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd="/", start_new_session=True)
        except OSError as exc:
            outcomes[argv[0]] = f"not run: {exc}"
            log(syslog.LOG_ERR, f"{instance} {kind}: {argv[0]} not run: {exc}")
            err.close()
            continue
        started.append((proc, argv, time.monotonic() + hook["timeout"], hook["timeout"], err))

    def stop_all(signum, frame):  # keepalived stops us (shutdown): the programs go too
        for proc, *_ in started:
            if proc.poll() is None:
                _kill(proc)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop_all)
    for proc, argv, deadline, timeout, err in started:
        try:
            code = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            outcome = f"exit {code}"
        except subprocess.TimeoutExpired:
            _kill(proc)
            outcome = f"killed after {timeout:g}s"
        err.seek(0)
        tail = err.read()[-300:].decode("utf-8", "replace").strip()
        err.close()
        outcomes[argv[0]] = outcome
        level = syslog.LOG_INFO if outcome == "exit 0" else syslog.LOG_WARNING
        log(level, f"{instance} {kind}: {argv[0]}: {outcome}" + (f" ({tail})" if tail and outcome != "exit 0" else ""))
    return outcomes


def main(argv):
    if len(argv) == 3 and argv[1] == "check":
        problems = check(argv[2])
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    if len(argv) >= 5 and argv[1] == "run" and argv[4] in KINDS:
        try:
            run(argv[2], argv[3], argv[4], argv[5:])
        except Refused as exc:
            _log(syslog.LOG_ERR, f"{argv[3]} {argv[4]}: settings refused: {exc}")
            return 1
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
