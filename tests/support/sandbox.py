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


def run_checked(files, command, interfaces=("eth0",), timeout=60):
    """
    Write ``files`` ({absolute path under /etc/keepalived or /etc/nginx: (text, mode) or None to
    delete}) into the
    sandbox, create ``interfaces`` and run ``command`` (a list). Returns CompletedProcess.
    """
    work = tempfile.mkdtemp(prefix="nginx-ha-sandbox-")
    os.chmod(work, 0o755)
    try:
        roots = {"/etc/keepalived": os.path.join(work, "keepalived"), "/etc/nginx": os.path.join(work, "nginx")}
        for real, copy in roots.items():
            _copytree(real, copy)
        for path, content in files.items():
            root = next(r for r in roots if path.startswith(r + "/"))
            target = os.path.join(roots[root], os.path.relpath(path, root))
            if content is None:  # the formula removes this file
                if os.path.lexists(target):
                    os.unlink(target)
                continue
            text, mode = content
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            with open(target, "w") as fh:
                fh.write(text)
            os.chmod(target, mode)
        lines = ["set -e", "ip link set lo up"]
        for i, name in enumerate(interfaces):
            lines.append(f"ip link add {shlex.quote(name)} type veth peer name sbxpeer{i}")
            lines.append(f"ip link set {shlex.quote(name)} up")
        for real, copy in roots.items():
            lines.append(f"mount --bind {shlex.quote(copy)} {shlex.quote(real)}")
        lines.append("set +e")
        lines.append(shlex.join(command))
        script = "\n".join(lines)
        return subprocess.run(
            ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
