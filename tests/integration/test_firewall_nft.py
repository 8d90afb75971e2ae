"""
nginx_ha_firewall against the real nft and iptables, with real VRRP packets, in private network
namespaces (root; nothing of this machine's own firewall is touched).

Three namespaces: the node (``eth0`` to the peer, ``eth1`` to a stranger's link), the peer
(10.0.0.2, fd00::2, and a second address 10.0.0.9 that is no peer) and the stranger (10.0.1.2).
A receiver in the node reads IP protocol 112 on raw sockets (keepalived's way, after the input
hook) and reports which probes arrived.

What it shows: a table of our own cannot accept VRRP past an operator's ``policy drop`` input
chain (every base chain on the hook sees the packet, and a drop anywhere is final), the rules the
state puts in the operator's chains do, for the peers / the group on the VRRP interface only; a
second run changes nothing; removal leaves the operator's ruleset byte for byte as it was; a
reload of the operator's ruleset (``flush ruleset``) takes the rules away and the helper puts them
back, measured; iptables: our own chain, and never a native nft rule in iptables-nft's chain.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from tests.support import formula

TOOLS = ("nft", "unshare", "nsenter", "ip")
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and nft need root"),
    pytest.mark.skipif(not all(shutil.which(t) for t in TOOLS), reason=f"needs {', '.join(TOOLS)} (apt: nftables iproute2 util-linux)"),
]

OPERATOR = """\
flush ruleset
table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		iifname "lo" accept
		ct state established,related accept
		tcp dport 22 accept
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
	}
}
"""

RECEIVER = textwrap.dedent(
    """
    import json, select, socket, struct, sys, time
    idx = {name: socket.if_nametoindex(name) for name in ("eth0", "eth1")}
    v4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
    v6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 112)
    other = socket.socket(socket.AF_INET, socket.SOCK_RAW, 113)  # not VRRP: must stay out
    for name, i in idx.items():
        v4.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack("4s4si", socket.inet_aton("224.0.0.18"), b"\\0" * 4, i))
        v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, socket.inet_pton(socket.AF_INET6, "ff02::12") + struct.pack("@I", i))
    print("ready", flush=True)
    seen, deadline = [], time.monotonic() + float(sys.argv[1])
    while time.monotonic() < deadline:
        ready, _, _ = select.select([v4, v6, other], [], [], 0.05)
        for sock in ready:
            data = sock.recv(2048)
            data = data if sock is v6 else data[20:]  # IPv4 raw sockets get the IP header too
            if data.startswith(b"probe:"):
                seen.append(data.decode())
    print(json.dumps(sorted(set(seen))), flush=True)
    """
)

SENDER = textwrap.dedent(
    """
    import socket, struct, sys
    for spec in sys.argv[1:]:
        name, src, dst, dev, proto = spec.split(",")
        six = ":" in dst
        s = socket.socket(socket.AF_INET6 if six else socket.AF_INET, socket.SOCK_RAW, int(proto))
        s.bind((src, 0))
        i = socket.if_nametoindex(dev)
        if six:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, i)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            s.sendto(("probe:" + name).encode(), (dst, 0, 0, i))
        else:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, struct.pack("4s4si", b"\\0" * 4, b"\\0" * 4, i))
            s.sendto(("probe:" + name).encode(), (dst, 0))
    """
)

# name: (sender namespace, source, destination, device, protocol)
PROBES = {
    "peer-unicast": ("peer", "10.0.0.2", "10.0.0.1", "eth0", 112),
    "stranger-unicast": ("peer", "10.0.0.9", "10.0.0.1", "eth0", 112),
    "peer-group": ("peer", "10.0.0.2", "224.0.0.18", "eth0", 112),
    "stranger-group-eth1": ("stranger", "10.0.1.2", "224.0.0.18", "eth0", 112),
    "peer-group6": ("peer", "fd00::2", "ff02::12", "eth0", 112),
    "peer-unicast6": ("peer", "fd00::2", "fd00::1", "eth0", 112),
    "peer-proto113-group": ("peer", "10.0.0.2", "224.0.0.18", "eth0", 113),
}


class Net:
    """Three namespaces held by `sleep` processes; commands run in them with nsenter."""

    def __init__(self):
        self.procs = {}
        for name in ("node", "peer", "stranger"):
            self.procs[name] = subprocess.Popen(["unshare", "-n", "sleep", "600"])
        time.sleep(0.1)
        for name in self.procs:
            self.run(name, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
            self.run(name, "ip", "link", "set", "lo", "up")
        self.run("node", "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", str(self.procs["peer"].pid))
        self.run("node", "ip", "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", str(self.procs["stranger"].pid))
        for ns, dev, addrs in (
            ("node", "eth0", ["10.0.0.1/24", "fd00::1/64"]),
            ("node", "eth1", ["10.0.1.1/24"]),
            ("peer", "eth0", ["10.0.0.2/24", "10.0.0.9/24", "fd00::2/64"]),
            ("stranger", "eth0", ["10.0.1.2/24"]),
        ):
            for addr in addrs:
                self.run(ns, "ip", "addr", "add", addr, "dev", dev, *(["nodad"] if ":" in addr else []))
            self.run(ns, "ip", "link", "set", dev, "up")
        deadline = time.monotonic() + 5  # IPv6 multicast needs the kernel's ff00::/8 route, made once the link is up
        while not all("ff00::/8 dev eth0" in self.run(ns, "ip", "-6", "route", "show", "table", "local").stdout for ns in ("node", "peer")):
            assert time.monotonic() < deadline, "the veth links did not come up"
            time.sleep(0.05)

    def prefix(self, name):
        return ["nsenter", f"--net=/proc/{self.procs[name].pid}/ns/net", "--"]

    def run(self, name, *argv, stdin=None, check=True):
        proc = subprocess.run(self.prefix(name) + list(argv), input=stdin, capture_output=True, text=True, timeout=30)
        if check and proc.returncode:
            raise AssertionError(f"{name}: {' '.join(argv)[:80]} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def nft(self, *argv, stdin=None):
        return self.run("node", "nft", *argv, stdin=stdin).stdout

    def received(self, names=tuple(PROBES)):
        """Send the probes ``names`` to the node; the set of those its raw sockets received."""
        receiver = subprocess.Popen(self.prefix("node") + [sys.executable, "-c", RECEIVER, "1.0"], stdout=subprocess.PIPE, text=True)
        try:
            assert receiver.stdout.readline().strip() == "ready"
            for ns in ("peer", "stranger"):
                specs = [f"{n},{src},{dst},{dev},{proto}" for n, (sns, src, dst, dev, proto) in PROBES.items() if n in names and sns == ns]
                if specs:
                    self.run(ns, sys.executable, "-c", SENDER, *specs)
            out, _ = receiver.communicate(timeout=10)
        finally:
            receiver.kill()
        return {line.split(":", 1)[1] for line in json.loads(out.strip().splitlines()[-1])}

    def close(self):
        for proc in self.procs.values():
            proc.kill()
            proc.wait()


@pytest.fixture
def net():
    subprocess.run(["unshare", "-n", "nft", "list", "ruleset"], check=True, capture_output=True)
    n = Net()
    try:
        yield n
    finally:
        n.close()


@pytest.fixture
def fw(net, tmp_path, monkeypatch):
    """The state module, running its tools in the node's namespace; no systemd hooks (checked in unit tests)."""
    mod = formula.load_module("_states", "nginx_ha_firewall")
    mod.__opts__ = {"test": False}
    monkeypatch.setattr(mod, "PREFIX", net.prefix("node"))
    monkeypatch.setattr(mod, "SYSTEMD_DIR", str(tmp_path / "systemd"))
    monkeypatch.setattr(mod, "SYSTEMD_RUNNING", str(tmp_path / "no-systemd"))
    mod.spec = str(tmp_path / "nginx_ha" / "firewall.json")
    mod.helper = str(tmp_path / "nginx_ha" / "vrrp_firewall.py")
    return mod


