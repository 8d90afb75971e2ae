"""
nginx-ha fleet view, from the master: who holds each VIP, split brain, no owner.

Asks every cluster node for ``nginx_ha.vip_status`` and ``nginx_ha.health`` and joins the answers
per VIP. Nodes that do not answer are listed, never dropped.

Install on the master with ``runner_dirs`` (see ``conf/master.d/nginx_ha.conf``).
"""

import logging

import salt.client
import salt.utils.minions

log = logging.getLogger(__name__)

__virtualname__ = "nginx_ha"

DEFAULT_TARGET = "I@nginx_ha:vrrp_instances"


def __virtual__():
    return __virtualname__


def _ask(client, minions, fun, timeout):
    if not minions:
        return {}
    ret = client.cmd(minions, fun, tgt_type="list", timeout=timeout, full_return=True)
    return {mid: r.get("ret") for mid, r in ret.items() if isinstance(r, dict) and r.get("retcode", 0) == 0}


def summarize(statuses, healths, expected):
    """
    Join per-node answers into the fleet view (pure; unit-tested).

    statuses
        ``{minion: nginx_ha.vip_status answer}`` from the nodes that answered.
    healths
        ``{minion: nginx_ha.health answer}``.
    expected
        Minion ids that were asked.
    """
    vips = {}
    peers_seen = set()
    for minion, instances in sorted(statuses.items()):
        if not isinstance(instances, dict):
            continue
        for name, inst in sorted(instances.items()):
            peers_seen.update(inst.get("peers", []))
            for vip in inst.get("vips", []):
                entry = vips.setdefault(vip, {"instance": name, "holders": [], "masters": [], "nodes": {}})
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
    unreachable = sorted((set(expected) | peers_seen) - set(statuses))
    problems = []
    for vip, entry in sorted(vips.items()):
        owners = sorted(set(entry["holders"]) | set(entry["masters"]))
        entry["owner"] = entry["holders"][0] if len(entry["holders"]) == 1 else None
        entry["backups"] = sorted(m for m, n in entry["nodes"].items() if n["state"] == "BACKUP" and not n["holds_vip"])
        entry["unreachable"] = [m for m in unreachable if m in _instance_members(statuses, entry["instance"])]
        if len(owners) > 1:
            entry["status"] = "SPLIT-BRAIN"
            problems.append(f"SPLIT-BRAIN: {vip} ({entry['instance']}) is held by {', '.join(owners)}")
        elif not entry["holders"]:
            entry["status"] = "NO-OWNER"
            problems.append(f"NO-OWNER: {vip} ({entry['instance']}) is held by no node")
        else:
            entry["status"] = "OK"
    for minion in unreachable:
        problems.append(f"NO-ANSWER: {minion} did not answer")
    return {"vips": vips, "unreachable": unreachable, "problems": problems, "ok": not problems}


def _instance_members(statuses, instance):
    members = set()
    for minion, instances in statuses.items():
        if isinstance(instances, dict) and instance in instances:
            members.add(minion)
            members.update(instances[instance].get("peers", []))
    return members


def status(tgt=DEFAULT_TARGET, tgt_type="compound", timeout=5):
    """
    Show, per VIP: the owner, the backups, each node's VRRP state, priority and health, and flag
    SPLIT-BRAIN (a VIP held by more than one node) and NO-OWNER (held by nobody). Nodes that do
    not answer are listed under ``unreachable``. The return code is 1 when there is any problem.

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
        statuses = _ask(client, expected, "nginx_ha.vip_status", timeout)
        healths = _ask(client, sorted(statuses), "nginx_ha.health", timeout)
    view = summarize(statuses, healths, expected)
    # salt-run exits with the "retcode" of a returned dict (as orchestrate does).
    view["retcode"] = 0 if view["ok"] else 1
    if not view["ok"]:
        __context__["retcode"] = 1
    return view
