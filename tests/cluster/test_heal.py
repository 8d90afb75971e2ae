"""
Healing and guarding on real hosts, a client polling the VIP:

* every nginx process SIGSTOPped on the MASTER (a hung nginx: the init script's restart cannot
  finish the stopped workers, which keep the listening sockets): the VIP moves, and
  ``nginx_ha.restart_nginx`` heals the node by escalation; the MASTER takes its VIP back;
* nginx SIGKILLed on the MASTER: ``nginx_ha.restart_nginx unless_healthy=True verify=True`` (the
  reactor's one call) starts it (nothing left to stop), returns the health after it, and a second
  such call on the healthy node restarts nothing;
* ``salt 'web-*' nginx_ha.maintenance on`` (both nodes in one call): at least one node refuses with
  a non-zero retcode, no client request fails, and exactly one node owns the VIP afterwards.
"""

import json
import time

import pytest

from tests.cluster.support import Poller, cluster, pillar_directory, served_by, vip_holders, wait_for

pytestmark = pytest.mark.cluster

NODES = ("web-a", "web-b")
MASTER_EXTRA = {"peer": {".*": ["nginx_ha.health"]}}  # maintenance asks its peers through the master
PENDING = "/etc/keepalived/nginx_ha/maintenance.pending"


@pytest.fixture(scope="module")
def lab():
    with pillar_directory() as pillar_dir, cluster(pillar_dir, NODES, master_extra=MASTER_EXTRA) as lab:
        yield lab


def nginx_procs(host):
    """{pid: ps state} of the host's nginx processes."""
    out = host.run("ps -o pid=,stat= -C nginx").stdout
    return {int(pid): stat for pid, stat in (line.split() for line in out.splitlines() if line.strip())}


def outage(samples):
    """Seconds from the first to the last failed request (0 when none failed)."""
    bad = [t for t, code in samples if code != "200" and t > 1e9]  # a failed curl also logs a bare 000 line
    return bad[-1] - bad[0] if bad else 0.0


def salt_cli(lab, *argv, timeout=180):
    """``salt --out json <argv>`` without --static (with --static the CLI exits 0 whatever the minions'
    retcodes): (exit code, {minion: return}) from the one JSON document each minion's return prints."""
    proc = lab.master.run(["salt", "--out", "json", "-t", "60", *argv], timeout=timeout)
    decoder, text, pos, ret = json.JSONDecoder(), proc.stdout, 0, {}
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        doc, pos = decoder.raw_decode(text, pos)
        ret.update(doc)
    return proc.returncode, ret, proc.stderr


def test_hung_nginx_on_the_master_is_healed_by_restart_nginx(lab):
    web_a = lab.host("web-a")
    hung = nginx_procs(web_a)
    assert len(hung) >= 2, hung  # master and worker(s)
    poller = Poller(lab, interval=0.02, timeout=0.25, name="heal")
    try:
        web_a.run("pkill -STOP -x nginx", check=True)
        assert all(stat.startswith("T") for stat in nginx_procs(web_a).values())
        # the health check catches the hang: the client is served by the BACKUP
        wait_for(lambda: served_by(lab) == "web-b", 15, what="web-b serving the VIP")
        assert vip_holders(lab) == ["web-b"]
        t0 = time.monotonic()
        ret = lab.salt("web-a", "nginx_ha.restart_nginx", timeout=180, job_timeout=60)
        took = time.monotonic() - t0
        assert isinstance(ret, dict) and ret["healthy"] is True, ret
        if lab.init == "systemd":  # nginx.service's stop kills its whole cgroup: the restart alone heals
            assert ret["escalated"] is False and "restart" in ret["detail"], ret
        else:  # the init script's stop leaves the stopped processes: restart_nginx kills the tree
            assert ret["escalated"] is True and set(hung) <= set(ret["killed"]), (hung, ret)
        # the node holds its VIP again (MASTER, preemption) and serves it
        wait_for(lambda: vip_holders(lab) == ["web-a"], 30, what="VIP back on web-a")
        wait_for(lambda: served_by(lab) == "web-a", 10, what="web-a's page through the VIP")
    finally:
        web_a.run("pkill -CONT -x nginx")  # never leave the lab with a stopped nginx
        samples = poller.stop()
    now = nginx_procs(web_a)
    assert now and set(now).isdisjoint(hung) and not any(stat.startswith("T") for stat in now.values()), now
    assert lab.salt("web-a", "nginx_ha.health", timeout=60)["healthy"] is True
    assert lab.salt("web-a", "nginx_ha.vip_status", timeout=60)["VI_web"]["state"] == "MASTER"
    # clients saw one short failover window (the hang being detected), not the whole repair
    assert samples and samples[-1][1] == "200"
    assert outage(samples) < 3, (outage(samples), took)
    print(f"restart_nginx took {took:.1f}s; client outage {outage(samples):.2f}s; detail: {ret['detail']}")


