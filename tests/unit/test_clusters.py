"""
N-node clusters and several clusters on one master, with loader mocks: the schema's cluster name,
the node view, failing-node weights with three nodes, the fleet view grouped by cluster, the
router-id check (pillar + interface networks), the reactor's owners and peers kept within the
sender's cluster, the fleet check's router-id alerts, and maintenance handing to the best of N peers.
"""

import copy
import ipaddress
import time

import pytest
from salt.exceptions import CommandExecutionError

from tests.support import formula

status_runner = formula.load_module("_runners", "nginx_ha")
reactor = formula.load_module("_runners", "nginx_ha_reactor")
engine = formula.load_module("_engines", "nginx_ha_events")
mod = formula.load_module("_modules", "nginx_ha")

VIP = "203.0.113.100"
VIP2 = "203.0.113.101"


@pytest.fixture(autouse=True, scope="module")
def _salt_logging_not_deferred():
    """Salt defers log records to stderr at exit (closed under pytest); let pytest capture them."""
    import salt._logging.impl

    salt._logging.impl.shutdown_temp_handler()


def three_node_pillar(weight=0, priorities=(100, 90, 80)):
    pillar = formula.two_node_pillar()
    inst = pillar["vrrp_instances"]["VI_web"]
    inst["nodes"] = {
        "web-a": {"state": "MASTER", "priority": priorities[0]},
        "web-b": {"state": "BACKUP", "priority": priorities[1]},
        "web-c": {"state": "BACKUP", "priority": priorities[2]},
    }
    if weight:
        pillar["check"] = {"weight": weight}
    return pillar


# --------------------------------------------------------------------------------------------
# Schema and model
# --------------------------------------------------------------------------------------------


def test_cluster_defaults_to_default_and_is_recorded_in_the_node_view():
    view = formula.node_view(formula.two_node_pillar(), "web-a")
    assert view["cluster"] == "default" and view["cluster_nodes"] == ["web-a", "web-b"]
    view = formula.node_view(dict(formula.two_node_pillar(), cluster="shop"), "web-b")
    assert view["cluster"] == "shop"


@pytest.mark.parametrize("name", ["Shop", "shop/blog", "", "a" * 33, "-x", "shop blog", True])
def test_cluster_name_is_a_short_name(name):
    errors = formula.model().validate(formula.merged(dict(formula.two_node_pillar(), cluster=name)))
    assert any(e.startswith("nginx_ha:cluster: ") and "is not a cluster name" in e for e in errors), errors


def test_three_nodes_are_valid_and_each_sees_two_peers():
    pillar = three_node_pillar()
    assert formula.model().validate(formula.merged(pillar)) == []
    for node, peers in (("web-a", ["web-b", "web-c"]), ("web-b", ["web-a", "web-c"]), ("web-c", ["web-a", "web-b"])):
        view = formula.node_view(pillar, node)
        assert view["instances"][0]["peers"] == peers and view["cluster_nodes"] == ["web-a", "web-b", "web-c"]


def test_three_nodes_a_weight_must_drop_a_failing_node_below_every_healthy_peer():
    # 100 - 15 = 85 stays above web-c's 80: the failing MASTER would keep the VIP from web-c
    errors = formula.model().validate(formula.merged(three_node_pillar(weight=-15)))
    assert any("leaves a failing web-a (priority 100 -> 85) at or above its healthy peer web-c (80)" in e for e in errors), errors
    assert formula.model().validate(formula.merged(three_node_pillar(weight=-30))) == []


def test_three_nodes_one_master_and_the_highest_priority():
    pillar = three_node_pillar(priorities=(100, 90, 100))
    errors = formula.model().validate(formula.merged(pillar))
    assert any("nodes:web-c:priority: 100 is not below the MASTER's (web-a: 100)" in e for e in errors), errors


# --------------------------------------------------------------------------------------------
# Fleet view: grouped by cluster
# --------------------------------------------------------------------------------------------


def inst(state, holds, peers, prio, cluster=None, name="VI_web", vip=VIP):
    entry = {
        "vips": [vip],
        "vips_present": [vip] if holds else [],
        "holds_vip": holds,
        "state": state,
        "role": "BACKUP",
        "effective_priority": prio,
        "peers": peers,
        "last_transition": None,
    }
    if cluster:
        entry["cluster"] = cluster
    return {name: entry}


