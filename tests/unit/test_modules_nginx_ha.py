"""Execution module nginx_ha (configuration side) with pytest-salt-factories loader mocks."""

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.support import formula

mod = formula.load_module("_modules", "nginx_ha")
model = formula.model()

PILLAR = formula.example_pillar()


def no_fileserver(*args, **kwargs):
    raise AssertionError("the module must not fetch anything from the master's fileserver")


@pytest.fixture
def pillar():
    return {"nginx_ha": PILLAR}


@pytest.fixture
def configure_loader_modules(pillar, tmp_path):
    return {
        mod: {
            "__salt__": {
                "cp.get_file_str": no_fileserver,
                "cp.cache_file": no_fileserver,
                "pillar.get": lambda key, default=None, unmask=False: pillar.get(key, default) if unmask else "**********",
            },
            "__grains__": {"id": "web-b", "os_family": "Debian"},
            "__opts__": {"saltenv": None, "nginx_ha.node_file": str(tmp_path / "deployed" / "node.json")},
            "__context__": {},
        }
    }


def test_node_config_is_this_minions_view():
    view = mod.node_config()
    assert view["id"] == "web-b"
    assert [(i["name"], i["state"], i["priority"]) for i in view["instances"]] == [("VI_web", "BACKUP", 99)]
    assert view["lookup"]["keepalived"]["config"] == "/etc/keepalived/keepalived.conf"
    assert view["check"]["interval"] == 1 and view["nginx"]["health"]["url"] == "http://127.0.0.1:8081/nginx_ha/health"


def test_node_config_for_another_minion():
    assert mod.node_config(minion_id="web-a")["instances"][0]["state"] == "MASTER"


def test_pillar_overrides_defaults_and_lookup(pillar):
    pillar["nginx_ha"] = dict(PILLAR, check={"fall": 5}, lookup={"curl": "/opt/bin/curl"})
    view = mod.node_config()
    assert view["check"]["fall"] == 5 and view["check"]["rise"] == 2
    assert view["lookup"]["curl"] == "/opt/bin/curl" and view["lookup"]["nginx"]["service"] == "nginx"


def test_node_config_is_validated_once_per_run_and_never_stale(pillar, tmp_path, monkeypatch):
    """Each SLS of a run asks for the view: validated once; a change of any input computes it anew."""
    calls = []
    real = model.node_view
    monkeypatch.setattr(mod.model, "node_view", lambda config, minion_id: calls.append(minion_id) or real(config, minion_id))
    first = mod.node_config()
    first["check"]["fall"] = 99  # a caller that mutates its copy does not change the next answer
    for _ in range(11):
        assert mod.node_config()["check"]["fall"] == 2
    assert calls == ["web-b"]
    assert mod.node_config(minion_id="web-a")["instances"][0]["state"] == "MASTER"  # another minion
    pillar["nginx_ha"] = dict(PILLAR, check={"fall": 5})  # a pillar refresh
    assert mod.node_config()["check"]["fall"] == 5
    # the health path the node runs (health.json) is an input: a switch is seen at once
    lookup = mod.node_config()["lookup"]
    monkeypatch.setitem(lookup["keepalived"], "script_dir", str(tmp_path / "scripts"))
    pillar["nginx_ha"] = dict(PILLAR, check={"fall": 5}, lookup=lookup)
    before = mod.node_config()["health_endpoints"]["transitional"]
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "health.json").write_text('{"listen": "127.0.0.1:8081", "location": "/old/health"}')
    after = mod.node_config()["health_endpoints"]["transitional"]
    assert after != before and len(calls) == 5


def test_invalid_pillar_raises_salt_invocation_error(pillar):
    pillar["nginx_ha"] = {"vrrp_instances": {"VI_web": dict(PILLAR["vrrp_instances"]["VI_web"], virtual_router_id=300)}}
    with pytest.raises(SaltInvocationError, match="nginx_ha:vrrp_instances:VI_web:virtual_router_id: 300"):
        mod.node_config()
    assert any("virtual_router_id: 300" in e for e in mod.validate_pillar())


