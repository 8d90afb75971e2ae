"""
Installing nginx-ha on a master that already serves states and pillars (issue 11): the drop-in is
generated the documented way (``python -m scripts.master_dropin --write`` against the master's own
config dir), the master restarts, and everything it served before is still served, next to
nginx-ha. An unrelated minion's pillar and highstate are the same before and after.
"""

import subprocess
import sys

import pytest
import yaml

from tests.integration.conftest import REPO

pytestmark = pytest.mark.integration

MINION_ID = "app-1"  # not a cluster node: the pillar gives it nothing of nginx-ha's


@pytest.fixture
def operator_trees(tmp_path):
    """The operator's own state tree and pillar tree, as on a master that was in use before nginx-ha."""
    states, pillar, out = tmp_path / "srv-salt", tmp_path / "srv-pillar", tmp_path / "out"
    for path in (states, pillar, out):
        path.mkdir()
    (states / "top.sls").write_text(yaml.safe_dump({"base": {"*": ["hello"]}}))
    (states / "hello.sls").write_text(
        f"hello:\n  file.managed:\n    - name: {out}/hello.txt\n    - contents: {{{{ pillar['greeting'] }}}}\n"
    )
    (pillar / "top.sls").write_text(yaml.safe_dump({"base": {"*": ["app"]}}))
    (pillar / "app.sls").write_text(yaml.safe_dump({"greeting": "hello from the operator", "app": {"port": 8080}}))
    return states, pillar


def _highstate(ret):
    """What a highstate reports, without timings."""
    assert ret.returncode in (0, 1), ret
    return {key: {k: v for k, v in val.items() if k not in ("duration", "start_time", "__run_num__")} for key, val in ret.data.items()}


def test_adding_nginx_ha_keeps_the_operators_states_and_pillars(salt_factories, operator_trees):
    states, pillar = operator_trees
    overrides = {"file_roots": {"base": [str(states)]}, "pillar_roots": {"base": [str(pillar)]}, "interface": "127.0.0.1"}
    master = salt_factories.salt_master_daemon("nginx-ha-install-master", overrides=overrides)
    with master.started():
        minion = master.salt_minion_daemon(MINION_ID, overrides={"master": "127.0.0.1"})
        with minion.started():
            call, run = minion.salt_call_cli(timeout=60), master.salt_run_cli(timeout=60)

            def served():
                show = call.run("state.show_sls", "hello")
                assert show.returncode == 0, show
                items = call.run("pillar.items", "unmask=True")
                assert items.returncode == 0, items
                listed = call.run("cp.list_master")
                assert listed.returncode == 0, listed
                roots = run.run("config.get", "file_roots")
                assert roots.returncode == 0, roots
                return show.data, items.data, set(listed.data), roots.data, _highstate(call.run("state.highstate", "test=True"))

            show, items, listed, roots, highstate = served()
            assert items["greeting"] == "hello from the operator"
            assert "hello.sls" in listed and "nginx_ha/init.sls" not in listed
            assert highstate and all(val["result"] is None for val in highstate.values())  # test=True: would change

            # The documented install: generate the drop-in from this master's own config dir, restart.
            master.terminate()
            dropin = subprocess.run(
                [sys.executable, "-m", "scripts.master_dropin", "--repo", str(REPO), "--config-dir", master.config_dir, "--write"],
                cwd=REPO, capture_output=True, text=True, check=False, timeout=60,
            )
            assert dropin.returncode == 0, dropin.stderr
            master.start()

            show_after, items_after, listed_after, roots_after, highstate_after = served()
            assert show_after == show  # the operator's state renders as before (with the same pillar)
            assert items_after == items  # pillar data unchanged: nginx-ha adds no pillar of its own
            assert {"hello.sls", "top.sls"} <= listed_after and listed <= listed_after
            assert {"nginx_ha/init.sls", "_modules/nginx_ha.py"} <= listed_after  # and nginx-ha is served
            assert roots_after["base"] == roots["base"] + [f"{REPO}/salt"]  # appended: the operator's roots first
            assert {k: v for k, v in roots_after.items() if k != "base"} == {k: v for k, v in roots.items() if k != "base"}
            assert highstate_after == highstate
            # the runner dir and the peer rule are there too (the factory's own peer rule kept)
            runners = run.run("doc.runner")
            assert runners.returncode == 0 and "nginx_ha.status" in runners.data, runners
            peer = run.run("config.get", "peer")
            assert peer.data[".*"] == ["test.*", "nginx_ha.health"], peer
