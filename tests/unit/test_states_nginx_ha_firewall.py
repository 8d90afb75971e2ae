"""
nginx_ha_firewall.vrrp_allowed / vrrp_absent with loader mocks and stand-in tools: test=True,
idempotency, argument lists (never a shell), the rules built from the peers / the VRRP group, the
operator's chains left alone, the systemd hooks, firewalld's record, the helper's CLI; and the node
view's firewall:vrrp and firewall.sls rendered from the pillar. The real nft, iptables and packets:
tests/integration/test_firewall_nft.py; the lab: tests/cluster/test_firewall.py.
"""

import copy
import json
import subprocess

import pytest

from tests.support import formula

mod = formula.load_module("_states", "nginx_ha_firewall")

SPEC_RULES = [
    {"family": 4, "interface": "eth0", "sources": ["203.0.113.12"]},
    {"family": 4, "interface": "eth1", "group": "224.0.0.18"},
]


def chain(family, table, name, handle, hook=None, policy="accept"):
    c = {"family": family, "table": table, "name": name, "handle": handle}
    if hook:
        c.update(type="filter", hook=hook, prio=0, policy=policy)
    return {"chain": c}


def rule(family, table, chain_name, handle, expr, comment=None):
    r = {"family": family, "table": table, "chain": chain_name, "handle": handle, "expr": expr}
    if comment:
        r["comment"] = comment
    return {"rule": r}


LO_ACCEPT = [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "lo"}}, {"accept": None}]
DROP_TELNET = [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 23}}, {"drop": None}]


def operator_ruleset():
    """An operator's ruleset: inet filter input policy drop, ip6 t input jumping to a reject, a quiet chain, iptables-nft's INPUT."""
    return [
        {"table": {"family": "inet", "name": "filter", "handle": 1}},
        chain("inet", "filter", "input", 1, "input", "drop"),
        chain("inet", "filter", "forward", 2, "forward", "drop"),
        rule("inet", "filter", "input", 3, LO_ACCEPT),
        {"table": {"family": "ip6", "name": "t", "handle": 2}},
        chain("ip6", "t", "input", 1, "input"),
        chain("ip6", "t", "deeper", 2),
        rule("ip6", "t", "input", 3, [{"jump": {"target": "deeper"}}]),
        rule("ip6", "t", "deeper", 4, [{"reject": None}]),
        {"table": {"family": "inet", "name": "quiet", "handle": 3}},
        chain("inet", "quiet", "input", 1, "input"),
        rule("inet", "quiet", "input", 2, [{"counter": {"packets": 0, "bytes": 0}}]),
        {"table": {"family": "ip", "name": "filter", "handle": 4}},
        chain("ip", "filter", "INPUT", 1, "input", "drop"),
        {"table": {"family": "inet", "name": "vmap", "handle": 5}},
        chain("inet", "vmap", "input", 1, "input"),
        rule("inet", "vmap", "input", 2, [{"vmap": {"key": {"meta": {"key": "iifname"}}, "data": {"set": [["eth9", {"drop": None}]]}}}]),
    ]


