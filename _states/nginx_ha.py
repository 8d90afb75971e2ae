"""
States for nginx-ha that a plain ``file.managed`` cannot express safely.

``nginx_ha.validated_config``
    Manage a configuration file that a daemon's own checker must accept before it goes live
    (``keepalived -t``, ``nginx -t``). The new file is put in place, the checker runs against the
    real configuration tree (so relative ``include`` paths resolve as they will at reload), and
    when the checker refuses it the previous file is restored at once, byte for byte: the state
    fails with the checker's message and any ``watch``/``onchanges`` reload never fires, so the
    running daemon keeps its old configuration.

Sync to minions with ``salt '*' saltutil.sync_all``.
"""

import difflib
import os
import stat
import tempfile

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "nginx_ha"


def __virtual__():
    if "file.apply_template_on_contents" not in __salt__:
        return (False, "nginx_ha states: the file execution module is not available")
    return __virtualname__


def _read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _atomic_write(path, data, mode):
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".nginx_ha.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.chown(tmp, 0, 0)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _restore(path, previous, mode):
    if previous is None:
        if os.path.exists(path):
            os.unlink(path)
    else:
        _atomic_write(path, previous, mode)


def _render(source, contents, context, saltenv):
    if (source is None) == (contents is None):
        raise SaltInvocationError("nginx_ha.validated_config: give exactly one of source or contents")
    if source is not None:
        text = __salt__["cp.get_file_str"](source, saltenv=saltenv)
        if text is False or text is None:
            raise CommandExecutionError(f"source {source} was not found on the master")
        rendered = __salt__["file.apply_template_on_contents"](
            text, template="jinja", context=context or {}, defaults=None, saltenv=saltenv
        )
        if isinstance(rendered, dict):  # a render error is returned as a state-like dict
            raise CommandExecutionError(f"rendering {source} failed: {rendered.get('comment', rendered)}")
        text = rendered
    else:
        text = contents
    if not text.endswith("\n"):
        text += "\n"
    return text.encode()


def _check(checker, path):
    cmd = [str(part).replace("{path}", path) for part in checker]
    res = __salt__["cmd.run_all"](cmd, python_shell=False, ignore_retcode=True, output_loglevel="debug")
    output = "\n".join(s for s in (res.get("stdout", ""), res.get("stderr", "")) if s).strip()
    return res["retcode"] == 0, output


def _mode_of(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def validated_config(name, checker, source=None, contents=None, context=None, mode="0644", makedirs=False, saltenv=None):
    """
    Manage configuration file ``name`` so that only content the daemon's checker accepts stays.

    name
        Absolute path of the configuration file.
    checker
        The checker as a list of arguments; ``{path}`` is replaced by ``name``. It must exit 0
        for a valid configuration, for example ``[/usr/sbin/nginx, -t, -q]`` or
        ``[/usr/sbin/keepalived, -t, -f, '{path}']``. Never run through a shell.
    source
        A Jinja template on the master (``salt://...``), rendered with ``context``.
    contents
        Literal contents instead of ``source``.
    mode
        File mode (owner and group are always root).
    makedirs
        Create the parent directory (mode 0755, root) when it is missing.

    .. code-block:: yaml

        keepalived_config_validated:
          nginx_ha.validated_config:
            - name: /etc/keepalived/keepalived.conf
            - source: salt://nginx_ha/files/keepalived.conf.jinja
            - context: {node: {...}}
            - checker: [/usr/sbin/keepalived, -t, -f, '{path}']
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    if not os.path.isabs(name):
        ret["comment"] = f"name: {name!r} is not an absolute path"
        return ret
    if not isinstance(checker, list) or not checker:
        ret["comment"] = f"checker: {checker!r} is not a non-empty list of arguments"
        return ret
    try:
        want_mode = int(str(mode), 8)
        new = _render(source, contents, context, saltenv or __env__)
    except (CommandExecutionError, SaltInvocationError, ValueError) as exc:
        ret["comment"] = str(exc)
        return ret

    old = _read(name)
    current = _mode_of(name)
    content_changes = old != new
    mode_changes = current is not None and current != (want_mode, 0, 0)
    if not content_changes and not mode_changes:
        ret.update(result=True, comment=f"{name} is in the desired state")
        return ret

    changes = {}
    if content_changes:
        if old is None:
            changes["new"] = f"{name} would be created" if __opts__["test"] else f"{name} created"
        changes["diff"] = "".join(
            difflib.unified_diff(
                (old or b"").decode(errors="replace").splitlines(True),
                new.decode(errors="replace").splitlines(True),
                fromfile=name,
                tofile=name,
            )
        )
    if mode_changes:
        changes["mode"] = f"{current[0]:04o} -> {want_mode:04o}, root:root"

    if __opts__["test"]:
        ret.update(result=None, changes=changes, comment=f"{name} would be updated and checked with {' '.join(map(str, checker))}")
        return ret

    directory = os.path.dirname(name)
    if not os.path.isdir(directory):
        if not makedirs:
            ret["comment"] = f"directory {directory} does not exist (set makedirs: true)"
            return ret
        os.makedirs(directory, mode=0o755)

    try:
        _atomic_write(name, new, want_mode)
    except OSError as exc:
        ret["comment"] = f"cannot write {name}: {exc}"
        return ret
    ok, output = _check(checker, name)
    if not ok:
        try:
            _restore(name, old, current[0] if current else want_mode)
        except OSError as exc:
            ret["comment"] = f"{name} was refused by its checker AND restoring the previous file failed: {exc}\n{output}"
            return ret
        ret["comment"] = (
            f"{name} was refused by {' '.join(map(str, checker))}; the previous file is back in place"
            f" and the running service was not touched:\n{output}"
        )
        return ret
    if _read(name) != new:
        ret["comment"] = f"{name} changed while it was being checked; run the state again"
        return ret
    ret.update(result=True, changes=changes, comment=f"{name} updated and accepted by {os.path.basename(str(checker[0]))}")
    return ret
