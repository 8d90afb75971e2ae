"""
nginx-ha fleet view, from the master: who holds each VIP, split brain, no owner, and every node
that cannot serve or cannot be seen, grouped by cluster (``nginx_ha:cluster``); and
``check_router_ids``: a router id or cluster name reused by two clusters on one master, found
from the pillar before anything is applied.

Asks every cluster node for ``nginx_ha.vip_status`` and ``nginx_ha.health`` and joins the answers
per VIP and per node. Nodes that do not answer are listed, never dropped; a node that answered
with an error is told apart from one that did not answer; a target that matches no minion is a
problem, never an empty OK.

Install on the master with ``runner_dirs`` (see ``conf/master.d/nginx_ha.conf``), or as the Salt
extension (``pip install .`` of the checkout: ``pyproject.toml``).
"""

import importlib.util
import ipaddress
import logging
import os
import sys

import salt.client
import salt.utils.minions

# The extension's pure Python (_utils/) as ordinary imports, as the reactor does (see there).
if importlib.util.find_spec("nginx_ha_model") is None:
    sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "_utils"))
import nginx_ha_model  # pylint: disable=wrong-import-position

log = logging.getLogger(__name__)

__virtualname__ = "nginx_ha"

DEFAULT_TARGET = "I@nginx_ha:vrrp_instances"
VIP_STATUS = "nginx_ha.vip_status"
HEALTH = "nginx_ha.health"
# What nginx_ha.vip_status (node_config) says on a minion that has the pillar but no role.
_NO_ROLE = "is not a node of any instance"
_FIT_STATES = ("MASTER", "BACKUP")
DEFAULT_CLUSTER = "default"  # nginx_ha_schema.DEFAULT_CLUSTER: the cluster of a node whose pillar names none


def __virtual__():
    return __virtualname__


def _ask(client, minions, fun, timeout):
    """``(answers, errors)``: ``{minion: return}`` of those that succeeded, ``{minion: text}`` of
    those that answered with an error (failed function, non-zero retcode). Silent minions are in
    neither."""
    if not minions:
        return {}, {}
    ret = client.cmd(minions, fun, tgt_type="list", timeout=timeout, full_return=True)
    answers, errors = {}, {}
    for mid, answer in (ret or {}).items():
        if not isinstance(answer, dict):
            continue
        if isinstance(answer.get("ret"), str) and answer["ret"].startswith("Minion did not return"):
            continue  # Salt's stand-in answer for a silent minion: NO-ANSWER, not an error
        if answer.get("retcode", 0) == 0 and answer.get("success", True) is not False:
            answers[mid] = answer.get("ret")
        else:
            errors[mid] = str(answer.get("ret"))[:300]
    return answers, errors


def _unhealthy_reasons(health):
    """Why ``nginx_ha.health`` says unhealthy, from its stable booleans (no volatile detail)."""
    reasons = []
    nginx = health.get("nginx") or {}
    if nginx.get("running") is False:
        reasons.append("nginx is not running")
    elif nginx.get("answers") is False:
        reasons.append("nginx does not answer its health URL")
    if (health.get("keepalived") or {}).get("running") is False:
        reasons.append("keepalived is not running")
    for name in ("nginx", "keepalived"):
        if ((health.get("config") or {}).get(name) or {}).get("valid") is False:
            reasons.append(f"the {name} configuration is invalid")
    if (health.get("check_script") or {}).get("enabled") is False:
        reasons.append("keepalived disabled the check script")
    return reasons or ["nginx_ha.health says unhealthy"]


def _fit(minion, instance, statuses, healths):
    """Can ``minion`` serve ``instance`` now (or take it over): answering, MASTER or BACKUP,
    healthy, not in maintenance."""
    inst = (statuses.get(minion) or {}).get(instance) if isinstance(statuses.get(minion), dict) else None
    health = healths.get(minion)
    return (
        isinstance(inst, dict)
        and inst.get("state") in _FIT_STATES
        and isinstance(health, dict)
        and health.get("healthy") is True
        and not health.get("maintenance")
    )