def test_pillar_not_a_mapping(pillar):
    pillar["nginx_ha"] = ["oops"]
    with pytest.raises(SaltInvocationError, match="not a mapping"):
        mod.node_config()


def test_unknown_os_family():
    mod.__grains__["os_family"] = "Solaris"
    with pytest.raises(CommandExecutionError, match="os_family 'Solaris' has no defaults .*set nginx_ha:lookup"):
        mod.node_config()


def test_unknown_os_family_with_a_lookup_in_the_pillar(pillar):
    mod.__grains__["os_family"] = "Solaris"
    pillar["nginx_ha"] = dict(PILLAR, lookup={"curl": "/opt/bin/curl"})
    view = mod.node_config()
    assert view["lookup"]["curl"] == "/opt/bin/curl" and view["lookup"]["keepalived"]["binary"] == "/usr/sbin/keepalived"


@pytest.mark.parametrize("family, default_site", [("Debian", "/etc/nginx/sites-enabled/default"), ("RedHat", None)])
def test_os_family_lookup_comes_from_the_schema(family, default_site):
    mod.__grains__["os_family"] = family
    assert mod.node_config()["lookup"]["nginx"]["default_site"] == default_site


# ---- the deployed configuration: what the queries answer from, without master or pillar ----


def test_node_config_names_the_node_file(tmp_path):
    assert mod.node_config()["node_file"] == str(tmp_path / "deployed" / "node.json")
    del mod.__opts__["nginx_ha.node_file"]
    assert mod.node_file() == "/etc/keepalived/nginx_ha/node.json"
    mod.__opts__["nginx_ha"] = {"node_file": "relative/node.json"}
    with pytest.raises(SaltInvocationError, match="absolute path"):
        mod.node_file()


def test_deployed_is_none_before_the_first_run():
    assert mod.deployed() is None


def write_deployed(view):
    path = mod.node_file()
    import json
    import os

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(view, fh)
    return view


def test_queries_answer_from_the_deployed_file_not_the_pillar(pillar, monkeypatch):
    deployed = write_deployed(mod.node_config())
    pillar["nginx_ha"] = {"vrrp_instances": "broken"}  # the pillar changed (or is gone): not applied yet
    mod.__salt__["pillar.get"] = lambda *a, **k: (_ for _ in ()).throw(AssertionError("queries must not read the pillar"))
    assert mod.deployed() == deployed
    assert mod._node() == deployed
    assert mod.active_health() is None


def test_damaged_deployed_file_is_a_clear_error():
    write_deployed({"id": "web-b"})
    with pytest.raises(CommandExecutionError, match="is not a node configuration"):
        mod.deployed()
    with open(mod.node_file(), "w") as fh:
        fh.write("{not json")
    with pytest.raises(CommandExecutionError, match="cannot read this node's deployed configuration"):
        mod.vip_status()


def test_masterless_call_without_a_deployed_file_says_apply_first(pillar):
    pillar["nginx_ha"] = {}
    mod.__opts__["file_client"] = "local"
    with pytest.raises(CommandExecutionError, match="no deployed configuration at .* apply the nginx_ha states first"):
        mod.vip_status()


def test_validate_pillar_valid():
    assert mod.validate_pillar() == []


def test_every_public_function_has_a_cli_example():
    public = [n for n in dir(mod) if not n.startswith("_") and callable(getattr(mod, n)) and getattr(getattr(mod, n), "__module__", "") == mod.__name__]
    assert public
    for name in public:
        assert "CLI Example" in (getattr(mod, name).__doc__ or ""), name


# ---- live state functions (keepalived, kernel and nginx replaced by captured outputs) ----

status_utils = formula.load_module("_utils", "nginx_ha_status")
DATA = formula.REPO / "tests" / "unit" / "data"


