"""
The nginx-ha cluster model: validate the ``nginx_ha`` pillar and compute one node's view of it.

Pure Python (no Salt calls), shared by the execution module, the states and the tests.

The pillar describes the whole cluster once. ``node_view(config, minion_id)`` returns what a
single node renders: its VRRP instances with its own state, priority, interface and unicast
peers, the health check, and the nginx site. ``validate(config)`` returns every problem found as
``"<pillar key>: <message>"`` strings, so an operator sees all mistakes at once.
"""

import copy
import ipaddress
import os
import sys

try:  # Salt's loader puts the extension utils directory on sys.path while it loads other modules
    import nginx_ha_schema as schema
except ImportError:  # loaded by the utils loader itself (or by path in tests): the sibling file
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    import nginx_ha_schema as schema

__virtualname__ = "nginx_ha_model"

PILLAR_ROOT = schema.ROOT
ROLES = ("MASTER", "BACKUP")


def __virtual__():
    return __virtualname__


class ModelError(schema.SchemaError):
    """The pillar is invalid. ``errors`` lists every problem, each naming its pillar key."""


def _key(*parts):
    return ":".join([PILLAR_ROOT] + [str(p) for p in parts])


def _instance_settings(config, name):
    """Instance settings with ``instance_defaults`` filled in (pillar wins; unset = None = default)."""
    merged = copy.deepcopy(config.get("instance_defaults") or {})
    for key, value in ((config.get("vrrp_instances") or {}).get(name) or {}).items():
        if value is not None or key not in merged:
            merged[key] = copy.deepcopy(value)
    return merged


def _node_settings(config, instance, minion_id):
    """One node's settings for an instance: cluster-wide ``nodes:<id>`` under the instance's ``nodes:<id>``."""
    merged = {k: v for k, v in (((config.get("nodes") or {}).get(minion_id)) or {}).items() if v is not None}
    merged.update({k: v for k, v in ((instance.get("nodes") or {}).get(minion_id) or {}).items() if v is not None})
    return merged


def _validate_instance(errors, config, name, seen_vrids, seen_vips):
    key = _key("vrrp_instances", name)
    inst = _instance_settings(config, name)
    vrid = inst.get("virtual_router_id")
    if vrid is not None:
        if vrid in seen_vrids:
            errors.append(
                f"{key}:virtual_router_id: {vrid} is already used by vrrp_instances:{seen_vrids[vrid]}"
                " (each instance needs its own virtual_router_id)"
            )
        else:
            seen_vrids[vrid] = name
    advert, version = inst.get("advert_int"), inst.get("version")
    if advert is not None and version == 2 and (advert < 1 or int(advert) != advert):
        errors.append(f"{key}:advert_int: {advert!r} needs version: 3 (VRRPv2 adverts are whole seconds)")
    families = set()
    for i, vip in enumerate(inst.get("virtual_ipaddress") or []):
        if vip is None:
            continue
        ip = str(ipaddress.ip_interface(vip.split()[0]).ip)
        family = ipaddress.ip_address(ip).version
        if families and family not in families:
            errors.append(f"{key}:virtual_ipaddress:{i}: {ip} mixes IPv4 and IPv6 in one instance; use one instance per address family")
        families.add(family)
        if family == 6 and version == 2:
            errors.append(f"{key}:virtual_ipaddress:{i}: {ip} is IPv6, which needs version: 3")
        if family == 6 and config.get("local_vip"):
            errors.append(f"{key}:virtual_ipaddress:{i}: {ip} is IPv6, which local_vip does not support yet; set nginx_ha:local_vip: false")
        if ip in seen_vips:
            errors.append(f"{key}:virtual_ipaddress:{i}: {ip} is already a VIP of vrrp_instances:{seen_vips[ip]}")
        seen_vips[ip] = name
    if inst.get("nopreempt") and inst.get("preempt_delay"):
        errors.append(f"{key}:preempt_delay: has no effect with nopreempt: true; set one of them")

    nodes = inst.get("nodes") or {}
    masters, priorities = [], {}
    for node_id in nodes:
        nkey = f"{key}:nodes:{node_id}"
        node = _node_settings(config, inst, node_id)
        state = node.get("state")
        if state is None:
            errors.append(f"{nkey}:state: is missing; every node needs a role: MASTER or BACKUP")
        elif state == "MASTER":
            masters.append(node_id)
        if node.get("priority") is None:
            errors.append(f"{nkey}:priority: is required (an integer within 1-254)")
        else:
            priorities[node_id] = node["priority"]
        if node.get("interface", inst.get("interface")) is None:
            errors.append(f"{nkey}:interface: is missing (set vrrp_instances:{name}:interface or the node's interface)")
        if inst.get("unicast") and node.get("unicast_src_ip") is None:
            errors.append(
                f"{nkey}:unicast_src_ip: is required with unicast: true (the node's address that its peers"
                f" send adverts to; set it under nginx_ha:nodes:{node_id} or here)"
            )
        src = node.get("unicast_src_ip")
        if inst.get("unicast") and src is not None and families and ipaddress.ip_address(src).version not in families:
            errors.append(
                f"{nkey}:unicast_src_ip: {src} is IPv{ipaddress.ip_address(src).version}, the instance's VIPs are"
                f" IPv{min(families)}; keepalived needs its unicast peers in the VIPs' family"
            )
    if len(masters) > 1:
        errors.append(f"{key}:nodes: {', '.join(map(str, masters))} are all MASTER; an instance has exactly one MASTER")
    elif not masters and nodes:
        errors.append(f"{key}:nodes: no node has state: MASTER; an instance has exactly one MASTER")
    elif masters and masters[0] in priorities:
        top = priorities[masters[0]]
        for node_id, prio in priorities.items():
            if node_id != masters[0] and prio >= top:
                errors.append(
                    f"{key}:nodes:{node_id}:priority: {prio} is not below the MASTER's ({masters[0]}: {top});"
                    " the MASTER must have the highest priority"
                )
    if inst.get("unicast") and len(nodes) < 2:
        errors.append(f"{key}:nodes: unicast needs at least two nodes (peers would be empty)")
    _validate_weight(errors, config, name, priorities)