def two_clusters(b_state="BACKUP", d_state="BACKUP", d_holds=False):
    """shop: web-a MASTER, web-b; blog: web-c MASTER, web-d. Both call their instance VI_web."""
    return {
        "web-a": inst("MASTER", True, ["web-b"], 100, "shop"),
        "web-b": inst(b_state, False, ["web-a"], 99, "shop"),
        "web-c": inst("MASTER", True, ["web-d"], 100, "blog", vip=VIP2),
        "web-d": inst(d_state, d_holds, ["web-c"], 99, "blog", vip=VIP2),
    }


HEALTHY4 = {n: {"healthy": True} for n in ("web-a", "web-b", "web-c", "web-d")}


def test_fleet_view_groups_by_cluster_one_owner_each():
    view = status_runner.summarize(two_clusters(), HEALTHY4, sorted(HEALTHY4))
    assert view["ok"], view["problems"]
    assert sorted(view["clusters"]) == ["blog", "shop"]
    assert view["clusters"]["shop"]["nodes"] == ["web-a", "web-b"] and view["clusters"]["blog"]["nodes"] == ["web-c", "web-d"]
    assert view["clusters"]["shop"]["owners"] == {"VI_web": "web-a"} and view["clusters"]["blog"]["owners"] == {"VI_web": "web-c"}
    assert view["vips"][VIP]["cluster"] == "shop" and view["vips"][VIP2]["cluster"] == "blog"
    # the same instance name in two clusters is not a split brain: each VIP has one holder
    assert view["vips"][VIP]["owner"] == "web-a" and view["vips"][VIP2]["owner"] == "web-c"


def test_split_brain_and_standbys_are_judged_per_cluster():
    view = status_runner.summarize(two_clusters(d_state="MASTER", d_holds=True), HEALTHY4, sorted(HEALTHY4))
    assert view["problems"] == [f"SPLIT-BRAIN: {VIP2} (blog/VI_web) is held by web-c, web-d"]
    assert view["problem_info"][view["problems"][0]]["cluster"] == "blog"
    assert view["clusters"]["shop"]["ok"] and not view["clusters"]["blog"]["ok"]
    # a FAULT in shop leaves shop without a standby (critical); blog's two healthy nodes do not count
    view = status_runner.summarize(two_clusters(b_state="FAULT"), HEALTHY4, sorted(HEALTHY4))
    assert view["degraded"] == ["shop/VI_web"]
    assert view["problem_info"]["FAULT: web-b is in FAULT state for shop/VI_web"]["severity"] == "critical"
    assert view["clusters"]["blog"]["ok"] and view["clusters"]["blog"]["problems"] == []


def test_a_silent_node_is_listed_in_its_peers_cluster():
    statuses = two_clusters()
    del statuses["web-d"]
    view = status_runner.summarize(statuses, HEALTHY4, sorted(HEALTHY4))
    assert view["clusters"]["blog"]["unreachable"] == ["web-d"] and view["clusters"]["shop"]["unreachable"] == []
    assert view["problem_info"]["NO-ANSWER: web-d did not answer"]["cluster"] == "blog"


def test_one_vip_in_two_clusters_is_reported():
    statuses = two_clusters()
    statuses["web-c"] = inst("MASTER", True, ["web-d"], 100, "blog", vip=VIP)
    statuses["web-d"] = inst("BACKUP", False, ["web-c"], 99, "blog", vip=VIP)
    view = status_runner.summarize(statuses, HEALTHY4, sorted(HEALTHY4))
    assert f"VIP-REUSED: {VIP} is a VIP of blog/VI_web and of shop/VI_web" in view["problems"]
    assert view["clusters"]["blog"]["vips"][VIP]["owner"] == "web-c" and view["clusters"]["shop"]["vips"][VIP]["owner"] == "web-a"


