"""
VRRP through the host firewall, for nginx-ha.

A firewall that drops VRRP (IP protocol 112) is the most common cause of split brain: each node
stops hearing its peer's adverts and takes the VIP. These states keep VRRP open from the cluster's
peers only, next to whatever ruleset the operator has, and take away only what they added.

``nginx_ha_firewall.vrrp_allowed``
    Lets in, in every place where the host firewall could drop it:

    * unicast instances: VRRP from the peers' addresses (keepalived's ``unicast_peer`` list) on
      the VRRP interface;
    * multicast instances: VRRP from any source on the VRRP interface to the VRRP group
      (224.0.0.18, ff02::12);

    and nothing else (it opens nothing: VRRP from anyone else is left to the operator's ruleset).
    The rules are data (``[{family, interface, sources | group}]`` from the node view), checked
    here again; the tools run with argument lists, never through a shell, and a ruleset goes to
    them on stdin (``nft -j -f -`` JSON, ``iptables-restore --noflush``), one atomic transaction.

``nginx_ha_firewall.vrrp_absent``
    Removes every rule, chain, file and hook nginx-ha added, and nothing else.

Backends (``backend``; ``auto`` uses what the host has):

nftables
    Every base chain of the input hook (families ``ip``, ``ip6``, ``inet``) sees every packet, and
    an ``accept`` ends the packet's way through *that* chain only: a ``drop`` in any other base
    chain of the hook still drops it. So a table of our own cannot open VRRP through an operator's
    ``policy drop`` input chain (tested: ``tests/integration/test_firewall_nft.py``). The rules go
    at the top of each input base chain that can drop a packet (policy drop, or a drop/reject
    verdict reachable from it), marked by the comment ``nginx_ha: VRRP`` (idempotent by comment and
    content, removed by handle); chains that drop nothing are not touched, so a host without a
    firewall gets nothing. Not the chains of the tables ``iptables-nft`` manages (``ip``/``ip6``
    ``filter``... ``INPUT``, where iptables is installed): iptables-nft cannot show a native set
    match and prints (and ``iptables-save`` saves) such a rule *without* its source restriction
    (tested with iptables 1.8.9): the iptables backend handles those chains, through iptables.
iptables
    A chain of our own, ``NGINX_HA_VRRP`` (filter table), jumped to from ``INPUT`` at position 1
    (comment ``nginx_ha: VRRP``), when ``INPUT`` can drop a packet; ``ip6tables`` likewise for IPv6.
firewalld
    Where firewalld runs (it owns the host's ruleset): rich rules, runtime and permanent, in the
    zone of the VRRP interface. firewalld's rich rules carry no comment, so what was added is
    recorded (``firewall-added.json`` next to ``name``) and only that is ever removed: a rule the
    operator had already is left alone.

Persistence: a reload of the operator's ruleset (``systemctl reload nftables`` runs
``nft -f /etc/nftables.conf``, which starts with ``flush ruleset``) and a reboot take the rules
away. With ``hooks`` on a systemd host, this module installs itself as ``helper``
(``python3 <helper> apply <name>``) and adds drop-ins (``zz-nginx-ha-vrrp.conf``: after an
operator's ``override.conf``, which may reset ``ExecReload=``):

* keepalived: ``ExecStartPre`` applies the rules: keepalived does not start without them (it
  would not hear its peers and would take the VIP), and starts after the firewall units;
* nftables.service / iptables.service / ip6tables.service: ``ExecStartPost`` and ``ExecReload``
  (appended after the unit's own), netfilter-persistent.service: ``ExecStartPost``, re-apply them
  right after the ruleset is (re)loaded (``-``: a failure never fails the operator's firewall unit).

A ruleset loaded outside these units (``nft -f`` by hand, another tool) drops the rules until the
next state run or ``<helper> apply``. ``<helper> check <name>`` exits 0 only when they are in place.

Sync to minions with ``salt '*' saltutil.sync_all``. This file imports the standard library only:
the same code runs as the state and as the helper.
"""

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

__virtualname__ = "nginx_ha_firewall"

COMMENT = "nginx_ha: VRRP"
IPT_CHAIN = "NGINX_HA_VRRP"
VRRP = 112
BACKENDS = ("auto", "nftables", "iptables", "firewalld")
RECORD = "firewall-added.json"  # next to the spec file: the firewalld rules nginx-ha added
TIMEOUT = 30
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PREFIX = []  # argv run before every tool (tests: nsenter into a network namespace); empty in use
SYSTEMD_DIR = "/etc/systemd/system"
SYSTEMD_RUNNING = "/run/systemd/system"  # exists when systemd is PID 1 (sd_booted(3))
DROPIN = "zz-nginx-ha-vrrp.conf"
# The firewall units whose start/reload (re)loads a ruleset, per backend, and the commands of theirs
# the helper runs after. netfilter-persistent has no ExecReload of its own: none is added to it.
FIREWALL_UNITS = {
    "nftables": {"nftables.service": ("ExecStartPost", "ExecReload")},
    "iptables": {
        "netfilter-persistent.service": ("ExecStartPost",),
        "iptables.service": ("ExecStartPost", "ExecReload"),
        "ip6tables.service": ("ExecStartPost", "ExecReload"),
    },
    "firewalld": {},  # permanent rich rules: firewalld restores them itself
}
ALL_UNITS = ["nftables.service", "netfilter-persistent.service", "iptables.service", "ip6tables.service", "firewalld.service"]
# Tables iptables-nft creates in nftables; their INPUT chain is iptables' (see the docstring).
IPTABLES_NFT_TABLES = ("filter", "mangle", "raw", "security", "nat")

_IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")
_SAFE_PATH = re.compile(r"/[A-Za-z0-9_.,+@%:=~/-]*")
_UNIT = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


def __virtual__():
    if not sys.platform.startswith("linux"):
        return (False, "nginx_ha_firewall: netfilter firewalls are Linux only")
    return __virtualname__


class FirewallError(Exception):
    """A firewall tool failed or is missing (the message says which, with its output)."""


# ---------------------------------------------------------------------------------------------
# The rules: typed data, checked again here
# ---------------------------------------------------------------------------------------------


def normalize_rules(rules):
    """``[{family, interface, sources | group}]`` checked and canonical (sorted, no duplicates); ValueError."""
    if not isinstance(rules, list):
        raise ValueError(f"rules: {rules!r} is not a list")
    out = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict) or not set(rule) <= {"family", "interface", "sources", "group"}:
            raise ValueError(f"rules:{i}: {rule!r} is not {{family, interface, sources | group}}")
        family, iface = rule.get("family"), rule.get("interface")
        if family not in (4, 6) or isinstance(family, bool):
            raise ValueError(f"rules:{i}:family: {family!r} is not 4 or 6")
        if not isinstance(iface, str) or not _IFNAME.fullmatch(iface):
            raise ValueError(f"rules:{i}:interface: {iface!r} is not an interface name")
        if ("sources" in rule) == ("group" in rule):
            raise ValueError(f"rules:{i}: give exactly one of sources or group")
        try:
            if "group" in rule:
                group = ipaddress.ip_address(rule["group"])
                if group.version != family or not group.is_multicast:
                    raise ValueError
                out.append({"family": family, "interface": iface, "group": str(group)})
            else:
                if not isinstance(rule["sources"], list) or not rule["sources"]:
                    raise ValueError
                sources = sorted({ipaddress.ip_address(s) for s in rule["sources"] if isinstance(s, str)})
                if len(sources) != len(set(rule["sources"])) or any(s.version != family for s in sources):
                    raise ValueError
                out.append({"family": family, "interface": iface, "sources": [str(s) for s in sources]})
        except (ValueError, TypeError):
            raise ValueError(f"rules:{i}: {rule!r} has no valid IPv{family} sources / multicast group") from None
    unique = {json.dumps(r, sort_keys=True): r for r in out}
    return [unique[k] for k in sorted(unique, key=lambda k: _rule_key(unique[k]))]


def _rule_key(rule):
    return (rule["family"], rule["interface"], "group" in rule, rule.get("group", ""), rule.get("sources", []))


def describe(rule):
    """One line for a rule: ``IPv4 eth0 from 203.0.113.12`` / ``IPv4 eth0 to 224.0.0.18``."""
    if rule is None:
        return "(a rule with the nginx_ha comment that nginx-ha did not write)"
    what = f"from {', '.join(rule['sources'])}" if "sources" in rule else f"to {rule['group']}"
    return f"VRRP IPv{rule['family']} on {rule['interface']} {what}"


# ---------------------------------------------------------------------------------------------
# Running the tools: argument lists, no shell, a fixed PATH, a timeout
# ---------------------------------------------------------------------------------------------


def which(name):
    return shutil.which(name, path=SYSTEM_PATH)


