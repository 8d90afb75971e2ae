"""
scripts/master_dropin.py: nginx-ha's master drop-in adds to the operator's settings, never replaces
them. Every check reads the result back with Salt's own ``salt.config.master_config`` over a
temporary config dir, the way the salt-master reads /etc/salt at start.
"""

import os
import pathlib

import pytest
import salt.config
import yaml

from scripts import master_dropin

REPO = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_FILE_ROOTS = ["/srv/salt", "/srv/spm/salt"]
DEFAULT_PILLAR_ROOTS = ["/srv/pillar", "/srv/spm/pillar"]


@pytest.fixture
def repo(tmp_path):
    """A checkout of nginx-ha somewhere else than the test's config dir (only what the script checks)."""
    path = tmp_path / "nginx-ha"
    (path / "salt" / "nginx_ha").mkdir(parents=True)
    (path / "salt" / "nginx_ha" / "init.sls").write_text("{}\n")
    return str(path)


@pytest.fixture
def etc(tmp_path):
    path = tmp_path / "etc-salt"
    path.mkdir()
    return path


def write_master(etc, settings):
    (etc / "master").write_text(yaml.safe_dump(settings))


def opts(etc):
    return salt.config.master_config(str(etc / "master"))


def run(etc, repo, *extra, write=True):
    argv = ["--repo", repo, "--config-dir", str(etc), *extra] + (["--write"] if write else [])
    return master_dropin.main(argv)


def dropin(etc):
    return etc / "master.d" / "nginx_ha.conf"