UNICAST = [{"family": 4, "interface": "eth0", "sources": ["10.0.0.2"]}]
MULTICAST = [{"family": 4, "interface": "eth0", "group": "224.0.0.18"}, {"family": 6, "interface": "eth0", "group": "ff02::12"}]


def allow(fw, rules, **kw):
    ret = fw.vrrp_allowed(fw.spec, rules, helper=fw.helper, **kw)
    assert ret["result"] is not False, ret
    return ret


def test_without_a_firewall_everything_arrives_and_nothing_is_added(net, fw):
    assert net.received() == set(PROBES)
    ret = allow(fw, UNICAST)
    assert "nftables" not in ret["changes"] and "iptables" not in ret["changes"], ret
    assert net.nft("list", "ruleset").strip() == ""


def test_a_table_of_our_own_cannot_open_vrrp_through_the_operators_drop(net):
    """The nftables subtlety: an accept in another base chain on the input hook does not override a drop."""
    net.nft("-f", "-", stdin=OPERATOR)
    assert net.received() == set()
    net.nft("-f", "-", stdin="table inet nginx_ha {\n chain input {\n  type filter hook input priority -100; policy accept;\n"
                              "  meta l4proto 112 accept\n }\n}\n")
    assert net.received() == set(), "an accept in our own base chain let VRRP past the operator's drop"
    net.nft("insert", "rule", "inet", "filter", "input", "meta", "l4proto", "112", "accept")
    assert {"peer-unicast", "peer-group"} <= net.received()


