"""
Two clusters on one master, four minions on one service network: web-a/web-b form cluster "shop"
(VIP 203.0.113.100), web-c/web-d cluster "blog" (VIP 203.0.113.101), each from its own pillar
file assigned by the pillar top file; both name their instance VI_web.

* A router id deliberately reused by blog is reported by ``salt-run nginx_ha.check_router_ids``
  from the pillar alone, before anything is applied (no keepalived runs yet), with a non-zero
  exit; with distinct ids the check passes.
* Two VIPs, each served by its own cluster's MASTER (what the client got, and from which node).
* The fleet view groups by cluster: one owner per cluster, no split brain across them.
* A fault in shop (nginx killed on its MASTER) moves shop's VIP and changes nothing in blog.
"""

import pathlib
import shutil
import tempfile
import time

import pytest
import yaml

from tests.cluster.support import addresses, apply, cluster, failed, wait_for

pytestmark = pytest.mark.cluster

REPO = pathlib.Path(__file__).resolve().parents[2]
NODES = ("web-a", "web-b", "web-c", "web-d")
SHOP_VIP, BLOG_VIP = "203.0.113.100", "203.0.113.101"
MASTER_EXTRA = {"runner_dirs": [str(REPO / "_runners")], "peer": {".*": ["nginx_ha.health"]}}
TOP = "base:\n  'web-a,web-b':\n    - match: list\n    - shop\n  'web-c,web-d':\n    - match: list\n    - blog\n"


def cluster_pillar(lab_restart_cmd, name, vrid, vip, master, backup):
    return {
        "nginx_ha": {
            "cluster": name,
            "pkg_refresh": False,
            "events": {"minion_restart_cmd": lab_restart_cmd},
            "vrrp_instances": {
                "VI_web": {
                    "interface": "eth0",
                    "virtual_router_id": vrid,
                    "advert_int": 1,
                    "virtual_ipaddress": [f"{vip}/24"],
                    "nodes": {master: {"state": "MASTER", "priority": 100}, backup: {"state": "BACKUP", "priority": 99}},
                }
            },
        }
    }


def write(pillar_dir, name, data):
    (pillar_dir / f"{name}.sls").write_text(yaml.safe_dump(data))


@pytest.fixture(scope="module")
def pillar_dir():
    from lab import minion_restart_cmd

    path = pathlib.Path(tempfile.mkdtemp(prefix="nginx-ha-pillar-", dir="/var/tmp"))
    path.chmod(0o755)
    (path / "top.sls").write_text(TOP)
    restart = minion_restart_cmd()
    write(path, "shop", cluster_pillar(restart, "shop", 51, SHOP_VIP, "web-a", "web-b"))
    write(path, "blog", cluster_pillar(restart, "blog", 51, BLOG_VIP, "web-c", "web-d"))  # reused on purpose
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(pillar_dir):
    """Four minions, extensions synced, nothing applied yet."""
    with cluster(pillar_dir, nodes=NODES, master_extra=MASTER_EXTRA, applied=False) as lab:
        yield lab


@pytest.fixture(scope="module")
def applied(lab, pillar_dir):
    """blog gets a router id of its own, then both clusters are applied."""
    from lab import minion_restart_cmd

    write(pillar_dir, "blog", cluster_pillar(minion_restart_cmd(), "blog", 52, BLOG_VIP, "web-c", "web-d"))
    code, ret = lab.salt_run("nginx_ha.check_router_ids", timeout=120)
    assert code == 0 and ret["ok"], ret
    for node in NODES:
        ret = apply(lab, node)
        assert failed(ret) == {}, (node, failed(ret))
    for vip, owner in ((SHOP_VIP, "web-a"), (BLOG_VIP, "web-c")):
        serving(lab, vip, owner)
    return lab


def holders(lab, vip):
    return sorted(n for n in NODES if vip in addresses(lab.host(n)))


def served_by(lab, vip):
    res = lab.client.run(f"curl -s -m 1 http://{vip}/", timeout=11)
    if res.returncode != 0 or not res.stdout:
        return None
    return next((n for n in NODES if f"served by {n}" in res.stdout), "?")


def serving(lab, vip, node, timeout=20):
    wait_for(lambda: holders(lab, vip) == [node], timeout, what=f"{vip} on {node} alone")
    wait_for(lambda: served_by(lab, vip) == node, 10, what=f"{node}'s page through {vip}")


def keepalived_running(lab, node):
    return lab.host(node).run("pgrep -x keepalived").returncode == 0


