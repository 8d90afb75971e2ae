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
    import nginx_ha_tls as tls
except ImportError:  # loaded by the utils loader itself (or by path in tests): the sibling file
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    import nginx_ha_schema as schema
    import nginx_ha_tls as tls

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
            errors.append(f"{key}:virtual_ipaddress:{i}: {ip} mixes IPv4 and IPv6 in one instance; use one instance per address family (vrrp_sync_groups moves them together)")
        families.add(family)
        if family == 6 and version == 2:
            errors.append(f"{key}:virtual_ipaddress:{i}: {ip} is IPv6, which needs version: 3")
        if ip in seen_vips:
            errors.append(f"{key}:virtual_ipaddress:{i}: {ip} is already a VIP of vrrp_instances:{seen_vips[ip]}")
        seen_vips[ip] = name
    for i, vip in enumerate(inst.get("virtual_ipaddress_excluded") or []):
        if vip is None:
            continue
        ip = str(ipaddress.ip_interface(vip.split()[0]).ip)
        if ip in seen_vips:
            errors.append(f"{key}:virtual_ipaddress_excluded:{i}: {ip} is already a VIP of vrrp_instances:{seen_vips[ip]}")
        seen_vips[ip] = name
    _validate_vocabulary(errors, config, name, inst, key, version)
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


# What keepalived.conf.jinja writes into a vrrp_instance itself, and what has a key of its own: never
# through options (keepalived would see it twice, or run pillar text as a program).
RENDERED_OPTIONS = frozenset(
    "state interface virtual_router_id priority advert_int version nopreempt preempt_delay dont_track_primary"
    " unicast_src_ip unicast_peer virtual_ipaddress virtual_ipaddress_excluded virtual_routes virtual_rules"
    " track_script track_file track_process track_interface track_bfd authentication auth_type auth_pass"
    " native_ipv6".split()
)
GARP_KEYS = ("garp_master_delay", "garp_master_repeat", "garp_master_refresh", "garp_master_refresh_repeat", "garp_lower_prio_delay", "garp_lower_prio_repeat")
HOOK_KINDS = ("notify_master", "notify_backup", "notify_fault", "notify_stop", "notify")


def _same_family(*addresses):
    versions = {ipaddress.ip_network(a, strict=False).version for a in addresses if a is not None}
    return len(versions) <= 1


def _validate_vocabulary(errors, config, name, inst, key, version):
    """keepalived's vocabulary (options, track_interface, authentication, routes, rules): what keepalived -t would refuse."""
    for option in inst.get("options") or {}:
        if option in RENDERED_OPTIONS:
            errors.append(f"{key}:options:{option}: is written from its own key (vrrp_instances:{name}:{option} or the formula); remove it from options")
        elif option.startswith("notify") and option != "notify_priority_changes":
            errors.append(
                f"{key}:options:{option}: runs a program; set it as vrrp_instances:{name}:{option} (a list: the program's"
                " absolute path, then its arguments), which nginx-ha runs with a timeout"
                if option in HOOK_KINDS else f"{key}:options:{option}: runs a program or changes notifications; not passed through"
            )
        elif option in GARP_KEYS and inst.get(option) is not None:
            errors.append(f"{key}:options:{option}: is also set as vrrp_instances:{name}:{option}; set it once")
        elif option in GARP_KEYS and inst["options"][option] not in (None, False):
            value = inst["options"][option]  # the older way to set it: typed as its own key is
            try:
                schema.INSTANCE_SETTINGS[option].kind.check(value[0] if isinstance(value, list) and len(value) == 1 else value)
            except schema.Invalid as exc:
                errors.append(f"{key}:options:{option}: {value!r} {exc} (set it as vrrp_instances:{name}:{option})")
    tracked = [schema.track_interface_parts(t)[0] for t in inst.get("track_interface") or [] if t]
    for i, iface in enumerate(tracked):
        if iface in tracked[:i]:
            errors.append(f"{key}:track_interface:{i}: {iface} is tracked twice")
    auth = inst.get("authentication")
    if auth:
        if version == 3:
            errors.append(
                f"{key}:authentication: VRRPv3 (RFC 5798) has no authentication (keepalived refuses it); remove it,"
                " or use version: 2 (RFC 3768 removed it from VRRPv2 too)"
            )
        if auth.get("auth_type") == "AH" and (config.get("firewall") or {}).get("manage", False):
            errors.append(
                f"{key}:authentication:auth_type: AH adverts are IP protocol 51, which firewall:manage does not open"
                " (it opens VRRP, protocol 112); use PASS, or set firewall:manage: false and open protocol 51 yourself"
            )
    for i, route in enumerate(inst.get("virtual_routes") or []):
        if not route:
            continue
        rkey = f"{key}:virtual_routes:{i}"
        if not _same_family(route.get("to"), route.get("via"), route.get("src")):
            errors.append(f"{rkey}: mixes IPv4 and IPv6 (to {route.get('to')}, via {route.get('via')}, src {route.get('src')}); keepalived refuses it")
        if route.get("via") and ipaddress.ip_address(route["via"]).is_link_local and not route.get("dev"):
            errors.append(f"{rkey}:via: {route['via']} is link-local, which needs dev")
        if route.get("type") != "unicast" and route.get("via"):
            errors.append(f"{rkey}:via: a {route.get('type')} route has no gateway")
        if not route.get("dev") and not route.get("no_track"):
            errors.append(f"{rkey}:dev: is required unless no_track: true (keepalived watches a route through its interface)")
    for i, rule in enumerate(inst.get("virtual_rules") or []):
        if rule and not _same_family(rule.get("from"), rule.get("to")):
            errors.append(f"{key}:virtual_rules:{i}: mixes IPv4 and IPv6 (from {rule.get('from')}, to {rule.get('to')}); keepalived refuses it")


