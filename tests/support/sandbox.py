"""
Run the real ``keepalived -t`` and ``nginx -t`` against rendered configs, in a throwaway sandbox.

The sandbox is ``unshare --net --mount``: a private network namespace holding the interfaces a
config names (veth pairs, as this kernel has no dummy driver) and a private mount namespace where
copies of /etc/keepalived and /etc/nginx are bind-mounted over the real ones, so the checkers read
the files at their real paths (nginx's includes resolve, keepalived's script security sees a
root-owned path). Everything vanishes with the process: nothing to clean up, nothing reaches the
machine's own configuration.
"""

import os
import shlex
import shutil
import subprocess
import tempfile


def _copytree(src, dst):
    if os.path.isdir(src):
        shutil.copytree(src, dst, symlinks=True)
    else:
        os.makedirs(dst)
    os.chmod(dst, 0o755)


def run_checked(files, command, interfaces=("eth0",), timeout=60, base=None, users=(), private=(), pid=False):
    """
    Write ``files`` ({absolute path under /etc/keepalived or /etc/nginx: (text, mode) or None to
    delete}) into the
    sandbox, create ``interfaces`` and run ``command`` (a list). Returns CompletedProcess.

    Optional, for another distribution's tree or to run the daemons for real:

    * ``base``: {path: (text, mode)}, the /etc/keepalived and /etc/nginx to start from instead of
      copies of this machine's (e.g. a RedHat-shaped tree); ``files`` are written over it.
    * ``users``: system user (and group) names the checkers must find (``user nginx;``): the
      sandbox sees /etc/passwd and /etc/group with them added.
    * ``private``: directories covered by an empty tmpfs inside the sandbox (/run, /var/log/nginx,
      ...): a daemon started there writes nothing to this machine. ``files`` may name paths
      under them too.
    * ``pid``: a private PID namespace, so whatever ``command`` starts dies with the sandbox.
    """
    work = tempfile.mkdtemp(prefix="nginx-ha-sandbox-")
    os.chmod(work, 0o755)
    try:
        roots = {"/etc/keepalived": os.path.join(work, "keepalived"), "/etc/nginx": os.path.join(work, "nginx")}
        for i, path in enumerate(private):
            roots[path.rstrip("/")] = os.path.join(work, f"private{i}")
        for real, copy in roots.items():
            if real in ("/etc/keepalived", "/etc/nginx") and base is None:
                _copytree(real, copy)
            else:
                os.makedirs(copy)
                os.chmod(copy, 0o755)
        for path, content in [*(base or {}).items(), *files.items()]:
            root = next((r for r in roots if path.startswith(r + "/")), None)
            if root is None:
                raise ValueError(f"{path} is not under {', '.join(roots)}")
            target = os.path.join(roots[root], os.path.relpath(path, root))
            if content is None:  # the formula removes this file
                if os.path.lexists(target):
                    os.unlink(target)
                continue
            text, mode = content
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            if os.path.islink(target):
                # A copied link (Debian's sites-enabled/default -> /etc/nginx/sites-available/default)
                # points at the machine's own file: the given file replaces the link in the copy,
                # never writes through it.
                os.unlink(target)
            with open(target, "w") as fh:
                fh.write(text)
            os.chmod(target, mode)
        lines = ["set -e", "ip link set lo up"]
        for i, name in enumerate(interfaces):
            lines.append(f"ip link add {shlex.quote(name)} type veth peer name sbxpeer{i}")
            lines.append(f"ip link set {shlex.quote(name)} up")
        for real, copy in roots.items():
            if real in ("/etc/keepalived", "/etc/nginx"):
                lines.append(f"mount --bind {shlex.quote(copy)} {shlex.quote(real)}")
            else:  # a fresh tmpfs holding the files given for it
                lines.append(f"mount -t tmpfs -o mode=0755 nginx-ha-sandbox {shlex.quote(real)}")
                lines.append(f"cp -a {shlex.quote(copy)}/. {shlex.quote(real)}/")
        for name in ("passwd", "group"):
            if users:
                with open(f"/etc/{name}") as fh:
                    text = fh.read()
                known = {line.split(":")[0] for line in text.splitlines() if line}
                ids = 64000
                for user in users:
                    if user not in known:
                        text += f"{user}:x:{ids}:{ids}::/nonexistent:/usr/sbin/nologin\n" if name == "passwd" else f"{user}:x:{ids}:\n"
                        ids += 1
                copy = os.path.join(work, name)
                with open(copy, "w") as fh:
                    fh.write(text)
                os.chmod(copy, 0o644)
                lines.append(f"mount --bind {shlex.quote(copy)} /etc/{name}")
        lines.append("set +e")
        lines.append(shlex.join(command))
        script = "\n".join(lines)
        return subprocess.run(
            ["unshare", "--net", "--mount", "--propagation", "private", *(["--pid", "--fork"] if pid else []), "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