def _label(cluster, instance):
    """How problems name an instance: ``VI_web`` in the default cluster, ``shop/VI_web`` in a named one."""
    return instance if cluster == DEFAULT_CLUSTER else f"{cluster}/{instance}"


def clusters_of(statuses, healths, names=()):
    """
    ``{minion: cluster}``: what each node's answers say (``cluster`` in its vip_status entries or its
    health; a node of an older module: the default cluster), and for a node that did not say (silent,
    or an error), the cluster of the nodes that list it as a peer.
    """
    out = {}
    for minion, instances in statuses.items():
        if isinstance(instances, dict):
            named = [i.get("cluster") for i in instances.values() if isinstance(i, dict) and i.get("cluster")]
            out[minion] = named[0] if named else DEFAULT_CLUSTER
    for minion, health in healths.items():
        if minion not in out and isinstance(health, dict) and health.get("cluster"):
            out[minion] = health["cluster"]
    for minion, instances in sorted(statuses.items()):
        for inst in instances.values() if isinstance(instances, dict) else ():
            for peer in inst.get("peers", []) if isinstance(inst, dict) else ():
                out.setdefault(peer, out[minion])
    for minion in names:
        out.setdefault(minion, DEFAULT_CLUSTER)
    return out


def _per_node_problems(statuses, healths, degraded, cluster_of, add):
    for minion, instances in sorted(statuses.items()):
        if not isinstance(instances, dict):
            continue
        cluster = cluster_of.get(minion, DEFAULT_CLUSTER)
        mine = sorted(instances)
        for name in mine:
            inst = instances[name]
            if isinstance(inst, dict) and inst.get("state") == "FAULT":
                label = _label(cluster, name)
                add(f"FAULT: {minion} is in FAULT state for {label}", "FAULT", "critical" if label in degraded else "warning", node=minion, instance=name, cluster=cluster)
        health = healths.get(minion)
        if not isinstance(health, dict):
            continue
        without = [name for name in mine if _label(cluster, name) in degraded]
        if health.get("healthy") is False:
            add(
                f"UNHEALTHY: {minion} is not healthy ({'; '.join(_unhealthy_reasons(health))})",
                "UNHEALTHY",
                "critical" if without else "warning",
                node=minion,
                instance=without[0] if without else None,
                cluster=cluster,
            )
        if health.get("maintenance") is True:
            add(f"MAINTENANCE: {minion} is in maintenance (kept out of MASTER)", "MAINTENANCE", "warning", node=minion, cluster=cluster)


