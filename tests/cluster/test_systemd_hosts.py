"""
The nginx_ha formula on systemd hosts: ``Lab(init="systemd")``, where each host's PID 1 is Debian's
systemd in a cgroup subtree and cgroup namespace of the lab's own, salt-minion / salt-master run as
units, keepalived and nginx from Debian's own units.

What an operator's systemd machine does and the sysvinit lab cannot show: Salt picks
``systemd_service``, enables and starts the units, reloads go through ``systemctl reload``, every
daemon lives in its unit's cgroup (the health watcher in keepalived's), a stopped nginx fails the VIP
over, the minion restarts through its unit (the lab's command and the formula's default
``salt-call --local service.restart salt-minion``), a power cycle brings the services back at boot,
and nothing of the lab's cgroups is left, even after its owner is SIGKILLed.
"""

import os
import pathlib
import signal
import subprocess
import sys
import types

import pytest

from lab import Lab, minion_restart_cmd
from lab import cgroup as lab_cgroup
from lab.cleanup import cleanup, leftovers
from lab.init import SYSTEMD
from tests.cluster.support import (
    apply,
    base_pillar,
    changed,
    failed,
    pillar_directory,
    served_by,
    state_results,
    vip_holders,
    wait_for,
    write_pillar,
)

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not os.access(SYSTEMD, os.X_OK) or lab_cgroup.cgroup2_root() is None,
                       reason="needs Debian's systemd and a cgroup2 hierarchy"),
]

REPO = pathlib.Path(__file__).resolve().parents[2]
NODES = ("web-a", "web-b")
SITE_CONF = "/etc/nginx/conf.d/nginx_ha.conf"


def systemd_pillar(**events):
    pillar = base_pillar()
    pillar["events"] = {"minion_restart_cmd": minion_restart_cmd("systemd"), **events}
    return pillar


def unit_prop(host, unit, prop):
    return host.run(["systemctl", "show", f"--property={prop}", "--value", unit], check=True).stdout.strip()


def cgroup_of(host, pid):
    """The cgroup v2 line of /proc/<pid>/cgroup, read inside the host (its cgroup namespace)."""
    lines = host.read_file(f"/proc/{pid}/cgroup").splitlines()
    return next(line[3:] for line in lines if line.startswith("0::"))


def apply_all(lab):
    """state.apply nginx_ha on both nodes in one job (in parallel); waits for restarted minions."""
    before = {node: lab.minion_pid(node) for node in NODES}
    rets = lab.salt(",".join(NODES), "state.apply", "nginx_ha", tgt_type="list", timeout=300)
    for node in NODES:
        if any(v.get("__id__") == "nginx_ha_events_minion_restart" and v.get("changes")
               for v in state_results(rets[node]).values()):
            lab.wait_minion_restart(node, before[node])
    return rets


def machine_cgroups():
    return sorted(set(os.listdir(lab_cgroup.cgroup2_root())) - {lab_cgroup.PARENT})


@pytest.fixture(scope="module")
def env():
    root_before = machine_cgroups()
    with pillar_directory(systemd_pillar()) as pillar_dir:
        with Lab(minions=NODES, pillar_dir=str(pillar_dir), file_roots=[str(REPO / "salt")], init="systemd") as lab:
            run_id = lab.run_id
            lab.salt(",".join(NODES), "saltutil.sync_all", tgt_type="list", timeout=120)
            before = {n: (lab.minion_pid(n), unit_prop(lab.host(n), "salt-minion", "InvocationID")) for n in NODES}
            first = apply_all(lab)  # restarts the minions (new engine configuration) and waits for them
            minion = {n: (before[n], (lab.minion_pid(n), unit_prop(lab.host(n), "salt-minion", "InvocationID")))
                      for n in NODES}
            for node in NODES:
                assert failed(first[node]) == {}, (node, failed(first[node]))
            wait_for(lambda: vip_holders(lab) == ["web-a"], 15, what="VIP on web-a")
            wait_for(lambda: served_by(lab) == "web-a", 10, what="web-a's page through the VIP")
            yield types.SimpleNamespace(lab=lab, pillar_dir=pillar_dir, first=first, minion=minion,
                                        root_before=root_before)
    assert leftovers({run_id}) == []
    assert not os.path.exists(lab_cgroup.run_cgroup(run_id))
    assert machine_cgroups() == root_before  # nothing created (or removed) outside nginx-ha-lab/


