"""
VRRP through a firewall on real hosts: each web host has a default-deny input firewall (nftables,
``policy drop``; loopback, established/related, the management network 198.51.100.0/24 and HTTP
allowed; the service network's VRRP is not). Without nginx-ha's rule the pair split-brains (both
MASTER, ``salt-run nginx_ha.status`` says SPLIT-BRAIN); with it, one MASTER; a second run changes
nothing; a reload of the operator's ruleset (``nft -f``, which flushes) takes it away and the
helper puts it back; removal removes ours alone (the operator's ruleset byte for byte as it was).

The formula is applied as operators apply it (``nginx_ha``, through ``nginx_ha_fw_lab.sls`` which
includes it: init.sls includes ``.firewall`` and keepalived's service requires
``nginx_ha_firewall: nginx_ha_firewall_vrrp``), and the test checks that the rule is in place
before keepalived is (re)loaded.

On systemd hosts (the lab's kind when this machine can boot them and $NGINX_HA_LAB_INIT does not
choose): the hooks. keepalived's drop-in (ExecStartPre) puts the rule back when keepalived starts
and keeps keepalived down when it cannot; nftables.service (the operator's ruleset, through their
own override.conf) puts it back after its start and its reload, within a measured window; and it
is there after a power cycle, before keepalived.

The tests run in file order and share one lab. Hold the lab lock:
``flock /tmp/nginx-ha-lab.lock .venv/bin/pytest tests/cluster/test_firewall.py -x -q``
"""

import os
import pathlib
import shutil
import tempfile
import time

import pytest

from lab import INIT_ENV, Lab, minion_restart_cmd
from lab.cgroup import cgroup2_root
from lab.init import SYSTEMD
from tests.cluster.support import VIP, base_pillar, changed, failed, served_by, state_results, vip_holders, wait_for, write_pillar

pytestmark = pytest.mark.cluster

REPO = pathlib.Path(__file__).resolve().parents[2]
NODES = ("web-a", "web-b")
MASTER_EXTRA = {"runner_dirs": [str(REPO / "_runners")], "peer": {".*": ["nginx_ha.health"]}}
OPERATOR_FILE = "/tmp/operator.nft"  # the host's own /tmp: /etc/nftables.conf is this machine's, shared by the hosts
OPERATOR = """\
flush ruleset
table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		iifname "lo" accept
		ct state established,related accept
		ip saddr 198.51.100.0/24 accept
		tcp dport 80 accept
	}
}
"""
# The formula itself (init.sls includes .firewall; service.sls orders it before keepalived).
WIRING = """\
include:
  - nginx_ha
"""
HELPER = ["/usr/bin/python3", "/etc/keepalived/nginx_ha/vrrp_firewall.py"]
SPEC = "/etc/keepalived/nginx_ha/firewall.json"
OUR_RULE = 'iifname "eth0" ip daddr 224.0.0.18 meta l4proto vrrp accept comment "nginx_ha: VRRP"'
# systemd hosts: the operator's nftables.service loads their own file (this machine's /etc/nftables.conf
# is shared by the hosts), by their own override.conf, which resets ExecStart/ExecReload
LAB_RULESET = "/etc/default/lab-nftables.conf"  # a private, persistent path of the host
OVERRIDE = f"""[Service]
ExecStart=
ExecStart=/usr/sbin/nft -f {LAB_RULESET}
ExecReload=
ExecReload=/usr/sbin/nft -f {LAB_RULESET}
"""


def lab_init():
    """systemd hosts where this machine can boot them (the hooks are tested there), unless $NGINX_HA_LAB_INIT says."""
    if os.environ.get(INIT_ENV, "").strip():
        return None  # the lab's own choice
    return "systemd" if os.access(SYSTEMD, os.X_OK) and cgroup2_root() else None


def pillar(**extra):
    """The cluster pillar for hosts of kind ``init`` (how the events state restarts their minion)."""
    out = base_pillar()
    out["events"] = {"minion_restart_cmd": minion_restart_cmd(lab_init())}
    out.update(extra)
    return out