class Tools:
    """Stand-ins for nft, iptables(-restore), firewall-cmd and systemctl, keeping a ruleset in memory."""

    def __init__(self, present=("nft", "iptables", "iptables-restore", "systemctl")):
        self.present = set(present)
        self.calls = []
        self.nft = operator_ruleset()
        self.next_handle = 100
        self.ipt = {4: "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n", 6: "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n"}
        self.restores = []
        self.firewalld = None  # {"zone": ..., "runtime": set(), "permanent": set()} when it runs

    def which(self, name):
        return f"/usr/sbin/{name}" if name in self.present else None

    def __call__(self, argv, **kwargs):
        self.calls.append((argv, kwargs))
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), argv
        assert not kwargs.get("shell"), kwargs
        name, args, stdin = argv[0].rsplit("/", 1)[-1], argv[1:], kwargs.get("input")
        out, rc = getattr(self, "_" + name.replace("-", "_"))(args, stdin)
        return subprocess.CompletedProcess(argv, rc, out, "" if rc == 0 else f"{name} said no")

    def _nft(self, args, stdin):
        if args == ["-j", "list", "ruleset"]:
            return json.dumps({"nftables": [{"metainfo": {"version": "1.0.6"}}] + self.nft}), 0
        assert args in (["-j", "-f", "-"], ["-j", "--check", "-f", "-"]), args
        commands = json.loads(stdin)["nftables"]
        if "--check" in args:
            return "", 0
        for command in commands:
            (verb, body), = command.items()
            r = body["rule"]
            if verb == "delete":
                found = [o for o in self.nft if "rule" in o and o["rule"]["handle"] == r["handle"] and o["rule"]["chain"] == r["chain"]
                         and o["rule"]["table"] == r["table"] and o["rule"]["family"] == r["family"]]
                assert found, r
                self.nft.remove(found[0])
            else:
                assert verb == "insert" and "handle" not in r, command
                self.next_handle += 1
                new = {"rule": dict(r, handle=self.next_handle)}
                # nft reads a number back as the protocol's name
                new["rule"]["expr"] = json.loads(json.dumps(r["expr"]).replace('"right": 112', '"right": "vrrp"'))
                first = next(i for i, o in enumerate(self.nft) if "chain" in o and (o["chain"]["family"], o["chain"]["table"], o["chain"]["name"]) == (r["family"], r["table"], r["chain"]))
                self.nft.insert(first + 1, new)
        return "", 0

    def _iptables(self, args, stdin):
        assert args == ["-w", "-S"], args
        return self.ipt[4], 0

    def _ip6tables(self, args, stdin):
        return self.ipt[6], 0

    def _iptables_restore(self, args, stdin):
        assert args[:2] == ["-w", "--noflush"], args
        self.restores.append((args, stdin))
        return "", 0

    def _firewall_cmd(self, args, stdin):
        fwd = self.firewalld
        if args == ["--state"]:
            return ("running\n", 0) if fwd else ("not running\n", 252)
        if args[0].startswith("--get-zone-of-interface="):
            return fwd["zone"] + "\n", 0
        where = "permanent" if args[0] == "--permanent" else "runtime"
        args = args[1:] if where == "permanent" else args
        assert args[0] == f"--zone={fwd['zone']}", args
        op, _, text = args[1].partition("=")
        if op == "--query-rich-rule":
            return "", 0 if text in fwd[where] else 1
        if op == "--add-rich-rule":
            fwd[where].add(text)
        elif op == "--remove-rich-rule":
            fwd[where].discard(text)
        return "success\n", 0

    def _systemctl(self, args, stdin):
        assert args == ["daemon-reload"], args
        return "", 0

    def writes(self):
        """Calls that change something (not a listing, not a query, not a check)."""
        out = []
        for argv, kw in self.calls:
            text = " ".join(argv)
            if any(w in text for w in ("list ruleset", " -S", "--check", "--test", "--state", "--query-", "--get-")):
                continue
            out.append(argv)
        return out


@pytest.fixture
def opts():
    return {"test": False}


@pytest.fixture
def tools(monkeypatch, tmp_path):
    t = Tools()
    monkeypatch.setattr(mod.subprocess, "run", t)
    monkeypatch.setattr(mod, "which", t.which)
    monkeypatch.setattr(mod, "SYSTEMD_DIR", str(tmp_path / "systemd"))
    monkeypatch.setattr(mod, "SYSTEMD_RUNNING", str(tmp_path / "no-systemd"))
    return t


@pytest.fixture
def configure_loader_modules(opts):
    return {mod: {"__opts__": opts}}


@pytest.fixture
def paths(tmp_path):
    d = tmp_path / "nginx_ha"
    return {"name": str(d / "firewall.json"), "helper": str(d / "vrrp_firewall.py")}


def ours(t):
    """{chain: [our rules, in order]}"""
    out = {}
    for o in t.nft:
        if "rule" in o and o["rule"].get("comment") == mod.COMMENT:
            out.setdefault((o["rule"]["family"], o["rule"]["table"], o["rule"]["chain"]), []).append(o)
    return out


def test_virtual():
    assert mod.__virtual__() == "nginx_ha_firewall"