def summarize(statuses, healths, expected, errors=None, target=None):
    """
    Join per-node answers into the fleet view (pure; unit-tested), grouped by cluster
    (``nginx_ha:cluster``: each node's answers name its cluster). Ownership, SPLIT-BRAIN, NO-OWNER
    and the standby count are judged per cluster and instance, never across clusters: two
    clusters may use the same instance names.

    statuses
        ``{minion: nginx_ha.vip_status answer}`` from the nodes that answered.
    healths
        ``{minion: nginx_ha.health answer}``.
    expected
        Minion ids that were asked (those the target matched).
    errors
        ``{minion: {function: error text}}`` of minions that answered with an error.
    target
        The target, as text, for the NO-NODES problem.

    Returns ``clusters`` (``{cluster: {nodes, vips, owners, unreachable, degraded, problems, ok}}``)
    and, across all clusters, ``vips`` (``{vip: entry}``, each entry with its ``cluster``),
    ``unreachable``, ``errors``, ``degraded``, ``problems``, ``problem_info`` (``{problem: {kind,
    severity, node, instance, cluster}}``) and ``ok``.

    Problems: SPLIT-BRAIN, NO-OWNER (per cluster and VIP, critical); VIP-REUSED (one VIP in two
    clusters, critical); NO-NODES (nothing matched, critical); FAULT and UNHEALTHY (critical when
    the node's instance is left without a healthy standby, i.e. fewer than two of its cluster's
    nodes fit to serve, of however many it has, else warning); MAINTENANCE, NO-ROLE, ERROR,
    NO-ANSWER (warning). An instance is named ``VI_web`` in the default cluster, ``shop/VI_web``
    in a named one.
    """
    errors = errors or {}
    cluster_of = clusters_of(statuses, healths, names=list(expected) + list(errors))
    groups = {}  # (cluster, instance) -> {vip: entry}
    peers_seen = set()
    for minion, instances in sorted(statuses.items()):
        if not isinstance(instances, dict):
            continue
        cluster = cluster_of[minion]
        for name, inst in sorted(instances.items()):
            peers_seen.update(inst.get("peers", []))
            for vip in inst.get("vips", []):
                entry = groups.setdefault((cluster, name), {}).setdefault(
                    vip, {"cluster": cluster, "instance": name, "holders": [], "masters": [], "nodes": {}}
                )
                health = healths.get(minion) if isinstance(healths.get(minion), dict) else {}
                entry["nodes"][minion] = {
                    "state": inst.get("state"),
                    "holds_vip": vip in inst.get("vips_present", []),
                    "role": inst.get("role"),
                    "priority": inst.get("effective_priority"),
                    "healthy": health.get("healthy"),
                    "last_transition": inst.get("last_transition"),
                }
                if vip in inst.get("vips_present", []):
                    entry["holders"].append(minion)
                if inst.get("state") == "MASTER":
                    entry["masters"].append(minion)
    for peer in peers_seen:
        cluster_of.setdefault(peer, DEFAULT_CLUSTER)
    answered = set(statuses) | {m for m, e in errors.items() if VIP_STATUS in (e or {})}
    unreachable = sorted((set(expected) | peers_seen) - answered)
    members = {key: _instance_members(statuses, key[1], key[0], cluster_of) for key in groups}
    degraded = sorted(
        _label(*key) for key, nodes in members.items() if sum(_fit(m, key[1], statuses, healths) for m in nodes) < 2
    )
    problems, info = [], {}

    def add(problem, kind, severity, node=None, instance=None, cluster=None):
        problems.append(problem)
        info[problem] = {"kind": kind, "severity": severity, "node": node, "instance": instance, "cluster": cluster}

    if not expected and not statuses and not errors:
        add(f"NO-NODES: target {target or DEFAULT_TARGET} matched no minion", "NO-NODES", "critical")
    vips, clusters = {}, {}
    for (cluster, name), entries in sorted(groups.items()):
        for vip, entry in sorted(entries.items()):
            label = _label(cluster, name)
            owners = sorted(set(entry["holders"]) | set(entry["masters"]))
            entry["owner"] = entry["holders"][0] if len(entry["holders"]) == 1 else None
            entry["backups"] = sorted(m for m, n in entry["nodes"].items() if n["state"] == "BACKUP" and not n["holds_vip"])
            entry["unreachable"] = [m for m in unreachable if m in members[(cluster, name)]]
            if len(owners) > 1:
                entry["status"] = "SPLIT-BRAIN"
                add(f"SPLIT-BRAIN: {vip} ({label}) is held by {', '.join(owners)}", "SPLIT-BRAIN", "critical", instance=name, cluster=cluster)
            elif not entry["holders"]:
                entry["status"] = "NO-OWNER"
                add(f"NO-OWNER: {vip} ({label}) is held by no node", "NO-OWNER", "critical", instance=name, cluster=cluster)
            else:
                entry["status"] = "OK"
            group = clusters.setdefault(cluster, {"vips": {}, "owners": {}})
            group["vips"][vip] = entry
            group["owners"].setdefault(name, entry["owner"])
            if vip in vips and vips[vip]["cluster"] != cluster:
                add(
                    f"VIP-REUSED: {vip} is a VIP of {_label(vips[vip]['cluster'], vips[vip]['instance'])} and of {label}",
                    "VIP-REUSED", "critical", instance=name, cluster=cluster,
                )
            else:
                vips[vip] = entry
    _per_node_problems(statuses, healths, degraded, cluster_of, add)
    for minion, failed in sorted(errors.items()):
        for fun, text in sorted((failed or {}).items()):
            if fun == VIP_STATUS and _NO_ROLE in str(text):
                add(f"NO-ROLE: {minion} has the nginx_ha pillar but no role in any instance", "NO-ROLE", "warning", node=minion)
            else:
                add(f"ERROR: {minion} answered {fun} with an error: {str(text)[:200]}", "ERROR", "warning", node=minion, cluster=cluster_of.get(minion))
    for minion in unreachable:
        add(f"NO-ANSWER: {minion} did not answer", "NO-ANSWER", "warning", node=minion, cluster=cluster_of.get(minion))
    for minion in set(statuses) | set(unreachable):
        if isinstance(statuses.get(minion, {}), dict):
            clusters.setdefault(cluster_of.get(minion, DEFAULT_CLUSTER), {"vips": {}, "owners": {}})
    for cluster, group in clusters.items():
        group["nodes"] = sorted(m for m, c in cluster_of.items() if c == cluster and (m in statuses or m in unreachable or m in errors))
        group["unreachable"] = [m for m in unreachable if cluster_of.get(m) == cluster]
        group["degraded"] = [d for d in degraded if d.split("/", 1)[0] == cluster or (cluster == DEFAULT_CLUSTER and "/" not in d)]
        group["problems"] = [p for p in problems if info[p].get("cluster") == cluster]
        group["ok"] = not group["problems"]
    return {
        "clusters": clusters,
        "vips": vips,
        "unreachable": unreachable,
        "errors": errors,
        "degraded": degraded,
        "problems": problems,
        "problem_info": info,
        "ok": not problems,
    }


