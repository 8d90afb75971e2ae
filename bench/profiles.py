"""
The two profiles the benchmark compares, on the same lab hosts.

* ``baseline``: the tutorial's setup (``../shared/reference/tutorial-keepalived-nginx-ha.md``),
  installed onto the hosts directly (no Salt): its keepalived.conf for MASTER and BACKUP and its
  ``ps -C nginx`` check script (``bench/profiles/baseline/``), nginx with the distribution's
  default site and a page naming the node (the tutorial's ``sed`` on the welcome page).
* ``ours``: the nginx_ha formula applied through Salt with its defaults and the minimal cluster
  pillar (instance, interface, router id, VIP, nodes; ``pkg_refresh: false`` because the lab has
  no network; the lab's own way to restart a salt-minion, which runs as ``salt-minion -d`` there).
"""

import json
import os
import string
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
BASELINE_DIR = os.path.join(HERE, "profiles", "baseline")
VIP = "203.0.113.100"
NODES = ("web-a", "web-b")
MASTER, BACKUP = NODES


def baseline_files(node):
    """{path: (text, mode)} the baseline puts on ``node`` (web-a MASTER, web-b BACKUP)."""
    role = "master" if node == MASTER else "backup"
    with open(os.path.join(BASELINE_DIR, f"keepalived-{role}.conf")) as fh:
        conf = string.Template(fh.read()).substitute(interface="eth0", vip=VIP)
    with open(os.path.join(BASELINE_DIR, "nginx_check.sh")) as fh:
        script = fh.read()
    return {"/etc/keepalived/keepalived.conf": (conf, 0o644), "/etc/keepalived/nginx_check.sh": (script, 0o755)}


def install_baseline(lab):
    for node in NODES:
        host = lab.host(node)
        for path, (text, mode) in baseline_files(node).items():
            host.write_file(path, text)
            host.run(f"chmod {mode:o} {path}", check=True)
        # the tutorial's "sed -i 's/Welcome to nginx!/<node>/g' index.html", on Debian's default page
        host.run(f"sed -i 's/Welcome to nginx!/{node}/g' /var/www/html/index.nginx-debian.html", check=True)
    for node in NODES:
        lab.host(node).run("/etc/init.d/nginx start && /etc/init.d/keepalived start", check=True, timeout=60)


def remove_baseline(lab):
    """Stop the baseline's daemons and remove its check script (the formula writes the rest)."""
    for node in NODES:
        host = lab.host(node)
        if not host.running:
            lab.power_on(node)
        host.run("/etc/init.d/keepalived stop; /etc/init.d/nginx stop; pkill -x keepalived; pkill -x nginx; "
                 "sleep 0.5; pkill -KILL -x keepalived; pkill -KILL -x nginx; "
                 "rm -f /etc/keepalived/nginx_check.sh; true", timeout=60)


def merge(base, extra):
    """``base`` with ``extra`` merged in, recursively for dicts (neither is changed)."""
    out = dict(base or {})
    for key, value in (extra or {}).items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def ours_pillar(instances=1, minion_restart_cmd=None, extra=None):
    """
    The minimal cluster pillar: ``instances`` VRRP instances (VI_web, VI_web2, ...). ``extra``
    (a dict merged into ``nginx_ha``) measures settings other than the defaults (--ours-pillar).
    """
    vrrp = {}
    for i in range(instances):
        name = "VI_web" if i == 0 else f"VI_web{i + 1}"
        vrrp[name] = {
            "interface": "eth0",
            "virtual_router_id": 68 + i,
            "virtual_ipaddress": [f"203.0.113.{100 + i}/24"],
            "nodes": {MASTER: {"state": "MASTER", "priority": 100}, BACKUP: {"state": "BACKUP", "priority": 99}},
        }
    pillar = {"pkg_refresh": False, "vrrp_instances": vrrp}
    if minion_restart_cmd:
        pillar["events"] = {"minion_restart_cmd": minion_restart_cmd}
    return {"nginx_ha": merge(pillar, extra)}


def write_pillar(pillar_dir, pillar):
    with open(os.path.join(pillar_dir, "top.sls"), "w") as fh:
        fh.write("base:\n  'web-*':\n    - nginx_ha\n")
    with open(os.path.join(pillar_dir, "nginx_ha.sls"), "w") as fh:
        fh.write(yaml.safe_dump(pillar))


def apply(lab, node, timeout=600):
    """state.apply nginx_ha on ``node``: (wall seconds, seconds the states took, changed, failed ids)."""
    minion_pid = lab.minion_pid(node)
    t0 = time.monotonic()
    ret = lab.salt(node, "state.apply", "nginx_ha", timeout=timeout, job_timeout=60)
    wall = time.monotonic() - t0
    if not isinstance(ret, dict):
        raise RuntimeError(f"state.apply nginx_ha on {node} failed to render:\n{json.dumps(ret, indent=1)[:4000]}")
    states = sum(float(v.get("duration") or 0) for v in ret.values()) / 1000.0
    changed = sorted(v.get("__id__", k) for k, v in ret.items() if v.get("changes"))
    failed = {v.get("__id__", k): v.get("comment") for k, v in ret.items() if v.get("result") is False}
    restarted = any(v.get("__id__") == "nginx_ha_events_minion_restart" and v.get("changes") for v in ret.values())
    if restarted:  # the run restarted the minion (events engine configuration): wait for the new one
        lab.wait_minion_restart(node, minion_pid)
    slowest = max(ret.values(), key=lambda v: float(v.get("duration") or 0), default={})
    return {"wall": wall, "states": states, "changed": changed, "failed": failed, "n_states": len(ret),
            "slowest": {"id": slowest.get("__id__"), "seconds": float(slowest.get("duration") or 0) / 1000.0}}