def test_rules_go_at_the_top_of_the_chains_that_can_drop_and_nowhere_else(tools, paths):
    ret = mod.vrrp_allowed(rules=SPEC_RULES, **paths)
    assert ret["result"] is True, ret
    # inet filter (policy drop), ip6 t (a reject behind a jump: but no IPv6 rule here), inet vmap (a drop in a verdict map);
    # not the quiet chain, not the forward hook, not iptables-nft's ip filter INPUT (through iptables instead)
    assert sorted(ret["changes"]["nftables"]) == ["inet filter input", "inet vmap input"], ret["changes"]
    rules_in = [o["rule"] for o in tools.nft if "rule" in o and o["rule"]["table"] == "filter" and o["rule"]["family"] == "inet"]
    assert [r.get("comment") for r in rules_in] == [mod.COMMENT, mod.COMMENT, None]  # ours first, the operator's after
    assert [mod.nft_parse(r["expr"]) for r in rules_in[:2]] == SPEC_RULES
    assert "IPv4 filter NGINX_HA_VRRP" not in ret["changes"].get("iptables", {})  # iptables' INPUT drops nothing here


def test_iptables_nfts_chain_is_left_to_iptables_unless_iptables_is_missing(tools, paths):
    # iptables-nft (newer versions) keeps `-m comment` as the rule's comment: our jump, iptables' business
    jump = rule("ip", "filter", "INPUT", 9, [{"counter": None}, {"jump": {"target": "NGINX_HA_VRRP"}}], mod.COMMENT)
    tools.nft.append(jump)
    for _ in range(2):
        ret = mod.vrrp_allowed(rules=SPEC_RULES, **paths)
        assert "ip filter INPUT" not in ret["changes"].get("nftables", {}) and jump in tools.nft, ret
    tools.nft.remove(jump)
    ret = mod.vrrp_allowed(rules=SPEC_RULES, backend="nftables", **paths)
    assert "ip filter INPUT" not in ret["changes"].get("nftables", {}) and "ip filter INPUT is iptables-nft's" in ret["comment"], ret
    tools.present -= {"iptables", "iptables-restore"}  # nobody can look at it through iptables: a chain like any other
    ret = mod.vrrp_allowed(rules=SPEC_RULES, **paths)
    assert ret["changes"]["nftables"]["ip filter INPUT"]["new"] == [mod.describe(r) for r in SPEC_RULES], ret


def test_the_nft_transaction_is_json_on_stdin_with_the_peers_and_the_group(tools, paths):
    mod.vrrp_allowed(rules=SPEC_RULES, **paths)
    applies = [(argv, kw) for argv, kw in tools.calls if argv[:3] == ["/usr/sbin/nft", "-j", "-f"]]
    assert len(applies) == 1
    commands = json.loads(applies[0][1]["input"])["nftables"]
    inserts = [c["insert"]["rule"] for c in commands if c["insert"]["rule"]["table"] == "filter"]
    assert all(r["comment"] == "nginx_ha: VRRP" for r in inserts)
    # inserted in reverse: each insert goes to the top, so the first rule ends up first
    assert inserts[1]["expr"] == [
        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "eth0"}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "203.0.113.12"}},
        {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": 112}},
        {"accept": None},
    ]
    assert inserts[0]["expr"][1] == {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "224.0.0.18"}}


def test_several_peers_are_one_set_and_ipv6_uses_ip6(tools):
    expr = mod.nft_expr({"family": 6, "interface": "eth0", "sources": ["2001:db8::2", "2001:db8::3"]})
    assert expr[1]["match"]["left"] == {"payload": {"protocol": "ip6", "field": "saddr"}}
    assert expr[1]["match"]["right"] == {"set": ["2001:db8::2", "2001:db8::3"]}
    assert mod.nft_parse(json.loads(json.dumps(expr).replace("112", '"vrrp"'))) == {"family": 6, "interface": "eth0", "sources": ["2001:db8::2", "2001:db8::3"]}