def _instance_members(statuses, instance, cluster=None, cluster_of=None):
    """The nodes of ``instance`` in ``cluster`` (all clusters when None): those that have it, and their peers."""
    members = set()
    for minion, instances in statuses.items():
        if cluster is not None and (cluster_of or {}).get(minion, DEFAULT_CLUSTER) != cluster:
            continue
        if isinstance(instances, dict) and instance in instances:
            members.add(minion)
            members.update(instances[instance].get("peers", []))
    return members


def status(tgt=DEFAULT_TARGET, tgt_type="compound", timeout=5):
    """
    Show, per VIP: the owner, the backups, each node's VRRP state, priority and health, and flag
    SPLIT-BRAIN (a VIP held by more than one node) and NO-OWNER (held by nobody); per node: FAULT,
    UNHEALTHY, MAINTENANCE, NO-ROLE (has the pillar but no role in any instance), ERROR (answered
    with an error) and NO-ANSWER (did not answer, listed under ``unreachable``); and NO-NODES when
    the target matches no minion. ``problem_info`` gives each problem's kind and severity. The
    return code is 1 when there is any problem.

    Nodes are grouped by their cluster (``nginx_ha:cluster``, which each node's answers name):
    ``clusters`` gives, per cluster, its nodes, VIPs, ``owners`` (per instance), unreachable nodes
    and problems; owners, SPLIT-BRAIN, NO-OWNER and standbys are judged within a cluster, with
    any number of nodes. See also :py:func:`check_router_ids` for several clusters on one master.

    tgt
        Which minions are the cluster (default: those with an ``nginx_ha:vrrp_instances`` pillar).

    CLI Example:

    .. code-block:: bash

        salt-run nginx_ha.status
        salt-run nginx_ha.status --out json
        salt-run nginx_ha.status tgt='web-*' tgt_type=glob
    """
    expected = sorted(salt.utils.minions.CkMinions(__opts__).check_minions(tgt, tgt_type).get("minions", []))
    with salt.client.get_local_client(__opts__["conf_file"]) as client:
        statuses, status_errors = _ask(client, expected, VIP_STATUS, timeout)
        healths, health_errors = _ask(client, sorted(statuses), HEALTH, timeout)
    errors = {}
    for fun, failed in ((VIP_STATUS, status_errors), (HEALTH, health_errors)):
        for minion, text in failed.items():
            errors.setdefault(minion, {})[fun] = text
    view = summarize(statuses, healths, expected, errors=errors, target=f"{tgt} ({tgt_type})")
    # salt-run exits with the "retcode" of a returned dict (as orchestrate does).
    view["retcode"] = 0 if view["ok"] else 1
    if not view["ok"]:
        __context__["retcode"] = 1
    return view