@pytest.fixture
def live(monkeypatch):
    """web-a, keepalived running as MASTER, the VIP on eth0 (outputs captured from the real tools)."""
    mod.__grains__["id"] = "web-a"
    ip_out = (DATA / "ip-addr-master.json").read_text()
    mod.__salt__["cmd.run_all"] = lambda cmd, **kw: {"retcode": 0, "stdout": ip_out, "stderr": ""}
    state = {"pid": 4242}
    monkeypatch.setattr(mod, "_keepalived_pid", lambda lookup: state["pid"])
    monkeypatch.setattr(
        mod, "_keepalived_dump", lambda lookup, pid: status_utils.parse_keepalived_json((DATA / "keepalived-2.2.7-master.json").read_text())
    )
    return state


def test_vip_status(live):
    ret = mod.vip_status()
    assert list(ret) == ["VI_web"]
    assert ret["VI_web"]["state"] == "MASTER" and ret["VI_web"]["holds_vip"] is True
    assert ret["VI_web"]["last_transition"].startswith("2026-11-24T20:39:37")
    assert mod.is_master() is True and mod.is_master("VI_web") is True


def test_vip_status_unknown_instance(live):
    with pytest.raises(SaltInvocationError, match="instance 'VI_nope' is not configured on web-a"):
        mod.vip_status("VI_nope")


def test_vip_status_keepalived_down(live):
    live["pid"] = None
    ret = mod.vip_status()
    assert ret["VI_web"]["state"] == "STOP"
    assert mod.is_master() is False


@pytest.mark.parametrize("mode", ["maybe", "", "1"])
def test_maintenance_bad_mode(live, mode):
    with pytest.raises(SaltInvocationError, match="is not on or off"):
        mod.maintenance(mode)


def test_maintenance_refuses_without_healthy_peer(live, monkeypatch, tmp_path):
    monkeypatch.setattr(mod, "_maintenance_file", lambda lookup: str(tmp_path / "maintenance"))
    mod.__salt__["publish.publish"] = lambda *a, **k: {"web-b": {"healthy": False}}
    with pytest.raises(CommandExecutionError, match="no healthy peer for VI_web"):
        mod.maintenance("on")
    assert not (tmp_path / "maintenance").exists()


# ---- maintenance: refuse unless a peer can take over (also when both nodes are asked at once) ----


def peer(healthy=True, maintenance=False, pending=False, state="BACKUP"):
    """What a peer's nginx_ha.health returns (the keys maintenance reads)."""
    return {"healthy": healthy, "maintenance": maintenance or pending, "maintenance_pending": pending, "vrrp": {"VI_web": state}}


@pytest.fixture
def marks(live, monkeypatch, tmp_path):
    """web-a live, its maintenance file and pending mark in tmp_path; publish answers from `answers`."""
    monkeypatch.setattr(mod, "_maintenance_file", lambda lookup: str(tmp_path / "maintenance"))
    seen = {"answers": {"web-b": peer()}, "calls": [], "pending_during_call": []}

    def publish(tgt, fun, tgt_type=None, timeout=None):
        seen["calls"].append((tgt, fun, tgt_type))
        seen["pending_during_call"].append((tmp_path / "maintenance.pending").exists())
        answers = seen["answers"]
        if isinstance(answers, Exception):
            raise answers
        return answers

    mod.__salt__["publish.publish"] = publish
    seen["maintenance"] = tmp_path / "maintenance"
    seen["pending"] = tmp_path / "maintenance.pending"
    return seen


def test_maintenance_on_with_a_healthy_backup_peer(marks):
    ret = mod.maintenance("on", wait=0)
    assert ret["maintenance"] is True and ret["changed"] is True
    assert marks["maintenance"].read_text() == f"{mod.MAINTENANCE_OFFSET}\n"
    assert marks["calls"] == [("web-b", "nginx_ha.health", "list")]
    assert marks["pending_during_call"] == [True]  # the mark was up while the peer was asked
    assert not marks["pending"].exists()  # and gone once the real offset was written


