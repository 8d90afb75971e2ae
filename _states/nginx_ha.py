"""
States for nginx-ha that a plain ``file.managed`` cannot express safely.

``nginx_ha.validated_config``
    Manage a configuration file that a daemon's own checker must accept before it goes live
    (``keepalived -t``, ``nginx -t``). The live file is never an unvalidated candidate:

    1. The candidate is written to a private temporary directory (mode 0700), never next to the
       live file.
    2. The checker runs in a private mount namespace (``unshare --mount --propagation private``,
       util-linux; needs root, as the minion runs). Inside it, and only there, the candidate is
       bind-mounted over the live path; when the live file does not exist yet, a tmpfs view of
       its directory (every entry bind-mounted from the real one, plus the candidate) is mounted
       over that directory. So the checker reads the real tree, every ``include`` (absolute or
       relative, globs too) resolves as it will at reload, and sees the candidate where the live
       file is; every other process, a daemon restart included, still sees the old file. When a
       namespace cannot be made the state fails loudly and writes nothing: it never falls back to
       validating in place.
    3. The checker has a timeout (``timeout``, default 30 s); on expiry its whole process group
       is killed and the candidate counts as refused.
    4. Only after the checker said yes is the live file replaced, atomically (temporary file in
       the same directory, fsync, rename), and only if it still holds what was read before the
       check (else the state fails: something else changed it meanwhile).

    A refusal fails the state with the checker's output, writes nothing, and any
    ``watch``/``onchanges`` reload never fires. Killing the minion at any moment leaves the
    live file either the old one or the new, validated one.

    ``test=True`` runs the checker on the candidate as well (it has no side effect): a refusal
    is reported as ``result: False`` with the checker's output, an accepted change as
    ``result: None`` with the diff.

    When the candidate equals the live file byte for byte and only mode/owner (or nothing)
    differ, the checker does not run: the running daemon already loaded what it would check.

``nginx_ha.service_offline_answered``
    Makes Salt's own ``service.running``/``service.dead`` cheap on hosts whose service module has
    no ``offline`` function (``debian_service``, the sysvinit hosts): those states first ask the
    loader for ``service.offline``, and that miss makes it import every execution module of the
    minion (about a second, each run) before concluding "not offline". This state loads the
    host's service module by a function it has (``service.status``) and, only when that module
    defines no ``offline``, registers ``service.offline`` for this run answering what the full
    search would find: ``systemd_service``'s offline mode (the only ``offline`` in Salt) where that
    module would load (``systemctl`` installed, systemd not PID 1), else False. The service states
    themselves are Salt's. Nothing on the host changes (so ``test=True`` runs it as well, with no
    changes).

``nginx_ha.engine_synced``
    Makes sure the minion runs the ``nginx_ha_events`` engine its master serves, without paying for
    a full ``saltutil.sync_engines`` in every run (about 0.3 s: it lists and hashes the
    environment's ``_engines`` and rewrites the minion's module cache). It asks the file server for
    the hash of ``salt://_engines/<name>.py`` in the run's environment (one request) and compares it
    with the minion's synced copy (``<extension_modules>/engines/<name>.py``); only when they
    differ, or the master serves it and the minion has none, or the minion keeps a copy the master
    no longer serves (it would shadow an engine installed as a Salt extension), it runs
    ``saltutil.sync_engines`` for that environment and reports what the sync changed. When neither
    side has the file the engine comes from elsewhere (the pip package): nothing to sync.

Sync to minions with ``salt '*' saltutil.sync_all``.
"""

import difflib
import grp
import importlib.util
import inspect
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import salt.utils.hashutils
import salt.utils.systemd
from salt.exceptions import CommandExecutionError, SaltInvocationError

# The extension's own Python (_utils/) as ordinary imports: on the loader's sys.path when synced
# (<extension_modules>/utils), else the _utils folder beside this module's folder (the pip package;
# how and why: saltext/nginx_ha/__init__.py, "Shared Python").
if importlib.util.find_spec("nginx_ha_files") is None:
    sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "_utils"))
