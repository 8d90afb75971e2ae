"""
nginx-ha fleet view, from the master: who holds each VIP, split brain, no owner, and every node
that cannot serve or cannot be seen.

Asks every cluster node for ``nginx_ha.vip_status`` and ``nginx_ha.health`` and joins the answers
per VIP and per node. Nodes that do not answer are listed, never dropped; a node that answered
with an error is told apart from one that did not answer; a target that matches no minion is a
problem, never an empty OK.

Install on the master with ``runner_dirs`` (see ``conf/master.d/nginx_ha.conf``), or as the Salt
extension (``pip install .`` of the checkout: ``pyproject.toml``).
"""

import logging

import salt.client
import salt.utils.minions

log = logging.getLogger(__name__)

__virtualname__ = "nginx_ha"

DEFAULT_TARGET = "I@nginx_ha:vrrp_instances"
VIP_STATUS = "nginx_ha.vip_status"
HEALTH = "nginx_ha.health"
# What nginx_ha.vip_status (node_config) says on a minion that has the pillar but no role.
_NO_ROLE = "is not a node of any instance"
_FIT_STATES = ("MASTER", "BACKUP")


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


def _per_node_problems(statuses, healths, degraded, add):
    for minion, instances in sorted(statuses.items()):
        if not isinstance(instances, dict):
            continue
        mine = sorted(instances)
        for name in mine:
            inst = instances[name]
            if isinstance(inst, dict) and inst.get("state") == "FAULT":
                add(f"FAULT: {minion} is in FAULT state for {name}", "FAULT", "critical" if name in degraded else "warning", node=minion, instance=name)
        health = healths.get(minion)
        if not isinstance(health, dict):
            continue
        without = [name for name in mine if name in degraded]
        if health.get("healthy") is False:
            add(
                f"UNHEALTHY: {minion} is not healthy ({'; '.join(_unhealthy_reasons(health))})",
                "UNHEALTHY",
                "critical" if without else "warning",
                node=minion,
                instance=without[0] if without else None,
            )
        if health.get("maintenance") is True:
            add(f"MAINTENANCE: {minion} is in maintenance (kept out of MASTER)", "MAINTENANCE", "warning", node=minion)


def summarize(statuses, healths, expected, errors=None, target=None):
    """
    Join per-node answers into the fleet view (pure; unit-tested).

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

    Problems (``problems``, with ``problem_info[problem] = {kind, severity, node, instance}``):
    SPLIT-BRAIN, NO-OWNER (per VIP, critical); NO-NODES (nothing matched, critical); FAULT and
    UNHEALTHY (critical when the node's instance is left without a healthy standby, i.e. fewer
    than two of its nodes fit to serve, else warning); MAINTENANCE, NO-ROLE, ERROR, NO-ANSWER
    (warning).
    """
    errors = errors or {}
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
    answered = set(statuses) | {m for m, e in errors.items() if VIP_STATUS in (e or {})}
    unreachable = sorted((set(expected) | peers_seen) - answered)
    members = {}
    for minion, instances in statuses.items():
        for name in instances if isinstance(instances, dict) else ():
            members.setdefault(name, set()).update(_instance_members(statuses, name))
    degraded = sorted(name for name, nodes in members.items() if sum(_fit(m, name, statuses, healths) for m in nodes) < 2)
    problems, info = [], {}

    def add(problem, kind, severity, node=None, instance=None):
        problems.append(problem)
        info[problem] = {"kind": kind, "severity": severity, "node": node, "instance": instance}

    if not expected and not statuses and not errors:
        add(f"NO-NODES: target {target or DEFAULT_TARGET} matched no minion", "NO-NODES", "critical")
    for vip, entry in sorted(vips.items()):
        owners = sorted(set(entry["holders"]) | set(entry["masters"]))
        entry["owner"] = entry["holders"][0] if len(entry["holders"]) == 1 else None
        entry["backups"] = sorted(m for m, n in entry["nodes"].items() if n["state"] == "BACKUP" and not n["holds_vip"])
        entry["unreachable"] = [m for m in unreachable if m in _instance_members(statuses, entry["instance"])]
        if len(owners) > 1:
            entry["status"] = "SPLIT-BRAIN"
            add(f"SPLIT-BRAIN: {vip} ({entry['instance']}) is held by {', '.join(owners)}", "SPLIT-BRAIN", "critical", instance=entry["instance"])
        elif not entry["holders"]:
            entry["status"] = "NO-OWNER"
            add(f"NO-OWNER: {vip} ({entry['instance']}) is held by no node", "NO-OWNER", "critical", instance=entry["instance"])
        else:
            entry["status"] = "OK"
    _per_node_problems(statuses, healths, degraded, add)
    for minion, failed in sorted(errors.items()):
        for fun, text in sorted((failed or {}).items()):
            if fun == VIP_STATUS and _NO_ROLE in str(text):
                add(f"NO-ROLE: {minion} has the nginx_ha pillar but no role in any instance", "NO-ROLE", "warning", node=minion)
            else:
                add(f"ERROR: {minion} answered {fun} with an error: {str(text)[:200]}", "ERROR", "warning", node=minion)
    for minion in unreachable:
        add(f"NO-ANSWER: {minion} did not answer", "NO-ANSWER", "warning", node=minion)
    return {
        "vips": vips,
        "unreachable": unreachable,
        "errors": errors,
        "degraded": degraded,
        "problems": problems,
        "problem_info": info,
        "ok": not problems,
    }


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
    SPLIT-BRAIN (a VIP held by more than one node) and NO-OWNER (held by nobody); per node: FAULT,
    UNHEALTHY, MAINTENANCE, NO-ROLE (has the pillar but no role in any instance), ERROR (answered
    with an error) and NO-ANSWER (did not answer, listed under ``unreachable``); and NO-NODES when
    the target matches no minion. ``problem_info`` gives each problem's kind and severity. The
    return code is 1 when there is any problem.

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