def test_a_second_run_changes_nothing_and_calls_nothing_that_writes(tools, paths):
    assert mod.vrrp_allowed(rules=SPEC_RULES, **paths)["changes"]
    tools.calls.clear()
    ret = mod.vrrp_allowed(rules=SPEC_RULES, **paths)
    assert ret["result"] is True and ret["changes"] == {}, ret
    assert tools.writes() == []


def test_test_mode_reports_checks_and_changes_nothing(tools, paths, opts, tmp_path):
    opts["test"] = True
    before = copy.deepcopy(tools.nft)
    ret = mod.vrrp_allowed(rules=SPEC_RULES, **paths)
    assert ret["result"] is None and ret["changes"]["nftables"] and ret["changes"]["files"], ret
    assert tools.nft == before and tools.writes() == []
    assert any("--check" in argv for argv, _ in tools.calls)  # nft checked the transaction
    assert not (tmp_path / "nginx_ha").exists()


def test_operator_rules_are_never_deleted_ours_are_by_handle(tools, paths):
    mod.vrrp_allowed(rules=SPEC_RULES, **paths)
    operator = [o for o in tools.nft if "rule" in o and o["rule"].get("comment") != mod.COMMENT]
    mod.vrrp_allowed(rules=[{"family": 4, "interface": "eth0", "sources": ["203.0.113.13"]}], **paths)  # a changed peer
    ret = mod.vrrp_absent(paths["name"], helper=paths["helper"])
    assert ret["result"] is True and set(ret["changes"]["nftables"]) == {"inet filter input", "inet vmap input"}, ret
    assert [o for o in tools.nft if "rule" in o] == operator
    deleted = [c["delete"]["rule"]["handle"] for argv, kw in tools.calls if argv[1:3] == ["-j", "-f"]
               for c in json.loads(kw["input"])["nftables"] if "delete" in c]
    assert deleted and all(h >= 100 for h in deleted)  # only handles the stand-in gave our inserts


def test_a_rule_of_ours_below_an_operator_rule_or_edited_is_replaced(tools, paths):
    mod.vrrp_allowed(rules=SPEC_RULES, **paths)
    chain_at = next(i for i, o in enumerate(tools.nft) if "chain" in o and o["chain"]["table"] == "filter" and o["chain"]["family"] == "inet" and o["chain"]["name"] == "input")
    tools.nft.insert(chain_at + 1, rule("inet", "filter", "input", 50, DROP_TELNET))  # the operator inserted above ours
    ret = mod.vrrp_allowed(rules=SPEC_RULES, **paths)
    assert list(ret["changes"]["nftables"]) == ["inet filter input"], ret
    mine = ours(tools)[("inet", "filter", "input")][0]
    mine["rule"]["expr"][1]["match"]["right"] = "198.51.100.66"  # hand-edited, comment kept
    ret = mod.vrrp_allowed(rules=SPEC_RULES, **paths)
    assert ret["changes"]["nftables"]["inet filter input"]["old"][0] == "VRRP IPv4 on eth0 from 198.51.100.66"
    assert mod.vrrp_allowed(rules=SPEC_RULES, **paths)["changes"] == {}


def test_pillar_text_never_reaches_a_tool(tools, paths):
    for bad in (
        [{"family": 4, "interface": "eth0; rm -rf /", "group": "224.0.0.18"}],
        [{"family": 4, "interface": "eth0", "sources": ["203.0.113.12 accept; flush ruleset"]}],
        [{"family": 4, "interface": "eth0", "sources": ["2001:db8::1"]}],  # wrong family
        [{"family": 4, "interface": "eth0", "group": "203.0.113.1"}],  # not a multicast group
        [{"family": 4, "interface": "eth0", "sources": []}],
        [{"family": True, "interface": "eth0", "group": "224.0.0.18"}],
        [{"family": 4, "interface": "eth0", "group": "224.0.0.18", "extra": "x"}],
        "not a list",
    ):
        tools.calls.clear()
        ret = mod.vrrp_allowed(rules=bad, **paths)
        assert ret["result"] is False and tools.calls == [], (bad, ret)
    assert mod.vrrp_allowed(rules=SPEC_RULES, backend="pf", **paths)["result"] is False
    assert mod.vrrp_allowed(rules=SPEC_RULES, name="relative/firewall.json", helper=paths["helper"])["result"] is False
    assert mod.vrrp_allowed(rules=SPEC_RULES, keepalived_service="keepalived; reboot", **paths)["result"] is False


