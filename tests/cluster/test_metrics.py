"""
Metrics on real hosts (issue 10, part 5): keepalived VRRP between web-a and web-b, the metrics
writer on each node as a node_exporter textfile and on 127.0.0.1:9650 at once, parsed with the
official Prometheus client's parser.

* both nodes: web-a MASTER holding the VIP, web-b BACKUP not holding it, both healthy, the same
  picture in the textfile and on the port; a removed textfile directory comes back (0755, the
  writer does not keep keepalived's umask); the port answers on 127.0.0.1 only;
* nginx stops on the MASTER: within the interval the metrics show web-a FAULT, its health (watcher
  and keepalived's check) 0, web-b MASTER holding the VIP, the transitions counted; after nginx
  starts again, the way back;
* the writer killed (SIGKILL) or hung (SIGSTOP): the HA path does not notice (the VIP stays, the
  check stays healthy), keepalived's check starts a new writer after a kill;
* keepalived stopped on the BACKUP: its textfile and port are gone (no stale picture); started
  again: they are back;
* metrics off: the writer is stopped, its textfile, settings and program are gone.
"""

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.support import (
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
TEXTFILE = "/run/prometheus/node-exporter/nginx_ha.prom"  # /run: private to each lab host
PORT = 9650
INTERVAL = 5
SCRIPT_DIR = "/etc/keepalived/nginx_ha"
LOCK = "/run/nginx_ha_metrics.lock"


def metrics_pillar(**metrics):
    pillar = base_pillar()
    pillar["metrics"] = metrics or {"textfile": TEXTFILE, "listen": f"127.0.0.1:{PORT}", "interval": INTERVAL}
    return pillar


@pytest.fixture(scope="module")
def pillar_dir():
    with pillar_directory(metrics_pillar()) as path:
        yield path


def apply_metrics(lab, node):
    """state.apply nginx_ha.metrics (also part of nginx_ha once init.sls includes it: then a no-op here)."""
    ret = lab.salt(node, "state.apply", "nginx_ha.metrics", timeout=300)
    assert failed(ret) == {}, (node, failed(ret))
    return ret


@pytest.fixture(scope="module")
def lab(pillar_dir):
    with cluster(pillar_dir, NODES) as lab:
        for node in NODES:
            apply_metrics(lab, node)
        yield lab


def parse(text):
    """{(metric name, frozenset of labels): value} through prometheus_client's parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def textfile(lab, node):
    text = lab.host(node).read_file(TEXTFILE, missing_ok=True)
    return parse(text) if text else None


def scraped(lab, node):
    res = lab.host(node).run(["curl", "-s", "-m", "3", f"http://127.0.0.1:{PORT}/metrics"], timeout=15)
    return parse(res.stdout) if res.returncode == 0 and res.stdout else None


def value(metrics, name, **labels):
    return None if metrics is None else metrics.get((name, frozenset(labels.items())))


def state_of(metrics, instance="VI_web"):
    states = [s for s in ("MASTER", "BACKUP", "FAULT", "INIT", "STOP", "UNKNOWN")
              if value(metrics, "nginx_ha_vrrp_state", vrrp_instance=instance, state=s) == 1]
    return states[0] if len(states) == 1 else None


def picture(metrics):
    """What the alerts look at: (state, VIP held, watcher health, check health, maintenance)."""
    return (
        state_of(metrics),
        value(metrics, "nginx_ha_vip_held", vrrp_instance="VI_web", vip="203.0.113.100"),
        value(metrics, "nginx_ha_health_ok", source="watcher"),
        value(metrics, "nginx_ha_health_ok", source="check"),
        value(metrics, "nginx_ha_maintenance"),
    )


def writer_pid(lab, node):
    res = lab.host(node).run(["cat", LOCK])
    pid = res.stdout.strip() if res.returncode == 0 else ""
    if not pid or lab.host(node).run(["kill", "-0", pid]).returncode != 0:
        return None
    return pid


def nginx(lab, node, action):
    """Stop or start nginx the host's way: the init script on sysvinit hosts, systemctl on systemd ones."""
    cmd = ["systemctl", action, "nginx"] if lab.init == "systemd" else ["/etc/init.d/nginx", action]
    lab.host(node).run(cmd, check=True, timeout=30)


SERVING = {"web-a": ("MASTER", 1, 1, 1, 0), "web-b": ("BACKUP", 0, 1, 1, 0)}


def test_both_nodes_show_their_state_and_vip_in_the_textfile_and_on_the_port(lab):
    for node in NODES:
        wait_for(lambda n=node: picture(textfile(lab, n)) == SERVING[n], 15, what=f"{node}'s textfile")
        wait_for(lambda n=node: picture(scraped(lab, n)) == SERVING[n], 15, what=f"{node}'s /metrics")
        m = textfile(lab, node)
        base = 100 if node == "web-a" else 99
        assert value(m, "nginx_ha_vrrp_priority", vrrp_instance="VI_web", kind="base") == base
        assert value(m, "nginx_ha_vrrp_priority", vrrp_instance="VI_web", kind="effective") == base
        assert value(m, "nginx_ha_node_info", node=node) == 1
        assert value(m, "nginx_ha_vrrp_role_info", vrrp_instance="VI_web", role=SERVING[node][0]) == 1
        assert value(m, "nginx_ha_keepalived_up") == 1 and value(m, "nginx_ha_keepalived_dump_success") == 1
        assert value(m, "nginx_ha_vrrp_last_transition_timestamp_seconds", vrrp_instance="VI_web") > time.time() - 600
        assert abs(value(m, "nginx_ha_metrics_last_update_timestamp_seconds") - time.time()) < INTERVAL + 5
        host = lab.host(node)
        assert host.run(["stat", "-c", "%U %a", TEXTFILE], check=True).stdout.split() == ["root", "644"]
        for name, mode in (("metrics.json", "644"), ("nginx_ha_metrics.py", "755")):
            assert host.run(["stat", "-c", "%U %a", f"{SCRIPT_DIR}/{name}"], check=True).stdout.split() == ["root", mode]
        assert host.run(["sh", "-c", f"ls {TEXTFILE}.*"]).returncode != 0  # no temporary file left
    # a textfile directory that went away (one under /run after a reboot) comes back, readable by node_exporter
    web_b = lab.host("web-b")
    web_b.run(["rm", "-rf", "/run/prometheus"], check=True)
    wait_for(lambda: picture(textfile(lab, "web-b")) == SERVING["web-b"], INTERVAL + 3, what="web-b's textfile back")
    assert web_b.run(["stat", "-c", "%U %a", "/run/prometheus/node-exporter", TEXTFILE], check=True).stdout.split() == ["root", "755", "root", "644"]
    # bound to 127.0.0.1: the client host cannot reach the port on the node's address
    res = lab.client.run(["curl", "-s", "-m", "2", f"http://{lab.host('web-a').addr('svc')}:{PORT}/metrics"], timeout=15)
    assert res.returncode != 0


def test_a_failover_shows_within_the_interval_and_health_goes_to_0_on_the_failed_node(lab):
    before = {node: textfile(lab, node) for node in NODES}
    count = {node: value(before[node], "nginx_ha_vrrp_transitions_total", vrrp_instance="VI_web") for node in NODES}
    nginx(lab, "web-a", "stop")
    t0 = time.monotonic()
    try:
        wait_for(lambda: vip_holders(lab) == ["web-b"], 15, what="VIP on web-b")
        moved = time.monotonic() - t0
        # the textfile (node_exporter) and the port, on both nodes, follow within the interval
        wait_for(lambda: picture(textfile(lab, "web-b"))[:2] == ("MASTER", 1), INTERVAL, interval=0.1, what="web-b MASTER in its textfile")
        wait_for(lambda: picture(scraped(lab, "web-b"))[:2] == ("MASTER", 1), INTERVAL, interval=0.1, what="web-b MASTER on its port")
        wait_for(lambda: picture(textfile(lab, "web-a")) == ("FAULT", 0, 0, 0, 0), INTERVAL, interval=0.1,
                 what="web-a FAULT, VIP gone, health 0 in its textfile")
        followed = time.monotonic() - t0
        print(f"VIP moved {moved:.2f}s after nginx stopped; metrics of both nodes followed {followed:.2f}s after it")
        a, b = textfile(lab, "web-a"), textfile(lab, "web-b")
        assert picture(scraped(lab, "web-a")) == ("FAULT", 0, 0, 0, 0)
        assert value(a, "nginx_ha_vrrp_transitions_total", vrrp_instance="VI_web") > count["web-a"]
        assert value(b, "nginx_ha_vrrp_transitions_total", vrrp_instance="VI_web") > count["web-b"]
        assert value(b, "nginx_ha_vrrp_become_master_total", vrrp_instance="VI_web") >= 1
        assert value(a, "nginx_ha_vrrp_release_master_total", vrrp_instance="VI_web") >= 1
        for node, m in (("web-a", a), ("web-b", b)):
            assert value(m, "nginx_ha_vrrp_last_transition_timestamp_seconds", vrrp_instance="VI_web") > \
                value(before[node], "nginx_ha_vrrp_last_transition_timestamp_seconds", vrrp_instance="VI_web")
    finally:
        nginx(lab, "web-a", "start")
    wait_for(lambda: vip_holders(lab) == ["web-a"], 20, what="VIP back on web-a")
    for node in NODES:
        wait_for(lambda n=node: picture(textfile(lab, n)) == SERVING[n], INTERVAL + 5, interval=0.2, what=f"{node} back in its textfile")
    wait_for(lambda: served_by(lab) == "web-a", 10, what="web-a's page")


def test_a_killed_or_hung_writer_never_touches_the_ha_path(lab):
    host = lab.host("web-a")
    pid = writer_pid(lab, "web-a")
    assert pid
    host.run(["kill", "-STOP", pid], check=True)  # hung (it may hold nothing keepalived needs)
    try:
        time.sleep(3)
        assert vip_holders(lab) == ["web-a"] and served_by(lab) == "web-a"
        assert host.read_file("/run/nginx_ha_health").strip() == "0"  # the watcher: healthy
        assert writer_pid(lab, "web-a") == pid  # the check does not start a second one beside it
    finally:
        host.run(["kill", "-CONT", pid], check=True)
    host.run(["kill", "-KILL", pid], check=True)  # crashed: keepalived's check starts a new one
    new = wait_for(lambda: (writer_pid(lab, "web-a") or pid) != pid and writer_pid(lab, "web-a"), 10, what="a new writer")
    print(f"writer {pid} killed; writer {new} started by keepalived's check")
    assert vip_holders(lab) == ["web-a"] and served_by(lab) == "web-a"
    wait_for(lambda: picture(scraped(lab, "web-a")) == SERVING["web-a"], 10, what="the new writer's /metrics")


def test_the_writer_lives_with_keepalived(lab):
    """keepalived stopped on the BACKUP: its metrics go (no stale BACKUP picture); started: they are back."""
    def service(action):
        cmd = ["systemctl", action, "keepalived"] if lab.init == "systemd" else ["/etc/init.d/keepalived", action]
        lab.host("web-b").run(cmd, check=True, timeout=60)

    service("stop")
    try:
        wait_for(lambda: lab.host("web-b").read_file(TEXTFILE, missing_ok=True) is None and scraped(lab, "web-b") is None, 10,
                 what="web-b's metrics gone with its keepalived")
        assert writer_pid(lab, "web-b") is None and vip_holders(lab) == ["web-a"]
    finally:
        service("start")
    wait_for(lambda: picture(textfile(lab, "web-b")) == SERVING["web-b"], 30, what="web-b's metrics back with keepalived")
    assert picture(scraped(lab, "web-b")) == SERVING["web-b"]


def test_metrics_off_stops_the_writer_and_removes_its_files(lab, pillar_dir):
    write_pillar(pillar_dir, base_pillar())
    for node in NODES:
        lab.salt(node, "saltutil.refresh_pillar", "wait=True", timeout=60)
        ret = apply(lab, node)
        assert failed(ret) == {}, (node, failed(ret))
        apply_metrics(lab, node)
        host = lab.host(node)
        assert host.read_file(TEXTFILE, missing_ok=True) is None
        for name in ("metrics.json", "nginx_ha_metrics.py"):
            assert host.read_file(f"{SCRIPT_DIR}/{name}", missing_ok=True) is None
        assert writer_pid(lab, node) is None
        assert scraped(lab, node) is None
    time.sleep(2)  # keepalived's check ran: it starts no writer without metrics.json
    assert all(writer_pid(lab, node) is None for node in NODES)
    assert vip_holders(lab) == ["web-a"]