def test_three_nodes_one_owner_and_a_fault_with_a_standby_left_is_a_warning():
    statuses = {
        "web-a": inst("FAULT", False, ["web-b", "web-c"], 100),
        "web-b": inst("MASTER", True, ["web-a", "web-c"], 90),
        "web-c": inst("BACKUP", False, ["web-a", "web-b"], 80),
    }
    healthy = {"web-a": {"healthy": False, "nginx": {"running": False}}, "web-b": {"healthy": True}, "web-c": {"healthy": True}}
    view = status_runner.summarize(statuses, healthy, ["web-a", "web-b", "web-c"])
    assert view["vips"][VIP]["owner"] == "web-b" and view["vips"][VIP]["backups"] == ["web-c"] and view["degraded"] == []
    assert {i["severity"] for i in view["problem_info"].values()} == {"warning"}
    assert list(view["clusters"]) == ["default"] and view["clusters"]["default"]["nodes"] == ["web-a", "web-b", "web-c"]
    statuses["web-c"] = inst("FAULT", False, ["web-a", "web-b"], 80)
    view = status_runner.summarize(statuses, healthy, ["web-a", "web-b", "web-c"])
    assert view["degraded"] == ["VI_web"]
    assert view["problem_info"]["FAULT: web-c is in FAULT state for VI_web"]["severity"] == "critical"


# --------------------------------------------------------------------------------------------
# The router-id check
# --------------------------------------------------------------------------------------------


def cluster_pillar(name, nodes, vrid, vip, interface="eth0", **extra):
    pillar = {"cluster": name, "vrrp_instances": {"VI_web": {"interface": interface, "virtual_router_id": vrid, "virtual_ipaddress": [vip], "nodes": {}}}}
    for i, node in enumerate(nodes):
        pillar["vrrp_instances"]["VI_web"]["nodes"][node] = {"state": "MASTER" if i == 0 else "BACKUP", "priority": 100 - i}
    pillar.update(extra)
    return {"nginx_ha": pillar}


def interfaces(address, prefix=24, name="eth0"):
    if ":" in address:
        return {name: {"inet6": [{"address": address, "prefixlen": str(prefix), "scope": "global"}, {"address": "fe80::1", "prefixlen": "64", "scope": "link"}]}}
    mask = str(ipaddress.ip_network(f"0.0.0.0/{prefix}").netmask)
    return {name: {"inet": [{"address": address, "netmask": mask, "broadcast": None, "label": name}]}}


def plans(pillars):
    return {m: status_runner.vrrp_plan(m, p) for m, p in pillars.items()}


def nets(answers, pillars):
    out = {}
    for minion, plan in plans(pillars).items():
        for i in plan["instances"]:
            out[(minion, i["interface"], i["family"])] = status_runner.interface_networks(answers.get(minion), i["interface"], i["family"])
    return out


def four_pillars(vrid_blog=52, blog_vip=f"{VIP2}/24"):
    shop = cluster_pillar("shop", ["web-a", "web-b"], 51, f"{VIP}/24")
    blog = cluster_pillar("blog", ["web-c", "web-d"], vrid_blog, blog_vip)
    return {"web-a": shop, "web-b": shop, "web-c": blog, "web-d": blog}


SAME_NET = {m: interfaces(f"203.0.113.{11 + i}") for i, m in enumerate(("web-a", "web-b", "web-c", "web-d"))}


def test_vrrp_plan_reads_the_pillar():
    plan = status_runner.vrrp_plan("web-b", four_pillars()["web-b"])
    assert plan == {"cluster": "shop", "cluster_nodes": ["web-a", "web-b"], "instances": [{"instance": "VI_web", "vrid": 51, "family": 4, "interface": "eth0", "unicast": False}]}
    assert status_runner.vrrp_plan("web-x", four_pillars()["web-b"]) is None
    assert status_runner.vrrp_plan("web-x", {}) is None


def test_distinct_router_ids_do_not_conflict():
    pillars = four_pillars()
    assert status_runner.router_id_conflicts(plans(pillars), nets(SAME_NET, pillars)) == []


def test_a_router_id_reused_on_one_network_is_a_conflict():
    pillars = four_pillars(vrid_blog=51)
    conflicts = status_runner.router_id_conflicts(plans(pillars), nets(SAME_NET, pillars))
    assert len(conflicts) == 1
    c = conflicts[0]
    assert c["vrid"] == 51 and c["clusters"] == ["blog", "shop"] and c["nodes"] == ["web-a", "web-b", "web-c", "web-d"]
    assert c["shared"] == ["203.0.113.0/24"] and c["instances"] == ["blog/VI_web", "shop/VI_web"]
    assert c["message"] == (
        "ROUTER-ID-CONFLICT: virtual_router_id 51 (IPv4) is used by cluster blog (VI_web) and cluster shop (VI_web)"
        " on 203.0.113.0/24 (nodes web-a, web-b, web-c, web-d); give one of them another virtual_router_id"
    )