def test_a_reused_router_id_is_reported_before_apply(lab):
    t0 = time.monotonic()
    code, ret = lab.salt_run("nginx_ha.check_router_ids", timeout=120)
    print(f"\n[clusters] check_router_ids, 4 minions, 2 clusters: {time.monotonic() - t0:.2f}s, exit {code}")
    assert code != 0 and ret["ok"] is False and ret["retcode"] == 1, ret
    assert len(ret["conflicts"]) == 1, ret
    conflict = ret["conflicts"][0]
    assert conflict["vrid"] == 51 and conflict["clusters"] == ["blog", "shop"] and conflict["shared"] == ["203.0.113.0/24"], conflict
    assert conflict["nodes"] == list(NODES)
    assert ret["problems"] == [conflict["message"]] and conflict["message"].startswith(
        "ROUTER-ID-CONFLICT: virtual_router_id 51 (IPv4) is used by cluster blog (VI_web) and cluster shop (VI_web) on 203.0.113.0/24"
    )
    assert sorted(ret["clusters"]) == ["blog", "shop"] and ret["clusters"]["blog"]["nodes"] == ["web-c", "web-d"]
    # reported before it caused anything: nothing is applied, no keepalived runs anywhere
    assert not any(keepalived_running(lab, n) for n in NODES)
    assert holders(lab, SHOP_VIP) == [] and holders(lab, BLOG_VIP) == []


def test_two_clusters_two_vips_each_served_by_its_own_master(applied):
    lab = applied
    assert holders(lab, SHOP_VIP) == ["web-a"] and served_by(lab, SHOP_VIP) == "web-a"
    assert holders(lab, BLOG_VIP) == ["web-c"] and served_by(lab, BLOG_VIP) == "web-c"
    # each node knows its cluster from its own node view, without the master
    for node, name in (("web-a", "shop"), ("web-b", "shop"), ("web-c", "blog"), ("web-d", "blog")):
        res = lab.host(node).run(["salt-call", "--local", "--out", "json", "--log-level", "quiet", "nginx_ha.vip_status"], timeout=120)
        assert f'"cluster": "{name}"' in res.stdout, res.stdout + res.stderr


def test_fleet_view_is_grouped_by_cluster(applied):
    code, view = applied.salt_run("nginx_ha.status", timeout=120)
    assert code == 0 and view["ok"], view["problems"]
    assert sorted(view["clusters"]) == ["blog", "shop"]
    shop, blog = view["clusters"]["shop"], view["clusters"]["blog"]
    assert shop["nodes"] == ["web-a", "web-b"] and shop["owners"] == {"VI_web": "web-a"} and list(shop["vips"]) == [SHOP_VIP]
    assert blog["nodes"] == ["web-c", "web-d"] and blog["owners"] == {"VI_web": "web-c"} and list(blog["vips"]) == [BLOG_VIP]
    assert blog["vips"][BLOG_VIP]["backups"] == ["web-d"] and shop["vips"][SHOP_VIP]["backups"] == ["web-b"]
    code, ret = applied.salt_run("nginx_ha.check_router_ids", timeout=120)
    assert code == 0 and ret["clusters"]["shop"]["instances"]["VI_web"]["virtual_router_id"] == 51
    assert ret["clusters"]["blog"]["instances"]["VI_web"]["virtual_router_id"] == 52


def blog_vrrp(lab):
    """blog's nodes as keepalived sees them: state and time of the last transition."""
    out = {}
    for node in ("web-c", "web-d"):
        inst = lab.salt(node, "nginx_ha.vip_status", timeout=60)["VI_web"]
        out[node] = (inst["state"], inst["last_transition"], inst["holds_vip"])
    return out


def test_a_fault_in_one_cluster_changes_nothing_in_the_other(applied):
    lab = applied
    before = blog_vrrp(lab)
    assert before["web-c"][0] == "MASTER" and before["web-d"][0] == "BACKUP"
    try:
        t0 = time.monotonic()
        lab.host("web-a").run("pkill -KILL -x nginx", check=True)
        serving(lab, SHOP_VIP, "web-b")  # shop failed over: the positive signal that the fault was seen
        print(f"\n[clusters] shop: nginx killed on web-a -> web-b serves {SHOP_VIP} within {time.monotonic() - t0:.2f}s (polled)")
        code, view = lab.salt_run("nginx_ha.status", timeout=120)
        assert code == 1 and view["clusters"]["shop"]["owners"] == {"VI_web": "web-b"}, view
        shop_problems = {p: view["problem_info"][p] for p in view["clusters"]["shop"]["problems"]}
        assert {i["kind"] for i in shop_problems.values()} <= {"FAULT", "UNHEALTHY"} and shop_problems, shop_problems
        assert {i["node"] for i in shop_problems.values()} == {"web-a"}, shop_problems
        # blog: untouched, its own owner, no problem, no transition since before the fault
        assert view["clusters"]["blog"]["ok"] and view["clusters"]["blog"]["owners"] == {"VI_web": "web-c"}, view
        assert blog_vrrp(lab) == before
        assert holders(lab, BLOG_VIP) == ["web-c"] and served_by(lab, BLOG_VIP) == "web-c"
    finally:
        lab.salt("web-a", "service.start", "nginx", timeout=60)
    serving(lab, SHOP_VIP, "web-a")
    assert blog_vrrp(lab) == before and served_by(lab, BLOG_VIP) == "web-c"