def _validate_sync_groups(errors, config):
    """
    vrrp_sync_groups: members exist, one group per instance, and the members agree (same nodes, each
    node the same role, the same nopreempt), as keepalived needs for a group to run reliably; no
    weighted track_interface on a member (keepalived ignores it: it goes on the group).
    """
    instances = config.get("vrrp_instances") or {}
    owner = {}
    for gname, group in sorted((config.get("vrrp_sync_groups") or {}).items()):
        gkey = _key("vrrp_sync_groups", gname)
        members = [m for m in (group or {}).get("group") or [] if m is not None]
        shape = None
        group_tracked = {schema.track_interface_parts(t)[0] for t in (group or {}).get("track_interface") or [] if t}
        for i, member in enumerate(members):
            if member in members[:i]:
                errors.append(f"{gkey}:group:{i}: {member} is listed twice")
                continue
            if member not in instances:
                errors.append(f"{gkey}:group:{i}: {member} is not an instance under nginx_ha:vrrp_instances (known: {', '.join(sorted(map(str, instances))) or 'none'})")
                continue
            if member in owner:
                errors.append(f"{gkey}:group:{i}: {member} is already in vrrp_sync_groups:{owner[member]}; an instance belongs to one sync group at most")
                continue
            owner[member] = gname
            inst = _instance_settings(config, member)
            nopreempt = bool(inst.get("nopreempt"))
            roles = {str(n): _node_settings(config, inst, n).get("state") for n in inst.get("nodes") or {}}
            if shape is None:
                shape = (member, roles, nopreempt)
            elif (roles, nopreempt) != shape[1:]:
                errors.append(
                    f"{gkey}:group:{i}: {member} has other nodes, roles or nopreempt than {shape[0]}"
                    f" ({_roles_text(roles, nopreempt)} vs {_roles_text(shape[1], shape[2])}); the instances of a sync"
                    " group change state together, so each node needs the same role in all of them"
                )
            for j, tracked in enumerate(inst.get("track_interface") or []):
                if tracked is None:
                    continue
                iface, weight, _ = schema.track_interface_parts(tracked)
                if weight:
                    errors.append(
                        f"{_key('vrrp_instances', member)}:track_interface:{j}: {tracked!r} is weighted, and keepalived ignores"
                        f" the weights of a sync group's members; track it on vrrp_sync_groups:{gname}:track_interface"
                    )
                elif iface in group_tracked:
                    errors.append(
                        f"{_key('vrrp_instances', member)}:track_interface:{j}: {iface} is also tracked by vrrp_sync_groups:{gname};"
                        " keepalived refuses it twice: keep one"
                    )