def _validate_weight(errors, config, name, priorities):
    """A failing node must fall below every peer: with a negative weight, priority + weight < each peer's."""
    weight = ((config.get("check") or {}).get("weight")) or 0
    if weight >= 0 or len(priorities) < 2:
        return
    for node_id, prio in sorted(priorities.items()):
        failing = max(1, prio + weight)  # keepalived clamps the effective priority at 1
        for peer, peer_prio in sorted(priorities.items()):
            if peer != node_id and failing >= peer_prio:
                errors.append(
                    f"{_key('check', 'weight')}: {weight} leaves a failing {node_id} (priority {prio} -> {failing})"
                    f" at or above its healthy peer {peer} ({peer_prio}) in vrrp_instances:{name}: the failing node"
                    f" would keep the VIP; use weight: 0 (FAULT on failure) or a weight below {peer_prio - prio - (1 if peer_prio > 1 else 0)}"
                    + ("" if peer_prio > 1 else f" and a priority above 1 for {peer}")
                )
                return


def _validate_nginx(errors, nginx):
    listens = [str(x) for x in nginx.get("listen") or [] if x is not None]
    for i, listen in enumerate(listens):
        if listen in listens[:i]:
            errors.append(f"{_key('nginx', 'listen', i)}: {listen} is listed twice")
    health = str((nginx.get("health") or {}).get("listen"))
    if health in listens:
        errors.append(f"{_key('nginx', 'health', 'listen')}: {health} is also where the site listens; the health endpoint needs its own address:port")
    upstreams = nginx.get("upstreams") or {}
    for name, upstream in upstreams.items():
        servers = [s for s in (upstream or {}).get("servers") or [] if s]
        if servers and all("backup" in s.split()[1:] for s in servers):
            errors.append(f"{_key('nginx', 'upstreams', name)}:servers: every server is a backup; nginx needs at least one primary server")
    for path, loc in (nginx.get("locations") or {}).items():
        if path == "/":
            errors.append(f"{_key('nginx', 'locations', path)}: '/' is the site's own location (its root); proxy a path below it, like /app/")
        target = (loc or {}).get("proxy_pass")
        if target is not None and target not in upstreams:
            errors.append(
                f"{_key('nginx', 'locations', path)}:proxy_pass: {target!r} is not an upstream under nginx_ha:nginx:upstreams"
                f" (known: {', '.join(sorted(map(str, upstreams))) or 'none'})"
            )