def test_a_router_id_reused_on_other_networks_or_families_is_fine():
    pillars = four_pillars(vrid_blog=51, blog_vip="198.18.0.100/24")
    other_net = dict(SAME_NET, **{"web-c": interfaces("198.18.0.13"), "web-d": interfaces("198.18.0.14")})
    assert status_runner.router_id_conflicts(plans(pillars), nets(other_net, pillars)) == []
    pillars = four_pillars(vrid_blog=51, blog_vip="2001:db8::100/64")
    v6 = dict(SAME_NET, **{"web-c": interfaces("2001:db8::13", 64), "web-d": interfaces("2001:db8::14", 64)})
    assert status_runner.router_id_conflicts(plans(pillars), nets(v6, pillars)) == []


def test_an_unknown_network_is_assumed_shared_unless_an_address_says_otherwise():
    pillars = four_pillars(vrid_blog=51)
    answers = {m: a for m, a in SAME_NET.items() if m not in ("web-c", "web-d")}
    conflicts = status_runner.router_id_conflicts(plans(pillars), nets(answers, pillars))
    assert "203.0.113.0/24" in conflicts[0]["message"] or "assumed shared" in conflicts[0]["message"]
    # the grains' address of web-c lies in shop's network: the same segment, said so
    grains = {"web-c": {ipaddress.ip_address("203.0.113.13")}, "web-d": {ipaddress.ip_address("198.18.0.14")}}
    conflicts = status_runner.router_id_conflicts(plans(pillars), nets(answers, pillars), grains)
    assert conflicts[0]["shared"] == ["203.0.113.0/24"]
    # nothing tells: assumed shared, and the message says so
    shop_silent = {}
    conflicts = status_runner.router_id_conflicts(plans(pillars), nets(shop_silent, pillars))
    assert "a network not known for web-a, web-b, web-c, web-d (assumed shared)" in conflicts[0]["message"]


def test_one_cluster_name_for_two_clusters_is_reported():
    pillars = four_pillars()
    pillars["web-c"] = pillars["web-d"] = cluster_pillar("shop", ["web-c", "web-d"], 52, f"{VIP2}/24")
    assert status_runner.cluster_name_reuse(plans(pillars)) == [
        "CLUSTER-NAME-REUSED: cluster name 'shop' is given to different clusters: web-a, web-b (nodes web-a, web-b);"
        " web-c, web-d (nodes web-c, web-d); set nginx_ha:cluster to a name of its own in each cluster's pillar"
    ]
    assert status_runner.cluster_name_reuse(plans(four_pillars())) == []


class FakeClient:
    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def cmd(self, minions, fun, **kwargs):
        self.calls.append((tuple(minions), fun))
        return {m: {"ret": self.answers[m], "retcode": 0} for m in minions if m in self.answers}


@pytest.fixture
def id_env(monkeypatch):
    env = {"pillars": four_pillars(), "answers": dict(SAME_NET), "grains": {}}
    status_runner.__opts__ = {"conf_file": "/dev/null"}
    status_runner.__context__ = {}
    status_runner.__salt__ = {"pillar.show_pillar": lambda minion: env["pillars"].get(minion, {})}

    class CkMinions:
        def __init__(self, opts):
            pass

        def check_minions(self, tgt, tgt_type):
            return {"minions": sorted(env["pillars"]) + ["salt-master-box"]}

    monkeypatch.setattr(status_runner.salt.utils.minions, "CkMinions", CkMinions)
    monkeypatch.setattr(status_runner.salt.utils.minions, "get_minion_data", lambda m, opts: (m, {"ipv4": env["grains"].get(m, [])}, None))
    client = FakeClient(env["answers"])
    env["client"] = client
    monkeypatch.setattr(status_runner.salt.client, "get_local_client", lambda *a, **kw: client)
    yield env
    del status_runner.__opts__, status_runner.__context__, status_runner.__salt__


