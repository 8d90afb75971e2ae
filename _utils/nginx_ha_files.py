"""
Files nginx-ha writes on a node: read them whole, replace them atomically.

Shared by the state modules (imported as ordinary Python: Salt's loader puts the extension utils
directories on ``sys.path`` while it loads states).
"""

import os
import tempfile

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