# --------------------------------------------------------------------------------------------
# Several clusters on one master: router ids and cluster names, checked from the pillar
# --------------------------------------------------------------------------------------------

NETWORK_INTERFACES = "network.interfaces"


def vrrp_plan(minion, pillar):
    """
    What ``minion``'s ``nginx_ha`` pillar makes it run, for the router-id check: ``{cluster,
    cluster_nodes, instances: [{instance, vrid, family, interface, unicast}]}``, or None when it has
    no role in any instance. Read from the pillar alone (no apply needed); instance_defaults and
    per-node settings count as the formula applies them.
    """
    config = (pillar or {}).get("nginx_ha") if isinstance(pillar, dict) else None
    if not isinstance(config, dict) or not isinstance(config.get("vrrp_instances"), dict):
        return None
    instances = []
    for name in sorted(config["vrrp_instances"]):
        inst = nginx_ha_model._instance_settings(config, name)  # pylint: disable=protected-access
        if minion not in (inst.get("nodes") or {}):
            continue
        node = nginx_ha_model._node_settings(config, inst, minion)  # pylint: disable=protected-access
        vips = [str(v).split()[0] for v in inst.get("virtual_ipaddress") or [] if v]
        try:
            family = ipaddress.ip_interface(vips[0]).version if vips else None
        except ValueError:
            family = None
        instances.append(
            {
                "instance": str(name),
                "vrid": inst.get("virtual_router_id"),
                "family": family,
                "interface": node.get("interface", inst.get("interface")),
                "unicast": bool(inst.get("unicast")),
            }
        )
    if not instances:
        return None
    return {
        "cluster": str(config.get("cluster") or DEFAULT_CLUSTER),
        "cluster_nodes": nginx_ha_model.cluster_nodes(config),
        "instances": instances,
    }


def interface_networks(interfaces, name, family):
    """
    The networks of interface ``name`` in ``family`` (4 or 6) from ``network.interfaces``'s answer,
    as ``ipaddress`` networks (IPv6 link-local left out: every link has fe80::/64), else None.
    """
    data = (interfaces or {}).get(name) if isinstance(interfaces, dict) else None
    if not isinstance(data, dict):
        return None
    nets = set()
    for entry in data.get("inet" if family == 4 else "inet6") or []:
        try:
            mask = entry.get("netmask") if family == 4 else entry.get("prefixlen")
            net = ipaddress.ip_interface(f"{entry['address']}/{mask}").network
        except (KeyError, TypeError, ValueError):
            continue
        if not net.is_link_local:
            nets.add(net)
    return nets or None