def test_check_router_ids_ok(id_env):
    ret = status_runner.check_router_ids()
    assert ret["ok"] and ret["retcode"] == 0 and ret["problems"] == []
    assert ret["clusters"]["shop"] == {"nodes": ["web-a", "web-b"], "instances": {"VI_web": {"virtual_router_id": 51, "family": 4, "networks": ["203.0.113.0/24"]}}}
    assert id_env["client"].calls == [(("web-a", "web-b", "web-c", "web-d"), "network.interfaces")]  # only cluster nodes asked


def test_check_router_ids_reports_a_reused_id_with_retcode_1(id_env):
    id_env["pillars"] = four_pillars(vrid_blog=51)
    ret = status_runner.check_router_ids()
    assert not ret["ok"] and ret["retcode"] == 1 and status_runner.__context__["retcode"] == 1
    assert [ret["problem_info"][p]["kind"] for p in ret["problems"]] == ["ROUTER-ID-CONFLICT"]
    assert ret["problem_info"][ret["problems"][0]]["severity"] == "critical"


def test_check_router_ids_silent_minion_uses_its_cached_addresses(id_env):
    id_env["pillars"] = four_pillars(vrid_blog=51)
    for m in ("web-c", "web-d"):
        del id_env["answers"][m]
    id_env["grains"] = {"web-c": ["203.0.113.13"], "web-d": ["203.0.113.14"]}
    ret = status_runner.check_router_ids()
    assert ret["networks_unknown"] == ["web-c", "web-d"] and ret["conflicts"][0]["shared"] == ["203.0.113.0/24"]


def test_check_router_ids_a_pillar_that_does_not_compile_is_reported(id_env):
    def broken(minion):
        if minion == "web-d":
            raise RuntimeError("top file render error")
        return id_env["pillars"].get(minion, {})

    status_runner.__salt__["pillar.show_pillar"] = broken
    ret = status_runner.check_router_ids()
    assert ret["problems"] == ["PILLAR-ERROR: the pillar of web-d cannot be compiled: top file render error"] and ret["retcode"] == 1


# --------------------------------------------------------------------------------------------
# Reactor: owners and peers from the sender's own cluster; the fleet check's router-id alerts
# --------------------------------------------------------------------------------------------


class World:
    def __init__(self):
        self.calls, self.fired = [], []

    def call(self, node, action, timeout):
        self.calls.append((node, action["fun"]))
        if action["fun"] == "nginx_ha.health":
            return True, {"healthy": True}
        return True, True

    def fire(self, tag, data):
        self.fired.append((tag, data))

    def alerts(self):
        return [d for t, d in self.fired if t.startswith("nginx_ha/alert/")]


@pytest.fixture
def rworld(monkeypatch, tmp_path):
    pillars = {
        **{m: cluster_pillar("shop", ["web-a", "web-b"], 51, f"{VIP}/24") for m in ("web-a", "web-b")},
        **{m: cluster_pillar("blog", ["web-c", "web-d"], 52, f"{VIP2}/24") for m in ("web-c", "web-d")},
    }
    reactor.__opts__ = {
        "cachedir": str(tmp_path), "sock_dir": str(tmp_path), "pki_dir": str(tmp_path / "pki"), "conf_file": "/dev/null",
        "nginx_ha_reactor": {"state_file": str(tmp_path / "state.json"), "require_signature": False},
    }
    reactor.__salt__ = {"pillar.show_pillar": lambda minion, **kw: pillars[minion]}
    reactor.__context__ = {}
    world = World()
    monkeypatch.setattr(reactor, "_call", world.call)
    monkeypatch.setattr(reactor, "_fire", world.fire)
    trackers = {}

    def send(node, state):
        tracker = trackers.setdefault(node, engine.Tracker(clock=time.time))
        tag, data = tracker.event({"instance": "VI_web", "state": state, "priority": 100})
        return reactor.vrrp_event(tag, {"id": node, "cmd": "_minion_event", "tag": tag, "data": data})

    world.send = send
    yield world
    del reactor.__opts__, reactor.__salt__, reactor.__context__