@pytest.fixture(scope="module")
def dirs():
    pillar_dir = pathlib.Path(tempfile.mkdtemp(prefix="nginx-ha-pillar-", dir="/var/tmp"))
    roots = pathlib.Path(tempfile.mkdtemp(prefix="nginx-ha-roots-", dir="/var/tmp"))
    for path in (pillar_dir, roots):
        path.chmod(0o755)
    (roots / "nginx_ha_fw_lab.sls").write_text(WIRING)
    write_pillar(pillar_dir, pillar(firewall={"manage": False}))
    yield pillar_dir, roots
    shutil.rmtree(pillar_dir, ignore_errors=True)
    shutil.rmtree(roots, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(dirs):
    if not shutil.which("nft"):
        pytest.skip("needs nft in the lab hosts (apt: nftables)")
    pillar_dir, roots = dirs
    with Lab(minions=NODES, pillar_dir=str(pillar_dir), file_roots=[str(REPO / "salt"), str(roots)], master_extra=MASTER_EXTRA,
             init=lab_init()) as lab:
        for node in NODES:
            host = lab.host(node)
            host.write_file(OPERATOR_FILE, OPERATOR)
            host.run(["nft", "-f", OPERATOR_FILE], check=True)
            lab.salt(node, "saltutil.sync_all", timeout=120)
        lab.operator_listing = {n: ruleset(lab, n) for n in NODES}
        yield lab


def ruleset(lab, node):
    return lab.host(node).run(["nft", "list", "ruleset"], check=True).stdout


def top_rule(lab, node):
    return ruleset(lab, node).splitlines()[3].strip()


def apply(lab, node, sls="nginx_ha_fw_lab"):
    before = lab.minion_pid(node)
    ret = lab.salt(node, "state.apply", sls, timeout=300)
    if isinstance(ret, dict) and any(v.get("__id__") == "nginx_ha_events_minion_restart" and v.get("changes") for v in ret.values()):
        lab.wait_minion_restart(node, before)
    return ret


def fleet_status(lab):
    code, view = lab.salt_run("nginx_ha.status", timeout=120)
    return view["vips"][VIP]["status"], view


def set_pillar(lab, dirs, pillar):
    write_pillar(dirs[0], pillar)
    for node in NODES:
        assert lab.salt(node, "saltutil.refresh_pillar", "wait=True", timeout=60) is True


def test_without_the_rule_the_firewall_splits_the_pair(lab):
    start = time.monotonic()
    for node in NODES:
        ret = apply(lab, node)
        assert failed(ret) == {}, (node, failed(ret))
        assert "nginx_ha_firewall_vrrp" in state_results(ret)  # manage: false: nothing added, nothing to remove
    wait_for(lambda: vip_holders(lab) == ["web-a", "web-b"], 20, what="both nodes MASTER (VRRP dropped)")
    status, view = wait_for(lambda: (lambda s: s if s[0] == "SPLIT-BRAIN" else None)(fleet_status(lab)), 30, interval=0.5, what="SPLIT-BRAIN")
    assert any(p.startswith(f"SPLIT-BRAIN: {VIP}") for p in view["problems"]), view["problems"]
    print(f"split brain within {time.monotonic() - start:.1f}s of the first apply")


def test_with_the_rule_one_master_and_it_was_there_before_keepalived_reloaded(lab, dirs):
    set_pillar(lab, dirs, pillar())  # firewall: {manage: true} (the default)
    for node in NODES:
        ret = apply(lab, node)
        assert failed(ret) == {}, (node, failed(ret))
        states = state_results(ret)
        fw = states["nginx_ha_firewall_vrrp"]
        assert fw["changes"]["nftables"] == {"inet filter input": {"old": [], "new": ["VRRP IPv4 on eth0 to 224.0.0.18"]}}, fw
        assert fw["__run_num__"] < states["nginx_ha_keepalived_running"]["__run_num__"]
        assert top_rule(lab, node) == OUR_RULE
    wait_for(lambda: vip_holders(lab) == ["web-a"], 20, what="web-a the only MASTER")
    wait_for(lambda: fleet_status(lab)[0] == "OK", 30, interval=0.5, what="fleet OK")
    assert wait_for(lambda: served_by(lab) == "web-a", 10, what="web-a's page through the VIP")


def test_a_second_run_changes_nothing(lab):
    for node in NODES:
        ret = apply(lab, node)
        assert failed(ret) == {} and changed(ret) == {}, (node, changed(ret))
        assert state_results(ret)["nginx_ha_firewall_vrrp"]["comment"].startswith("VRRP is allowed through the firewall")


def test_a_reload_of_the_operators_ruleset_and_the_helper(lab):
    web_b = lab.host("web-b")
    web_b.run(["nft", "-f", OPERATOR_FILE], check=True)  # as `systemctl reload nftables`: flush ruleset, their file
    assert ruleset(lab, "web-b") == lab.operator_listing["web-b"]
    assert web_b.run(HELPER + ["check", SPEC]).returncode == 1
    wait_for(lambda: vip_holders(lab) == ["web-a", "web-b"], 20, what="split brain after the reload")
    # no systemd in these hosts: the helper (what the hooks run on systemd hosts) or the next state run puts it back
    web_b.run(HELPER + ["apply", SPEC], check=True)
    assert web_b.run(HELPER + ["check", SPEC]).returncode == 0
    wait_for(lambda: vip_holders(lab) == ["web-a"], 20, what="one MASTER again")


@pytest.fixture
def systemd_lab(lab):
    if lab.init != "systemd":
        pytest.skip("the hooks need systemd hosts (this machine cannot boot them, or $NGINX_HA_LAB_INIT chose sysvinit)")
    return lab


def systemctl(lab, node, *args, check=True):
    return lab.host(node).run(["systemctl", *args], check=check, timeout=60)


def test_systemd_the_operators_nftables_service_start_and_reload_put_the_rule_back(systemd_lab):
    lab = systemd_lab
    for node in NODES:
        assert "ExecStartPre=/usr/bin/python3 /etc/keepalived/nginx_ha/vrrp_firewall.py apply" in systemctl(lab, node, "cat", "keepalived").stdout
    web_b = lab.host("web-b")
    web_b.write_file(LAB_RULESET, OPERATOR)
    web_b.write_file("/etc/systemd/system/nftables.service.d/override.conf", OVERRIDE)  # sorts before ours (zz-)
    systemctl(lab, "web-b", "daemon-reload")
    systemctl(lab, "web-b", "enable", "--now", "nftables")
    assert top_rule(lab, "web-b") == OUR_RULE  # ExecStartPost, after their `flush ruleset`
    start = time.monotonic()
    systemctl(lab, "web-b", "reload", "nftables")
    took = time.monotonic() - start
    # the whole reload bounds the gap: their file flushes at its start, the helper is done at its end
    print(f"systemctl reload nftables, rule back: {took * 1000:.0f} ms")
    assert top_rule(lab, "web-b") == OUR_RULE and ruleset(lab, "web-b").count("nginx_ha: VRRP") == 1
    assert took < 1.0
    assert vip_holders(lab) == ["web-a"]


def test_systemd_keepalived_starts_only_with_the_rule(systemd_lab):
    lab = systemd_lab
    web_b = lab.host("web-b")
    web_b.run(["nft", "-f", LAB_RULESET], check=True)  # by hand: no hook runs, the rule is gone
    assert "nginx_ha" not in ruleset(lab, "web-b")
    systemctl(lab, "web-b", "restart", "keepalived")
    assert top_rule(lab, "web-b") == OUR_RULE  # ExecStartPre put it back before keepalived started
    # the helper cannot apply it (here: its spec is damaged): keepalived stays down, the VIP stays with web-a
    good = web_b.read_file(SPEC)
    web_b.write_file(SPEC, "damaged")
    web_b.run(["nft", "-f", LAB_RULESET], check=True)
    assert systemctl(lab, "web-b", "restart", "keepalived", check=False).returncode != 0
    assert systemctl(lab, "web-b", "is-active", "keepalived", check=False).stdout.strip() == "failed"
    time.sleep(4)  # more than keepalived's master-down interval with advert_int 1
    assert vip_holders(lab) == ["web-a"]
    web_b.write_file(SPEC, good)
    systemctl(lab, "web-b", "start", "keepalived")
    assert top_rule(lab, "web-b") == OUR_RULE
    wait_for(lambda: vip_holders(lab) == ["web-a"] and lab.salt("web-b", "nginx_ha.vip_status")["VI_web"]["state"] == "BACKUP",
             20, what="web-b BACKUP again")


def test_systemd_the_rule_is_there_after_a_power_cycle(systemd_lab):
    lab = systemd_lab
    lab.power_off("web-b")
    lab.power_on("web-b")
    # nftables.service loads the operator's ruleset, puts ours back; keepalived (After= it) starts with it
    wait_for(lambda: systemctl(lab, "web-b", "is-active", "keepalived", check=False).stdout.strip() == "active", 30,
             what="keepalived started at boot")
    assert top_rule(lab, "web-b") == OUR_RULE
    wait_for(lambda: vip_holders(lab) == ["web-a"], 20, what="one MASTER after the boot")
    lab.wait_minions(["web-b"])


def test_removal_removes_ours_alone(lab):
    for node in NODES:
        ret = apply(lab, node, "nginx_ha.firewall_absent")
        assert failed(ret) == {}, ret
        assert ruleset(lab, node) == lab.operator_listing[node]
        assert lab.host(node).run(["test", "-e", SPEC]).returncode == 1
        if lab.init == "systemd":
            assert "vrrp_firewall" not in systemctl(lab, node, "cat", "keepalived").stdout
            assert "vrrp_firewall" not in systemctl(lab, node, "cat", "nftables", check=False).stdout
        assert changed(apply(lab, node, "nginx_ha.firewall_absent")) == {}
    wait_for(lambda: vip_holders(lab) == ["web-a", "web-b"], 20, what="split brain once the rule is gone")