def _roles_text(roles, nopreempt):
    return ", ".join(f"{n} {r}" for n, r in sorted(roles.items())) + (" nopreempt" if nopreempt else "")


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
    sockets = [schema.listen_address(x) for x in listens]  # 80, '*:80' and '0.0.0.0:80' are one socket
    for i, listen in enumerate(listens):
        if listen in listens[:i]:
            errors.append(f"{_key('nginx', 'listen', i)}: {listen} is listed twice")
        elif sockets[i] in sockets[:i]:
            errors.append(f"{_key('nginx', 'listen', i)}: {listen!r} is a second listen on {sockets[i]}")
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


WILDCARDS = ("*", "0.0.0.0", "::", "[::]")


def _endpoint(listen):
    """(host, port) of an nginx listen value (a port, ADDRESS:PORT, maybe followed by flags); None if unreadable."""
    text = str(listen).split()[0] if str(listen).split() else ""
    host, _, port = text.rpartition(":")
    try:
        return (host.strip("[]") or "*", int(port))
    except ValueError:
        return None


def metrics_endpoint(listen):
    """``(host, port)`` the metrics writer binds for ``metrics:listen``: a bare port means 127.0.0.1."""
    if isinstance(listen, int):
        return "127.0.0.1", listen
    host, port = _endpoint(listen)
    return ("0.0.0.0" if host == "*" else host), port


def _validate_metrics(errors, config):
    """The metrics port must not be one nginx listens on (the same port on an overlapping address)."""
    listen = (config.get("metrics") or {}).get("listen")
    if listen is None:
        return
    host, port = metrics_endpoint(listen)
    nginx = config.get("nginx") or {}
    taken = [("nginx:health:listen", (nginx.get("health") or {}).get("listen"))]
    if isinstance(nginx.get("listen"), list):
        taken += [(f"nginx:listen:{i}", value) for i, value in enumerate(nginx["listen"])]
    if isinstance(nginx.get("servers"), dict):  # per-server listens, where the nginx schema has them
        for name, server in nginx["servers"].items():
            listens = (server or {}).get("listen") if isinstance(server, dict) else None
            taken += [(f"nginx:servers:{name}:listen:{i}", value) for i, value in enumerate(listens or [])]
    for where, value in taken:
        other = _endpoint(value) if value is not None else None
        if other and other[1] == port and (host in WILDCARDS or other[0] in WILDCARDS or other[0] == host):
            errors.append(f"{_key('metrics', 'listen')}: {listen} is also where nginx listens (nginx_ha:{where}: {value}); the metrics need a port of their own")
            return


# The single site's own keys: with nginx:servers (or manage_sites: false) they stay unset.
SINGLE_SITE_KEYS = ("listen", "server_name", "locations")
# What manage_sites: false leaves unused: every site key (the health endpoint is all nginx-ha writes).
SITE_KEYS = SINGLE_SITE_KEYS + ("servers", "upstreams", "root", "client_max_body_size")


def _redirect_listens(listens):
    """Port 80 of each ssl listen's address (``'443 ssl'`` -> ``80``, ``'[::]:443 ssl'`` -> ``[::]:80``)."""
    out = []
    for listen in listens:
        if "ssl" not in schema.listen_flags(listen):
            continue
        address = str(listen).split()[0]
        plain = "80" if ":" not in address else address.rpartition(":")[0] + ":80"
        if plain not in out:
            out.append(plain)
    return out


def _https_url(listens):
    """Where redirect_to_https sends a request: https://$host[:port]$request_uri (the first ssl listen's port)."""
    port = next(str(l).split()[0].rpartition(":")[2] for l in listens if "ssl" in schema.listen_flags(l))
    return "https://$host" + ("" if port == "443" else f":{port}") + "$request_uri"


def _validate_site_keys(errors, nginx):
    """Single-site keys with nginx:servers, and any site key with manage_sites: false, are errors (never ignored)."""
    defaults = schema.defaults()["nginx"]
    if not nginx.get("manage_sites", True):
        for name in SITE_KEYS:
            if nginx.get(name) is not None and nginx.get(name) != defaults[name]:
                errors.append(
                    f"{_key('nginx', name)}: is set, but manage_sites: false writes no site (nginx-ha writes only"
                    " its health endpoint); remove it or set manage_sites: true"
                )
        return False
    if nginx.get("servers"):
        for name in SINGLE_SITE_KEYS:
            if nginx.get(name) is not None and nginx.get(name) != defaults[name]:
                errors.append(
                    f"{_key('nginx', name)}: belongs to the single site, which nginx:servers replaces;"
                    f" give each server its own {name} under nginx:servers:<name>"
                )
    return True