def test_cluster_scope_comes_from_the_senders_pillar():
    pillar = cluster_pillar("blog", ["web-c", "web-d"], 52, VIP2)
    assert reactor.cluster_scope(pillar, "web-c", "VI_web") == ("blog", ["web-c", "web-d"])
    assert reactor.cluster_scope({"nginx_ha": formula.two_node_pillar()}, "web-a", "VI_web") == ("default", ["web-a", "web-b"])


def test_owners_of_the_same_instance_name_in_two_clusters_are_kept_apart(rworld):
    assert rworld.send("web-a", "MASTER")["action"] == "owner-changed"
    ret = rworld.send("web-c", "MASTER")
    # blog's first MASTER is not "moved from web-a": web-a is shop's
    assert ret["action"] == "owner-changed" and ret["old_owner"] is None and ret["new_owner"] == "web-c"
    assert not any("moved" in a["message"] for a in rworld.alerts())
    owners = reactor.show_state()["owners"]
    assert owners["shop/VI_web"]["node"] == "web-a" and owners["blog/VI_web"]["node"] == "web-c"
    ret = rworld.send("web-d", "MASTER")
    assert ret["old_owner"] == "web-c" and reactor.show_state()["owners"]["shop/VI_web"]["node"] == "web-a"


def test_an_owner_is_never_corrected_from_another_cluster(rworld):
    rworld.send("web-c", "MASTER")  # blog
    rworld.send("web-a", "MASTER")  # shop
    rworld.send("web-a", "BACKUP")  # shop's owner gives the VIP up; web-c (blog) is MASTER of a VI_web too
    owners = reactor.show_state()["owners"]
    assert owners["shop/VI_web"]["node"] == "web-a" and owners["blog/VI_web"]["node"] == "web-c"
    assert not any("is the owner" in a["message"] for a in rworld.alerts())
    rworld.send("web-b", "MASTER")
    assert reactor.show_state()["owners"]["shop/VI_web"]["node"] == "web-b"


def test_a_fault_acts_on_the_sender_only_never_the_other_cluster(rworld):
    ret = rworld.send("web-c", "FAULT")
    assert ret["node"] == "web-c" and {c[0] for c in rworld.calls} == {"web-c"}


def test_check_fleet_alerts_a_router_id_conflict(rworld):
    view = status_runner.summarize(two_clusters(), HEALTHY4, sorted(HEALTHY4))
    conflict = "ROUTER-ID-CONFLICT: virtual_router_id 51 (IPv4) is used by cluster blog (VI_web) and cluster shop (VI_web) on 203.0.113.0/24"
    reactor.__salt__["nginx_ha.status"] = lambda tgt, tgt_type, timeout: copy.deepcopy(view)
    reactor.__salt__["nginx_ha.check_router_ids"] = lambda tgt, tgt_type, timeout: {
        "problems": [conflict],
        "problem_info": {conflict: {"kind": "ROUTER-ID-CONFLICT", "severity": "critical", "cluster": "blog, shop"}},
    }
    ret = reactor.check_fleet()
    assert not ret["ok"] and ret["alerted"] == [conflict] and ret["retcode"] == 1
    alert = rworld.alerts()[-1]
    assert alert["severity"] == "critical" and alert["message"] == conflict and alert["problem"] == "ROUTER-ID-CONFLICT"
    reactor.__salt__["nginx_ha.check_router_ids"] = lambda tgt, tgt_type, timeout: {"problems": [], "problem_info": {}}
    assert reactor.check_fleet()["resolved"] == [conflict]


def test_check_fleet_says_so_when_the_router_id_check_fails(rworld):
    view = status_runner.summarize(two_clusters(), HEALTHY4, sorted(HEALTHY4))
    reactor.__salt__["nginx_ha.status"] = lambda tgt, tgt_type, timeout: copy.deepcopy(view)

    def boom(**kw):
        raise RuntimeError("no pillar")

    reactor.__salt__["nginx_ha.check_router_ids"] = boom
    ret = reactor.check_fleet()
    assert ret["problems"] == ["ROUTER-ID-CHECK-FAILED: nginx_ha.check_router_ids raised RuntimeError: no pillar"]
    assert rworld.alerts()[-1]["severity"] == "critical"


# --------------------------------------------------------------------------------------------
# maintenance with N peers: the best healthy peer, refusal when none can
# --------------------------------------------------------------------------------------------