import nginx_ha_files  # pylint: disable=wrong-import-position

log = logging.getLogger(__name__)

__virtualname__ = "nginx_ha"

# util-linux unshare(1); looked up on PATH (plus the sbin directories) when the state runs.
UNSHARE = "unshare"
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_TMP_PREFIX = nginx_ha_files.TMP_PREFIX  # temporary file next to the live one (never matches *.conf)
_WORK_PREFIX = "nginx_ha.validate."

# Run by unshare(1) inside the private mount namespace. Every path comes in
# as an argument, never as script text. "file": bind the candidate over the existing live file.
# "tree": the live file does not exist yet; build, on a tmpfs, a view of its nearest existing
# directory (every entry bind-mounted or, for symlinks, copied) with the candidate added at
# the relative path, then mount that view over the directory. Then record that the namespace is
# ready (so a failure to build it is not mistaken for a refusal) and exec the checker.
_NS_SCRIPT = r"""
set -e
kind=$1 marker=$2
shift 2
case $kind in
file)
    mount --bind "$1" "$2"
    shift 2
    ;;
tree)
    dir=$1 stage=$2 rel=$3 cand=$4 attrs=$5
    shift 5
    mount -t tmpfs -o "$attrs" nginx_ha_validate "$stage"
    for entry in "$dir"/* "$dir"/.[!.]* "$dir"/..?*; do
        if [ ! -e "$entry" ] && [ ! -L "$entry" ]; then continue; fi
        base=${entry##*/}
        if [ -L "$entry" ]; then
            cp -P -- "$entry" "$stage/$base"
        elif [ -d "$entry" ]; then
            mkdir -- "$stage/$base"
            mount --rbind "$entry" "$stage/$base"
        else
            : > "$stage/$base"
            mount --bind "$entry" "$stage/$base"
        fi
    done
    mkdir -p -- "$(dirname -- "$stage/$rel")"
    : > "$stage/$rel"
    mount --bind "$cand" "$stage/$rel"
    mount --rbind "$stage" "$dir"
    ;;
*)
    exit 125
    ;;
esac
: > "$marker"
exec "$@"
"""


def __virtual__():
    if "file.apply_template_on_contents" not in __salt__:
        return (False, "nginx_ha states: the file execution module is not available")
    return __virtualname__


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


def _resolve_target(name):
    """
    The file really read at ``name``: symlinks (the file's and its directories') are followed, so
    a symlinked config is written through and stays a symlink. Raises on a loop or a non-file.
    """
    target = os.path.realpath(name)
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return target, None
    except OSError as exc:
        raise CommandExecutionError(f"cannot resolve {name}: {exc}") from exc
    if stat.S_ISLNK(st.st_mode):  # realpath stops at a loop
        raise CommandExecutionError(f"{name} is a symlink loop ({target}); fix it by hand")
    if not stat.S_ISREG(st.st_mode):
        raise CommandExecutionError(f"{name} ({target}) exists and is not a regular file; not touching it")
    return target, st


def _uid(user):
    if isinstance(user, int) or str(user).isdigit():
        return int(user)
    try:
        return pwd.getpwnam(str(user)).pw_uid
    except KeyError as exc:
        raise SaltInvocationError(f"user: {user!r} does not exist") from exc


def _gid(group):
    if isinstance(group, int) or str(group).isdigit():
        return int(group)
    try:
        return grp.getgrnam(str(group)).gr_gid
    except KeyError as exc:
        raise SaltInvocationError(f"group: {group!r} does not exist") from exc


def _mode(mode):
    try:
        value = int(str(mode), 8)
    except ValueError as exc:
        raise SaltInvocationError(f"mode: {mode!r} is not an octal file mode") from exc
    if not 0 <= value <= 0o7777:
        raise SaltInvocationError(f"mode: {mode!r} is not an octal file mode")
    return value


def _owner_name(uid, gid):
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return f"{user}:{group}"