def _validate_servers(errors, nginx):
    """Cross-key checks of nginx:servers: TLS with ssl listens, redirects, one socket per address, names."""
    servers = {k: v for k, v in (nginx.get("servers") or {}).items() if isinstance(v, dict)}
    upstreams = nginx.get("upstreams") or {}
    health = (nginx.get("health") or {}).get("listen")
    health = schema.listen_address(health) if health is not None else None
    sockets, names = {}, {}
    for name, server in sorted(servers.items()):
        key = _key("nginx", "servers", name)
        listens = [str(x) for x in server.get("listen") or [] if x is not None]
        ssl_listens = [x for x in listens if "ssl" in schema.listen_flags(x)]
        addresses = [schema.listen_address(x) for x in listens]
        for i, address in enumerate(addresses):
            if address in addresses[:i]:
                errors.append(f"{key}:listen:{i}: {listens[i]!r} is a second listen on {address}")
        tls_given = [f for f in tls.FIELDS if server.get(f) is not None]
        for field in tls.FIELDS:
            if any(e.startswith(f"{key}:{field}: ") for e in errors):
                continue  # given, but not of its type: already reported
            if ssl_listens and server.get(field) is None:
                errors.append(f"{key}:{field}: is required: the server listens with ssl ({ssl_listens[0]!r})")
            elif tls_given and field not in tls_given and not ssl_listens:
                errors.append(f"{key}:{field}: is missing ({tls_given[0]} is set)")
        if tls_given and not ssl_listens:
            errors.append(f"{key}:listen: has no ssl listen, so {tls_given[0]} would never be used; add one like '443 ssl'")
        if server.get("redirect_to_https") and not ssl_listens:
            errors.append(f"{key}:redirect_to_https: needs an ssl listen to redirect to (like '443 ssl')")
        if server.get("return") is not None and server.get("locations"):
            errors.append(f"{key}:locations: would never be used: return answers every request of the server")
        for path, loc in (server.get("locations") or {}).items():
            target = (loc or {}).get("proxy_pass")
            if target is not None and target not in upstreams:
                errors.append(
                    f"{key}:locations:{path}:proxy_pass: {target!r} is not an upstream under nginx_ha:nginx:upstreams"
                    f" (known: {', '.join(sorted(map(str, upstreams))) or 'none'})"
                )
        redirects = _redirect_listens(listens) if server.get("redirect_to_https") else []
        for origin, listen in [("listen", x) for x in listens] + [("redirect_to_https", x) for x in redirects]:
            address = schema.listen_address(listen)
            if address == health:
                errors.append(f"{key}:{origin}: {listen!r} is where the health endpoint listens (nginx:health:listen); the health endpoint needs its own address:port")
            sockets.setdefault(address, []).append((name, schema.listen_flags(listen)))
            for server_name in server.get("server_name") or []:
                other = names.setdefault((address, server_name), (name, origin))
                if other != (name, origin) and origin == "redirect_to_https" and other[0] == name:
                    errors.append(f"{key}:redirect_to_https: its listen {listen!r} is already in the server's listen")
                elif other[0] != name:
                    errors.append(f"{key}:server_name: {server_name} on {address} is also a name of server {other[0]} there; nginx would ignore one of them")
    for address, users in sorted(sockets.items()):
        # ssl and http2 belong to the socket: one server's flag would apply to every server there
        for flag in ("ssl", "http2"):
            with_flag = sorted({n for n, flags in users if flag in flags})
            without = sorted({n for n, flags in users if flag not in flags})
            if with_flag and without:
                errors.append(
                    f"{_key('nginx', 'servers')}: {address} is an {flag} listen of {', '.join(with_flag)} but not of"
                    f" {', '.join(without)}; nginx has one socket there: give every listen on {address} {flag}, or none"
                )
        defaults = sorted({n for n, flags in users if "default_server" in flags})
        if len(defaults) > 1:
            errors.append(f"{_key('nginx', 'servers')}: {address} has default_server in {', '.join(defaults)}; nginx allows one per address")


