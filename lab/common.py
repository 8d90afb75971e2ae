"""Names, paths and small helpers shared by the lab, its cleanup and its init."""

import ipaddress
import json
import os
import re
import subprocess
import sys
import time

LAB_ROOT = "/var/lib/nginx-ha-lab"  # run directories: visible in hosts, not one of their private paths
PREFIX = "nhl"  # every netns and root-side link of a run is named nhl<run id>...
RUN_ID_RE = re.compile(r"^[0-9a-f]{4}$")
NAME_RE = re.compile(r"^nhl([0-9a-f]{4})")  # netns names and root-side link names
MOUNTPOINTS_FILE = os.path.join(LAB_ROOT, "created-mountpoints.json")
NETNS_DIR = "/run/netns"  # iproute2's named network namespaces
DEVLOG = "/dev/log"  # each host binds its own syslog socket here

MGMT_NET = ipaddress.ip_network("198.51.100.0/24")
SVC_NET = ipaddress.ip_network("203.0.113.0/24")
LAB_NETS = (MGMT_NET, SVC_NET)
NETS = {"svc": SVC_NET, "mgmt": MGMT_NET}
IFNAMES = {"svc": "eth0", "mgmt": "eth1"}  # interface names inside every host

HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class LabError(RuntimeError):
    """Anything the lab refuses or fails to do; the message says what and why."""


def log(msg):
    print(f"[lab] {msg}", file=sys.stderr, flush=True)


def sh(args, check=True, timeout=30, input=None):
    """Run a command in the root namespace (only ``ip`` and friends). Returns CompletedProcess."""
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def ip_json(*args):
    out = sh(["ip", "-j", *args]).stdout.strip()
    return json.loads(out) if out else []


def proc_starttime(pid):
    """Start time of ``pid`` in clock ticks since boot (None if it does not exist)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            data = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(data.rsplit(")", 1)[1].split()[19])


def owner_alive(owner):
    """``owner`` is the dict a run writes in ``owner.json``."""
    try:
        return proc_starttime(int(owner["pid"])) == int(owner["starttime"])
    except (KeyError, TypeError, ValueError):
        return False


def read_owner(run_dir):
    try:
        with open(os.path.join(run_dir, "owner.json")) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def run_dirs():
    """{run id: path} of every run directory under LAB_ROOT."""
    try:
        names = os.listdir(LAB_ROOT)
    except FileNotFoundError:
        return {}
    return {n: os.path.join(LAB_ROOT, n) for n in names if RUN_ID_RE.match(n)}


def live_runs():
    return {rid for rid, path in run_dirs().items() if owner_alive(read_owner(path))}


def netns_names():
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def root_links():
    return [link["ifname"] for link in ip_json("link", "show")]


def wait_for(predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def check_root_netns(routes, addrs, nets=LAB_NETS):
    """
    Refuse (LabError) when the root network namespace could reach a lab network by itself: a
    route other than the default route, a default route via a lab gateway, or an address whose
    network overlaps 198.51.100.0/24 or 203.0.113.0/24. ``routes`` and ``addrs`` are the parsed
    output of ``ip -j route show table all`` and ``ip -j addr show``.
    """
    problems = []
    for route in routes:
        dst = route.get("dst")
        gateway = route.get("gateway")
        if gateway:
            try:
                gw = ipaddress.ip_address(gateway)
            except ValueError:
                gw = None
            if gw is not None and any(gw in net for net in nets):
                problems.append(f"route {dst} via {gateway} (dev {route.get('dev')}) uses a lab gateway")
        if not dst or dst == "default":
            continue
        try:
            net = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if net.version != 4 or net.prefixlen == 0:
            continue
        for lab in nets:
            if net.overlaps(lab):
                table = route.get("table", "main")
                problems.append(f"route {dst} dev {route.get('dev')} (table {table}) covers lab network {lab}")
    for link in addrs:
        for info in link.get("addr_info", []):
            if info.get("family") != "inet":
                continue
            try:
                net = ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False)
            except (KeyError, ValueError):
                continue
            for lab in nets:
                if net.overlaps(lab):
                    problems.append(f"address {info['local']}/{info['prefixlen']} on {link.get('ifname')} overlaps lab network {lab}")
    if problems:
        raise LabError(
            "refusing to start: the root network namespace can reach a lab network, so lab traffic "
            "could leak to or from this machine. Remove these first:\n  " + "\n  ".join(problems)
        )


def check_root_netns_live():
    check_root_netns(ip_json("route", "show", "table", "all"), ip_json("addr", "show"))