DATA = formula.REPO / "tests" / "unit" / "data"
status_utils = formula.load_module("_utils", "nginx_ha_status")


def peer(healthy=True, state="BACKUP", prio=90):
    return {"healthy": healthy, "maintenance": False, "maintenance_pending": False, "vrrp": {"VI_web": state}, "vrrp_priority": {"VI_web": prio}}


@pytest.fixture
def configure_loader_modules(tmp_path):
    pillar = {"nginx_ha": three_node_pillar()}
    return {
        mod: {
            "__salt__": {"pillar.get": lambda key, default=None, unmask=False: pillar.get(key, default)},
            "__grains__": {"id": "web-a", "os_family": "Debian"},
            "__opts__": {"saltenv": None, "nginx_ha.node_file": str(tmp_path / "node.json")},
            "__context__": {},
        }
    }


@pytest.fixture
def three(monkeypatch, tmp_path, configure_loader_modules):
    """web-a (MASTER of three) holds the VIP until its maintenance file is written; peers answer from `answers`."""
    ip_master = (DATA / "ip-addr-master.json").read_text()
    monkeypatch.setattr(mod, "_maintenance_file", lambda lookup: str(tmp_path / "maintenance"))
    monkeypatch.setattr(mod, "_keepalived_pid", lambda lookup: 4242)
    monkeypatch.setattr(mod, "_keepalived_dump", lambda lookup, pid: status_utils.parse_keepalived_json((DATA / "keepalived-2.2.7-master.json").read_text()))
    env = {"answers": [{"web-b": peer(prio=90), "web-c": peer(prio=80)}], "calls": []}

    def run_all(cmd, **kw):
        held = not (tmp_path / "maintenance").exists()
        return {"retcode": 0, "stdout": ip_master if held else "[]", "stderr": ""}

    def publish(tgt, fun, tgt_type=None, timeout=None):
        env["calls"].append((tgt, fun))
        return env["answers"][min(len(env["calls"]), len(env["answers"])) - 1]

    mod.__salt__["cmd.run_all"] = run_all
    mod.__salt__["publish.publish"] = publish
    return env


def test_maintenance_names_the_best_of_two_healthy_peers_and_who_took_over(three):
    three["answers"].append({"web-b": peer(state="MASTER", prio=90), "web-c": peer(prio=80)})
    ret = mod.maintenance("on", wait=2)
    assert ret["settled"] is True and ret["holds_vip"] == []
    assert ret["best_peer"] == {"VI_web": "web-b"} and ret["owners"] == {"VI_web": "web-b"}
    assert three["calls"] == [("web-b,web-c", "nginx_ha.health")] * 2


def test_maintenance_skips_an_unhealthy_peer(three):
    three["answers"] = [{"web-b": peer(healthy=False, state="FAULT"), "web-c": peer(prio=80)}, {"web-b": peer(healthy=False, state="FAULT"), "web-c": peer(state="MASTER", prio=80)}]
    ret = mod.maintenance("on", wait=2)
    assert ret["best_peer"] == {"VI_web": "web-c"} and ret["owners"] == {"VI_web": "web-c"}


def test_maintenance_uses_the_effective_priority_a_weight_lowered(three):
    three["answers"] = [{"web-b": peer(prio=40), "web-c": peer(prio=80)}, {"web-b": peer(prio=40), "web-c": peer(state="MASTER", prio=80)}]
    assert mod.maintenance("on", wait=2)["best_peer"] == {"VI_web": "web-c"}


def test_maintenance_refuses_when_none_of_the_peers_can(three, tmp_path):
    three["answers"] = [{"web-b": peer(healthy=False, state="FAULT"), "web-c": None}]
    with pytest.raises(CommandExecutionError, match=r"no healthy peer for VI_web can take over \(peers: web-b: unhealthy, web-c: no answer\)"):
        mod.maintenance("on", wait=0)
    assert not (tmp_path / "maintenance").exists()


def test_vip_status_and_health_name_the_cluster(three):
    assert mod.vip_status()["VI_web"]["cluster"] == "default"
    assert mod._cluster_of({"instances": []}) == "default" and mod._cluster_of({"cluster": "shop"}) == "shop"