def router_id_conflicts(plans, networks, addresses=None):
    """
    Router ids reused across clusters on one network (pure; unit-tested).

    plans
        ``{minion: vrrp_plan(...)}``.
    networks
        ``{(minion, interface, family): {ipaddress networks} or None}``: the instance interface's
        networks (None: not known).
    addresses
        ``{minion: {ipaddress addresses}}`` (cached grains), used when a node's networks are not known:
        one of its addresses inside the other side's network puts it on that network.

    Two instances of different clusters conflict when they use the same virtual_router_id in the
    same address family and their interfaces share a network (overlapping subnets), or when that
    cannot be told (a network not known): VRRP tells instances on one segment apart by router id
    alone, so the two clusters would take each other's adverts (keepalived logs them, and with
    different priorities one cluster's MASTER steps down for the other's). Returns a list of
    ``{vrid, family, clusters, instances, nodes, shared, message}``, one per cluster pair and
    router id.
    """
    addresses = addresses or {}
    entries = []
    for minion, plan in sorted(plans.items()):
        for inst in (plan or {}).get("instances") or []:
            if inst["vrid"] is None or inst["family"] is None:
                continue
            nets = networks.get((minion, inst["interface"], inst["family"]))
            entries.append(dict(inst, minion=minion, cluster=plan["cluster"], networks=nets))

    def shared(a, b):
        if a["networks"] and b["networks"]:
            common = sorted(str(x) for x in a["networks"] for y in b["networks"] if x.overlaps(y))
            return (True, common[0]) if common else (False, None)
        for one, other in ((a, b), (b, a)):
            if other["networks"]:
                inside = [str(n) for n in other["networks"] for ip in addresses.get(one["minion"], ()) if ip.version == n.version and ip in n]
                if inside:
                    return True, inside[0]
        return True, None  # not known: assume the worst, and say so

    found = {}
    for i, a in enumerate(entries):
        for b in entries[i + 1 :]:
            if a["cluster"] == b["cluster"] or a["vrid"] != b["vrid"] or a["family"] != b["family"]:
                continue
            same, net = shared(a, b)
            if not same:
                continue
            (ca, ia, na), (cb, ib, nb) = sorted([(a["cluster"], a["instance"], a["minion"]), (b["cluster"], b["instance"], b["minion"])])
            key = (a["vrid"], a["family"], ca, cb)
            conflict = found.setdefault(
                key, {"vrid": a["vrid"], "family": a["family"], "clusters": [ca, cb], "sides": {ca: set(), cb: set()}, "nodes": set(), "shared": set(), "unknown": set()}
            )
            conflict["sides"][ca].add(ia)
            conflict["sides"][cb].add(ib)
            conflict["nodes"].update({na, nb})
            if net:
                conflict["shared"].add(net)
            else:
                conflict["unknown"].update(e["minion"] for e in (a, b) if not e["networks"])
    out = []
    for (vrid, family, ca, cb), c in sorted(found.items()):
        where = (
            f"on {', '.join(sorted(c['shared']))}"
            if c["shared"]
            else f"on a network not known for {', '.join(sorted(c['unknown']))} (assumed shared)"
        )
        message = (
            f"ROUTER-ID-CONFLICT: virtual_router_id {vrid} (IPv{family}) is used by cluster {ca} ({', '.join(sorted(c['sides'][ca]))})"
            f" and cluster {cb} ({', '.join(sorted(c['sides'][cb]))}) {where}"
            f" (nodes {', '.join(sorted(c['nodes']))}); give one of them another virtual_router_id"
        )
        out.append(
            {
                "vrid": vrid,
                "family": family,
                "clusters": c["clusters"],
                "instances": sorted(_label(cluster, i) for cluster, names in c["sides"].items() for i in names),
                "nodes": sorted(c["nodes"]),
                "shared": sorted(c["shared"]),
                "message": message,
            }
        )
    return out


def cluster_name_reuse(plans):
    """``[message]``: one cluster name given to nodes whose pillars describe different clusters (pure)."""
    by_name = {}
    for minion, plan in sorted(plans.items()):
        if plan:
            by_name.setdefault(plan["cluster"], {}).setdefault(tuple(plan["cluster_nodes"]), []).append(minion)
    out = []
    for name, shapes in sorted(by_name.items()):
        if len(shapes) > 1:
            groups = "; ".join(f"{', '.join(members)} (nodes {', '.join(shape)})" for shape, members in sorted(shapes.items()))
            out.append(
                f"CLUSTER-NAME-REUSED: cluster name {name!r} is given to different clusters: {groups};"
                " set nginx_ha:cluster to a name of its own in each cluster's pillar"
            )
    return out