def run(argv, stdin=None):
    """Run ``argv`` (a list; never a shell) and return the CompletedProcess (text)."""
    argv = [str(a) for a in argv]
    try:
        return subprocess.run(
            PREFIX + argv,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env={"PATH": SYSTEM_PATH, "LC_ALL": "C"},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FirewallError(f"{' '.join(argv)}: {exc}") from None


def _checked(argv, stdin=None):
    proc = run(argv, stdin)
    if proc.returncode != 0:
        raise FirewallError(f"{' '.join(argv)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


# ---------------------------------------------------------------------------------------------
# nftables
# ---------------------------------------------------------------------------------------------

_NFT_FAMILIES = {"ip": (4,), "ip6": (6,), "inet": (4, 6)}


def nft_expr(rule):
    """The rule as nft JSON expressions: ``iifname IF ip saddr {..} meta l4proto 112 accept``."""
    proto = "ip" if rule["family"] == 4 else "ip6"

    def match(left, right):
        return {"match": {"op": "==", "left": left, "right": right}}

    if "sources" in rule:
        right = rule["sources"][0] if len(rule["sources"]) == 1 else {"set": list(rule["sources"])}
        address = match({"payload": {"protocol": proto, "field": "saddr"}}, right)
    else:
        address = match({"payload": {"protocol": proto, "field": "daddr"}}, rule["group"])
    return [match({"meta": {"key": "iifname"}}, rule["interface"]), address, match({"meta": {"key": "l4proto"}}, VRRP), {"accept": None}]


def nft_parse(expr):
    """The rule (as :func:`normalize_rules` gives it) that nft JSON ``expr`` is, or None if it is no rule of ours."""
    rule, proto_ok, accept = {}, False, False
    try:
        for item in expr:
            if "accept" in item and not accept:
                accept = True
                continue
            m = item["match"]
            if m["op"] != "==" or accept:
                return None
            left, right = m["left"], m["right"]
            if left == {"meta": {"key": "iifname"}} and isinstance(right, str) and "interface" not in rule:
                rule["interface"] = right
            elif left == {"meta": {"key": "l4proto"}} and right in (VRRP, "vrrp") and not proto_ok:
                proto_ok = True
            elif "payload" in left and left["payload"].get("protocol") in ("ip", "ip6") and "family" not in rule:
                family = 4 if left["payload"]["protocol"] == "ip" else 6
                field = left["payload"].get("field")
                values = right["set"] if isinstance(right, dict) and set(right) == {"set"} else [right]
                if not all(isinstance(v, str) for v in values):
                    return None
                addresses = sorted({ipaddress.ip_address(v) for v in values})
                if any(a.version != family for a in addresses):
                    return None
                rule["family"] = family
                if field == "saddr":
                    rule["sources"] = [str(a) for a in addresses]
                elif field == "daddr" and len(addresses) == 1:
                    rule["group"] = str(addresses[0])
                else:
                    return None
            else:
                return None
    except (KeyError, TypeError, AttributeError, ValueError):
        return None
    if not (accept and proto_ok and "interface" in rule and "family" in rule):
        return None
    return rule


def nft_ruleset():
    """``nft -j list ruleset`` as ``(chains, rules)``: {(family, table, chain): chain}, {key: [rule, ...]} in order."""
    nft = which("nft")
    if not nft:
        raise FirewallError("nft not found")
    try:
        objects = json.loads(_checked([nft, "-j", "list", "ruleset"]) or '{"nftables": []}')["nftables"]
    except (ValueError, KeyError, TypeError) as exc:
        raise FirewallError(f"nft -j list ruleset: unreadable output: {exc}") from None
    chains, rules = {}, {}
    for obj in objects:
        if "chain" in obj:
            c = obj["chain"]
            chains[(c["family"], c["table"], c["name"])] = c
            rules.setdefault((c["family"], c["table"], c["name"]), [])
        elif "rule" in obj:
            r = obj["rule"]
            rules.setdefault((r["family"], r["table"], r["chain"]), []).append(r)
    return chains, rules


def _verdicts(node):
    """Every verdict in a rule's JSON: ("drop",), ("jump", target), ..."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("drop", "reject"):
                yield ("drop",)
            elif key in ("jump", "goto") and isinstance(value, dict):
                yield ("jump", value.get("target"))
            else:
                yield from _verdicts(value)
    elif isinstance(node, list):
        for item in node:
            yield from _verdicts(item)


def _nft_can_drop(key, chains, rules, seen=None):
    """True when a packet going through chain ``key`` may be dropped there (policy or a reachable drop/reject)."""
    seen = set() if seen is None else seen
    if key in seen:
        return False
    seen.add(key)
    if chains.get(key, {}).get("policy") == "drop":
        return True
    for rule in rules.get(key, []):
        if rule.get("comment") == COMMENT:
            continue
        for verdict in _verdicts(rule.get("expr", [])):
            if verdict[0] == "drop":
                return True
            if verdict[0] == "jump" and _nft_can_drop((key[0], key[1], verdict[1]), chains, rules, seen):
                return True
    return False


def iptables_nft_chain(key):
    """True for the INPUT chain of a table iptables-nft manages (changed through iptables, where that is installed)."""
    family, table, name = key
    tool = "iptables" if family == "ip" else "ip6tables"
    return family in ("ip", "ip6") and table in IPTABLES_NFT_TABLES and name == "INPUT" and bool(which(tool))


def nft_guarded(chains, rules):
    """The input base chains that can drop a packet and that nft manages (not iptables-nft's)."""
    return [
        key
        for key, chain in sorted(chains.items())
        if key[0] in _NFT_FAMILIES and chain.get("hook") == "input" and "type" in chain
        and not iptables_nft_chain(key) and _nft_can_drop(key, chains, rules)
    ]


def nft_plan(rules, remove=False):
    """``(commands, changes, notes)``: the nft JSON commands that bring the ruleset to ``rules``."""
    chains, current = nft_ruleset()
    guarded = [] if remove else nft_guarded(chains, current)
    commands, changes, notes = [], {}, []
    # iptables' chains are iptables' own, whatever they hold: iptables-nft may store our jump's
    # `-m comment` as the rule's comment too (udata), and the iptables backend manages that rule
    mine = {k for k, rs in current.items() if any(r.get("comment") == COMMENT for r in rs) and not iptables_nft_chain(k)}
    for key in sorted(set(guarded) | mine):
        family, table, chain = key
        want = [r for r in rules if r["family"] in _NFT_FAMILIES.get(family, ())] if key in guarded else []
        ours = [(pos, r) for pos, r in enumerate(current.get(key, [])) if r.get("comment") == COMMENT]
        have = [nft_parse(r.get("expr", [])) for _, r in ours]
        if [pos for pos, _ in ours] == list(range(len(ours))) and have == want:
            continue
        for _, r in ours:
            commands.append({"delete": {"rule": {"family": family, "table": table, "chain": chain, "handle": r["handle"]}}})
        for rule in reversed(want):
            commands.append({"insert": {"rule": {"family": family, "table": table, "chain": chain, "expr": nft_expr(rule), "comment": COMMENT}}})
        changes[f"{family} {table} {chain}"] = {"old": [describe(r) for r in have], "new": [describe(r) for r in want]}
    if not remove and rules:
        for key in sorted(chains):
            if chains[key].get("hook") == "input" and iptables_nft_chain(key) and _nft_can_drop(key, chains, current):
                notes.append(f"{' '.join(key)} is iptables-nft's: handled through iptables")  # see converge()
    return commands, changes, notes


def nft_apply(commands, check=False):
    nft = which("nft")
    argv = [nft, "-j"] + (["--check"] if check else []) + ["-f", "-"]
    _checked(argv, json.dumps({"nftables": commands}))


# ---------------------------------------------------------------------------------------------
# iptables (legacy or nft variant: whatever `iptables` is on the host)
# ---------------------------------------------------------------------------------------------

_IPT_TOOLS = {4: ("iptables", "iptables-restore"), 6: ("ip6tables", "ip6tables-restore")}
_IPT_SPEC = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')


def _ipt_words(line):
    return [m.group(1) if m.group(1) is not None else m.group(2) for m in _IPT_SPEC.finditer(line)]


def ipt_args(rule):
    """Our chain's rules for ``rule``, as iptables arguments (one rule per source)."""
    if "sources" in rule:
        return [["-i", rule["interface"], "-s", s, "-p", str(VRRP), "-j", "ACCEPT"] for s in rule["sources"]]
    return [["-i", rule["interface"], "-d", rule["group"], "-p", str(VRRP), "-j", "ACCEPT"]]


def _ipt_normal(words, family):
    """A rule's options as a comparable dict (addresses with their prefix, vrrp as 112); None if unknown."""
    out = {}
    pairs = iter(words)
    for opt in pairs:
        value = next(pairs, None)
        if opt not in ("-i", "-s", "-d", "-p", "-j") or value is None or opt in out:
            return None
        if opt in ("-s", "-d"):
            try:
                value = str(ipaddress.ip_network(value, strict=True))
            except ValueError:
                return None
            if ipaddress.ip_network(value).version != family:
                return None
        if opt == "-p":
            value = str(VRRP) if value in ("vrrp", str(VRRP)) else value
        out[opt] = value
    return out


def ipt_ruleset(family):
    """``(policies, chains)`` of the filter table: {chain: policy}, {chain: [rule words after -A CHAIN]}."""
    tool = which(_IPT_TOOLS[family][0])
    policies, chains = {}, {}
    for line in _checked([tool, "-w", "-S"]).splitlines():
        words = _ipt_words(line)
        if len(words) >= 3 and words[0] == "-P":
            policies[words[1]] = words[2]
            chains.setdefault(words[1], [])
        elif len(words) >= 2 and words[0] == "-N":
            chains.setdefault(words[1], [])
        elif len(words) >= 2 and words[0] == "-A":
            chains.setdefault(words[1], []).append(words[2:])
    return policies, chains


def _ipt_target(words):
    for i, word in enumerate(words[:-1]):
        if word in ("-j", "-g", "--jump", "--goto"):
            return words[i + 1]
    return None


def _ipt_can_drop(chain, policies, chains, seen=None):
    seen = set() if seen is None else seen
    if chain in seen or chain == IPT_CHAIN:
        return False
    seen.add(chain)
    if policies.get(chain) == "DROP":
        return True
    for words in chains.get(chain, []):
        target = _ipt_target(words)
        if target in ("DROP", "REJECT"):
            return True
        if target in chains and target not in policies and _ipt_can_drop(target, policies, chains, seen):
            return True
    return False


def ipt_plan(rules, family, remove=False):
    """``(restore script or None, changes)`` for one family."""
    policies, chains = ipt_ruleset(family)
    jumps = [w for w in chains.get("INPUT", []) if _ipt_target(w) == IPT_CHAIN]
    want = [] if remove or not _ipt_can_drop("INPUT", policies, chains) else [r for r in rules if r["family"] == family]
    want_args = [a for r in want for a in ipt_args(r)]
    exists = IPT_CHAIN in chains
    if want_args:
        have = [_ipt_normal(w, family) for w in chains.get(IPT_CHAIN, [])]
        first = chains.get("INPUT", [[]])[0] if chains.get("INPUT") else []
        if exists and len(jumps) == 1 and _ipt_target(first) == IPT_CHAIN and have == [_ipt_normal(a, family) for a in want_args]:
            return None, {}
        lines = ["*filter", f":{IPT_CHAIN} - [0:0]"]  # declaring it (--noflush) creates or empties it
        lines += [f"-A {IPT_CHAIN} " + " ".join(a) for a in want_args]
        lines += [_ipt_line("-D", w) for w in jumps]
        lines += [f'-I INPUT 1 -m comment --comment "{COMMENT}" -j {IPT_CHAIN}', "COMMIT"]
    elif exists or jumps:
        lines = ["*filter"] + [_ipt_line("-D", w) for w in jumps]
        if exists:
            lines += [f"-F {IPT_CHAIN}", f"-X {IPT_CHAIN}"]
        lines += ["COMMIT"]
    else:
        return None, {}
    old = [" ".join(w) for w in chains.get(IPT_CHAIN, [])]
    change = {"old": old, "new": [describe(r) for r in want]}
    return "\n".join(lines) + "\n", {f"IPv{family} filter {IPT_CHAIN}": change}


def _ipt_line(op, words):
    quoted = [f'"{w}"' if (" " in w or not w) else w for w in words]
    return " ".join([op, "INPUT"] + quoted)


def ipt_apply(script, family, check=False):
    tool = which(_IPT_TOOLS[family][1])
    if not tool:
        raise FirewallError(f"{_IPT_TOOLS[family][1]} not found")
    _checked([tool, "-w", "--noflush"] + (["--test"] if check else []), script)


# ---------------------------------------------------------------------------------------------
# firewalld
# ---------------------------------------------------------------------------------------------


def firewalld_running():
    tool = which("firewall-cmd")
    return bool(tool) and run([tool, "--state"]).returncode == 0


def firewalld_rules(rule):
    """Rich rules for ``rule`` (the zone of its interface gives the interface)."""
    family = "ipv4" if rule["family"] == 4 else "ipv6"
    if "sources" in rule:
        return [f'rule family="{family}" source address="{s}" protocol value="vrrp" accept' for s in rule["sources"]]
    return [f'rule family="{family}" destination address="{rule["group"]}" protocol value="vrrp" accept']


def _firewalld_zone(tool, interface):
    proc = run([tool, f"--get-zone-of-interface={interface}"])
    zone = proc.stdout.strip() if proc.returncode == 0 else _checked([tool, "--get-default-zone"]).strip()
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", zone):
        raise FirewallError(f"firewalld: unusable zone name {zone!r} for {interface}")
    return zone


def firewalld_plan(rules, record, remove=False):
    """``(actions, changes, new record)``: actions are firewall-cmd argument lists."""
    tool = which("firewall-cmd")
    wanted = set()
    if not remove:
        for rule in rules:
            zone = _firewalld_zone(tool, rule["interface"])
            wanted.update((zone, text) for text in firewalld_rules(rule))
    actions, changes, new_record = [], {}, []
    for zone, text in sorted(wanted):
        for where in ("runtime", "permanent"):
            scope = ["--permanent"] if where == "permanent" else []
            present = run([tool] + scope + [f"--zone={zone}", f"--query-rich-rule={text}"]).returncode == 0
            ours = [zone, text, where] in record
            if not present:
                actions.append([tool] + scope + [f"--zone={zone}", f"--add-rich-rule={text}"])
                changes.setdefault(f"{zone} {where}", {"added": [], "removed": []})["added"].append(text)
            if ours or not present:
                new_record.append([zone, text, where])
    for zone, text, where in record:
        if (zone, text) in wanted:
            continue
        scope = ["--permanent"] if where == "permanent" else []
        if run([tool] + scope + [f"--zone={zone}", f"--query-rich-rule={text}"]).returncode == 0:
            actions.append([tool] + scope + [f"--zone={zone}", f"--remove-rich-rule={text}"])
            changes.setdefault(f"{zone} {where}", {"added": [], "removed": []})["removed"].append(text)
    return actions, changes, new_record


# ---------------------------------------------------------------------------------------------
# Putting the backends together
# ---------------------------------------------------------------------------------------------


def backends(backend, rules):
    """The backends to act on: ``auto`` is firewalld where it runs, else nft and iptables where present."""
    if backend not in BACKENDS:
        raise FirewallError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "auto":
        if firewalld_running():
            return ["firewalld"]
        return [b for b, tool in (("nftables", "nft"), ("iptables", "iptables")) if which(tool)]
    if backend == "firewalld" and not firewalld_running():
        raise FirewallError("backend firewalld: firewalld is not running (firewall-cmd --state)")
    tool = {"nftables": "nft", "iptables": "iptables", "firewalld": "firewall-cmd"}[backend]
    if not which(tool):
        raise FirewallError(f"backend {backend}: {tool} not found")
    return [backend]


def _record_path(spec_path):
    return os.path.join(os.path.dirname(spec_path), RECORD)


def _load_json(path, default):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as exc:
        raise FirewallError(f"cannot read {path}: {exc}") from None


def _converge_nft(rules, test, remove, tolerant, changes, notes):
    for attempt in (1, 2):  # the ruleset changed between listing and applying (stale handles): once more
        try:
            commands, change, note = nft_plan(rules, remove)
        except FirewallError as exc:
            if not tolerant:
                raise
            notes.append(f"nftables skipped: {exc}")
            return
        try:
            if commands:
                nft_apply(commands, check=test)
            break
        except FirewallError:
            if attempt == 2 or test:
                raise
    notes.extend(note)
    if change:
        changes["nftables"] = change


def _converge_ipt(rules, backend, test, remove, tolerant, changes, notes):
    for family in (4, 6):
        if not which(_IPT_TOOLS[family][0]):
            if not remove and backend == "iptables" and any(r["family"] == family for r in rules):
                raise FirewallError(f"backend iptables: {_IPT_TOOLS[family][0]} not found for the IPv{family} rules")
            continue
        try:
            script, change = ipt_plan(rules, family, remove)
        except FirewallError as exc:
            if not tolerant:
                raise
            notes.append(f"{_IPT_TOOLS[family][0]} skipped: {exc}")
            continue
        if script:
            ipt_apply(script, family, check=test)
            changes.setdefault("iptables", {}).update(change)


def _converge_firewalld(rules, spec_path, test, remove, changes):
    record_path = _record_path(spec_path)
    record = _load_json(record_path, [])
    record = record if isinstance(record, list) else []
    actions, change, new_record = firewalld_plan(rules, record, remove)
    if change:
        changes["firewalld"] = change
    if test:
        return
    for argv in actions:
        _checked(argv)
    if new_record != record:
        if new_record:
            write_file(record_path, (json.dumps(new_record, indent=1) + "\n").encode(), 0o644)
        elif os.path.exists(record_path):
            os.unlink(record_path)


def converge(rules, backend, spec_path, test=False, remove=False):
    """
    Bring the firewall to ``rules`` (``remove``: to none of ours). Returns ``(changes, notes)``;
    with ``test`` nothing is changed (nft and iptables-restore only check the transaction).
    Raises FirewallError. With ``auto`` (and when removing) a tool that cannot even list its
    ruleset (say legacy iptables without its kernel module) is skipped with a note: it holds no
    rule that could drop VRRP.
    """
    changes, notes = {}, []
    if remove:
        active = [b for b, tool in (("nftables", "nft"), ("iptables", "iptables")) if which(tool)]
        if firewalld_running():
            active.append("firewalld")
    else:
        active = backends(backend, rules)
    tolerant = remove or backend == "auto"
    for name in active:
        if name == "nftables":
            _converge_nft(rules, test, remove, tolerant, changes, notes)
        elif name == "iptables":
            _converge_ipt(rules, backend, test, remove, tolerant, changes, notes)
        elif name == "firewalld":
            _converge_firewalld(rules, spec_path, test, remove, changes)
    if "iptables" in active:  # said only where nobody handles those chains (backend: nftables)
        notes = [n for n in notes if not n.endswith("is iptables-nft's: handled through iptables")]
    if not active and not remove:
        notes.append("no firewall tool on this host (nft, iptables, firewall-cmd): nothing to open")
    return changes, notes


# ---------------------------------------------------------------------------------------------
# Files: the spec, the helper (this module), systemd drop-ins
# ---------------------------------------------------------------------------------------------


def read_bytes(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def write_file(path, data, mode):
    """Atomically replace ``path`` with ``data`` (root-owned, ``mode``), creating its directory."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".nginx_ha.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def spec_bytes(rules, backend):
    return (json.dumps({"backend": backend, "rules": rules}, indent=1, sort_keys=True) + "\n").encode()


def helper_source():
    """This module's own source: the helper the systemd hooks run."""
    with open(os.path.abspath(__file__), "rb") as fh:
        return fh.read()


def _unit_escape(text):
    return text.replace("%", "%%")


def dropins(backend, python, helper, spec_path, keepalived_service):
    """{path: text} of the systemd drop-ins for ``backend``."""
    command = _unit_escape(f"{python} {helper} apply {spec_path}")
    units = {}
    for name in (("nftables", "iptables") if backend == "auto" else (backend,)):
        units.update(FIREWALL_UNITS[name])
    out = {}
    for unit, keys in sorted(units.items()):
        out[os.path.join(SYSTEMD_DIR, unit + ".d", DROPIN)] = (
            "# nginx-ha (salt state nginx_ha_firewall): this unit (re)loads a ruleset that flushes\n"
            "# VRRP's rules: put them back right after ('-': never fails the firewall unit).\n"
            "[Service]\n" + "".join(f"{key}=-{command}\n" for key in keys)
        )
    out[os.path.join(SYSTEMD_DIR, keepalived_service + ".service.d", DROPIN)] = (
        "# nginx-ha (salt state nginx_ha_firewall): keepalived starts only with VRRP allowed through\n"
        "# the host firewall; without it this node would not hear its peers and take the VIPs.\n"
        "[Unit]\n"
        f"After={' '.join(ALL_UNITS)}\n\n"
        "[Service]\n"
        f"ExecStartPre={command}\n"
    )
    return out


def all_dropin_paths(keepalived_service):
    return [os.path.join(SYSTEMD_DIR, u + ".d", DROPIN) for u in ALL_UNITS + [keepalived_service + ".service"]]


def systemd_running():
    return os.path.isdir(SYSTEMD_RUNNING)


def _files_plan(wanted, unwanted):
    """``(writes, removes, changes)`` for {path: (bytes, mode)} wanted and paths unwanted."""
    writes, removes, changes = {}, [], {}
    for path, (data, mode) in sorted(wanted.items()):
        old = read_bytes(path)
        current_mode = os.stat(path).st_mode & 0o7777 if old is not None else None
        if old != data or current_mode != mode:
            writes[path] = (data, mode)
            changes[path] = "created" if old is None else "updated"
    for path in sorted(set(unwanted) - set(wanted)):
        if os.path.lexists(path):
            removes.append(path)
            changes[path] = "removed"
    return writes, removes, changes


def _apply_files(writes, removes):
    for path, (data, mode) in writes.items():
        write_file(path, data, mode)
    for path in removes:
        os.unlink(path)
        try:
            os.rmdir(os.path.dirname(path))  # the .d directory, if it held only ours
        except OSError:
            pass


def _daemon_reload():
    systemctl = which("systemctl")
    if systemctl:
        _checked([systemctl, "daemon-reload"])


# ---------------------------------------------------------------------------------------------
# Salt states
# ---------------------------------------------------------------------------------------------


def _check_path(value, what):
    if not isinstance(value, str) or not _SAFE_PATH.fullmatch(value) or "/../" in value + "/" or "/./" in value + "/":
        raise ValueError(f"{what}: {value!r} is not an absolute path of letters, digits and _.,+@%:=~-")
    return value


def vrrp_allowed(name, rules, backend="auto", hooks=True, helper=None, python="/usr/bin/python3", keepalived_service="keepalived"):
    """
    Keep VRRP open through the host firewall for ``rules`` (see the module's docstring).

    name
        The spec file (JSON, root 0644) the helper reads: ``/etc/keepalived/nginx_ha/firewall.json``.
    rules
        ``[{family: 4|6, interface, sources: [peer, ...]} | {family, interface, group}]`` (the node
        view's ``firewall:vrrp``).
    backend
        ``auto`` (default), ``nftables``, ``iptables`` or ``firewalld``.
    hooks
        On a systemd host, install ``helper`` and the drop-ins (keepalived's ExecStartPre, the
        firewall units' start/reload); ``False`` removes them.
    helper
        Where this module goes as the hooks' program (root 0755), e.g.
        ``/etc/keepalived/nginx_ha/vrrp_firewall.py``. None: no helper, no hooks.
    python
        The Python 3 the hooks run the helper with.
    keepalived_service
        keepalived's unit name (without ``.service``).

    .. code-block:: yaml

        nginx_ha_firewall_vrrp:
          nginx_ha_firewall.vrrp_allowed:
            - name: /etc/keepalived/nginx_ha/firewall.json
            - rules: [{family: 4, interface: eth0, group: 224.0.0.18}]
            - helper: /etc/keepalived/nginx_ha/vrrp_firewall.py
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    test = bool(__opts__.get("test"))
    try:
        _check_path(name, "name")
        rules = normalize_rules(rules)
        if backend not in BACKENDS:
            raise ValueError(f"backend: {backend!r} is not one of {', '.join(BACKENDS)}")
        if helper is not None:
            _check_path(helper, "helper")
            _check_path(python, "python")
        if not isinstance(keepalived_service, str) or not _UNIT.fullmatch(keepalived_service):
            raise ValueError(f"keepalived_service: {keepalived_service!r} is not a unit name")
    except ValueError as exc:
        ret["comment"] = str(exc)
        return ret

    try:
        changes, notes = converge(rules, backend, name, test=test)
    except FirewallError as exc:
        ret["comment"] = f"VRRP could not be allowed through the firewall: {exc}"
        return ret

    use_hooks = bool(hooks) and helper is not None and systemd_running()
    wanted = {name: (spec_bytes(rules, backend), 0o644)}
    if helper is not None:
        wanted[helper] = (helper_source(), 0o755)
    units = dropins(backend, python, helper, name, keepalived_service) if use_hooks else {}
    wanted.update({path: (text.encode(), 0o644) for path, text in units.items()})
    writes, removes, file_changes = _files_plan(wanted, all_dropin_paths(keepalived_service))
    if file_changes:
        changes["files"] = file_changes
    if helper is not None and hooks and not use_hooks:
        notes.append("no systemd here: the rules come back with the next state run (or the helper) after a reboot or a ruleset reload")

    if test:
        ret.update(result=None if changes else True, changes=changes,
                   comment=("VRRP would be allowed through the firewall" if changes else "VRRP is allowed through the firewall")
                   + "".join(f"; {n}" for n in notes))
        return ret
    try:
        _apply_files(writes, removes)
        if any(p.startswith(SYSTEMD_DIR + "/") for p in list(writes) + removes) and systemd_running():
            _daemon_reload()
    except (OSError, FirewallError) as exc:
        ret.update(changes=changes, comment=f"the firewall rules are in place, but the hooks could not be written: {exc}")
        return ret
    ret.update(result=True, changes=changes, comment="VRRP is allowed through the firewall" + "".join(f"; {n}" for n in notes))
    return ret


def vrrp_absent(name, helper=None, keepalived_service="keepalived"):
    """
    Remove what :func:`vrrp_allowed` added: the rules with nginx-ha's comment (nftables), the
    NGINX_HA_VRRP chain and its jumps (iptables), the recorded rich rules (firewalld), the spec
    file ``name``, ``helper`` and the systemd drop-ins. The operator's rules are left as they are.
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    test = bool(__opts__.get("test"))
    try:
        _check_path(name, "name")
        if helper is not None:
            _check_path(helper, "helper")
        if not isinstance(keepalived_service, str) or not _UNIT.fullmatch(keepalived_service):
            raise ValueError(f"keepalived_service: {keepalived_service!r} is not a unit name")
        changes, _ = converge([], "auto", name, test=test, remove=True)
    except (ValueError, FirewallError) as exc:
        ret["comment"] = f"nginx-ha's VRRP rules could not be removed: {exc}"
        return ret
    # The record of the firewalld rules nginx-ha added goes with the last of them (converge), never
    # before: with firewalld stopped, it is what a later run needs to remove them.
    unwanted = [name] + ([helper] if helper else []) + all_dropin_paths(keepalived_service)
    writes, removes, file_changes = _files_plan({}, unwanted)
    if file_changes:
        changes["files"] = file_changes
    if os.path.exists(_record_path(name)) and not firewalld_running():
        notes = f"; firewalld is not running: the rules nginx-ha added to it are listed in {_record_path(name)}, removed by a run while it runs"
    else:
        notes = ""
    if test:
        ret.update(result=None if changes else True, changes=changes,
                   comment=("nginx-ha's VRRP rules would be removed" if changes else "nginx-ha has no VRRP rules here") + notes)
        return ret
    try:
        _apply_files(writes, removes)
        if any(p.startswith(SYSTEMD_DIR + "/") for p in removes) and systemd_running():
            _daemon_reload()
    except (OSError, FirewallError) as exc:
        ret.update(changes=changes, comment=f"the rules are removed, but not every file: {exc}")
        return ret
    ret.update(result=True, changes=changes, comment=("nginx-ha's VRRP rules are removed" if changes else "nginx-ha has no VRRP rules here") + notes)
    return ret


# ---------------------------------------------------------------------------------------------
# The helper: python3 vrrp_firewall.py apply|check|remove SPEC
# ---------------------------------------------------------------------------------------------


def main(argv):
    if len(argv) != 2 or argv[0] not in ("apply", "check", "remove"):
        print("usage: vrrp_firewall.py apply|check|remove SPEC  (SPEC: the firewall.json nginx-ha wrote)", file=sys.stderr)
        return 2
    command, spec_path = argv
    try:
        if command == "remove":
            changes, notes = converge([], "auto", spec_path, remove=True)
        else:
            spec = _load_json(spec_path, None)
            if not isinstance(spec, dict):
                raise FirewallError(f"{spec_path} is missing or not a JSON object")
            rules = normalize_rules(spec.get("rules"))
            changes, notes = converge(rules, spec.get("backend", "auto"), spec_path, test=command == "check")
    except (FirewallError, ValueError) as exc:
        print(f"nginx-ha VRRP firewall {command}: {exc}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"nginx-ha VRRP firewall: {note}")
    if changes:
        print(f"nginx-ha VRRP firewall {command}: " + ("not in place: " if command == "check" else "") + json.dumps(changes, sort_keys=True))
    return 1 if command == "check" and changes else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
