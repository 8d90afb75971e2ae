"""
TLS certificates and keys of nginx-ha's servers (``nginx_ha:nginx:servers:<name>:ssl_certificate``
and ``ssl_certificate_key``: PEM text from the pillar, or paths of files already on the node).

``nginx_ha_certs.present``
    Checks every server's material before anything is written (``_utils/nginx_ha_tls.py``): each
    certificate parses and is valid now (not expired, not before its start), each key is one
    unencrypted private key, and each key matches its certificate as OpenSSL loads them for nginx
    (``ssl.SSLContext.load_cert_chain``); a path must name a readable file on the node. A problem
    fails the state naming the pillar key, and nothing is written: the nginx site that requires
    this state is not validated, written or reloaded either. Then writes what the pillar gives as
    PEM text, one file per server (``<tls_dir>/<name>.nginx_ha.pem``: the key, then the certificate
    chain; root, 0600), atomically, so nginx never reads a new certificate with an old key. A
    missing directory is created root 0700; an existing one must be root's and writable by root
    alone (keys are never written where others could swap them).

    ``test=True`` checks the same and says what it would write; it writes nothing, so for a
    server's first file the site's own ``nginx -t`` in that test run cannot load it and says so.

    The PEM text is read from the pillar here, on the minion: it is never a state argument, never
    in a rendered SLS, the node view, ``node.json`` or ``nginx_ha.node_config``, and never in this
    state's return (changes say which file, never what is in it) or in an error.

``nginx_ha_certs.pruned``
    Removes the ``*.nginx_ha.pem`` files of ``<tls_dir>`` the current configuration no longer uses
    (a server dropped from the pillar), once the site that stopped naming them is live. No other
    file is ever removed.

Sync to minions with ``salt '*' saltutil.sync_all``.
"""

import importlib.util
import os
import re
import stat
import sys

from salt.exceptions import CommandExecutionError, SaltInvocationError

# The extension's own Python (_utils/) as ordinary imports: on the loader's sys.path when synced
# (<extension_modules>/utils), else the _utils folder beside this module's folder (the pip package;
# how and why: saltext/nginx_ha/__init__.py, "Shared Python").
if importlib.util.find_spec("nginx_ha_tls") is None:
    sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "_utils"))
import nginx_ha_files  # pylint: disable=wrong-import-position
import nginx_ha_model  # pylint: disable=wrong-import-position
import nginx_ha_tls  # pylint: disable=wrong-import-position

__virtualname__ = "nginx_ha_certs"

_OURS = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}" + re.escape(nginx_ha_tls.FILE_SUFFIX))  # as nginx_ha_tls.tls_file


def __virtual__():
    return __virtualname__


def _typed_config():
    """The node's typed nginx_ha configuration, PEM text included (read from the pillar here, never passed in)."""
    return nginx_ha_model.normalize(__salt__["nginx_ha.merged_config"]())


def _dir_changes(name):
    """Whether ``name`` must be created (root 0700): (change text or None, error or None)."""
    try:
        st = os.stat(name)
    except FileNotFoundError:
        return f"{name} created (root, 0700)", None
    if not stat.S_ISDIR(st.st_mode):
        return None, f"{name} exists and is not a directory; not writing keys there"
    if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return None, f"{name} is not root's alone (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}); not writing keys there"
    return None, None