@pytest.mark.parametrize(
    "answers, why",
    [
        ({"web-b": peer(pending=True)}, "web-b: going into maintenance itself"),  # both nodes in one call
        ({"web-b": peer(maintenance=True)}, "web-b: in maintenance"),
        ({"web-b": peer(state="FAULT")}, "web-b: VRRP state FAULT"),
        ({"web-b": peer(state="STOP")}, "web-b: VRRP state STOP"),
        ({"web-b": peer(healthy=False)}, "web-b: unhealthy"),
        ({}, "web-b: no answer"),  # unreachable: publish gathers no return
        ({"web-b": "ERROR: nginx_ha.health is not available"}, "web-b: error: ERROR"),
        ({"web-b": {"healthy": True, "maintenance": False}}, "web-b: its health has no VRRP state"),  # old module
    ],
)
def test_maintenance_on_refuses_when_no_peer_can_take_over(marks, answers, why):
    marks["answers"] = answers
    with pytest.raises(CommandExecutionError, match="refusing maintenance: no healthy peer for VI_web") as exc:
        mod.maintenance("on", wait=0)
    assert why in str(exc.value) and "force=True" in str(exc.value)
    assert marks["pending_during_call"] == [True]
    assert not marks["maintenance"].exists() and not marks["pending"].exists()


def test_maintenance_on_refuses_when_the_master_is_unreachable(marks):
    marks["answers"] = RuntimeError("SaltReqTimeoutError: master did not answer")
    with pytest.raises(CommandExecutionError, match="cannot ask the peers"):
        mod.maintenance("on", wait=0)
    assert not marks["maintenance"].exists() and not marks["pending"].exists()


def test_maintenance_on_masterless_refuses_at_once_and_names_the_way_out(marks):
    mod.__opts__["file_client"] = "local"  # salt-call --local: no master to carry the peer query
    with pytest.raises(CommandExecutionError, match="salt-call --local.*cannot reach; check web-b yourself.*force=True"):
        mod.maintenance("on", wait=0)
    assert not marks["maintenance"].exists() and not marks["pending"].exists()
    assert mod.maintenance("on", force=True, wait=0)["maintenance"] is True
    assert mod.maintenance("off", wait=0)["maintenance"] is False


def test_maintenance_both_nodes_at_once_both_refuse(marks, tmp_path, monkeypatch):
    """web-a and web-b called together: each writes its mark, then asks the other, who reports it pending."""
    other = tmp_path / "web-b"
    other.mkdir()
    lookup_b = {"keepalived": {"script_dir": str(other)}}

    def publish(tgt, fun, tgt_type=None, timeout=None):
        # web-b's side of the same call: it wrote its own mark before asking; its health reports it
        monkeypatch.setattr(mod, "_maintenance_file", lambda lookup: str(other / "maintenance"))
        mod._write_maintenance_pending(lookup_b)
        pending_b = mod._maintenance_pending(lookup_b)
        monkeypatch.setattr(mod, "_maintenance_file", lambda lookup: str(tmp_path / "maintenance"))
        return {"web-b": peer(pending=pending_b)}

    mod.__salt__["publish.publish"] = publish
    with pytest.raises(CommandExecutionError, match="web-b: going into maintenance itself"):
        mod.maintenance("on", wait=0)
    assert not marks["maintenance"].exists() and not marks["pending"].exists()


def test_maintenance_force_skips_the_peer_check(marks):
    marks["answers"] = {"web-b": peer(healthy=False, state="FAULT")}
    ret = mod.maintenance("on", force=True, wait=0)
    assert ret["maintenance"] is True and marks["calls"] == []
    assert marks["maintenance"].read_text() == f"{mod.MAINTENANCE_OFFSET}\n" and not marks["pending"].exists()


def test_maintenance_off_needs_no_peer(marks):
    marks["maintenance"].write_text(f"{mod.MAINTENANCE_OFFSET}\n")
    marks["answers"] = {}
    ret = mod.maintenance("off", wait=0)
    assert ret["maintenance"] is False and ret["changed"] is True and marks["calls"] == []
    assert marks["maintenance"].read_text() == "0\n"