def test_every_tool_runs_as_an_argument_list_with_a_fixed_path(tools, paths):
    tools.firewalld = None
    mod.vrrp_allowed(rules=SPEC_RULES, **paths)
    mod.vrrp_absent(paths["name"], helper=paths["helper"])
    assert tools.calls
    for argv, kw in tools.calls:
        assert isinstance(argv, list) and argv[0].startswith("/usr/sbin/") and not kw.get("shell")
        assert kw["env"]["PATH"] == mod.SYSTEM_PATH and kw["timeout"] == mod.TIMEOUT


def test_iptables_own_chain_jumped_to_first_where_input_drops(tools, paths):
    tools.ipt[4] = "-P INPUT DROP\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n-A INPUT -i lo -j ACCEPT\n"
    ret = mod.vrrp_allowed(rules=SPEC_RULES, backend="iptables", **paths)
    assert ret["result"] is True and "nftables" not in ret["changes"], ret
    (args, script), = tools.restores
    assert script.splitlines() == [
        "*filter",
        ":NGINX_HA_VRRP - [0:0]",
        "-A NGINX_HA_VRRP -i eth0 -s 203.0.113.12 -p 112 -j ACCEPT",
        "-A NGINX_HA_VRRP -i eth1 -d 224.0.0.18 -p 112 -j ACCEPT",
        '-I INPUT 1 -m comment --comment "nginx_ha: VRRP" -j NGINX_HA_VRRP',
        "COMMIT",
    ]
    # as iptables -S shows it afterwards: nothing more to do
    tools.ipt[4] = ("-P INPUT DROP\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n-N NGINX_HA_VRRP\n"
                    '-A INPUT -m comment --comment "nginx_ha: VRRP" -j NGINX_HA_VRRP\n-A INPUT -i lo -j ACCEPT\n'
                    "-A NGINX_HA_VRRP -s 203.0.113.12/32 -i eth0 -p vrrp -j ACCEPT\n-A NGINX_HA_VRRP -d 224.0.0.18/32 -i eth1 -p vrrp -j ACCEPT\n")
    tools.restores.clear()
    assert mod.vrrp_allowed(rules=SPEC_RULES, backend="iptables", **paths)["changes"] == {} and tools.restores == []
    # removal: our jump and our chain, nothing else
    assert mod.vrrp_absent(paths["name"], helper=paths["helper"])["result"] is True
    (_, script), = tools.restores
    assert script.splitlines() == ["*filter", '-D INPUT -m comment --comment "nginx_ha: VRRP" -j NGINX_HA_VRRP',
                                   "-F NGINX_HA_VRRP", "-X NGINX_HA_VRRP", "COMMIT"]


def test_an_explicit_backend_that_is_missing_fails(tools, paths):
    tools.present.discard("nft")
    ret = mod.vrrp_allowed(rules=SPEC_RULES, backend="nftables", **paths)
    assert ret["result"] is False and "nft not found" in ret["comment"], ret


def test_auto_without_any_firewall_tool_does_nothing(tools, paths):
    tools.present = {"systemctl"}
    ret = mod.vrrp_allowed(rules=SPEC_RULES, **paths)
    assert ret["result"] is True and set(ret["changes"]) == {"files"} and "no firewall tool" in ret["comment"], ret


