"""
nginx-ha masterless (issue 11): ``salt-call --local state.apply nginx_ha`` on a lab host with no
Salt master anywhere (``Lab(salt=False)``): the minion configuration, the pillar (top.sls +
nginx_ha.sls) and Salt's cache are the host's own (/srv, /var/cache/salt); file_roots is this
checkout's ``salt/`` directory (the host sees the checkout at its path), whose ``_modules``,
``_states``, ``_utils`` and ``_engines`` links give ``saltutil.sync_all`` the extensions.

* ``saltutil.sync_all`` then ``state.apply nginx_ha`` succeed; nginx serves the node's page through
  the VIP (the client requests it) and keepalived runs and holds the VIP;
* the queries answer masterless (``nginx_ha.is_master``, ``nginx_ha.health``);
* a second ``state.apply nginx_ha`` changes nothing.
"""

import json
import shlex

import pytest
import yaml

from lab import Lab
from tests.cluster.support import REPO, VIP, served_by, vip_holders, wait_for

pytestmark = pytest.mark.cluster

NODE = "web-a"
CONF_DIR = "/srv/nginx-ha-masterless"  # /srv is private to each lab host
PILLAR_DIR = f"{CONF_DIR}/pillar"

# What an operator without a master writes: the cluster, and the events turned off: without a
# salt-minion there is no engine to read keepalived's notify FIFO and no minion to restart (the
# default restart would run `salt-call --local service.restart salt-minion`, which fails in the
# background). The lab hosts have no network beyond the lab: no package database refresh. web-b
# is in the cluster but not in this lab, so web-a is MASTER alone.
PILLAR = {
    "pkg_refresh": False,
    "events": {"notify_fifo": False, "restart_minion": False},
    "vrrp_instances": {
        "VI_web": {
            "interface": "eth0",
            "virtual_router_id": 68,
            "advert_int": 1,
            "virtual_ipaddress": [f"{VIP}/24"],
            "nodes": {"web-a": {"state": "MASTER", "priority": 100}, "web-b": {"state": "BACKUP", "priority": 99}},
        }
    },
}

MINION = {
    "id": NODE,
    "file_client": "local",
    "file_roots": {"base": [str(REPO / "salt")]},
    "pillar_roots": {"base": [PILLAR_DIR]},
    "log_file": "/var/log/salt/masterless",
    "log_level_logfile": "info",
}


@pytest.fixture(scope="module")
def lab():
    with Lab(minions=(NODE,), salt=False) as lab:
        host = lab.host(NODE)
        host.run(["mkdir", "-p", PILLAR_DIR], check=True)
        host.write_file(f"{CONF_DIR}/minion", yaml.safe_dump(MINION))
        host.write_file(f"{PILLAR_DIR}/top.sls", "base:\n  '*':\n    - nginx_ha\n")
        host.write_file(f"{PILLAR_DIR}/nginx_ha.sls", yaml.safe_dump({"nginx_ha": PILLAR}))
        yield lab


def salt_call(lab, *args, timeout=300):
    """``salt-call -c CONF_DIR --local --out json <args>`` in the host: (exit code, its return)."""
    argv = ["salt-call", "-c", CONF_DIR, "--local", "--out", "json", *args]
    res = lab.host(NODE).run(argv, timeout=timeout)
    try:
        data = json.JSONDecoder().raw_decode(res.stdout.lstrip())[0]["local"]  # the first document: salt-call's
    except (ValueError, KeyError):
        raise AssertionError(f"{shlex.join(argv)}: exit {res.returncode}\n{res.stdout}\n{res.stderr}") from None
    return res.returncode, data


def results(ret):
    assert isinstance(ret, dict), ret
    return {v["__id__"]: v for v in ret.values()}


def test_sync_all_brings_the_extensions_from_the_local_file_roots(lab):
    assert lab.host(NODE).run("pgrep -f 'bin/[s]alt-(master|minion)'").returncode != 0  # no Salt daemon in this lab
    code, synced = salt_call(lab, "saltutil.sync_all")
    assert code == 0, synced
    assert "modules.nginx_ha" in synced["modules"] and "states.nginx_ha" in synced["states"], synced
    assert "utils.nginx_ha_schema" in synced["utils"], synced


def test_state_apply_succeeds_and_the_node_serves_through_the_vip(lab):
    code, ret = salt_call(lab, "state.apply", "nginx_ha")
    bad = {sid: r["comment"] for sid, r in results(ret).items() if r["result"] is not True}
    assert code == 0 and bad == {}, bad
    wait_for(lambda: vip_holders(lab, (NODE,)) == [NODE], 15, what="VIP on web-a")
    wait_for(lambda: served_by(lab) == NODE, 10, what="web-a's page through the VIP")
    host = lab.host(NODE)
    assert host.run("kill -0 $(cat /run/keepalived.pid)").returncode == 0
    assert host.run("kill -0 $(cat /run/nginx.pid)").returncode == 0


def test_the_queries_answer_without_a_master(lab):
    code, master = salt_call(lab, "nginx_ha.is_master", "VI_web", timeout=60)
    assert code == 0 and master is True
    code, health = salt_call(lab, "nginx_ha.health", timeout=60)
    assert code == 0 and health["healthy"] is True, health


def test_second_apply_changes_nothing(lab):
    code, ret = salt_call(lab, "state.apply", "nginx_ha")
    assert code == 0
    changes = {sid: r["changes"] for sid, r in results(ret).items() if r["changes"]}
    assert changes == {}, changes
    assert served_by(lab) == NODE
