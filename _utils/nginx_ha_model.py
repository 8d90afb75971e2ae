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
import re

__virtualname__ = "nginx_ha_model"

PILLAR_ROOT = "nginx_ha"
ROLES = ("MASTER", "BACKUP")

# Values end up inside keepalived.conf and nginx config files: refuse anything that could close a
# block, start a new statement or a comment, or break out of a quoted string.
_UNSAFE = re.compile(r"[\s{};#\"'\\`$]")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
_NGINX_SIZE = re.compile(r"^[0-9]+[kKmMgG]?$")
_NGINX_TIME = re.compile(r"^[0-9]+(ms|s|m|h|d)?$")


def __virtual__():
    return __virtualname__


class ModelError(ValueError):
    """The pillar is invalid. ``errors`` lists every problem, each naming its pillar key."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("invalid nginx_ha pillar:\n  " + "\n  ".join(self.errors))


def _key(*parts):
    return ":".join([PILLAR_ROOT] + [str(p) for p in parts])


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return (_is_int(value) or isinstance(value, float)) and not isinstance(value, bool)


def _check_int(errors, key, value, low, high, required=True):
    if value is None:
        if required:
            errors.append(f"{key}: is required (an integer {low}-{high})")
        return
    if not _is_int(value) or not low <= value <= high:
        errors.append(f"{key}: {value!r} is not an integer within {low}-{high}")


def _check_number(errors, key, value, low, high):
    if not _is_number(value) or not low <= value <= high:
        errors.append(f"{key}: {value!r} is not a number within {low}-{high}")


def _check_bool(errors, key, value):
    if not isinstance(value, bool):
        errors.append(f"{key}: {value!r} is not true or false")


def _check_word(errors, key, value, pattern=_NAME, what="a name of letters, digits, '_', '.', '-'"):
    if not isinstance(value, str) or not pattern.match(value):
        errors.append(f"{key}: {value!r} is not {what}")


def _check_token(errors, key, value):
    """A single config token: no whitespace, quotes, braces, ';' or '#'."""
    if not isinstance(value, (str, int)) or isinstance(value, bool) or _UNSAFE.search(str(value)) or str(value) == "":
        errors.append(f"{key}: {value!r} must be a single word without spaces, quotes, braces, ';' or '#'")
        return False
    return True


def _interface_of(address):
    try:
        return ipaddress.ip_interface(str(address))
    except ValueError:
        return None


def _parse_vip(errors, key, value):
    """``203.0.113.100/24`` or ``203.0.113.100/24 dev eth1 label eth1:vip`` -> (ip_interface, rest)."""
    if not isinstance(value, str) or not value.strip():
        errors.append(f"{key}: {value!r} is not an address like 203.0.113.100/24")
        return None
    words = value.split()
    iface = _interface_of(words[0])
    if iface is None:
        errors.append(f"{key}: {words[0]!r} is not an IP address (like 203.0.113.100/24)")
        return None
    for word in words[1:]:
        _check_token(errors, key, word)
    return iface


def _mapping(errors, key, value, required=False):
    if value is None:
        if required:
            errors.append(f"{key}: is required")
        return {}
    if not isinstance(value, dict):
        errors.append(f"{key}: {value!r} is not a mapping")
        return {}
    return value


def _extra_options(errors, key, options):
    """Pass-through keepalived options: ``{name: value}`` with safe tokens, or ``name: true`` for flags."""
    for name, value in _mapping(errors, key, options).items():
        _check_word(errors, f"{key}:{name}", name, what="a keepalived option name")
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, bool) or item is None:
                continue
            _check_token(errors, f"{key}:{name}", item)


def _instance_settings(config, name):
    """Instance settings with ``instance_defaults`` filled in (pillar wins)."""
    merged = copy.deepcopy(config.get("instance_defaults") or {})
    merged.update(copy.deepcopy((config.get("vrrp_instances") or {}).get(name) or {}))
    return merged


def _node_settings(config, instance, minion_id):
    """One node's settings for an instance: cluster-wide ``nodes:<id>`` under the instance's ``nodes:<id>``."""
    merged = copy.deepcopy(((config.get("nodes") or {}).get(minion_id)) or {})
    merged.update(copy.deepcopy((instance.get("nodes") or {}).get(minion_id) or {}))
    return merged


def _validate_instance(errors, config, name, seen_vrids, seen_vips):
    key = _key("vrrp_instances", name)
    _check_word(errors, key, name, what="an instance name of letters, digits, '_', '.', '-'")
    raw = (config.get("vrrp_instances") or {}).get(name)
    if not isinstance(raw, dict):
        errors.append(f"{key}: {raw!r} is not a mapping")
        return
    inst = _instance_settings(config, name)

    vrid = inst.get("virtual_router_id")
    _check_int(errors, f"{key}:virtual_router_id", vrid, 1, 255)
    if _is_int(vrid):
        if vrid in seen_vrids:
            errors.append(
                f"{key}:virtual_router_id: {vrid} is already used by vrrp_instances:{seen_vrids[vrid]}"
                " (each instance needs its own virtual_router_id)"
            )
        else:
            seen_vrids[vrid] = name

    version = inst.get("version", 2)
    if version not in (2, 3):
        errors.append(f"{key}:version: {version!r} is not 2 or 3")
    advert = inst.get("advert_int", 1)
    _check_number(errors, f"{key}:advert_int", advert, 0.01, 255)
    if _is_number(advert) and version == 2 and (advert < 1 or int(advert) != advert):
        errors.append(f"{key}:advert_int: {advert!r} needs version: 3 (VRRPv2 adverts are whole seconds)")

    vips = inst.get("virtual_ipaddress")
    if not vips:
        errors.append(f"{key}:virtual_ipaddress: is required (a list of addresses like 203.0.113.100/24)")
    elif not isinstance(vips, list):
        errors.append(f"{key}:virtual_ipaddress: {vips!r} is not a list")
    else:
        for i, vip in enumerate(vips):
            iface = _parse_vip(errors, f"{key}:virtual_ipaddress:{i}", vip)
            if iface is None:
                continue
            if str(iface.ip) in seen_vips:
                errors.append(
                    f"{key}:virtual_ipaddress:{i}: {iface.ip} is already a VIP of vrrp_instances:{seen_vips[str(iface.ip)]}"
                )
            seen_vips[str(iface.ip)] = name

    for flag in ("nopreempt", "unicast", "dont_track_primary"):
        if flag in inst:
            _check_bool(errors, f"{key}:{flag}", inst[flag])
    if "preempt_delay" in inst:
        _check_int(errors, f"{key}:preempt_delay", inst["preempt_delay"], 0, 1000)
    if inst.get("nopreempt") and inst.get("preempt_delay"):
        errors.append(f"{key}:preempt_delay: has no effect with nopreempt: true; set one of them")
    if "interface" in inst:
        _check_word(errors, f"{key}:interface", inst["interface"], _IFNAME, "an interface name")
    _extra_options(errors, f"{key}:options", inst.get("options"))

    nodes = inst.get("nodes")
    if not isinstance(nodes, dict) or not nodes:
        errors.append(f"{key}:nodes: is required: a mapping of minion id to {{state: MASTER|BACKUP, priority: 1-254}}")
        return
    masters, priorities = [], {}
    for node_id, raw_node in nodes.items():
        nkey = f"{key}:nodes:{node_id}"
        _check_word(errors, nkey, node_id, what="a minion id")
        if raw_node is not None and not isinstance(raw_node, dict):
            errors.append(f"{nkey}: {raw_node!r} is not a mapping")
            continue
        node = _node_settings(config, inst, node_id)
        state = node.get("state")
        if state is None:
            errors.append(f"{nkey}:state: is missing; every node needs a role: MASTER or BACKUP")
        elif state not in ROLES:
            errors.append(f"{nkey}:state: {state!r} is not MASTER or BACKUP")
        elif state == "MASTER":
            masters.append(node_id)
        prio = node.get("priority")
        _check_int(errors, f"{nkey}:priority", prio, 1, 254)
        if _is_int(prio):
            priorities[node_id] = prio
        interface = node.get("interface", inst.get("interface"))
        if interface is None:
            errors.append(f"{nkey}:interface: is missing (set vrrp_instances:{name}:interface or the node's interface)")
        elif "interface" in node:
            _check_word(errors, f"{nkey}:interface", interface, _IFNAME, "an interface name")
        if inst.get("unicast"):
            src = node.get("unicast_src_ip")
            if src is None:
                errors.append(
                    f"{nkey}:unicast_src_ip: is required with unicast: true (the node's address that its peers"
                    f" send adverts to; set it under nginx_ha:nodes:{node_id} or here)"
                )
            elif _interface_of(src) is None or "/" in str(src):
                errors.append(f"{nkey}:unicast_src_ip: {src!r} is not an IP address")
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


def _validate_check(errors, check):
    key = _key("check")
    check = _mapping(errors, key, check)
    # keepalived takes whole seconds for vrrp_script interval and timeout.
    for name in ("interval", "timeout"):
        if name in check:
            _check_int(errors, f"{key}:{name}", check[name], 1, 4294)
    for name in ("fall", "rise"):
        if name in check:
            _check_int(errors, f"{key}:{name}", check[name], 1, 1000)
    if "weight" in check:
        _check_int(errors, f"{key}:weight", check["weight"], -253, 253)
    if "track_process" in check:
        _check_bool(errors, f"{key}:track_process", check["track_process"])
    _validate_watcher(errors, check.get("watcher"))


_ABS_PATH = re.compile(r"^/[A-Za-z0-9_./+-]*$")


def _validate_watcher(errors, watcher):
    """``check:watcher``: the fast health watcher (seconds may be fractions)."""
    key = _key("check", "watcher")
    watcher = _mapping(errors, key, watcher)
    if "enabled" in watcher:
        _check_bool(errors, f"{key}:enabled", watcher["enabled"])
    for name in ("interval", "retry_interval", "timeout"):
        if name in watcher:
            _check_number(errors, f"{key}:{name}", watcher[name], 0.01, 60)
    for name in ("fall", "rise"):
        if name in watcher:
            _check_int(errors, f"{key}:{name}", watcher[name], 1, 1000)
    for name in ("python", "state_file"):
        if name in watcher and (not isinstance(watcher[name], str) or not _ABS_PATH.match(watcher[name])):
            errors.append(f"{key}:{name}: {watcher[name]!r} is not an absolute path")
    if "package" in watcher and watcher["package"] is not None:
        _check_token(errors, f"{key}:package", watcher["package"])


def _validate_listen(errors, key, value):
    if _is_int(value):
        if not 1 <= value <= 65535:
            errors.append(f"{key}: {value!r} is not a port within 1-65535")
        return
    if not isinstance(value, str) or _UNSAFE.search(value) or not re.match(r"^(\[[0-9a-fA-F:]+\]|[0-9.]+|\*)?:?[0-9]+$", value):
        errors.append(f"{key}: {value!r} is not a port or address:port like 80 or 127.0.0.1:8081")


def _validate_nginx(errors, nginx):
    key = _key("nginx")
    nginx = _mapping(errors, key, nginx)
    listen = nginx.get("listen", [80])
    if not isinstance(listen, list) or not listen:
        errors.append(f"{key}:listen: {listen!r} is not a non-empty list of ports")
    else:
        for i, item in enumerate(listen):
            _validate_listen(errors, f"{key}:listen:{i}", item)
    server_names = nginx.get("server_name", "_")
    for name in server_names if isinstance(server_names, list) else [server_names]:
        _check_token(errors, f"{key}:server_name", name)
    if "root" in nginx:
        root = nginx["root"]
        if not isinstance(root, str) or not root.startswith("/") or _UNSAFE.search(root):
            errors.append(f"{key}:root: {root!r} is not an absolute path")
    health = _mapping(errors, f"{key}:health", nginx.get("health"))
    if "listen" in health:
        _validate_listen(errors, f"{key}:health:listen", health["listen"])
    if "path" in health:
        path = health["path"]
        if not isinstance(path, str) or not path.startswith("/") or _UNSAFE.search(path):
            errors.append(f"{key}:health:path: {path!r} is not a URL path like /nginx_ha/health")

    upstreams = _mapping(errors, f"{key}:upstreams", nginx.get("upstreams"))
    for name, upstream in upstreams.items():
        ukey = f"{key}:upstreams:{name}"
        _check_word(errors, ukey, name, what="an upstream name of letters, digits, '_', '.', '-'")
        upstream = _mapping(errors, ukey, upstream)
        servers = upstream.get("servers")
        if not isinstance(servers, list) or not servers:
            errors.append(f"{ukey}:servers: {servers!r} is not a non-empty list like ['10.0.0.11:8080']")
        else:
            for i, server in enumerate(servers):
                words = str(server).split() if isinstance(server, str) else [server]
                if not words:
                    errors.append(f"{ukey}:servers:{i}: is empty")
                for word in words:
                    _check_token(errors, f"{ukey}:servers:{i}", word)
        for opt in ("keepalive",):
            if opt in upstream:
                _check_int(errors, f"{ukey}:{opt}", upstream[opt], 1, 100000)
    locations = _mapping(errors, f"{key}:locations", nginx.get("locations"))
    for path, loc in locations.items():
        lkey = f"{key}:locations:{path}"
        if not isinstance(path, str) or not path.startswith("/") or _UNSAFE.search(path):
            errors.append(f"{lkey}: {path!r} is not a URL path prefix like /api/")
        loc = _mapping(errors, lkey, loc)
        target = loc.get("proxy_pass")
        if target is None:
            errors.append(f"{lkey}:proxy_pass: is required (the name of an upstream under nginx_ha:nginx:upstreams)")
        elif target not in upstreams:
            errors.append(
                f"{lkey}:proxy_pass: {target!r} is not an upstream under nginx_ha:nginx:upstreams"
                f" (known: {', '.join(sorted(map(str, upstreams))) or 'none'})"
            )
        for opt in ("proxy_connect_timeout", "proxy_read_timeout"):
            if opt in loc and (not isinstance(loc[opt], (str, int)) or not _NGINX_TIME.match(str(loc[opt]))):
                errors.append(f"{lkey}:{opt}: {loc[opt]!r} is not an nginx time like 2s or 500ms")
    if "client_max_body_size" in nginx:
        if not _NGINX_SIZE.match(str(nginx["client_max_body_size"])):
            errors.append(f"{key}:client_max_body_size: {nginx['client_max_body_size']!r} is not a size like 10m")


def validate(config):
    """Return a list of problems with the merged ``nginx_ha`` configuration (empty when valid)."""
    errors = []
    if not isinstance(config, dict):
        return [f"{PILLAR_ROOT}: {config!r} is not a mapping"]
    instances = config.get("vrrp_instances")
    if not instances:
        errors.append(_key("vrrp_instances") + ": is required: at least one VRRP instance with a virtual_ipaddress and nodes")
    elif not isinstance(instances, dict):
        errors.append(_key("vrrp_instances") + f": {instances!r} is not a mapping")
    else:
        seen_vrids, seen_vips = {}, {}
        for name in instances:
            _validate_instance(errors, config, name, seen_vrids, seen_vips)
    _mapping(errors, _key("nodes"), config.get("nodes"))
    if "local_vip" in config:
        _check_bool(errors, _key("local_vip"), config["local_vip"])
    _extra_options(errors, _key("global_defs"), config.get("global_defs"))
    _validate_check(errors, config.get("check"))
    _validate_nginx(errors, config.get("nginx"))
    events = _mapping(errors, _key("events"), config.get("events"))
    for flag in ("notify_fifo", "notify_script"):
        if flag in events:
            _check_bool(errors, _key("events", flag), events[flag])
    if "notify_script_timeout" in events:
        _check_int(errors, _key("events", "notify_script_timeout"), events["notify_script_timeout"], 1, 300)
    if "restart_minion" in events:
        _check_bool(errors, _key("events", "restart_minion"), events["restart_minion"])
    for name, low, high in (("buffer_size", 1, 1000000), ("send_timeout", 1, 300), ("backoff_max", 1, 3600)):
        if events.get(name) is not None:
            _check_int(errors, _key("events", name), events[name], low, high)
    for name in ("salt_call", "salt_config_dir", "spool"):
        value = events.get(name)
        # Rendered shell-quoted (notify script) or as YAML data (engine config): only line breaks are unsafe.
        if value is not None and (not isinstance(value, str) or not value or any(c in value for c in "\n\r\0")):
            errors.append(f"{_key('events', name)}: {value!r} is not a path on one line")
    return errors


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


def health_url(listen, path):
    """The URL the check script requests: ``listen`` is a port or address:port of the health server."""
    text = str(listen)
    if ":" not in text or text.startswith("*:"):
        text = "127.0.0.1:" + text.split(":")[-1]
    return f"http://{text}{path}"


def node_view(config, minion_id):
    """
    Validate ``config`` and return what ``minion_id`` renders.

    Raises ``ModelError`` listing every problem when the pillar is invalid, and when the minion
    has no role in any instance.
    """
    errors = validate(config)
    if errors:
        raise ModelError(errors)
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
    health = view.setdefault("nginx", {}).setdefault("health", {})
    health["url"] = health_url(health.get("listen", "127.0.0.1:8081"), health.get("path", "/"))
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
    return view