def _pillar_for(minion):
    """The pillar the master would give ``minion`` now (compiled as pillar.show_pillar does)."""
    return __salt__["pillar.show_pillar"](minion)


def _cached_addresses(minion):
    _, grains, _ = salt.utils.minions.get_minion_data(minion, __opts__)
    out = set()
    for key in ("ipv4", "ipv6"):
        for text in (grains or {}).get(key) or []:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                continue
            if not (address.is_loopback or address.is_link_local):
                out.add(address)
    return out


def check_router_ids(tgt="*", tgt_type="glob", timeout=5):
    """
    Before anything is applied: report a ``virtual_router_id`` used by two clusters on the same
    network (the same subnet of the instance interface, the same address family), and a cluster
    name (``nginx_ha:cluster``) given to two different clusters. Works from the pillar the master
    compiles for each minion now (``pillar.show_pillar``: a changed pillar counts before any
    ``state.apply`` or pillar refresh) and the minions' interface networks (``network.interfaces``;
    for a minion that does not answer, the addresses in its cached grains; when nothing tells, the
    networks are assumed shared, and the report says so). The return code is 1 on any problem.

    tgt
        Which minions to read the pillar of (default: every accepted minion).

    CLI Example:

    .. code-block:: bash

        salt-run nginx_ha.check_router_ids
        salt-run nginx_ha.check_router_ids tgt='web-*' --out json
    """
    minions = sorted(salt.utils.minions.CkMinions(__opts__).check_minions(tgt, tgt_type).get("minions", []))
    plans, problems, info = {}, [], {}

    def add(problem, kind, severity, **fields):
        problems.append(problem)
        info[problem] = dict({"kind": kind, "severity": severity}, **fields)

    for minion in minions:
        try:
            plan = vrrp_plan(minion, _pillar_for(minion))
        except Exception as exc:  # pylint: disable=broad-except
            log.error("nginx_ha.check_router_ids: cannot compile the pillar of %s", minion, exc_info=True)
            add(f"PILLAR-ERROR: the pillar of {minion} cannot be compiled: {str(exc)[:200]}", "PILLAR-ERROR", "warning", node=minion)
            continue
        if plan:
            plans[minion] = plan
    networks, addresses, silent = {}, {}, []
    if plans:
        with salt.client.get_local_client(__opts__["conf_file"]) as client:
            answers, errors = _ask(client, sorted(plans), NETWORK_INTERFACES, timeout)
        for minion, plan in plans.items():
            if minion not in answers:
                silent.append(minion)
                addresses[minion] = _cached_addresses(minion)
            for inst in plan["instances"]:
                networks[(minion, inst["interface"], inst["family"])] = interface_networks(answers.get(minion), inst["interface"], inst["family"])
    conflicts = router_id_conflicts(plans, networks, addresses)
    for conflict in conflicts:
        add(conflict["message"], "ROUTER-ID-CONFLICT", "critical", instance=", ".join(conflict["instances"]), cluster=", ".join(conflict["clusters"]))
    for message in cluster_name_reuse(plans):
        add(message, "CLUSTER-NAME-REUSED", "critical")
    clusters = {}
    for minion, plan in sorted(plans.items()):
        group = clusters.setdefault(plan["cluster"], {"nodes": [], "instances": {}})
        group["nodes"].append(minion)
        for inst in plan["instances"]:
            entry = group["instances"].setdefault(inst["instance"], {"virtual_router_id": inst["vrid"], "family": inst["family"], "networks": []})
            nets = networks.get((minion, inst["interface"], inst["family"])) or ()
            entry["networks"] = sorted(set(entry["networks"]) | {str(n) for n in nets})
    ret = {
        "clusters": clusters,
        "conflicts": conflicts,
        "networks_unknown": sorted(silent),
        "problems": problems,
        "problem_info": info,
        "ok": not problems,
        "retcode": 0 if not problems else 1,
    }
    if problems:
        __context__["retcode"] = 1
    return ret