def present(name):
    """
    Check the TLS material of every ``nginx_ha:nginx:servers`` entry and write the PEM text the
    pillar gives into ``name`` (``lookup:nginx:tls_dir``), only when all of it passes. See the module
    documentation. ``test=True`` checks as well and reports what would be written.

    name
        The directory for the files (the node view's ``lookup:nginx:tls_dir``; must agree with it).

    .. code-block:: yaml

        nginx_ha_nginx_tls_material:
          nginx_ha_certs.present:
            - name: /etc/nginx/nginx_ha_tls
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    try:
        config = _typed_config()
    except (ValueError, CommandExecutionError, SaltInvocationError) as exc:  # ModelError: each problem names its key, never a key's text
        ret["comment"] = str(exc)
        return ret
    nginx, tls_dir = config["nginx"], config["lookup"]["nginx"]["tls_dir"]
    if os.path.normpath(name) != os.path.normpath(tls_dir):
        ret["comment"] = f"name: {name} is not this node's lookup:nginx:tls_dir ({tls_dir})"
        return ret
    materials = nginx_ha_tls.plan(nginx, tls_dir)
    errors, notes = nginx_ha_tls.check_all(nginx, tls_dir)
    if errors:
        ret["comment"] = "TLS material refused; nothing was written and the site was not changed:\n" + "\n".join(errors)
        return ret
    wanted = {m["file"]: nginx_ha_tls.file_text(nginx["servers"][m["server"]]).encode() for m in materials if m["file"]}
    changes = {}
    if wanted:
        change, error = _dir_changes(name)
        if error:
            ret["comment"] = error
            return ret
        if change:
            changes[name] = change
    for path, data in wanted.items():
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            ret["comment"] = f"{path} exists and is not a regular file; not touching it"
            return ret
        if st is None or nginx_ha_files.read_bytes(path) != data:
            changes[path] = "written: root, 0600 (content not shown)" if st else "created: root, 0600 (content not shown)"
        elif (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) != (0, 0, nginx_ha_tls.FILE_MODE):
            changes[path] = f"owner/mode {st.st_uid}:{st.st_gid} {stat.S_IMODE(st.st_mode):04o} -> root 0600"
    servers = ", ".join(m["server"] for m in materials) or "none"
    checked = f"TLS material checked (servers: {servers})" + "".join(f"\n{note}" for note in notes)
    if not changes:
        ret.update(result=True, comment=f"{checked}; the files are in the desired state")
        return ret
    if __opts__["test"]:
        new = [path for path, change in changes.items() if change.startswith("created")]
        ret.update(
            result=None,
            changes=changes,
            comment=f"{checked}; would write {', '.join(sorted(changes))}"
            + (f"\n(until {', '.join(new)} exist, the site's nginx -t in this test run cannot load them and says so)" if new else ""),
        )
        return ret
    try:
        if name in changes:
            os.makedirs(name, mode=nginx_ha_tls.DIR_MODE)
            os.chown(name, 0, 0)
            os.chmod(name, nginx_ha_tls.DIR_MODE)
        for path, data in wanted.items():
            if path in changes:
                nginx_ha_files.atomic_write(path, data, nginx_ha_tls.FILE_MODE, 0, 0)
    except OSError as exc:
        ret["comment"] = f"cannot write the TLS material under {name}: {exc.strerror} ({exc.filename})"
        return ret
    ret.update(result=True, changes=changes, comment=f"{checked}; written")
    return ret


def pruned(name, keep=None):
    """
    Remove the ``<server>.nginx_ha.pem`` files of ``name`` (``lookup:nginx:tls_dir``) that are not in
    ``keep`` (the files the live site names), and temporary files an interrupted write left.
    Anything else in the directory is left alone.

    .. code-block:: yaml

        nginx_ha_nginx_tls_unused_removed:
          nginx_ha_certs.pruned:
            - name: /etc/nginx/nginx_ha_tls
            - keep: [/etc/nginx/nginx_ha_tls/shop.nginx_ha.pem]
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    keep = {os.path.normpath(p) for p in keep or []}
    try:
        entries = sorted(os.listdir(name))
    except FileNotFoundError:
        ret["comment"] = f"{name} does not exist: nothing to remove"
        return ret
    except NotADirectoryError:
        ret.update(result=False, comment=f"{name} is not a directory")
        return ret
    stale = []
    for entry in entries:
        path = os.path.normpath(os.path.join(name, entry))
        ours = _OURS.fullmatch(entry) or entry.startswith(nginx_ha_files.TMP_PREFIX)
        if ours and path not in keep and os.path.isfile(path) and not os.path.islink(path):
            stale.append(path)
    if not stale:
        ret["comment"] = f"no unused TLS file in {name}"
        return ret
    if __opts__["test"]:
        ret.update(result=None, changes={"removed": stale}, comment=f"would remove {len(stale)} unused TLS file(s)")
        return ret
    for path in stale:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            ret.update(result=False, comment=f"cannot remove {path}: {exc.strerror}")
            return ret
    ret.update(changes={"removed": stale}, comment=f"removed {len(stale)} unused TLS file(s)")
    return ret
