"""notify_event.sh: what it runs for each keepalived notify call (salt-call replaced by a recorder)."""

import os
import subprocess

import pytest

from tests.support import formula

RECORDER = """#!/bin/sh
for arg in "$@"; do printf '%s\\n' "$arg"; done > "$(dirname "$0")/argv"
"""


@pytest.fixture
def script(tmp_path):
    recorder = tmp_path / "salt call"  # a space in the path: it must be quoted
    recorder.write_text(RECORDER)
    recorder.chmod(0o755)
    pillar = formula.example_pillar()
    pillar["events"] = {"notify_script": True, "notify_script_timeout": 7, "salt_call": str(recorder), "salt_config_dir": "/etc/salt dir"}
    path = tmp_path / "notify_event.sh"
    path.write_text(formula.render("notify_event.sh.jinja", node=formula.node_view(pillar, "web-a")))
    path.chmod(0o755)

    def run(*args):
        argv = tmp_path / "argv"
        if argv.exists():
            argv.unlink()
        proc = subprocess.run([str(path), *args], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return argv.read_text().splitlines() if argv.exists() else None

    run.text = path.read_text()
    return run


def test_renders_a_posix_shell_script(script, tmp_path):
    assert script.text.startswith("#!/bin/sh\n# Managed by Salt (nginx_ha formula) on web-a.")
    assert subprocess.run(["sh", "-n", str(tmp_path / "notify_event.sh")]).returncode == 0
    assert "\ntimeout '7' " in script.text


def test_sends_the_transition(script):
    assert script("INSTANCE", "VI_web", "MASTER", "100") == [
        "-c", "/etc/salt dir", "--log-level=quiet", "event.send", "nginx_ha/vrrp/VI_web/master",
        "instance=VI_web", "state=MASTER", "priority=100", "source=notify_script",
    ]
    assert script("INSTANCE", "VI_web", "FAULT", "0")[4] == "nginx_ha/vrrp/VI_web/fault"


@pytest.mark.parametrize(
    "args",
    [
        ("GROUP", "G1", "MASTER", "100"),
        ("INSTANCE", "VI_web", "MASTER_RX_LOWER_PRI", "100"),
        ("INSTANCE", "VI_web;touch /tmp/x", "MASTER", "100"),
        ("INSTANCE", "$(id)", "FAULT", "100"),
        ("INSTANCE", "", "FAULT", "100"),
    ],
)
def test_ignores_what_is_not_a_plain_instance_transition(script, args):
    assert script(*args) is None


def test_odd_priority_is_dropped_not_passed_on(script):
    assert "priority=null" in script("INSTANCE", "VI_web", "BACKUP", "1; reboot")
    assert "priority=null" in script("INSTANCE", "VI_web", "BACKUP")


def _keepalived_files(node):
    return formula.rendered_files(node)


@pytest.mark.skipif(os.geteuid() != 0, reason="keepalived -t in a private namespace needs root")
def test_keepalived_accepts_the_config_with_the_notify_script():
    """(keepalived -t does not check notify scripts at all, even missing or world-writable ones:
    their root:root 0755 comes from the file.managed state in scripts.sls.)"""
    from tests.support import sandbox

    pillar = formula.example_pillar()
    pillar["events"] = {"notify_script": True}
    node = formula.node_view(pillar, "web-a")
    text = formula.render("keepalived.conf.jinja", node=node)
    assert f'notify "{node["lookup"]["keepalived"]["script_dir"]}/notify_event.sh"' in text
    res = sandbox.run_checked(_keepalived_files(node), ["keepalived", "-t", "-f", node["lookup"]["keepalived"]["config"]])
    assert res.returncode == 0, res.stdout + res.stderr


LOGGER = """#!/bin/sh
printf '%s\\n' "$@" > "$(dirname "$0")/logged"
"""


@pytest.mark.parametrize(
    "salt_call, timeout, status, why",
    [
        ("#!/bin/sh\nexit 2\n", 7, 2, "salt-call exited with status 2"),
        ("#!/bin/sh\nexec sleep 30\n", 1, 124, "salt-call did not finish within 1 s (nginx_ha:events:notify_script_timeout)"),
    ],
    ids=["salt-call fails", "salt-call hangs"],
)
def test_an_event_that_was_not_sent_is_logged(tmp_path, salt_call, timeout, status, why):
    """keepalived ignores a notify script's status: a send that failed goes to the system log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "logger").write_text(LOGGER)
    (bin_dir / "salt-call").write_text(salt_call)
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    pillar = formula.example_pillar()
    pillar["events"] = {"notify_script": True, "notify_script_timeout": timeout, "salt_call": str(bin_dir / "salt-call")}
    path = tmp_path / "notify_event.sh"
    path.write_text(formula.render("notify_event.sh.jinja", node=formula.node_view(pillar, "web-a")))
    path.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    proc = subprocess.run([str(path), "INSTANCE", "VI_web", "FAULT", "0"], capture_output=True, text=True, timeout=30, env=env)
    assert proc.returncode == status
    logged = (bin_dir / "logged").read_text().splitlines()
    assert logged[:4] == ["-t", "nginx_ha_notify", "-p", "daemon.err"]
    assert logged[4] == f"event nginx_ha/vrrp/VI_web/fault (priority 0) was not sent to the Salt master: {why}"


def test_a_sent_event_logs_nothing(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "logger").write_text(LOGGER)
    (bin_dir / "salt-call").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    pillar = formula.example_pillar()
    pillar["events"] = {"notify_script": True, "salt_call": str(bin_dir / "salt-call")}
    path = tmp_path / "notify_event.sh"
    path.write_text(formula.render("notify_event.sh.jinja", node=formula.node_view(pillar, "web-a")))
    path.chmod(0o755)
    proc = subprocess.run([str(path), "INSTANCE", "VI_web", "MASTER", "100"], timeout=30, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert proc.returncode == 0 and not (bin_dir / "logged").exists()