def test_pending_mark_is_atomic_0644_and_expires(marks, monkeypatch):
    lookup = mod.node_config()["lookup"]
    assert mod._maintenance_pending(lookup) is False
    mod._write_maintenance_pending(lookup)
    assert (marks["pending"].stat().st_mode & 0o777) == 0o644
    assert [p.name for p in marks["pending"].parent.iterdir() if p.name.endswith(".tmp")] == []
    assert mod._maintenance_pending(lookup) is True
    boot_id, now = mod._boot_clock()
    monkeypatch.setattr(mod, "_boot_clock", lambda: (boot_id, now + mod.MAINTENANCE_PENDING_TTL + 1))
    assert mod._maintenance_pending(lookup) is False  # a crashed call's mark blocks nobody for long
    monkeypatch.setattr(mod, "_boot_clock", lambda: ("another-boot", now))
    assert mod._maintenance_pending(lookup) is False  # nor one from before a reboot


def test_pending_mark_in_another_format_ages_by_mtime(marks):
    import os

    lookup = mod.node_config()["lookup"]
    marks["pending"].write_text("pending\n")
    assert mod._maintenance_pending(lookup) is True
    old = marks["pending"].stat().st_mtime - mod.MAINTENANCE_PENDING_TTL - 5
    os.utime(marks["pending"], (old, old))
    assert mod._maintenance_pending(lookup) is False


def test_health_reports_pending_maintenance_and_vrrp_state(marks, monkeypatch):
    monkeypatch.setattr(mod, "_nginx_answers", lambda url, timeout: (True, "HTTP 200"))
    health = mod.health()
    assert health["maintenance"] is False and health["maintenance_pending"] is False
    assert health["vrrp"] == {"VI_web": "MASTER"}
    mod._write_maintenance_pending(mod.node_config()["lookup"])
    health = mod.health()
    assert health["maintenance"] is True and health["maintenance_pending"] is True


def test_health_vrrp_when_keepalived_is_down_or_silent(marks, monkeypatch):
    monkeypatch.setattr(mod, "_nginx_answers", lambda url, timeout: (True, "HTTP 200"))
    marks_live = {"pid": None}
    monkeypatch.setattr(mod, "_keepalived_pid", lambda lookup: marks_live["pid"])
    assert mod.health()["vrrp"] == {"VI_web": "STOP"}
    marks_live["pid"] = 4242

    def no_dump(lookup, pid):
        raise CommandExecutionError("keepalived (pid 4242) did not write its state dump")

    monkeypatch.setattr(mod, "_keepalived_dump", no_dump)
    health = mod.health()
    assert health["vrrp"] == {"VI_web": "UNKNOWN"} and "did not write" in health["vrrp_detail"]


# ---- restart_nginx: heal a hung nginx (graceful restart, else kill the whole tree and start) ----

NGINX = "/usr/sbin/nginx"


def fake_proc(root, procs):
    """Write a /proc look-alike: procs = {pid: (comm, state, ppid, exe or None)}."""
    import os

    for pid, (comm, state, ppid, exe) in procs.items():
        d = root / str(pid)
        d.mkdir(parents=True, exist_ok=True)
        (d / "stat").write_text(f"{pid} ({comm}) {state} {ppid} " + " ".join(["0"] * 17) + f" {1000 + pid} 0 0\n")
        (d / "comm").write_text(comm + "\n")
        if exe:
            os.symlink(exe, d / "exe")


TREE = {
    1: ("init", "S", 0, "/usr/bin/python3"),
    700: ("nginx", "T", 1, NGINX),  # master (pidfile), SIGSTOPped
    701: ("nginx", "T", 700, NGINX),  # workers
    702: ("nginx", "T", 700, NGINX),
    703: ("sh", "S", 700, "/usr/bin/dash"),  # a helper the master spawned: part of its tree
    704: ("nginx", "Z", 700, None),  # zombie: holds nothing
    650: ("nginx", "T", 1, NGINX + " (deleted)"),  # orphaned worker of an older master, binary upgraded
    800: ("python3", "S", 1, "/usr/bin/python3"),  # unrelated
    801: ("nginx", "S", 800, "/usr/bin/python3"),  # named nginx but not the binary, not in the tree
    900: ("kworker/0:1", "I", 2, None),
}