def _nearest_existing_dir(path):
    directory = os.path.dirname(path)
    while not os.path.isdir(directory):
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return directory


def _under(path, directory):
    return os.path.commonpath([os.path.abspath(path), directory]) == directory


def _sweep_stale(base, max_age=86400):
    """Remove work directories a minion killed mid-check left behind (a day old: long dead)."""
    try:
        names = [n for n in os.listdir(base) if n.startswith(_WORK_PREFIX)]
    except OSError:
        return
    for entry in names:
        path = os.path.join(base, entry)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and time.time() - st.st_mtime > max_age:
            shutil.rmtree(path, ignore_errors=True)


def _work_dir(avoid):
    """A private (0700) work directory that is not inside ``avoid`` (which the namespace covers)."""
    for base in (tempfile.gettempdir(), "/run", "/dev/shm", "/var/tmp"):
        if os.path.isdir(base) and not _under(base, avoid):
            _sweep_stale(base)
            return tempfile.mkdtemp(prefix=_WORK_PREFIX, dir=base)
    raise CommandExecutionError(f"no temporary directory outside {avoid} to validate in")


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _check(checker, name, target, data, mode, uid, gid, timeout):
    """
    Run ``checker`` (``{path}`` -> ``name``) in a private mount namespace where ``target`` holds
    ``data``. Returns ``(status, output)``: ``ok``, ``refused``, ``timeout`` or ``unavailable``
    (the namespace could not be made; the checker did not run). Nothing outside the namespace
    changes except a private work directory, removed afterwards.
    """
    argv = [str(part).replace("{path}", name) for part in checker]
    env = dict(os.environ, LC_ALL="C", LANG="C")
    env["PATH"] = f"{env['PATH']}:{_SYSTEM_PATH}" if env.get("PATH") else _SYSTEM_PATH
    unshare = shutil.which(UNSHARE, path=env["PATH"])
    if unshare is None:
        return "unavailable", f"{UNSHARE} (util-linux) was not found"
    exists = os.path.lexists(target)
    cover = os.path.dirname(target) if exists else _nearest_existing_dir(target)
    if not exists and cover == "/":
        return "unavailable", f"refusing to cover / to validate {target}: create its directory first"
    work = _work_dir(cover)
    try:
        candidate = os.path.join(work, "candidate")
        with open(candidate, "wb") as fh:
            fh.write(data)
            os.fchown(fh.fileno(), uid, gid)
            os.fchmod(fh.fileno(), mode)
        marker = os.path.join(work, "ready")
        if exists:
            ns_args = ["file", marker, candidate, target]
        else:
            stage = os.path.join(work, "stage")
            os.mkdir(stage, 0o700)
            st = os.stat(cover)
            attrs = f"mode={stat.S_IMODE(st.st_mode):04o},uid={st.st_uid},gid={st.st_gid}"
            ns_args = ["tree", marker, cover, stage, os.path.relpath(target, cover), candidate, attrs]
        cmd = [unshare, "--mount", "--propagation", "private", "--", "/bin/sh", "-c", _NS_SCRIPT, "nginx_ha_validate", *ns_args, *argv]
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=env, cwd="/", start_new_session=True,
            )
        except OSError as exc:
            return "unavailable", f"cannot run {unshare}: {exc}"
        try:
            out, err = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            timed_out = True
            try:
                out, err = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:  # a descendant in another group holds the pipes
                proc.kill()
                proc.wait()
                out, err = b"", b""
        output = "\n".join(s.decode(errors="replace").strip() for s in (out, err) if s.strip()).strip()
        ready = os.path.exists(marker)
        if timed_out:
            return "timeout", output
        if not ready:
            return "unavailable", output or f"exit status {proc.returncode}"
        return ("ok" if proc.returncode == 0 else "refused"), output
    finally:
        shutil.rmtree(work, ignore_errors=True)