def normalize(config):
    """Type and fill ``config`` through the schema and check what spans keys; raise ModelError."""
    errors = []
    typed = schema.check(schema.SCHEMA, config, PILLAR_ROOT, errors)
    if isinstance(typed, dict):
        seen_vrids, seen_vips = {}, {}
        for name in typed.get("vrrp_instances") or {}:
            _validate_instance(errors, typed, name, seen_vrids, seen_vips)
        _validate_nginx(errors, typed.get("nginx") or {})
    if errors:
        raise ModelError(errors)
    return typed


def validate(config):
    """Return a list of problems with the merged ``nginx_ha`` configuration (empty when valid)."""
    try:
        normalize(config)
    except ModelError as exc:
        return exc.errors
    return []


def cluster_nodes(config):
    """Sorted minion ids that have a role in at least one instance."""
    ids = set()
    for name in config.get("vrrp_instances") or {}:
        ids.update((_instance_settings(config, name).get("nodes") or {}).keys())
    return sorted(map(str, ids))


def _vip_entries(vips, interface):
    """VIPs as keepalived gets them, each with the interface it goes on (its ``dev``, else the instance's)."""
    entries = []
    for vip in vips:
        words = vip.split()
        iface = ipaddress.ip_interface(words[0])
        # A bare address gets a host prefix, as keepalived itself does.
        address = words[0] if "/" in words[0] else f"{iface.ip}/{iface.network.prefixlen}"
        dev = next((words[i + 1] for i in range(1, len(words) - 1) if words[i] == "dev"), None)
        entries.append({"address": address, "ip": str(iface.ip), "extra": " ".join(words[1:]), "interface": dev or interface})
    return entries


def _node_instance(config, name, minion_id):
    inst = _instance_settings(config, name)
    node = _node_settings(config, inst, minion_id)
    nopreempt = bool(inst.get("nopreempt", False))
    interface = node.get("interface", inst.get("interface"))
    view = {
        "name": name,
        "role": node["state"],
        # keepalived honours nopreempt only when every node starts as BACKUP; the MASTER role is
        # then carried by the highest priority alone.
        "state": "BACKUP" if nopreempt else node["state"],
        "priority": node["priority"],
        "interface": interface,
        "virtual_router_id": inst["virtual_router_id"],
        "version": inst.get("version", 2),
        "advert_int": inst.get("advert_int", 1),
        "virtual_ipaddress": _vip_entries(inst["virtual_ipaddress"], interface),
        "nopreempt": nopreempt,
        "preempt_delay": inst.get("preempt_delay", 0),
        "dont_track_primary": bool(inst.get("dont_track_primary", False)),
        "unicast": bool(inst.get("unicast", False)),
        "unicast_src_ip": None,
        "unicast_peer": [],
        "options": inst.get("options") or {},
        "peers": sorted(str(n) for n in inst["nodes"] if n != minion_id),
    }
    if view["unicast"]:
        view["unicast_src_ip"] = str(node["unicast_src_ip"])
        view["unicast_peer"] = [
            str(_node_settings(config, inst, peer)["unicast_src_ip"]) for peer in view["peers"]
        ]
    return view