def test_nginx_processes_finds_the_whole_tree(tmp_path):
    fake_proc(tmp_path, TREE)
    (tmp_path / "self").mkdir()
    assert mod._nginx_processes(str(tmp_path), NGINX, master_pid=700) == [700, 650, 701, 702, 703]
    assert mod._nginx_processes(str(tmp_path), NGINX, master_pid=None) == [650, 700, 701, 702]


def test_nginx_processes_leaves_an_nginx_in_another_mount_namespace_alone(tmp_path):
    """A container's nginx on the same host runs /usr/sbin/nginx too, in its own mount namespace."""
    import os

    fake_proc(tmp_path, TREE)
    fake_proc(tmp_path, {950: ("nginx", "S", 1, NGINX), 951: ("nginx", "S", 950, NGINX)})
    for pid, ns in (("self", "mnt:[4026531841]"), (950, "mnt:[4026532999]"), (951, "mnt:[4026532999]")):
        (tmp_path / str(pid) / "ns").mkdir(parents=True)
        os.symlink(ns, tmp_path / str(pid) / "ns" / "mnt")
    for pid in (700, 701, 702, 650):
        (tmp_path / str(pid) / "ns").mkdir()
        os.symlink("mnt:[4026531841]", tmp_path / str(pid) / "ns" / "mnt")
    assert mod._nginx_processes(str(tmp_path), NGINX, master_pid=700) == [700, 650, 701, 702, 703]


def test_nginx_processes_ignores_a_stale_pidfile_naming_a_reused_pid(tmp_path):
    fake_proc(tmp_path, TREE)
    # pid 800 is python now: neither it nor its children are nginx's
    assert mod._nginx_processes(str(tmp_path), NGINX, master_pid=800) == [650, 700, 701, 702]
    assert mod._nginx_processes(str(tmp_path), NGINX, master_pid=12345) == [650, 700, 701, 702]


@pytest.fixture
def hung(pillar, monkeypatch, tmp_path):
    """A hung nginx: TREE in a fake /proc, pidfile naming 700; service commands and probes recorded."""
    import os
    import shutil
    import signal

    import salt._logging.impl

    salt._logging.impl.shutdown_temp_handler()  # Salt defers warnings to stderr at exit (closed under pytest)

    proc = tmp_path / "proc"
    fake_proc(proc, TREE)
    pidfile = tmp_path / "nginx.pid"
    pidfile.write_text("700\n")
    pillar["nginx_ha"] = dict(PILLAR, lookup={"nginx": {"pidfile": str(pidfile)}})
    monkeypatch.setattr(mod, "PROC_ROOT", str(proc))
    monkeypatch.setattr(
        mod, "_service_argv", lambda name, action, timeout: ["/usr/bin/timeout", "-k", "2", f"{timeout:g}", "/usr/sbin/service", name, action]
    )
    env = {"retcode": {"restart": 124, "start": 0}, "answers_after": "start", "commands": [], "signals": [], "done": set(), "config_rc": 0}

    def run_all(cmd, **kw):
        assert kw.get("python_shell") is False and isinstance(cmd, list)
        if cmd[0] == NGINX:  # nginx -t before killing anything
            assert cmd[1:4] == ["-t", "-q", "-c"] and kw.get("timeout")
            env["commands"].append(["nginx", "-t"])
            return {"retcode": env["config_rc"], "stdout": "", "stderr": "nginx: [emerg] unknown directive \"bogus\"" if env["config_rc"] else ""}
        assert kw.get("timeout", 0) > float(cmd[3])  # Salt's own bound is only a backstop
        env["commands"].append(cmd)
        env["done"].add(cmd[-1])
        return {"retcode": env["retcode"][cmd[-1]], "stdout": "", "stderr": ""}

    def kill(pid, sig):
        env["signals"].append((pid, sig))
        if sig == signal.SIGKILL:
            if pid == 701:  # not reaped yet: a zombie
                text = (proc / "701" / "stat").read_text().replace(" T 700 ", " Z 1 ")
                (proc / "701" / "stat").write_text(text)
            else:
                shutil.rmtree(proc / str(pid))

    def answers(url, timeout):
        assert url == "http://127.0.0.1:8081/nginx_ha/health"
        ok = env["answers_after"] in env["done"]
        return ok, "HTTP 200" if ok else "timed out"

    mod.__salt__["cmd.run_all"] = run_all
    monkeypatch.setattr(os, "kill", kill)
    monkeypatch.setattr(mod, "_nginx_answers", answers)
    env["pidfile"], env["proc"] = pidfile, proc
    return env