def validated_config(
    name,
    checker,
    source=None,
    contents=None,
    context=None,
    mode=None,
    user=None,
    group=None,
    makedirs=False,
    timeout=30,
    saltenv=None,
):
    """
    Manage configuration file ``name`` so that only content the daemon's checker accepts goes
    live. The live file is never replaced by, or temporarily holds, content the checker has not
    accepted (see the module documentation for how).

    name
        Absolute path of the configuration file. A symlink is written through (the link stays,
        its target gets the content); a symlink loop or a non-regular file fails the state.
    checker
        The checker as a list of arguments, never run through a shell. It runs in a private mount
        namespace where ``name`` holds the candidate; ``{path}`` in any argument is replaced by
        ``name``. It must exit 0 for a valid configuration, for example
        ``[/usr/sbin/nginx, -t, -q, -c, /etc/nginx/nginx.conf]`` or
        ``[/usr/sbin/keepalived, -t, -f, '{path}']``. Needs root and util-linux ``unshare``/
        ``mount``; without them the state fails and writes nothing.
    source
        A Jinja template on the master (``salt://...``), rendered with ``context``.
    contents
        Literal contents instead of ``source``.
    mode, user, group
        File mode (octal string), owner and group (names or numeric ids). Each one left unset
        keeps what the existing file has; a new file is ``root:root`` ``0644``. Set ones are
        enforced (a difference alone is a change, applied without running the checker).
    makedirs
        Create missing parent directories (mode 0755, owned by root), after the checker accepted
        the candidate. Without it a missing directory fails the state.
    timeout
        Seconds the checker may run (default 30). On expiry its process group is killed and the
        candidate counts as refused.

    .. code-block:: yaml

        keepalived_config_validated:
          nginx_ha.validated_config:
            - name: /etc/keepalived/keepalived.conf
            - source: salt://nginx_ha/files/keepalived.conf.jinja
            - context: {node: {...}}
            - checker: [/usr/sbin/keepalived, -t, -f, '{path}']
            - user: root
            - group: root
            - mode: '0644'
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    if not isinstance(name, str) or not os.path.isabs(name):
        ret["comment"] = f"name: {name!r} is not an absolute path"
        return ret
    if not isinstance(checker, list) or not checker or not all(isinstance(p, (str, int, float)) for p in checker):
        ret["comment"] = f"checker: {checker!r} is not a non-empty list of arguments"
        return ret
    try:
        seconds = float(timeout)
        if not seconds > 0:
            raise ValueError
    except (TypeError, ValueError):
        ret["comment"] = f"timeout: {timeout!r} is not a positive number of seconds"
        return ret
    try:
        target, st = _resolve_target(name)
        want_mode = _mode(mode) if mode is not None else (stat.S_IMODE(st.st_mode) if st else 0o644)
        want_uid = _uid(user) if user is not None else (st.st_uid if st else 0)
        want_gid = _gid(group) if group is not None else (st.st_gid if st else 0)
        new = _render(source, contents, context, saltenv or __env__)
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = str(exc)
        return ret
    via = f" (through the symlink {name} -> {target})" if target != name else ""

    old = nginx_ha_files.read_bytes(target) if st is not None else None
    content_changes = old != new
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
    if st is not None:
        if stat.S_IMODE(st.st_mode) != want_mode:
            changes["mode"] = f"{stat.S_IMODE(st.st_mode):04o} -> {want_mode:04o}"
        if (st.st_uid, st.st_gid) != (want_uid, want_gid):
            changes["owner"] = f"{_owner_name(st.st_uid, st.st_gid)} -> {_owner_name(want_uid, want_gid)}"
    if not changes:
        ret.update(result=True, comment=f"{name} is in the desired state")
        return ret

    checker_text = " ".join(str(part).replace("{path}", name) for part in checker)
    if content_changes:
        directory = os.path.dirname(target)
        if not os.path.isdir(directory) and not makedirs:
            ret["comment"] = f"directory {directory} does not exist (set makedirs: true)"
            return ret
        try:
            status, output = _check(checker, name, target, new, want_mode, want_uid, want_gid, seconds)
        except (OSError, CommandExecutionError) as exc:
            status, output = "unavailable", f"cannot prepare the candidate: {exc}"
        if status == "unavailable":
            ret["comment"] = (
                f"cannot validate {name} without touching the live file: a private mount namespace"
                f" could not be made (needs root and util-linux unshare/mount); nothing was written:\n{output}"
            )
            return ret
        if status == "timeout":
            ret["comment"] = (
                f"{name} was refused: {checker_text} did not finish within {seconds:g} s (killed);"
                f" the live file was not touched and the running service was not reloaded"
                + (f":\n{output}" if output else "")
            )
            return ret
        if status == "refused":
            ret["comment"] = (
                f"{name} was refused by {checker_text}; the live file was not touched"
                f" and the running service was not reloaded:\n{output}"
            )
            return ret
        if __opts__["test"]:
            ret.update(result=None, changes=changes, comment=f"{name} would be updated{via}; {checker_text} accepts it")
            return ret
        # Compare and swap: write only over what the diff and the check were made against.
        try:
            now_st = os.lstat(target)
        except FileNotFoundError:
            now_st = None
        if (now_st is None) != (st is None) or nginx_ha_files.read_bytes(target) != old:
            ret["comment"] = f"{name} changed while it was being checked; nothing was written, run the state again"
            return ret
        try:
            if not os.path.isdir(directory):
                os.makedirs(directory, mode=0o755)
            nginx_ha_files.atomic_write(target, new, want_mode, want_uid, want_gid)
        except OSError as exc:
            ret["comment"] = f"cannot write {name}: {exc}; the live file is unchanged"
            return ret
        ret.update(result=True, changes=changes, comment=f"{name} updated{via} and accepted by {os.path.basename(str(checker[0]))}")
        return ret

    # Only mode/owner differ: the content the checker would see is the same.
    if __opts__["test"]:
        ret.update(result=None, changes=changes, comment=f"{name}: mode/owner would be updated{via}")
        return ret
    try:
        os.chown(target, want_uid, want_gid)
        os.chmod(target, want_mode)
    except OSError as exc:
        ret["comment"] = f"cannot set the mode/owner of {name}: {exc}"
        return ret
    ret.update(result=True, changes=changes, comment=f"{name}: mode/owner updated{via}")
    return ret


def _served_hash(path, saltenv):
    """The file server's hash of ``salt://<path>`` in ``saltenv``: ``(hash_type, hex)``, or None if not served."""
    served = __salt__["cp.hash_file"](f"salt://{path}", saltenv=saltenv)
    if not isinstance(served, dict) or not served.get("hsum"):
        return None
    return served.get("hash_type") or __opts__.get("hash_type") or "sha256", served["hsum"]