def sites(nginx, tls_dir):
    """
    The server blocks nginx-ha writes, in order (what the site template renders): the single site
    (``nginx:listen``, ``server_name``, ``root``, ``locations``) when ``nginx:servers`` is empty,
    else each server in name order followed by its redirect to https; none with
    ``manage_sites: false``. TLS paths are where nginx reads them (never PEM text).
    """
    if not nginx.get("manage_sites", True):
        return []
    if not nginx.get("servers"):
        return [
            {
                "name": "default",
                "listen": [f"{x} default_server" if i == 0 else str(x) for i, x in enumerate(nginx["listen"])],
                "server_name": list(nginx["server_name"]),
                "root": nginx["root"],
                "try_files": True,
                "locations": nginx["locations"],
                "return": None,
                "client_max_body_size": nginx["client_max_body_size"],
                "ssl_certificate": None,
                "ssl_certificate_key": None,
            }
        ]
    paths = {m["server"]: m for m in tls.plan(nginx, tls_dir)}
    out = []
    for name, server in sorted(nginx["servers"].items()):
        listens = [str(x) for x in server["listen"]]
        ret = server["return"].split(" ", 1) if server["return"] is not None else None
        out.append(
            {
                "name": name,
                "listen": listens,
                "server_name": list(server["server_name"]),
                "root": server["root"] or nginx["root"],
                "try_files": ret is None and "/" not in server["locations"],
                "locations": {} if ret else server["locations"],
                "return": {"code": ret[0], "url": ret[1] if len(ret) > 1 else None} if ret else None,
                "client_max_body_size": server["client_max_body_size"] or nginx["client_max_body_size"],
                "ssl_certificate": paths.get(name, {}).get("ssl_certificate"),
                "ssl_certificate_key": paths.get(name, {}).get("ssl_certificate_key"),
            }
        )
        if server["redirect_to_https"]:
            out.append(
                {
                    "name": f"{name} (redirect_to_https)",
                    "listen": _redirect_listens(listens),
                    "server_name": list(server["server_name"]),
                    "root": None,
                    "try_files": False,
                    "locations": {},
                    "return": {"code": "301", "url": _https_url(listens)},
                    "client_max_body_size": None,
                    "ssl_certificate": None,
                    "ssl_certificate_key": None,
                }
            )
    return out


def normalize(config):
    """Type and fill ``config`` through the schema and check what spans keys; raise ModelError."""
    errors = []
    typed = schema.check(schema.SCHEMA, config, PILLAR_ROOT, errors)
    if isinstance(typed, dict):
        seen_vrids, seen_vips = {}, {}
        for name in typed.get("vrrp_instances") or {}:
            _validate_instance(errors, typed, name, seen_vrids, seen_vips)
        _validate_sync_groups(errors, typed)
        _validate_nginx(errors, typed.get("nginx") or {})
        if _validate_site_keys(errors, typed.get("nginx") or {}):
            _validate_servers(errors, typed.get("nginx") or {})
        _validate_metrics(errors, typed)
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


def _route_text(route):
    """A virtual_routes entry as keepalived reads it: ``[TYPE] TO [src S] [via V] [dev D] [scope S] [table T] [metric M] [no_track]``."""
    words = [] if route["type"] == "unicast" else [route["type"]]
    words.append(route["to"])
    for name in ("src", "via", "dev", "scope", "table", "metric"):
        if route.get(name) is not None:
            words += [name, str(route[name])]
    return " ".join(words + (["no_track"] if route.get("no_track") else []))


def _rule_text(rule):
    """A virtual_rules entry as keepalived reads it: ``[from F] [to T] [iif I] [oif O] [fwmark M] table T priority P [no_track]``."""
    words = []
    for name in ("from", "to", "iif", "oif", "fwmark", "table", "priority"):
        if rule.get(name) is not None:
            words += [name, str(rule[name])]
    return " ".join(words + (["no_track"] if rule.get("no_track") else []))


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
        # keepalived's vocabulary (keepalived.conf.jinja writes each as keepalived spells it)
        "virtual_ipaddress_excluded": _vip_entries(inst.get("virtual_ipaddress_excluded") or [], interface),
        "virtual_routes": [_route_text(r) for r in inst.get("virtual_routes") or []],
        "virtual_rules": [_rule_text(r) for r in inst.get("virtual_rules") or []],
        "track_interface": list(inst.get("track_interface") or []),
        "garp": {k: inst[k] for k in GARP_KEYS if inst.get(k) is not None},
        "authentication": inst.get("authentication"),
        "hooks": {k: list(inst[k]) for k in HOOK_KINDS if inst.get(k)},
        "notify_timeout": inst.get("notify_timeout", 10),
        "sync_group": next(
            (str(g) for g, grp in sorted((config.get("vrrp_sync_groups") or {}).items()) if name in ((grp or {}).get("group") or [])), None
        ),
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