def test_a_killed_nginx_is_started_and_verified_in_one_call_and_a_healthy_one_left_alone(lab):
    web_a = lab.host("web-a")
    wait_for(lambda: vip_holders(lab) == ["web-a"], 30, what="VIP on web-a")
    poller = Poller(lab, interval=0.02, timeout=0.25, name="heal-killed")
    try:
        web_a.run("pkill -KILL -x nginx", check=True)
        wait_for(lambda: served_by(lab) == "web-b", 15, what="web-b serving the VIP")
        assert nginx_procs(web_a) == {}
        ret = lab.salt("web-a", "nginx_ha.restart_nginx", timeout=180, job_timeout=60, unless_healthy=True, verify=True)
        assert isinstance(ret, dict) and ret["healthy"] is True and ret["restarted"] is True, ret
        # nothing of nginx was left: a start, no stop, no escalation
        assert ret["escalated"] is False and ret["killed"] == [] and ret["detail"].startswith("start: "), ret
        # the full health check, in the same call
        assert ret["health"]["healthy"] is True and ret["health"]["nginx"]["answers"] is True, ret
        pids = nginx_procs(web_a)
        assert pids, pids
        wait_for(lambda: vip_holders(lab) == ["web-a"], 30, what="VIP back on web-a")
        wait_for(lambda: served_by(lab) == "web-a", 10, what="web-a's page through the VIP")
        # healthy now: the same call restarts nothing (a late FAULT must not cost a restart)
        again = lab.salt("web-a", "nginx_ha.restart_nginx", timeout=180, job_timeout=60, unless_healthy=True, verify=True)
        assert again["healthy"] is True and again["restarted"] is False and again["health"]["healthy"] is True, again
        assert nginx_procs(web_a) == pids
    finally:
        if not nginx_procs(web_a):
            lab.salt("web-a", "service.start", "nginx", timeout=60)
        samples = poller.stop()
    # the client: web-a, web-b while nginx was down on web-a, web-a again; failed requests only
    # at the failover (the kill), none during the restart or the second call
    assert samples and samples[-1][1] == "200"
    assert outage(samples) < 3, outage(samples)
    assert lab.salt("web-a", "nginx_ha.vip_status", timeout=60)["VI_web"]["state"] == "MASTER"


def test_maintenance_on_for_both_nodes_at_once_is_refused_and_the_vip_stays_served(lab):
    for node in NODES:
        assert lab.salt(node, "nginx_ha.health", timeout=60)["healthy"] is True
    assert vip_holders(lab) == ["web-a"]
    poller = Poller(lab, interval=0.02, timeout=0.25, name="both-maintenance")
    try:
        code, ret, stderr = salt_cli(lab, "web-*", "nginx_ha.maintenance", "on")
        time.sleep(3)  # a handover, if one node went, happens under the poller's eyes
        holders = vip_holders(lab)
        health = {node: lab.salt(node, "nginx_ha.health", timeout=60) for node in NODES}
    finally:
        samples = poller.stop()
        for node in NODES:
            lab.salt(node, "nginx_ha.maintenance", "off", timeout=120)
    assert sorted(ret) == list(NODES), (ret, stderr)
    refused = sorted(n for n, r in ret.items() if isinstance(r, str) and "refusing maintenance" in r)
    assert refused, ret  # at least one node refused ...
    assert code != 0 and "non-zero exit code" in stderr, (code, ret, stderr)  # ... and the job says so
    for node in refused:
        assert "no healthy peer for VI_web can take over" in ret[node], ret[node]
        assert "going into maintenance itself" in ret[node] or ": in maintenance" in ret[node], ret[node]
    went = sorted(n for n in NODES if health[n]["maintenance"])
    assert len(went) <= 1 and not set(went) & set(refused), (went, refused)
    assert not any(health[n]["maintenance_pending"] for n in NODES), health
    for node in NODES:
        assert lab.host(node).run(f"test -e {PENDING}").returncode != 0, node  # no mark left behind
    assert len(holders) == 1 and holders != went, (holders, went)  # exactly one owner, not in maintenance
    assert len(samples) > 100
    assert [s for s in samples if s[1] != "200"] == []  # the VIP was served throughout
    wait_for(lambda: vip_holders(lab) == ["web-a"], 20, what="VIP on web-a after maintenance off")