def test_unicast_lets_in_the_peers_only_and_a_second_run_changes_nothing(net, fw):
    net.nft("-f", "-", stdin=OPERATOR)
    before = net.nft("list", "ruleset")
    ret = allow(fw, UNICAST)
    assert ret["changes"]["nftables"] == {"inet filter input": {"old": [], "new": ["VRRP IPv4 on eth0 from 10.0.0.2"]}}, ret
    assert "forward" not in json.dumps(ret["changes"])  # only input-hook chains
    assert net.received() == {"peer-unicast", "peer-group"}  # from the peer's address on eth0: nothing else
    listing = net.nft("-a", "list", "chain", "inet", "filter", "input").splitlines()
    assert 'iifname "eth0" ip saddr 10.0.0.2 meta l4proto vrrp accept comment "nginx_ha: VRRP"' in listing[3], listing
    again = allow(fw, UNICAST)
    assert again["changes"] == {} and again["result"] is True, again
    # the operator's rules are unchanged, ours removed by handle: byte for byte the ruleset before
    assert fw.vrrp_absent(fw.spec, helper=fw.helper)["result"] is True
    assert net.nft("list", "ruleset") == before
    assert net.received() == set()


def test_multicast_lets_in_the_group_on_the_vrrp_interface_only(net, fw):
    net.nft("-f", "-", stdin=OPERATOR)
    allow(fw, MULTICAST)
    # the group on eth0, v4 and v6; not on eth1, not unicast, not another protocol to the group
    assert net.received() == {"peer-group", "peer-group6"}


def test_test_mode_changes_nothing_and_reports_what_would(net, fw):
    net.nft("-f", "-", stdin=OPERATOR)
    before = net.nft("list", "ruleset")
    fw.__opts__["test"] = True
    ret = fw.vrrp_allowed(fw.spec, UNICAST, helper=fw.helper)
    assert ret["result"] is None and ret["changes"]["nftables"], ret
    assert net.nft("list", "ruleset") == before and not os.path.exists(fw.spec)


def test_rules_follow_a_changed_peer_and_move_back_to_the_top(net, fw):
    net.nft("-f", "-", stdin=OPERATOR)
    allow(fw, UNICAST)
    net.nft("insert", "rule", "inet", "filter", "input", "ip", "saddr", "10.0.0.2", "drop")  # the operator, above ours
    assert net.received({"peer-unicast"}) == set()
    ret = allow(fw, UNICAST)
    assert ret["changes"]["nftables"]["inet filter input"]["new"] == ["VRRP IPv4 on eth0 from 10.0.0.2"], ret
    assert net.received({"peer-unicast"}) == {"peer-unicast"}
    ret = allow(fw, [{"family": 4, "interface": "eth0", "sources": ["10.0.0.9"]}])
    assert ret["changes"]["nftables"]["inet filter input"] == {"old": ["VRRP IPv4 on eth0 from 10.0.0.2"], "new": ["VRRP IPv4 on eth0 from 10.0.0.9"]}
    assert net.received({"peer-unicast", "stranger-unicast"}) == {"stranger-unicast"}
    assert net.nft("list", "chain", "inet", "filter", "input").count("nginx_ha: VRRP") == 1


