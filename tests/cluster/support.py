"""Helpers for cluster tests: pillars, state.apply results, polling the VIP from the client host."""

import contextlib
import json
import pathlib
import shlex
import shutil
import tempfile
import time

import yaml

from lab import Lab, minion_restart_cmd

REPO = pathlib.Path(__file__).resolve().parents[2]

VIP = "203.0.113.100"
VIP_URL = f"http://{VIP}/"


def base_pillar(**instance_overrides):
    instance = {
        "interface": "eth0",
        "virtual_router_id": 68,
        "advert_int": 1,
        "virtual_ipaddress": [f"{VIP}/24"],
        "nodes": {"web-a": {"state": "MASTER", "priority": 100}, "web-b": {"state": "BACKUP", "priority": 99}},
    }
    instance.update(instance_overrides)
    # The lab hosts have no network beyond the lab: never refresh the package database there.
    # Lab minions run as `salt-minion -d` on sysvinit hosts, as a unit on systemd hosts
    # ($NGINX_HA_LAB_INIT): restart them the lab's way for that kind (lab.minion_restart_cmd).
    return {"pkg_refresh": False, "events": {"minion_restart_cmd": minion_restart_cmd()},
            "vrrp_instances": {"VI_web": instance}}


def apply(lab, node, *args, timeout=300):
    """state.apply nginx_ha on one node; waits for the minion to come back when the run restarted it."""
    before = lab.minion_pid(node)
    ret = lab.salt(node, "state.apply", "nginx_ha", *args, timeout=timeout)
    if isinstance(ret, dict) and any(
        v.get("__id__") == "nginx_ha_events_minion_restart" and v.get("changes") for v in ret.values()
    ):
        lab.wait_minion_restart(node, before)
    return ret


def write_pillar(pillar_dir, pillar):
    (pillar_dir / "top.sls").write_text("base:\n  '*':\n    - nginx_ha\n")
    (pillar_dir / "nginx_ha.sls").write_text(yaml.safe_dump({"nginx_ha": pillar}))


def state_results(ret):
    """state.apply return -> {state id: result dict}; raises when the return is a render error."""
    if isinstance(ret, list):
        raise AssertionError("state.apply returned errors: " + "\n".join(map(str, ret)))
    assert isinstance(ret, dict), ret
    return {v.get("__id__", k): v for k, v in ret.items()}


def failed(ret):
    return {k: v["comment"] for k, v in state_results(ret).items() if v["result"] is False}


def changed(ret):
    return {k: v["changes"] for k, v in state_results(ret).items() if v["changes"]}


def wait_for(predicate, timeout, interval=0.2, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def addresses(host):
    out = host.run("ip -j addr show dev eth0", check=True).stdout
    return {a["local"] for link in json.loads(out) for a in link.get("addr_info", [])}


def vip_holders(lab, names=("web-a", "web-b")):
    return sorted(n for n in names if VIP in addresses(lab.host(n)))


def page(lab, url=VIP_URL, timeout=1):
    res = lab.client.run(f"curl -s -m {timeout} {url}", timeout=timeout + 10)
    return res.stdout if res.returncode == 0 else None


def served_by(lab):
    text = page(lab)
    if not text:
        return None
    for name in ("web-a", "web-b", "web-c"):
        if f"served by {name}" in text:
            return name
    return "?"


def pid_of(host, pidfile):
    res = host.run(f"cat {pidfile}")
    return res.stdout.strip() if res.returncode == 0 else None


class Poller:
    """A client-side loop requesting the VIP every `interval` seconds; results read back at stop()."""

    def __init__(self, lab, interval=0.05, timeout=0.5, name="poll"):
        self.lab, self.log = lab, f"/tmp/nginx-ha-{name}.log"
        script = (
            f"rm -f {self.log}.stop; while [ ! -e {self.log}.stop ]; do "
            f"printf '%s ' \"$(date +%s.%N)\" >> {self.log}; "
            f"curl -s -o /dev/null -m {timeout} -w '%{{http_code}}\\n' {VIP_URL} >> {self.log} || echo 000 >> {self.log}; "
            f"sleep {interval}; done"
        )
        # shlex-quoted: the loop's $(date ...) must run per request, not once when it is spawned
        lab.client.run(f"rm -f {self.log}; (nohup sh -c {shlex.quote(script)} >/dev/null 2>&1 &)", check=True)

    def stop(self):
        self.lab.client.run(f"touch {self.log}.stop", check=True)
        time.sleep(0.8)
        lines = [line.split() for line in self.lab.client.read_file(self.log).splitlines() if line.strip()]
        return [(float(parts[0]), parts[1] if len(parts) > 1 else "000") for parts in lines]


@contextlib.contextmanager
def pillar_directory(pillar=None):
    """A pillar root the lab's master reads (top.sls + nginx_ha.sls), removed afterwards."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="nginx-ha-pillar-", dir="/var/tmp"))
    path.chmod(0o755)
    write_pillar(path, pillar or base_pillar())
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def cluster(pillar_dir, nodes=("web-a", "web-b"), master_extra=None, applied=True, owner="web-a"):
    """
    A lab whose master serves the formula and ``pillar_dir``, extensions synced to ``nodes``; with
    ``applied`` the formula is applied on every node and ``owner`` holds the VIP and serves it.
    """
    with Lab(minions=nodes, pillar_dir=str(pillar_dir), file_roots=[str(REPO / "salt")], master_extra=master_extra) as lab:
        for node in nodes:
            lab.salt(node, "saltutil.sync_all", timeout=120)
        if applied:
            for node in nodes:
                ret = apply(lab, node)
                assert failed(ret) == {}, (node, failed(ret))
            wait_for(lambda: vip_holders(lab, nodes) == [owner], 15, what=f"VIP on {owner}")
            wait_for(lambda: served_by(lab) == owner, 10, what=f"{owner}'s page through the VIP")
        yield lab