def test_firewalld_rich_rules_recorded_and_only_ours_removed(tools, paths, tmp_path):
    operator_rule = 'rule family="ipv4" destination address="224.0.0.18" protocol value="vrrp" accept'
    tools.present.add("firewall-cmd")
    tools.firewalld = {"zone": "internal", "runtime": {operator_rule}, "permanent": {operator_rule}}
    ret = mod.vrrp_allowed(rules=SPEC_RULES, **paths)  # auto: firewalld runs, so firewalld only
    assert ret["result"] is True and set(ret["changes"]) == {"firewalld", "files"}, ret
    peer_rule = 'rule family="ipv4" source address="203.0.113.12" protocol value="vrrp" accept'
    assert tools.firewalld["runtime"] == tools.firewalld["permanent"] == {operator_rule, peer_rule}
    record = json.loads((tmp_path / "nginx_ha" / "firewall-added.json").read_text())
    assert record == [["internal", peer_rule, "runtime"], ["internal", peer_rule, "permanent"]]  # not the operator's
    assert mod.vrrp_allowed(rules=SPEC_RULES, **paths)["changes"] == {}
    assert mod.vrrp_absent(paths["name"], helper=paths["helper"])["result"] is True
    assert tools.firewalld["runtime"] == tools.firewalld["permanent"] == {operator_rule}
    assert not (tmp_path / "nginx_ha").exists() or not list((tmp_path / "nginx_ha").iterdir())


def test_systemd_hooks_drop_ins_and_daemon_reload(tools, paths, tmp_path, monkeypatch):
    (tmp_path / "systemd-running").mkdir()
    monkeypatch.setattr(mod, "SYSTEMD_RUNNING", str(tmp_path / "systemd-running"))
    helper = str(tmp_path / "nginx%ha" / "vrrp_firewall.py")
    ret = mod.vrrp_allowed(paths["name"], SPEC_RULES, helper=helper, python="/usr/bin/python3")
    assert ret["result"] is True, ret
    assert (tmp_path / "nginx%ha" / "vrrp_firewall.py").read_bytes() == open(mod.__file__, "rb").read()
    escaped = f"/usr/bin/python3 {helper.replace('%', '%%')} apply {paths['name']}"
    keepalived = (tmp_path / "systemd" / "keepalived.service.d" / "zz-nginx-ha-vrrp.conf").read_text()
    assert f"\nExecStartPre={escaped}\n" in keepalived and "After=nftables.service " in keepalived
    nft_unit = (tmp_path / "systemd" / "nftables.service.d" / "zz-nginx-ha-vrrp.conf").read_text()
    assert f"ExecStartPost=-{escaped}\nExecReload=-{escaped}\n" in nft_unit
    persistent = (tmp_path / "systemd" / "netfilter-persistent.service.d" / "zz-nginx-ha-vrrp.conf").read_text()
    assert "ExecReload" not in persistent  # the unit has none of its own: none added
    assert [a for a, _ in tools.calls if a[0].endswith("systemctl")] == [["/usr/sbin/systemctl", "daemon-reload"]]
    tools.calls.clear()
    assert mod.vrrp_allowed(paths["name"], SPEC_RULES, helper=helper)["changes"] == {}
    assert tools.writes() == []  # no second daemon-reload
    ret = mod.vrrp_allowed(paths["name"], SPEC_RULES, helper=helper, hooks=False)
    assert set(ret["changes"]["files"].values()) == {"removed"} and not (tmp_path / "systemd" / "keepalived.service.d").exists()
    assert [a for a, _ in tools.calls if a[0].endswith("systemctl")] == [["/usr/sbin/systemctl", "daemon-reload"]]


def test_without_systemd_no_drop_ins_and_the_comment_says_so(tools, paths, tmp_path):
    ret = mod.vrrp_allowed(rules=SPEC_RULES, **paths)
    assert not (tmp_path / "systemd").exists() and "no systemd here" in ret["comment"]
    assert not any(a[0].endswith("systemctl") for a, _ in tools.calls)


def test_the_helper_cli(tools, paths, capsys):
    assert mod.main([]) == 2
    assert mod.main(["apply", paths["name"]]) == 1  # no spec yet
    mod.vrrp_allowed(rules=SPEC_RULES, **paths)
    assert mod.main(["check", paths["name"]]) == 0
    tools.nft = operator_ruleset()  # `systemctl reload nftables`: the operator's file, flush ruleset first
    assert mod.main(["check", paths["name"]]) == 1
    assert mod.main(["apply", paths["name"]]) == 0 and mod.main(["check", paths["name"]]) == 0
    assert mod.main(["remove", paths["name"]]) == 0 and ours(tools) == {}