def test_pid1_is_systemd_in_a_cgroup_subtree_of_the_lab(env):
    lab = env.lab
    for host in lab.hosts.values():
        assert host.init == "systemd"
        assert host.read_file("/proc/1/comm").strip() == "systemd", host.name
        assert host.run("systemctl is-system-running").stdout.strip() == "running", host.name
        assert cgroup_of(host, 1) == "/init.scope", host.name  # its cgroup namespace starts at its subtree
        # seen from the machine: below the lab's own parent, never at the hierarchy's root
        with open(f"/proc/{host.pid}/cgroup") as fh:
            assert f"0::/{lab_cgroup.PARENT}/{lab.run_id}/{host.name}/init.scope\n" in fh.read(), host.name
        assert host.read_file("/etc/hostname").strip() == host.name == host.run("hostname").stdout.strip()
    assert len({h.read_file("/etc/machine-id") for h in lab.hosts.values()}) == len(lab.hosts)
    assert machine_cgroups() == env.root_before  # no init.scope / system.slice at the machine's root
    web_a = lab.host("web-a")
    # kernel-wide settings stay the machine's; the host's own network stack is its own
    opts = {p: web_a.run(["findmnt", "-no", "OPTIONS", p], check=True).stdout.split(",")[0]
            for p in ("/sys", "/proc/sys", "/proc/sys/net", "/sys/fs/cgroup")}
    assert opts == {"/sys": "ro", "/proc/sys": "ro", "/proc/sys/net": "rw", "/sys/fs/cgroup": "rw"}, opts
    assert web_a.run("test -S /dev/log && test -c /dev/null && test ! -e /dev/kmsg").returncode == 0
    # no unit of the machine's runs in a host: only what the lab and the formula started
    units = web_a.run(["systemctl", "list-units", "--type=service", "--state=running", "--no-legend", "--plain"],
                      check=True).stdout.split("\n")
    names = sorted(line.split()[0] for line in units if line.strip())
    assert names == ["keepalived.service", "nginx-ha-lab-syslog.service", "nginx.service", "salt-minion.service"], names


def test_salt_uses_systemd_service_and_enabled_the_units(env):
    lab = env.lab
    # one salt call, several functions (an empty argument for those that take none)
    got = lab.salt(",".join(NODES), "test.provider,grains.get,service.get_running,service.get_enabled",
                   "service,init,,", tgt_type="list")
    for node in NODES:
        assert got[node]["test.provider"] == "systemd_service"
        assert got[node]["grains.get"] == "systemd"
        for unit in ("nginx", "keepalived", "salt-minion"):
            assert unit in got[node]["service.get_running"], (node, unit)
            assert unit in got[node]["service.get_enabled"], (node, unit)
        # the lab boots them installed but disabled and stopped: the formula enabled and started them
        results = state_results(env.first[node])
        for sid in ("nginx_ha_nginx_running", "nginx_ha_keepalived_running"):
            assert results[sid]["result"] is True and "enabled" in results[sid]["comment"], (node, results[sid])
        out = lab.host(node).run(["systemctl", "is-enabled", "nginx", "keepalived", "salt-minion"], check=True)
        assert out.stdout.split() == ["enabled", "enabled", "enabled"]


def test_daemons_live_in_their_units_cgroups(env):
    web_a = env.lab.host("web-a")
    watcher = web_a.run(["pgrep", "-f", "health_watch.py watch"], check=True).stdout.split()
    assert len(watcher) == 1
    assert cgroup_of(web_a, watcher[0]) == "/system.slice/keepalived.service"
    keepalived = web_a.read_file("/run/keepalived.pid").strip()
    assert unit_prop(web_a, "keepalived", "MainPID") == keepalived
    assert cgroup_of(web_a, keepalived) == "/system.slice/keepalived.service"
    assert cgroup_of(web_a, web_a.read_file("/run/nginx.pid").strip()) == "/system.slice/nginx.service"
    assert cgroup_of(web_a, env.lab.minion_pid("web-a")) == "/system.slice/salt-minion.service"
    # the state runs' commands are the minion's children, in its cgroup
    assert env.lab.salt("web-a", "cmd.run", "cat /proc/self/cgroup").endswith("0::/system.slice/salt-minion.service")


def test_config_change_reloads_through_systemctl(env):
    lab = env.lab
    pids = {n: {u: unit_prop(lab.host(n), u, "MainPID") for u in ("nginx", "keepalived")} for n in NODES}
    consoles = {n: os.path.getsize(os.path.join(lab.host(n).dir, "console.log")) for n in NODES}
    pillar = systemd_pillar()
    pillar["check"] = {"fall": 3}
    pillar["nginx"] = {"client_max_body_size": "20m"}
    write_pillar(env.pillar_dir, pillar)
    lab.salt(",".join(NODES), "saltutil.refresh_pillar", "wait=True", tgt_type="list", timeout=60)
    for node, ret in apply_all(lab).items():
        assert failed(ret) == {}, (node, failed(ret))
        assert {"nginx_ha_nginx_running", "nginx_ha_keepalived_running"} <= set(changed(ret)), changed(ret)
    for node in NODES:
        host = lab.host(node)
        assert "client_max_body_size 20m;" in host.read_file(SITE_CONF)
        # reloaded, not restarted, and by systemd (its ExecReload=): same main processes, "Reloading" logged
        assert {u: unit_prop(host, u, "MainPID") for u in ("nginx", "keepalived")} == pids[node]
        with open(os.path.join(host.dir, "console.log"), "rb") as fh:
            fh.seek(consoles[node])
            console = fh.read().decode(errors="replace")
        reloaded = [line for line in console.splitlines() if line.startswith("Reloaded ")]
        for unit in ("nginx.service", "keepalived.service"):
            assert [line for line in reloaded if unit in line], (node, unit, console[-3000:])
    assert vip_holders(lab) == ["web-a"]