def test_restart_nginx_graceful(hung):
    hung["retcode"]["restart"] = 0
    hung["answers_after"] = "restart"
    ret = mod.restart_nginx(grace=1, timeout=3)
    assert ret["healthy"] is True and ret["escalated"] is False and ret["killed"] == []
    assert hung["commands"] == [["/usr/bin/timeout", "-k", "2", "3", "/usr/sbin/service", "nginx", "restart"]]
    assert hung["signals"] == [] and hung["pidfile"].exists()


def test_restart_nginx_starts_a_crashed_nginx_without_the_restart_detour(hung):
    """No nginx process left (SIGKILLed): start it; an init script's restart would test, stop and sleep 1 s first."""
    import shutil

    for pid in (700, 701, 702, 703, 704, 650):
        shutil.rmtree(hung["proc"] / str(pid))
    ret = mod.restart_nginx(grace=1, timeout=3)
    assert ret["healthy"] is True and ret["restarted"] is True and ret["escalated"] is False
    assert hung["commands"] == [["/usr/bin/timeout", "-k", "2", "3", "/usr/sbin/service", "nginx", "start"]]
    assert hung["signals"] == [] and ret["detail"].startswith("start: ")


def test_restart_nginx_unless_healthy_leaves_a_healthy_node_alone(hung, monkeypatch):
    hung["answers_after"] = "nothing"
    hung["done"].add("nothing")  # nginx answers already
    monkeypatch.setattr(mod, "health", lambda: {"healthy": True, "nginx": {"answers": True}})
    ret = mod.restart_nginx(grace=1, timeout=3, unless_healthy=True)
    assert ret["healthy"] is True and ret["restarted"] is False and ret["health"]["healthy"] is True
    assert hung["commands"] == [] and hung["signals"] == []


def test_restart_nginx_unless_healthy_restarts_a_node_that_answers_but_is_unhealthy(hung, monkeypatch):
    hung["retcode"]["restart"] = 0
    hung["answers_after"] = "nothing"
    hung["done"].add("nothing")
    verdicts = [{"healthy": False, "keepalived": {"running": False}}, {"healthy": True}]
    monkeypatch.setattr(mod, "health", lambda: verdicts.pop(0))
    ret = mod.restart_nginx(grace=1, timeout=3, unless_healthy=True, verify=True)
    assert ret["restarted"] is True and [c[-1] for c in hung["commands"]] == ["restart"]
    assert ret["health"] == {"healthy": True}  # verified after the restart, in the same call


def test_restart_nginx_unless_healthy_restarts_a_dead_nginx_without_the_full_health_check(hung, monkeypatch):
    monkeypatch.setattr(mod, "health", lambda: pytest.fail("health() is not needed when nginx does not answer"))
    ret = mod.restart_nginx(grace=1, timeout=3, unless_healthy=True)
    assert ret["restarted"] is True and ret["escalated"] is True and "health" not in ret


def test_restart_nginx_verify_reports_a_failing_health_check_instead_of_raising(hung, monkeypatch):
    hung["retcode"]["restart"] = 0
    hung["answers_after"] = "restart"

    def broken():
        raise CommandExecutionError("keepalived -t hung")

    monkeypatch.setattr(mod, "health", broken)
    ret = mod.restart_nginx(grace=1, timeout=3, verify=True)
    assert ret["restarted"] is True and ret["health"]["healthy"] is False and "keepalived -t hung" in ret["health"]["error"]


