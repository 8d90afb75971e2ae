"""
The health path on real hosts, a client polling the VIP every 20 ms (issue 9):

* the health endpoint changed on both nodes at once (a query string, a port written as a string):
  no failed request, always exactly one VIP owner, and the watcher probes the new endpoint;
* a config nginx refuses, together with a health change: the health path is unchanged and the VIP
  is served;
* a negative weight and a hung nginx on the MASTER: the VIP moves;
* the minion killed while the checker runs: the live config is the old one, and after a restart
  nginx serves it.
"""

import json
import threading
import time

import pytest

from tests.cluster.support import (
    Poller,
    apply,
    base_pillar,
    cluster,
    failed,
    pillar_directory,
    served_by,
    vip_holders,
    wait_for,
    write_pillar,
)

pytestmark = pytest.mark.cluster

NODES = ("web-a", "web-b")
SETTINGS = "/etc/keepalived/nginx_ha/health.json"
SITE_CONF = "/etc/nginx/conf.d/nginx_ha.conf"


@pytest.fixture(scope="module")
def pillar_dir():
    with pillar_directory() as path:
        yield path


@pytest.fixture(scope="module")
def lab(pillar_dir):
    with cluster(pillar_dir, NODES) as lab:
        yield lab


def set_pillar(lab, pillar_dir, pillar):
    write_pillar(pillar_dir, pillar)
    for node in NODES:
        lab.salt(node, "saltutil.refresh_pillar", "wait=True", timeout=60)


def apply_both(lab):
    """state.apply nginx_ha on both nodes at the same time."""
    results, threads = {}, []
    for node in NODES:
        thread = threading.Thread(target=lambda n=node: results.__setitem__(n, apply(lab, n)))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(400)
    return results


class Owners:
    """Samples who holds the VIP (kernel addresses on both nodes) until stopped."""

    def __init__(self, lab):
        self.lab, self.samples, self.stopped = lab, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopped.is_set():
            self.samples.append(tuple(vip_holders(self.lab)))
            time.sleep(0.05)

    def stop(self):
        self.stopped.set()
        self.thread.join(10)
        return self.samples


def settings(lab, node):
    return json.loads(lab.host(node).read_file(SETTINGS))


def track_file(lab, node):
    return lab.host(node).read_file(settings(lab, node)["state_file"]).strip()


def failures(samples):
    return [s for s in samples if s[1] != "200"]


def test_health_endpoint_changed_on_both_nodes_at_once(lab, pillar_dir):
    pillar = base_pillar()
    pillar["nginx"] = {"health": {"listen": "8082", "path": "/nginx_ha/health?a=1&b=2"}}
    set_pillar(lab, pillar_dir, pillar)
    poller, owners = Poller(lab, interval=0.02, timeout=0.25, name="health-change"), Owners(lab)
    try:
        results = apply_both(lab)
    finally:
        time.sleep(2)  # a late flap would show here
        held = owners.stop()
        samples = poller.stop()
    for node, ret in results.items():
        assert failed(ret) == {}, (node, failed(ret))
    assert len(samples) > 50 and failures(samples) == [], failures(samples)[:10]
    assert held and all(len(h) == 1 for h in held), sorted(set(held))
    for node in NODES:
        now = settings(lab, node)
        assert (now["host"], now["port"], now["request"]) == ("127.0.0.1", 8082, "/nginx_ha/health?a=1&b=2"), now
        assert track_file(lab, node) == "0", node  # the watcher found the new endpoint healthy
        site = lab.host(node).read_file(SITE_CONF)
        assert "listen 8082;" in site and "8081" not in site, site  # the old endpoint is gone again
    # idempotent after the switch
    for node in NODES:
        assert {k: v for k, v in apply(lab, node).items() if v.get("changes")} == {}, node