def comments(text):
    """The drop-in's comments as one line (they are wrapped at 99 columns)."""
    return " ".join(line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#"))


def tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


OPERATOR = {
    "file_roots": {"base": ["/srv/salt"], "dev": ["/srv/salt-dev"]},
    "pillar_roots": {"base": ["/srv/pillar"]},
    "reactor": [{"salt/minion/*/start": ["/srv/reactor/start.sls"]}],
    "schedule": {"backup": {"function": "state.orchestrate", "args": ["orch.backup"], "hours": 24}},
    "peer": {"web.*": ["network.ip_addrs"], ".*": ["grains.items"]},
    "runner_dirs": ["/srv/runners"],
    "nginx_ha_reactor": {"restart_limit": 5, "webhook": {"url": "https://hooks.example/T1"}},
}


# (a) ------------------------------------------------------------------------------------------


def test_a_master_with_its_own_settings_keeps_every_value_and_gains_nginx_ha(etc, repo):
    write_master(etc, OPERATOR)
    before = opts(etc)
    assert run(etc, repo, "--reactor") == 0
    after = opts(etc)
    # every old value still there, in the same order, nginx-ha's appended
    assert after["file_roots"] == {"base": ["/srv/salt", f"{repo}/salt"], "dev": ["/srv/salt-dev"]}
    assert after["pillar_roots"] == before["pillar_roots"] == {"base": ["/srv/pillar"]}
    assert after["runner_dirs"] == ["/srv/runners", f"{repo}/_runners"]
    assert after["peer"] == {"web.*": ["network.ip_addrs"], ".*": ["grains.items", "nginx_ha.health"]}
    assert after["reactor"] == [{"salt/minion/*/start": ["/srv/reactor/start.sls"]}, {"nginx_ha/vrrp/*": [f"{repo}/reactor/vrrp.sls"]}]
    assert after["schedule"]["backup"] == OPERATOR["schedule"]["backup"]
    assert after["schedule"]["nginx_ha_fleet_check"] == {"function": "nginx_ha_reactor.check_fleet", "seconds": 60}
    # the operator's own nginx_ha_reactor block is repeated as it was, not mixed with defaults
    assert after["nginx_ha_reactor"] == OPERATOR["nginx_ha_reactor"]
    # and nothing else of the master changed
    ignore = set(master_dropin.BASE_KEYS + master_dropin.REACTOR_KEYS)
    assert {k: v for k, v in after.items() if k not in ignore} == {k: v for k, v in before.items() if k not in ignore}


def test_a_the_drop_in_says_where_each_repeated_value_comes_from(etc, repo):
    write_master(etc, OPERATOR)
    assert run(etc, repo, "--reactor") == 0
    text = comments(dropin(etc).read_text())
    assert f"repeated from {etc}/master: {{base: [/srv/salt], dev: [/srv/salt-dev]}}" in text
    assert f"added for nginx-ha: {{base: [{repo}/salt]}}" in text
    assert "REPLACES the same top-level keys" in text
    # pure YAML: what Salt reads is exactly the values, comments aside
    data = yaml.safe_load(dropin(etc).read_text())
    assert set(data) == set(master_dropin.BASE_KEYS + master_dropin.REACTOR_KEYS)


# (b) ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("main", [None, "", "# nothing set here\ninterface: 0.0.0.0\n"], ids=["no-file", "empty", "unrelated"])
def test_b_a_master_without_settings_keeps_salts_defaults(etc, repo, main):
    if main is not None:
        (etc / "master").write_text(main)
    assert list(salt.config.DEFAULT_MASTER_OPTS["file_roots"]["base"]) == DEFAULT_FILE_ROOTS
    assert list(salt.config.DEFAULT_MASTER_OPTS["pillar_roots"]["base"]) == DEFAULT_PILLAR_ROOTS
    assert run(etc, repo) == 0
    after = opts(etc)
    assert after["file_roots"] == {"base": DEFAULT_FILE_ROOTS + [f"{repo}/salt"]}
    assert after["pillar_roots"] == {"base": DEFAULT_PILLAR_ROOTS}
    assert after["runner_dirs"] == [f"{repo}/_runners"]
    assert after["peer"] == {".*": ["nginx_ha.health"]}
    assert "repeated from Salt's built-in default: {base: [/srv/salt, /srv/spm/salt]}" in comments(dropin(etc).read_text())


def test_b_pillar_option_appends_the_example_pillar_after_the_operators(etc, repo):
    assert run(etc, repo, "--pillar") == 0
    assert opts(etc)["pillar_roots"] == {"base": DEFAULT_PILLAR_ROOTS + [f"{repo}/pillar"]}


# (c) ------------------------------------------------------------------------------------------


def test_c_an_existing_master_d_file_is_merged_and_keeps_its_place(etc, repo):
    # Salt reads master.d/*.conf in sorted order: one before nginx_ha.conf and one after it.
    write_master(etc, {"file_roots": {"base": ["/srv/salt"]}, "pillar_roots": {"base": ["/srv/pillar"]}})
    (etc / "master.d").mkdir()
    (etc / "master.d" / "10-roots.conf").write_text(yaml.safe_dump({"file_roots": {"base": ["/srv/team-a"], "prod": ["/srv/prod"]}}))
    (etc / "master.d" / "zz-peer.conf").write_text(yaml.safe_dump({"peer": {"db.*": ["mysql.status"]}, "file_roots": {"base": ["/srv/team-z"]}}))
    before = opts(etc)
    # what the master serves today: master.d's merged file_roots; the main file's is already replaced
    assert before["file_roots"] == {"base": ["/srv/team-a", "/srv/team-z"], "prod": ["/srv/prod"]}
    assert run(etc, repo) == 0
    after = opts(etc)
    assert after["file_roots"] == {"base": ["/srv/team-a", "/srv/team-z", f"{repo}/salt"], "prod": ["/srv/prod"]}
    assert after["peer"] == {"db.*": ["mysql.status"], ".*": ["nginx_ha.health"]}
    assert after["pillar_roots"] == {"base": ["/srv/pillar"]}
    text = comments(dropin(etc).read_text())
    assert f"repeated from {etc}/master.d/10-roots.conf:" in text and f"repeated from {etc}/master.d/zz-peer.conf:" in text
    assert f"not repeated: the value in {etc}/master, already replaced by {etc}/master.d/10-roots.conf" in text


def test_c_jobs_salt_itself_persisted_in_master_d_are_not_copied(etc, repo):
    (etc / "master.d").mkdir()
    (etc / "master.d" / "_schedule.conf").write_text(yaml.safe_dump({"schedule": {"persisted": {"function": "test.ping", "seconds": 60}}}))
    (etc / "master.d" / "20-jobs.conf").write_text(yaml.safe_dump({"schedule": {"team": {"function": "test.ping", "seconds": 30}}}))
    before = opts(etc)
    assert set(before["schedule"]) == {"persisted", "team"}
    assert run(etc, repo, "--reactor") == 0
    assert set(yaml.safe_load(dropin(etc).read_text())["schedule"]) == {"team", "nginx_ha_fleet_check"}
    assert set(opts(etc)["schedule"]) == {"persisted", "team", "nginx_ha_fleet_check"}


# (d) ------------------------------------------------------------------------------------------


def test_d_a_second_run_gives_the_same_file(etc, repo):
    write_master(etc, OPERATOR)
    assert run(etc, repo, "--reactor") == 0
    first, stat = dropin(etc).read_text(), dropin(etc).stat()
    assert run(etc, repo, "--reactor") == 0
    assert dropin(etc).read_text() == first and dropin(etc).stat().st_mtime_ns == stat.st_mtime_ns  # not even rewritten
    assert run(etc, repo) == 0  # --reactor stays on: a run never takes away what the master has
    assert dropin(etc).read_text() == first


def test_d_printing_gives_the_file_that_write_writes(etc, repo, capsys):
    write_master(etc, OPERATOR)
    assert run(etc, repo, write=False) == 0
    printed = capsys.readouterr().out
    assert not (etc / "master.d").exists()
    assert run(etc, repo) == 0
    assert dropin(etc).read_text() == printed


def test_d_changed_settings_are_picked_up_by_the_next_run(etc, repo):
    write_master(etc, OPERATOR)
    assert run(etc, repo) == 0
    write_master(etc, dict(OPERATOR, file_roots={"base": ["/srv/salt", "/srv/salt-new"]}))
    assert opts(etc)["file_roots"]["base"] == ["/srv/salt", f"{repo}/salt"]  # the drop-in still rules ...
    assert run(etc, repo) == 0
    assert opts(etc)["file_roots"] == {"base": ["/srv/salt", "/srv/salt-new", f"{repo}/salt"]}  # ... until the next run


def test_d_values_added_to_the_drop_in_by_hand_are_kept(etc, repo):
    write_master(etc, OPERATOR)
    assert run(etc, repo) == 0
    data = yaml.safe_load(dropin(etc).read_text())
    data["file_roots"]["base"].insert(1, "/srv/by-hand")
    data["log_level"] = "info"
    dropin(etc).write_text(yaml.safe_dump(data))
    for _ in range(2):
        assert run(etc, repo) == 0
        after = opts(etc)
        assert after["file_roots"]["base"] == ["/srv/salt", "/srv/by-hand", f"{repo}/salt"]
        assert after["log_level"] == "info"


def test_d_a_copy_of_the_old_example_keeps_its_pillar_and_gets_the_defaults_back(etc, repo):
    (etc / "master.d").mkdir()
    dropin(etc).write_text(
        f"file_roots:\n  base:\n    - {repo}/salt\npillar_roots:\n  base:\n    - {repo}/pillar\n"
        f"runner_dirs:\n  - {repo}/_runners\npeer:\n  .*:\n    - nginx_ha.health\n"
    )
    assert run(etc, repo) == 0
    after = opts(etc)
    assert after["file_roots"] == {"base": DEFAULT_FILE_ROOTS + [f"{repo}/salt"]}
    assert after["pillar_roots"] == {"base": DEFAULT_PILLAR_ROOTS + [f"{repo}/pillar"]}


def test_d_a_moved_checkout_replaces_the_old_paths(etc, repo, tmp_path):
    assert run(etc, repo) == 0
    moved = tmp_path / "moved"
    os.rename(repo, moved)
    assert run(etc, str(moved)) == 0
    after = opts(etc)
    assert after["file_roots"] == {"base": DEFAULT_FILE_ROOTS + [f"{moved}/salt"]}
    assert after["runner_dirs"] == [f"{moved}/_runners"]


# (e) ------------------------------------------------------------------------------------------


def test_e_the_shipped_example_keeps_the_defaults_of_a_master_without_settings(etc):
    (etc / "master.d").mkdir()
    example = (REPO / "conf" / "master.d" / "nginx_ha.conf").read_text()
    dropin(etc).write_text(example)
    after = opts(etc)
    assert after["file_roots"] == {"base": DEFAULT_FILE_ROOTS + ["/srv/nginx-ha/salt"]}
    assert after["pillar_roots"] == {"base": DEFAULT_PILLAR_ROOTS}
    assert after["runner_dirs"] == ["/srv/nginx-ha/_runners"]
    assert after["peer"] == {".*": ["nginx_ha.health"]}
    assert "python -m scripts.master_dropin" in example


def test_e_the_shipped_example_is_what_the_script_writes_for_a_master_without_settings(etc, capsys):
    assert run(etc, "/srv/nginx-ha", write=False) == 0
    generated = yaml.safe_load(capsys.readouterr().out)
    assert yaml.safe_load((REPO / "conf" / "master.d" / "nginx_ha.conf").read_text()) == generated


def test_e_the_reactor_example_says_it_replaces_reactor_and_schedule():
    header = (REPO / "conf" / "master.d" / "nginx_ha_reactor.conf").read_text().split("\nreactor:")[0]
    assert "replaced, not merged" in header and "python -m scripts.master_dropin" in header


# Where it refuses, and where it writes ---------------------------------------------------------


def test_only_the_drop_in_is_written_inside_the_config_dir(etc, repo, tmp_path):
    write_master(etc, OPERATOR)
    outside = tree(tmp_path)
    assert run(etc, repo, "--reactor") == 0
    assert sorted(set(tree(tmp_path)) - set(outside)) == ["etc-salt/master.d", "etc-salt/master.d/nginx_ha.conf"]
    assert (etc / "master").read_text() == yaml.safe_dump(OPERATOR)
    assert oct(dropin(etc).stat().st_mode & 0o777) == oct((etc / "master").stat().st_mode & 0o777)


def test_keys_set_by_an_include_file_are_refused(etc, repo):
    # Salt reads include: files after master.d, so a drop-in cannot add to their keys.
    (etc / "extra.conf").write_text(yaml.safe_dump({"file_roots": {"base": ["/srv/extra"]}}))
    write_master(etc, {"include": "extra.conf"})
    assert run(etc, repo) == 2
    assert not dropin(etc).exists()


def test_a_master_that_does_not_read_master_d_is_refused(etc, repo):
    write_master(etc, {"default_include": "conf.d/*.conf"})
    assert run(etc, repo) == 2
    assert not dropin(etc).exists()


def test_write_needs_a_checkout_at_repo(etc, tmp_path):
    assert run(etc, str(tmp_path / "nowhere")) == 2
    assert not (etc / "master.d").exists()


def test_a_value_lost_after_writing_restores_the_previous_file(etc, repo, monkeypatch):
    write_master(etc, OPERATOR)
    assert run(etc, repo) == 0
    previous = dropin(etc).read_text()
    write_master(etc, dict(OPERATOR, runner_dirs=["/srv/runners", "/srv/more"]))
    real = master_dropin.master_opts
    calls = []

    def reads_back_without_more(config_dir, exclude=None):
        got = real(config_dir, exclude)
        calls.append(exclude)
        if len(calls) == 3:  # the read-back after writing
            got["runner_dirs"] = ["/srv/runners"]
        return got

    monkeypatch.setattr(master_dropin, "master_opts", reads_back_without_more)
    assert run(etc, repo) == 1
    assert dropin(etc).read_text() == previous