def test_restart_nginx_escalates_when_the_restart_does_not_finish(hung, caplog):
    import signal

    ret = mod.restart_nginx(grace=1, timeout=3)
    assert ret["healthy"] is True and ret["escalated"] is True
    assert ret["killed"] == [700, 650, 701, 702, 703]  # the master first: it cannot respawn workers
    assert [c[-1] for c in hung["commands"]] == ["restart", "-t", "start"]
    sent = hung["signals"]
    for pid in ret["killed"]:
        assert [s for p, s in sent if p == pid][:2] == [signal.SIGCONT, signal.SIGKILL]
    assert sent.index((703, signal.SIGCONT)) < sent.index((700, signal.SIGKILL))  # CONT to all, then KILL to all
    assert all(p not in (1, 704, 800, 801, 900) for p, _ in sent)
    assert not hung["pidfile"].exists()  # stale pidfile removed before the start
    assert "did not finish within 3s" in ret["detail"] and "killed nginx processes" in ret["detail"]
    assert any(r.levelname == "WARNING" and "killing the whole nginx process tree" in r.getMessage() for r in caplog.records)


def test_restart_nginx_escalates_when_nginx_does_not_answer_after_the_restart(hung):
    hung["retcode"]["restart"] = 0  # the init script says fine, but the stopped workers still hold the socket
    ret = mod.restart_nginx(grace=0.3, timeout=3)
    assert ret["escalated"] is True and ret["killed"] == [700, 650, 701, 702, 703]
    assert "did not answer within 0.3s" in ret["detail"]


def test_restart_nginx_fails_loudly_when_nginx_still_does_not_answer(hung):
    hung["answers_after"] = "never"
    with pytest.raises(CommandExecutionError, match="nginx still not answering .* after killing its processes"):
        mod.restart_nginx(grace=0.3, timeout=3)


def test_restart_nginx_fails_when_a_process_survives_sigkill(hung, monkeypatch):
    import os

    monkeypatch.setattr(os, "kill", lambda pid, sig: hung["signals"].append((pid, sig)))  # uninterruptible sleep
    with pytest.raises(CommandExecutionError, match=r"nginx processes \[700, 650, 701, 702, 703\] are still there"):
        mod.restart_nginx(grace=0.3, timeout=0.3)
    assert [c[-1] for c in hung["commands"]] == ["restart", "-t"]  # never started next to a survivor


def test_restart_nginx_does_not_kill_when_the_configuration_is_refused(hung):
    hung["config_rc"] = 1
    with pytest.raises(CommandExecutionError, match="refuses its configuration, so it was not killed: nginx: .emerg. unknown directive"):
        mod.restart_nginx(grace=0.3, timeout=3)
    assert hung["signals"] == [] and hung["pidfile"].exists()


def test_service_argv_is_what_salts_service_module_runs(monkeypatch):
    import salt.utils.path
    import salt.utils.systemd

    paths = {"timeout": "/usr/bin/timeout", "service": "/usr/sbin/service", "systemctl": "/usr/bin/systemctl"}
    monkeypatch.setattr(salt.utils.path, "which", lambda name: paths.get(name))
    monkeypatch.setattr(salt.utils.systemd, "booted", lambda context=None: True)
    assert mod._service_argv("nginx", "restart", 10) == ["/usr/bin/timeout", "-k", "2", "10", "/usr/bin/systemctl", "restart", "nginx"]
    monkeypatch.setattr(salt.utils.systemd, "booted", lambda context=None: False)
    assert mod._service_argv("nginx", "start", 2.5) == ["/usr/bin/timeout", "-k", "2", "2.5", "/usr/sbin/service", "nginx", "start"]
    del paths["timeout"]
    assert mod._service_argv("nginx", "start", 10) is None


def test_bounded_service_falls_back_to_salts_service_module_in_a_thread(monkeypatch):
    import threading

    monkeypatch.setattr(mod, "_service_argv", lambda name, action, timeout: None)
    release = threading.Event()
    mod.__salt__["service.restart"] = lambda name: release.wait(30)
    try:
        assert mod._bounded_service("nginx", "restart", 0.2) == (False, True, "service.restart nginx did not return within 0.2s")
    finally:
        release.set()
    mod.__salt__["service.start"] = lambda name: True
    assert mod._bounded_service("nginx", "start", 5)[:2] == (True, False)