def test_chains_that_drop_nothing_are_left_alone(net, fw):
    net.nft("-f", "-", stdin="table inet quiet {\n chain input {\n  type filter hook input priority 0; policy accept;\n  counter\n }\n}\n"
                              "table ip6 jumpy {\n chain input {\n  type filter hook input priority 5;\n  jump deeper\n }\n"
                              " chain deeper {\n  tcp dport 23 reject\n }\n}\n")
    ret = allow(fw, MULTICAST)
    assert list(ret["changes"]["nftables"]) == ["ip6 jumpy input"], ret  # a reject reachable by a jump: guarded
    assert ret["changes"]["nftables"]["ip6 jumpy input"]["new"] == ["VRRP IPv6 on eth0 to ff02::12"]  # its family only
    assert "nginx_ha" not in net.nft("list", "table", "inet", "quiet")


def test_a_reload_of_the_operators_ruleset_drops_the_rules_and_the_helper_puts_them_back(net, fw, tmp_path):
    net.nft("-f", "-", stdin=OPERATOR)
    allow(fw, MULTICAST)
    assert open(fw.helper, "rb").read() == open(fw.__file__, "rb").read()  # the helper is this very module
    operator_file = tmp_path / "nftables.conf"
    operator_file.write_text(OPERATOR)
    net.nft("-f", str(operator_file))  # what `systemctl reload nftables` runs (flush ruleset first)
    assert "nginx_ha" not in net.nft("list", "ruleset")
    assert net.received({"peer-group"}) == set()
    helper = net.prefix("node") + [sys.executable, fw.helper]
    assert subprocess.run(helper + ["check", fw.spec], capture_output=True).returncode == 1
    start = time.monotonic()
    subprocess.run(helper + ["apply", fw.spec], check=True, capture_output=True)
    took = time.monotonic() - start
    print(f"helper apply after a reload: {took * 1000:.0f} ms")
    assert took < 1.0  # the gap VRRP is dropped for after `systemctl reload nftables` (3 adverts: 0.3 s at 0.1)
    assert subprocess.run(helper + ["check", fw.spec], capture_output=True).returncode == 0
    assert net.received({"peer-group"}) == {"peer-group"}


@pytest.mark.skipif(not shutil.which("iptables"), reason="needs iptables (apt: iptables)")
def test_iptables_own_chain_jumped_to_first_and_removed_alone(net, fw):
    for argv in (["-P", "INPUT", "DROP"], ["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"], ["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"]):
        net.run("node", "iptables", "-w", *argv)
    before = net.run("node", "iptables", "-w", "-S").stdout
    assert net.received({"peer-unicast", "peer-group"}) == set()
    ret = allow(fw, UNICAST)  # backend auto: nft sees only iptables-nft's chain, left to iptables
    assert "nftables" not in ret["changes"] and "IPv4 filter NGINX_HA_VRRP" in ret["changes"]["iptables"], ret
    rules = net.run("node", "iptables", "-w", "-S").stdout.splitlines()
    assert [r for r in rules if r.startswith("-A INPUT")][0] == '-A INPUT -m comment --comment "nginx_ha: VRRP" -j NGINX_HA_VRRP', rules
    assert "-A NGINX_HA_VRRP -s 10.0.0.2/32 -i eth0 -p vrrp -j ACCEPT" in rules  # the source restriction is there
    assert net.received({"peer-unicast", "stranger-unicast", "peer-group"}) == {"peer-unicast", "peer-group"}
    assert allow(fw, UNICAST)["changes"] == {}
    net.run("node", "iptables", "-w", "-I", "INPUT", "1", "-p", "tcp", "--dport", "80", "-j", "ACCEPT")
    assert net.run("node", "iptables", "-w", "-S", "INPUT").stdout.splitlines()[1].endswith("--dport 80 -j ACCEPT")
    assert allow(fw, UNICAST)["changes"]["iptables"], "our jump is no longer first: it moves back to position 1"
    assert net.run("node", "iptables", "-w", "-S", "INPUT").stdout.splitlines()[1].endswith("-j NGINX_HA_VRRP")
    net.run("node", "iptables", "-w", "-D", "INPUT", "-p", "tcp", "--dport", "80", "-j", "ACCEPT")
    assert fw.vrrp_absent(fw.spec, helper=fw.helper)["result"] is True
    assert net.run("node", "iptables", "-w", "-S").stdout == before
    assert fw.vrrp_absent(fw.spec, helper=fw.helper)["changes"] == {}
