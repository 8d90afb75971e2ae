"""
Files nginx-ha writes on a node: read them whole, replace them atomically; find and stop the
program that holds a lock file (the health watcher, the metrics writer).

Shared by the state modules (imported as ordinary Python: Salt's loader puts the extension utils
directories on ``sys.path`` while it loads states).
"""

import errno
import fcntl
import os
import signal
import tempfile
import time

__virtualname__ = "nginx_ha_files"

TMP_PREFIX = ".nginx_ha."  # a temporary file next to the live one (never matches *.conf)


def __virtual__():
    return __virtualname__


def read_bytes(path):
    """The file's bytes, or None when it does not exist."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, data, mode, uid=0, gid=0):
    """Replace ``path`` by ``data`` (owner uid:gid, ``mode``): readers see the old or the new bytes."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchown(fh.fileno(), uid, gid)
            os.fchmod(fh.fileno(), mode)  # after chown: chown may clear set-id bits
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def lock_holder(lock_file, program):
    """
    The pid of the running ``program`` that holds ``lock_file`` (an flock, its pid written there),
    else None: nobody holds the lock, the pid is gone, or it is another program (a reused pid).
    How the states find the health watcher and the metrics writer they manage.
    """
    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        else:
            return None  # nobody holds it: the program does not run
        with open(lock_file, encoding="ascii") as fh:
            pid = int(fh.read().split()[0])
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            if program not in fh.read():
                return None
        return pid
    except (OSError, ValueError, IndexError):
        return None
    finally:
        os.close(fd)


def stop_holder(lock_file, program, wait=0.0):
    """
    SIGTERM the running ``program`` holding ``lock_file`` (see :func:`lock_holder`) and wait up to
    ``wait`` seconds until it let go of the lock. Returns its pid, or None when none ran.
    """
    pid = lock_holder(lock_file, program)
    if pid is None:
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return None
    deadline = time.monotonic() + wait
    while wait and lock_holder(lock_file, program) == pid and time.monotonic() < deadline:
        time.sleep(0.05)
    return pid