METRICS_LOCK = "/run/nginx_ha_metrics.lock"  # one metrics writer per host holds it
CHECK_SCRIPT = "nginx_ha_check"  # the vrrp_script of keepalived.conf.jinja


def metrics_settings(view, lookup):
    """
    What the metrics writer reads (``<script_dir>/metrics.json``, beside health.json): data, never
    script text. None when the metrics are off (neither ``metrics:textfile`` nor ``metrics:listen``).
    """
    metrics = view.get("metrics") or {}
    if not metrics.get("textfile") and metrics.get("listen") is None:
        return None
    listen = None
    if metrics.get("listen") is not None:
        host, port = metrics_endpoint(metrics["listen"])
        listen = {"host": host, "port": port}
    keepalived = lookup["keepalived"]
    watcher = view["check"]["watcher"]
    return {
        "node": view["id"],
        "textfile": metrics.get("textfile"),
        "listen": listen,
        "interval": metrics["interval"],
        "lock_file": METRICS_LOCK,
        # the execution module's lock for keepalived's dumps (nginx_ha._keepalived_dump)
        "dump_lock": os.path.join(os.path.dirname(keepalived["pidfile"]), "nginx_ha.dump.lock"),
        "keepalived": {
            "binary": keepalived["binary"],
            "pidfile": keepalived["pidfile"],
            "config": keepalived["config"],  # a change (a reload on its way) asks keepalived again
            "json_dump": keepalived["json_dump"],
            # keepalived writes its data dump (--signum=DATA) beside the JSON one
            "data_dump": os.path.join(os.path.dirname(keepalived["json_dump"]), "keepalived.data"),
        },
        "ip": lookup["ip"],
        "check_script": CHECK_SCRIPT,
        "watcher_state_file": watcher["state_file"] if watcher["enabled"] else None,
        "maintenance_file": os.path.join(keepalived["script_dir"], "maintenance"),
        "instances": [
            {
                "name": inst["name"],
                "role": inst["role"],
                "vips": [{"ip": vip["ip"], "interface": vip["interface"]} for vip in inst["virtual_ipaddress"]],
            }
            for inst in view["instances"]
        ],
    }


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
    # the cluster this node belongs to (nginx_ha:cluster) and all of its nodes: what the fleet view
    # groups by and queries answer without the master
    view["cluster_nodes"] = members
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
    _nginx_sites(view["nginx"], config["lookup"]["nginx"]["tls_dir"])
    view["global_defs"] = dict(view.get("global_defs") or {})
    view["global_defs"].setdefault("router_id", minion_id)
    view["local_vip"] = bool(view.get("local_vip", False))
    # local_vip: each VIP of this node once (host prefix), and the interfaces keepalived puts VIPs on
    view["local_vips"], view["vrrp_interfaces"] = [], []
    for inst in view["instances"]:
        for vip in inst["virtual_ipaddress"] + inst["virtual_ipaddress_excluded"]:
            host = f"{vip['ip']}/{128 if ':' in vip['ip'] else 32}"
            if host not in view["local_vips"]:
                view["local_vips"].append(host)
            if vip["interface"] not in view["vrrp_interfaces"]:
                view["vrrp_interfaces"].append(vip["interface"])
    _vrrp_extras(view, config)
    view["firewall"]["vrrp"] = firewall_vrrp(view["instances"])
    view["metrics_settings"] = metrics_settings(view, config["lookup"])
    return view


NOTIFY_HOOKS = "notify_hooks"  # <script_dir>/notify_hooks.py and notify_hooks.json