def test_node_view_firewall_rules_from_the_pillar():
    pillar = formula.two_node_pillar()
    assert formula.node_view(pillar, "web-a")["firewall"] == {
        "manage": True, "backend": "auto", "hooks": True, "vrrp": [{"family": 4, "interface": "eth0", "group": "224.0.0.18"}],
    }
    pillar["nodes"] = {"web-a": {"unicast_src_ip": "203.0.113.11"}, "web-b": {"unicast_src_ip": "203.0.113.12"}, "web-c": {"unicast_src_ip": "203.0.113.13"}}
    pillar["vrrp_instances"]["VI_web"]["unicast"] = True
    pillar["vrrp_instances"]["VI_web"]["nodes"]["web-c"] = {"state": "BACKUP", "priority": 98}
    pillar["vrrp_instances"]["VI_v6"] = {"virtual_router_id": 70, "virtual_ipaddress": ["2001:db8::100/64"], "interface": "eth1",
                                         "nodes": {"web-a": {"state": "BACKUP", "priority": 99}, "web-b": {"state": "MASTER", "priority": 100}}}
    pillar["local_vip"] = False
    view = formula.node_view(pillar, "web-a")
    assert view["firewall"]["vrrp"] == [
        {"family": 4, "interface": "eth0", "sources": ["203.0.113.12", "203.0.113.13"]},
        {"family": 6, "interface": "eth1", "group": "ff02::12"},
    ]
    assert mod.normalize_rules(view["firewall"]["vrrp"]) == view["firewall"]["vrrp"]


@pytest.mark.parametrize("value, error", [
    ({"backend": "pf"}, "nginx_ha:firewall:backend: 'pf' is not auto or nftables or iptables or firewalld"),
    ({"manage": "yes"}, "nginx_ha:firewall:manage: 'yes' is not true or false"),
    ({"hoks": True}, "nginx_ha:firewall:hoks: is not a known key"),
])
def test_the_schema_refuses_bad_firewall_keys(value, error):
    pillar = dict(formula.two_node_pillar(), firewall=value)
    model = formula.model()
    with pytest.raises(model.ModelError) as exc:
        formula.node_view(pillar, "web-a")
    assert any(e.startswith(error) for e in exc.value.errors), exc.value.errors


def render_firewall_sls(node, name="firewall"):
    import jinja2
    import yaml

    stand_in = jinja2.DictLoader({"nginx_ha/map.jinja": '{%- set nginx_ha = salt["nginx_ha.node_config"]() %}'})
    env = jinja2.Environment(loader=jinja2.ChoiceLoader([stand_in, jinja2.FileSystemLoader(str(formula.FORMULA.parent))]))
    env.filters["json"] = json.dumps
    salt = {"nginx_ha.node_config": lambda **kw: node, "pillar.get": lambda key, default=None: default}
    return yaml.safe_load(env.get_template(f"nginx_ha/{name}.sls").render(tpldir="nginx_ha", salt=salt))


def test_firewall_sls_renders_the_state_from_the_node_view():
    node = formula.node_view(formula.two_node_pillar(), "web-a")
    states = render_firewall_sls(node)
    assert states["include"] == [".scripts"]
    args = {k: v for item in states["nginx_ha_firewall_vrrp"]["nginx_ha_firewall.vrrp_allowed"] for k, v in item.items()}
    assert args["name"] == "/etc/keepalived/nginx_ha/firewall.json" and args["helper"] == "/etc/keepalived/nginx_ha/vrrp_firewall.py"
    assert args["rules"] == [{"family": 4, "interface": "eth0", "group": "224.0.0.18"}] and args["backend"] == "auto"
    assert args["require"] == [{"file": "nginx_ha_script_dir_present"}]
    node = formula.node_view(dict(formula.two_node_pillar(), firewall={"manage": False}), "web-a")
    assert list(render_firewall_sls(node)["nginx_ha_firewall_vrrp"]) == ["nginx_ha_firewall.vrrp_absent"]
    absent = render_firewall_sls(None, "firewall_absent")["nginx_ha_firewall_vrrp"]["nginx_ha_firewall.vrrp_absent"]
    assert {"name": "/etc/keepalived/nginx_ha/firewall.json"} in absent
