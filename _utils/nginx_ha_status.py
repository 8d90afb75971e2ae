"""
Parse what keepalived and the kernel say about VRRP on this host (pure Python, no Salt calls).

* ``parse_keepalived_json(text)``: keepalived's JSON data dump (``kill -s $(keepalived
  --signum=JSON)``, written to ``/tmp/keepalived.json``) -> ``{instance: {...}}``.
* ``parse_ip_addr(text)``: ``ip -j addr`` -> ``{address: [interface, ...]}`` (IPv4 and IPv6, in
  ``ipaddress``'s canonical text, as the node view writes VIPs; tentative or dadfailed IPv6 left out).
* ``instance_status(...)``: join the configured instance, keepalived's view and the kernel's.
"""

import datetime
import ipaddress
import json

__virtualname__ = "nginx_ha_status"

# keepalived's vrrp.h: VRRP_STATE_INIT 0, BACK 1, MAST 2, FAULT 3, DELETED 97, STOP 98.
KEEPALIVED_STATES = {0: "INIT", 1: "BACKUP", 2: "MASTER", 3: "FAULT", 97: "DELETED", 98: "STOP"}


def __virtual__():
    return __virtualname__


def _iso(timestamp):
    if not timestamp:
        return None
    return datetime.datetime.fromtimestamp(float(timestamp), tz=datetime.timezone.utc).isoformat()


def parse_keepalived_json(text):
    """
    Return ``{instance: {state, wantstate, base_priority, effective_priority, last_transition,
    last_transition_iso, vrid, interface, vips, nopreempt, stats}}`` from keepalived's JSON dump.
    Raises ``ValueError`` when the text is not such a dump.
    """
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError("keepalived JSON dump is not a list of instances")
    result = {}
    for entry in data:
        inst = entry.get("data") if isinstance(entry, dict) else None
        if not isinstance(inst, dict) or "iname" not in inst:
            raise ValueError(f"keepalived JSON dump entry without data.iname: {entry!r:.200}")
        result[inst["iname"]] = {
            "state": KEEPALIVED_STATES.get(inst.get("state"), f"UNKNOWN({inst.get('state')})"),
            "wantstate": KEEPALIVED_STATES.get(inst.get("wantstate"), f"UNKNOWN({inst.get('wantstate')})"),
            "base_priority": inst.get("base_priority"),
            "effective_priority": inst.get("effective_priority"),
            "last_transition": inst.get("last_transition"),
            "last_transition_iso": _iso(inst.get("last_transition")),
            "vrid": inst.get("vrid"),
            "interface": inst.get("ifp_ifname"),
            "vips": [str(vip).split()[0] for vip in inst.get("vips", [])],
            "nopreempt": bool(inst.get("nopreempt")),
            "stats": entry.get("stats", {}),
        }
    return result


# An IPv6 address the kernel has but does not use: duplicate address detection still running
# (tentative) or failed (dadfailed). keepalived adds its IPv6 VIPs with nodad, so a VIP in either
# state was added by someone else, or collided with another node's: it is not held.
UNUSABLE_FLAGS = ("tentative", "dadfailed")


def parse_ip_addr(text):
    """``ip -j addr`` output -> ``{ip: [interface, ...]}`` for every usable address on the host (IPv4 and IPv6)."""
    addresses = {}
    for link in json.loads(text or "[]"):
        for info in link.get("addr_info", []):
            if "local" in info and not any(info.get(flag) for flag in UNUSABLE_FLAGS):
                ifaces = addresses.setdefault(str(ipaddress.ip_address(info["local"])), [])
                if link.get("ifname") not in ifaces:
                    ifaces.append(link.get("ifname"))
    return addresses


def instance_status(configured, keepalived, local_addresses, keepalived_running):
    """
    One instance's status: the VIPs it should hold, which of them the kernel has right now, and
    keepalived's own state. ``configured`` is the instance from ``nginx_ha_model.node_view``;
    ``keepalived`` its entry from ``parse_keepalived_json`` (or None).
    """
    # its VIPs, IPv4 or IPv6, and the excluded ones (not in the adverts, but they move with the instance)
    entries = configured["virtual_ipaddress"] + configured.get("virtual_ipaddress_excluded", [])
    vips = [vip["ip"] for vip in entries]
    # on its VRRP interface: with local_vip every node also has the VIPs on lo, which is not holding them
    present = [vip["ip"] for vip in entries if vip["interface"] in local_addresses.get(vip["ip"], ())]
    if not keepalived_running:
        state = "STOP"
    elif keepalived is None:
        state = "UNKNOWN"  # running, but this instance is not in its configuration (not reloaded yet?)
    else:
        state = keepalived["state"]
    status = {
        "vips": vips,
        "vips_present": present,
        "holds_vip": bool(vips) and len(present) == len(vips),
        "state": state,
        "role": configured["role"],
        "interface": configured["interface"],
        "virtual_router_id": configured["virtual_router_id"],
        "base_priority": keepalived["base_priority"] if keepalived else configured["priority"],
        "effective_priority": keepalived["effective_priority"] if keepalived else None,
        "last_transition": keepalived["last_transition_iso"] if keepalived else None,
        "peers": configured["peers"],
    }
    if keepalived is None and keepalived_running:
        status["comment"] = "keepalived is running but does not know this instance; reload keepalived (state.apply nginx_ha)"
    elif not keepalived_running:
        status["comment"] = "keepalived is not running"
    return status