def _vrrp_extras(view, config):
    """
    What IPv6, sync groups and the notify hooks add to the node view:

    * ``ipv6``: the node holds an IPv6 VIP (net.ipv6.ip_nonlocal_bind, nginx's [::] listens);
    * ``sync_groups``: this node's vrrp_sync_groups ``[{name, group, track_interface}]``;
    * ``notify_hooks``: the settings notify_hooks.py reads (None without hooks): per instance and
      kind, the programs as argv lists with their timeout; with a ``notify`` hook, the events'
      notify script (events:notify_script) runs through it too (keepalived takes one ``notify``);
    * ``interfaces``: every interface keepalived.conf names (besides lo);
    * each nginx site's ``listen_ipv6``: ``[::]:PORT`` twins of its IPv4 wildcard listens.
    """
    instances = view["instances"]
    mine = {inst["name"] for inst in instances}
    view["ipv6"] = any(":" in vip["ip"] for inst in instances for vip in inst["virtual_ipaddress"] + inst["virtual_ipaddress_excluded"])
    view["sync_groups"] = [
        {"name": str(name), "group": list(group["group"]), "track_interface": list(group.get("track_interface") or [])}
        for name, group in sorted((config.get("vrrp_sync_groups") or {}).items())
        if set(group["group"]) <= mine
    ]
    script_dir = config["lookup"]["keepalived"]["script_dir"]
    hooks = {}
    for inst in instances:
        kinds = {kind: [{"argv": argv, "timeout": inst["notify_timeout"]}] for kind, argv in inst["hooks"].items()}
        if "notify" in kinds and view["events"]["notify_script"]:
            kinds["notify"].append({"argv": [f"{script_dir}/notify_event.sh"], "timeout": view["events"]["notify_script_timeout"] + 5})
        if kinds:
            hooks[inst["name"]] = kinds
    view["notify_hooks"] = {"instances": hooks} if hooks else None
    names = []
    for inst in instances:
        names.append(inst["interface"])
        names += [v["interface"] for v in inst["virtual_ipaddress"] + inst["virtual_ipaddress_excluded"]]
        names += [schema.track_interface_parts(t)[0] for t in inst["track_interface"]]
        names += [w[i + 1] for w in map(str.split, inst["virtual_routes"] + inst["virtual_rules"]) for i in range(len(w) - 1) if w[i] in ("dev", "iif", "oif")]
    names += [schema.track_interface_parts(t)[0] for g in view["sync_groups"] for t in g["track_interface"]]
    view["interfaces"] = sorted({n for n in names if n and n != "lo"})
    _ipv6_listens(view)


def _ipv6_listens(view):
    """
    nginx's ``listen 80`` / ``listen *:80`` is IPv4 only: on a node with an IPv6 VIP each site also
    listens on ``[::]:80`` (same flags), unless some site already lists an IPv6 wildcard listen on
    that port (then the pillar manages IPv6 listens there).
    """
    sites = (view.get("nginx") or {}).get("sites") or []
    explicit = {str(l).split()[0].rpartition(":")[2] for s in sites for l in s.get("listen") or [] if str(l).startswith("[::]:")}
    for site in sites:
        site["listen_ipv6"] = []
        for listen in site.get("listen") or [] if view["ipv6"] else []:
            words = str(listen).split()
            host, _, port = words[0].rpartition(":") if ":" in words[0] else ("", "", words[0])
            if host in ("", "*") and port.isdigit() and port not in explicit:
                twin = " ".join([f"[::]:{port}"] + words[1:])
                if twin not in site["listen_ipv6"]:
                    site["listen_ipv6"].append(twin)


def _nginx_sites(nginx, tls_dir):
    """
    The view's nginx: ``sites`` (the server blocks to render), ``tls`` (what nginx_ha_certs
    checks and writes: paths only) and ``index_page`` / ``remove_default_site`` as they take effect
    (both off with ``manage_sites: false``). PEM text never enters the view (it is rendered into
    SLS files, recorded in node.json and returned by nginx_ha.node_config): each server's
    ssl_certificate / ssl_certificate_key becomes the path nginx reads.
    """
    nginx["sites"] = sites(nginx, tls_dir)
    nginx["tls"] = tls.plan(nginx, tls_dir)
    for material in nginx["tls"]:
        server = nginx["servers"][material["server"]]
        for field in tls.FIELDS:
            server[field] = material[field]
    if not nginx["manage_sites"]:
        nginx["index_page"] = nginx["remove_default_site"] = False


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