def test_refused_config_with_a_health_change_leaves_the_health_path_unchanged(lab, pillar_dir):
    before = {node: lab.host(node).read_file(SETTINGS) for node in NODES}
    pillar = base_pillar()
    pillar["nginx"] = {
        "health": {"listen": "127.0.0.1:8083", "path": "/elsewhere"},
        # a host nginx cannot resolve: the schema accepts it, nginx -t refuses the site
        "upstreams": {"app": {"servers": ["no-such-host.invalid:8080"]}},
        "locations": {"/app/": {"proxy_pass": "app"}},
    }
    set_pillar(lab, pillar_dir, pillar)
    poller = Poller(lab, interval=0.02, timeout=0.25, name="refused")
    try:
        results = apply_both(lab)
        time.sleep(2)
    finally:
        samples = poller.stop()
    for node, ret in results.items():
        bad = failed(ret)
        assert "nginx_ha_nginx_site_config_validated" in bad, (node, bad)
        assert "no-such-host.invalid" in bad["nginx_ha_nginx_site_config_validated"]
    for node in NODES:
        assert lab.host(node).read_file(SETTINGS) == before[node], node  # the health path is unchanged
        assert track_file(lab, node) == "0", node
        assert "no-such-host" not in lab.host(node).read_file(SITE_CONF)
    assert failures(samples) == [] and vip_holders(lab) == ["web-a"]


def test_negative_weight_moves_the_vip_off_a_hung_master(lab, pillar_dir):
    pillar = base_pillar()
    pillar["check"] = {"weight": -20}  # 100 - 20 = 80 < 99: a failing web-a yields
    set_pillar(lab, pillar_dir, pillar)
    for node in NODES:
        ret = apply(lab, node)
        assert failed(ret) == {}, (node, failed(ret))
    wait_for(lambda: vip_holders(lab) == ["web-a"], 20, what="VIP on web-a")
    web_a = lab.host("web-a")
    try:
        web_a.run("pkill -STOP -x nginx", check=True)
        wait_for(lambda: served_by(lab) == "web-b", 15, what="web-b serving the VIP")
        assert vip_holders(lab) == ["web-b"]
        status = lab.salt("web-a", "nginx_ha.vip_status", timeout=60)["VI_web"]
        assert status["state"] == "BACKUP" and status["effective_priority"] < 99, status  # lowered, not FAULT
    finally:
        web_a.run("pkill -CONT -x nginx")
    wait_for(lambda: vip_holders(lab) == ["web-a"], 30, what="VIP back on web-a")


def test_minion_killed_while_the_checker_runs_leaves_the_old_config_live(lab, pillar_dir):
    web_a = lab.host("web-a")
    set_pillar(lab, pillar_dir, base_pillar())
    ret = apply(lab, "web-a")
    assert failed(ret) == {}, failed(ret)
    old = web_a.read_file(SITE_CONF)
    # a checker that takes its time (nginx -t after 20 s), so the kill lands while it runs
    web_a.write_file("/etc/nginx/slow-nginx", "#!/bin/sh\nsleep 20\nexec /usr/sbin/nginx \"$@\"\n", mode=0o755)
    pillar = base_pillar()
    pillar["nginx"] = {"server_name": ["killed.example.test"]}
    pillar["lookup"] = {"nginx": {"binary": "/etc/nginx/slow-nginx"}}
    set_pillar(lab, pillar_dir, pillar)
    minion_pid = lab.minion_pid("web-a")
    job = threading.Thread(target=lambda: lab.salt("web-a", "state.apply", "nginx_ha", timeout=120), daemon=True)
    job.start()
    wait_for(lambda: web_a.run("pgrep -f 'sleep 20'").returncode == 0, 60, what="the checker running")
    assert web_a.read_file(SITE_CONF) == old  # the candidate is not at the live path while it is checked
    web_a.run("pkill -9 -f salt-minion")
    web_a.run("pkill -f 'sleep 20'")
    job.join(130)
    assert web_a.read_file(SITE_CONF) == old
    leftovers = web_a.run("ls -A /etc/nginx/conf.d", check=True).stdout.split()
    assert leftovers == ["nginx_ha.conf"], leftovers
    # nginx restarted from what is on disk serves the old site
    web_a.run("service nginx restart", check=True, timeout=60)
    assert "killed.example.test" not in web_a.run("curl -s -m 2 -H 'Host: killed.example.test' http://127.0.0.1/", timeout=10).stdout
    assert web_a.run("nginx -t -q").returncode == 0
    # bring the minion back and the cluster to its base pillar
    lab.start_salt("web-a")  # through its unit on systemd hosts
    lab.wait_minion_restart("web-a", minion_pid)
    web_a.run("rm -f /etc/nginx/slow-nginx")
    set_pillar(lab, pillar_dir, base_pillar())
    for node in NODES:
        assert failed(apply(lab, node)) == {}, node
    wait_for(lambda: vip_holders(lab) == ["web-a"], 30, what="VIP on web-a")