def health_endpoint(listen):
    """``(host, port)`` the local checks connect to for a health ``listen`` (port or address:port)."""
    text = str(listen)
    host, _, port = text.rpartition(":")
    if host in ("", "*", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "[::]":
        host = "[::1]"
    return host, int(port)


def health_url(listen, path):
    """The URL the checks request: ``listen`` is a port or address:port of the health server."""
    host, port = health_endpoint(listen)
    return f"http://{host}:{port}{path}"


def health_settings(view, lookup):
    """What keepalived's check and the watcher read (``<script_dir>/health.json``): data, never script text."""
    health, check = view["nginx"]["health"], view["check"]
    watcher = check["watcher"]
    return {
        "host": health["host"],
        "port": health["port"],
        "request": health["path"],
        "listen": health["listen"],
        "location": health["location"],
        "check_timeout": check["timeout"],
        "enabled": watcher["enabled"],
        "interval": watcher["interval"],
        "retry_interval": watcher["retry_interval"],
        "timeout": watcher["timeout"],
        "fall": watcher["fall"],
        "rise": watcher["rise"],
        "state_file": watcher["state_file"],
        "pidfile": lookup["nginx"]["pidfile"],
    }


def health_endpoints(view, active=None):
    """
    The health endpoints nginx serves: this pillar's, plus the one the health path probes right
    now (``active``: the node's current health settings) while a change is on its way, so the
    watcher never probes an endpoint nginx has stopped serving. ``[{listen, locations: [...]}]``.
    """
    wanted = [(view["nginx"]["health"]["listen"], view["nginx"]["health"]["location"])]
    if isinstance(active, dict) and isinstance(active.get("listen"), (str, int)) and isinstance(active.get("location"), str):
        try:
            old = (schema.Listen().check(active["listen"]), schema.UrlPath(query=False).check(active["location"]))
        except schema.Invalid:
            old = None
        if old and old not in wanted:
            wanted.append(old)
    servers = {}
    for listen, location in wanted:
        servers.setdefault(str(listen), []).append(location)
    return [{"listen": listen, "locations": sorted(set(locs))} for listen, locs in servers.items()]


def node_view(config, minion_id):
    """
    Validate ``config`` and return what ``minion_id`` renders.

    ``config`` is the ``nginx_ha`` pillar merged over the schema's defaults and the OS lookup; it is
    typed and filled through the schema first. Raises ``ModelError`` listing every problem when the
    pillar is invalid, and when the minion has no role in any instance.
    """
    config = normalize(config)
    members = cluster_nodes(config)
    if minion_id not in members:
        raise ModelError(
            [
                f"{_key('vrrp_instances')}: minion {minion_id!r} is not a node of any instance"
                f" (nodes: {', '.join(members)}); target only cluster nodes or add it under nodes:"
            ]
        )
    view = copy.deepcopy({k: v for k, v in config.items() if k not in ("vrrp_instances", "instance_defaults", "nodes")})
    view["id"] = minion_id
    view["instances"] = [
        _node_instance(config, name, minion_id)
        for name in sorted(config["vrrp_instances"])
        if minion_id in (_instance_settings(config, name).get("nodes") or {})
    ]
    health = view["nginx"]["health"]
    health["url"] = health_url(health["listen"], health["path"])
    health["host"], health["port"] = health_endpoint(health["listen"])
    # nginx matches a location on the path alone; the checks send the query as well
    health["location"] = health["path"].split("?", 1)[0]
    view["health_settings"] = health_settings(view, config["lookup"])
    view["global_defs"] = dict(view.get("global_defs") or {})
    view["global_defs"].setdefault("router_id", minion_id)
    view["local_vip"] = bool(view.get("local_vip", False))
    # local_vip: each VIP of this node once (host prefix), and the interfaces keepalived puts VIPs on
    view["local_vips"], view["vrrp_interfaces"] = [], []
    for inst in view["instances"]:
        for vip in inst["virtual_ipaddress"]:
            host = f"{vip['ip']}/{128 if ':' in vip['ip'] else 32}"
            if host not in view["local_vips"]:
                view["local_vips"].append(host)
            if vip["interface"] not in view["vrrp_interfaces"]:
                view["vrrp_interfaces"].append(vip["interface"])
    view["firewall"]["vrrp"] = firewall_vrrp(view["instances"])
    return view


VRRP_GROUPS = {4: "224.0.0.18", 6: "ff02::12"}  # where multicast adverts go (RFC 5798)


def firewall_vrrp(instances):
    """
    What the firewall must let in for this node's instances (``_states/nginx_ha_firewall.py``):
    ``[{family, interface, sources}]`` for unicast instances (the peers' unicast_src_ip, which is
    keepalived's unicast_peer list) and ``[{family, interface, group}]`` for multicast ones (any
    source on the interface, to the VRRP group), merged per family and interface, sorted.
    """
    unicast, multicast = {}, set()
    for inst in instances:
        family = ipaddress.ip_address(inst["virtual_ipaddress"][0]["ip"]).version
        if inst["unicast"]:
            for peer in inst["unicast_peer"]:
                address = ipaddress.ip_address(peer)
                unicast.setdefault((address.version, inst["interface"]), set()).add(address)
        else:
            multicast.add((family, inst["interface"]))
    rules = [
        {"family": fam, "interface": iface, "sources": [str(a) for a in sorted(addrs)]}
        for (fam, iface), addrs in sorted(unicast.items())
    ]
    rules += [{"family": fam, "interface": iface, "group": VRRP_GROUPS[fam]} for fam, iface in sorted(multicast)]
    return rules