def _local_hash(path, hash_type):
    """The hash of a local file in the file server's hash type, or None when it does not exist."""
    try:
        return salt.utils.hashutils.get_hash(path, form=hash_type)
    except FileNotFoundError:
        return None


def engine_synced(name, saltenv="base"):
    """
    Make sure the minion's synced copy of engine ``name`` is the one the master serves in
    ``saltenv``; sync (``saltutil.sync_engines``) only when it is not (see the module
    documentation). Changes: what the sync updated, as ``saltutil.sync_engines`` reports it.

    name
        The engine's module name (``nginx_ha_events``).

    saltenv
        The file server environment the engine comes from (the environment of the run).

    .. code-block:: yaml

        nginx_ha_events_engine_synced:
          nginx_ha.engine_synced:
            - name: nginx_ha_events
            - saltenv: base
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    if not isinstance(name, str) or not name.isidentifier():
        ret["comment"] = f"engine name {name!r} is not a Python module name"
        return ret
    source = f"_engines/{name}.py"
    local = os.path.join(__opts__["extension_modules"], "engines", f"{name}.py")
    try:
        served = _served_hash(source, saltenv)
    except Exception as exc:  # pylint: disable=broad-except
        # the file server did not answer: the sync would not either
        ret["comment"] = f"cannot ask the master for salt://{source} (saltenv {saltenv}): {exc}"
        return ret
    mine = _local_hash(local, served[0] if served else (__opts__.get("hash_type") or "sha256"))
    if served is None and mine is None:
        ret.update(result=True, comment=f"salt://{source} is not served in saltenv {saltenv} and no copy is synced: the engine comes from an installed package")
        return ret
    if served is not None and mine == served[1]:
        ret.update(result=True, comment=f"{local} is the engine the master serves (saltenv {saltenv})")
        return ret
    why = (
        f"{local} is missing" if mine is None
        else f"the master no longer serves salt://{source}: {local} is stale" if served is None
        else f"{local} differs from salt://{source}"
    )
    if __opts__["test"]:
        ret.update(result=None, comment=f"{why}: saltutil.sync_engines saltenv={saltenv} would run")
        return ret
    try:
        synced = __salt__["saltutil.sync_engines"](saltenv=saltenv, refresh=False)
    except Exception as exc:  # pylint: disable=broad-except
        ret["comment"] = f"{why}; saltutil.sync_engines saltenv={saltenv} failed: {exc}"
        return ret
    if synced:
        ret["changes"]["engines"] = synced
    after = _local_hash(local, served[0]) if served else _local_hash(local, "sha256")
    if (served is None and after is not None) or (served is not None and after != served[1]):
        ret["comment"] = f"{why}; saltutil.sync_engines saltenv={saltenv} ran but {local} is still not what the master serves"
        return ret
    ret.update(result=True, comment=f"{why}: synced ({', '.join(synced) if synced else 'nothing reported'})")
    return ret


def _offline_as_salt_finds_it():
    """
    ``service.offline`` where the host's service module has none: what Salt's loader answers after
    importing every module. Of Salt's modules only ``systemd_service`` defines ``offline``; it loads
    (``__virtual__``) on Linux when systemd is PID 1 or ``systemctl`` is installed without it
    ("offline mode"), and then answers ``salt.utils.systemd.offline``; otherwise the lookup misses
    and ``service.running`` reads False.
    """
    if "systemd_service" in (__opts__.get("disable_modules") or []) or __grains__.get("kernel") != "Linux":
        return False
    return salt.utils.systemd.offline(__context__)


def _defines(func, name):
    """Whether the module that defines loader function ``func`` has a public function ``name`` (or an alias to it)."""
    raw = inspect.unwrap(func)
    module = getattr(raw, "__globals__", None)
    if not isinstance(module, dict):
        return None  # unknown: leave the loader alone
    aliases = module.get("__func_alias__") or {}
    return callable(module.get(name)) or name in aliases.values()


def service_offline_answered(name):
    """
    Spare Salt's ``service.running``/``service.dead`` in this run the loader miss on
    ``service.offline`` where the host's service module has none (see the module documentation).
    Changes nothing on the host; ``service.running`` stays Salt's own.

    name
        Any (the state id).

    .. code-block:: yaml

        nginx_ha_service_offline_answered:
          nginx_ha.service_offline_answered:
            - require_in:
              - service: nginx_ha_nginx_running
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    try:
        status = __salt__["service.status"]
    except KeyError:
        ret["comment"] = "no service module on this minion: nothing to prepare (service.running reports it)"
        return ret
    module = getattr(inspect.unwrap(status), "__module__", "?").rsplit(".", 1)[-1]
    defined = _defines(status, "offline")
    if defined is None:
        ret["comment"] = f"cannot tell whether {module} has offline(): left to Salt's loader"
    elif defined:
        ret["comment"] = f"{module} provides service.offline"
    else:
        __salt__["service.offline"] = _offline_as_salt_finds_it
        log.debug("nginx_ha: %s has no offline(); service.offline answered without a full loader search", module)
        ret["comment"] = (
            f"{module} has no offline(): service.offline answers for this run as Salt's loader would"
            " (systemd_service's offline mode, else False), without importing every execution module to find it"
        )
    return ret