def test_vip_fails_over_when_nginx_is_stopped_on_the_master(env):
    lab = env.lab
    web_a = lab.host("web-a")
    web_a.run("systemctl stop nginx", check=True)
    assert wait_for(lambda: vip_holders(lab) == ["web-b"], 15, what="VIP moved to web-b")
    assert wait_for(lambda: served_by(lab) == "web-b", 5, what="web-b's page through the VIP")
    assert lab.salt("web-a", "service.status", "nginx") is False
    ret = apply(lab, "web-a")  # service.running starts the unit again
    assert failed(ret) == {}
    assert "nginx_ha_nginx_running" in changed(ret)
    assert web_a.run("systemctl is-active nginx").stdout.strip() == "active"
    assert wait_for(lambda: vip_holders(lab) == ["web-a"], 15, what="VIP back on web-a")
    assert wait_for(lambda: served_by(lab) == "web-a", 5, what="web-a's page again")


def test_the_minion_was_restarted_through_its_unit(env):
    """The first state run changed the engine configuration: lab.minion_restart_cmd (systemd-run
    timer -> systemctl restart salt-minion) restarted the unit: new invocation, new main process."""
    for node in NODES:
        results = state_results(env.first[node])
        assert results["nginx_ha_events_minion_restart"]["changes"], node
        (old_pid, old_invocation), (new_pid, new_invocation) = env.minion[node]
        assert new_pid and new_pid != old_pid and new_invocation != old_invocation, env.minion[node]
        host = env.lab.host(node)
        assert host.run(f"kill -0 {old_pid}").returncode != 0
        assert unit_prop(host, "salt-minion", "ActiveState") == "active"
        assert host.run("systemctl list-units --all --no-legend --plain 'run-*'").stdout.strip() == ""


def test_power_cycle_brings_the_enabled_units_back_at_boot(env):
    lab = env.lab
    web_a = lab.host("web-a")
    cg = lab_cgroup.host_cgroup(lab.run_id, "web-a")[0]
    lab.power_off("web-a")
    assert not os.path.exists(cg)  # the host's cgroups went with it
    assert wait_for(lambda: vip_holders(lab, ("web-b",)) == ["web-b"], 15, what="VIP on web-b")
    lab.power_on("web-a")  # no state run: systemd starts what the formula enabled
    assert os.path.isdir(cg)
    out = web_a.run(["systemctl", "is-active", "nginx", "keepalived", "salt-minion"]).stdout.split()
    assert out == ["active", "active", "active"]
    assert wait_for(lambda: vip_holders(lab) == ["web-a"], 20, what="VIP back on web-a")
    assert wait_for(lambda: served_by(lab) == "web-a", 5, what="web-a's page again")
    assert lab.salt("web-a", "test.ping") is True


def test_the_formulas_default_minion_restart_works_on_systemd(env):
    """events:minion_restart_cmd unset: `salt-call --local service.restart salt-minion`, which Salt's
    systemd_service runs as `systemd-run --scope systemctl restart salt-minion`."""
    lab = env.lab
    write_pillar(env.pillar_dir, {**base_pillar(), "events": {"minion_restart_cmd": None, "buffer_size": 2000}})
    lab.salt("web-a", "saltutil.refresh_pillar", "wait=True", timeout=60)
    old = lab.minion_pid("web-a")
    ret = apply(lab, "web-a")  # waits for the new minion when the restart state ran
    assert failed(ret) == {}
    restart = state_results(ret)["nginx_ha_events_minion_restart"]
    assert restart["changes"] and "service.restart" in restart["name"], restart
    assert lab.minion_pid("web-a") != old
    assert lab.salt("web-a", "test.ping") is True


def test_a_killed_lab_leaves_no_cgroup_behind():
    """The owner SIGKILLed: its hosts die with it; the next cleanup removes the cgroups too."""
    code = ("import time; from lab import Lab\n"
            "lab = Lab(minions=('web-x',), salt=False, client=False, init='systemd'); lab.start()\n"
            "print('UP', lab.run_id, flush=True); time.sleep(300)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        line = proc.stdout.readline().split()
        assert line[:1] == ["UP"], line
        run_id = line[1]
        assert os.path.isdir(lab_cgroup.host_cgroup(run_id, "web-x")[0])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert f"cgroup {lab_cgroup.run_cgroup(run_id)}" in wait_for(
        lambda: [x for x in leftovers({run_id}) if x.startswith("cgroup ")], 5, what="the dead run's cgroup")
    cleanup()
    assert leftovers({run_id}) == []
    assert not os.path.exists(lab_cgroup.run_cgroup(run_id))
