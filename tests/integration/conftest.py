"""
Integration tier: a real salt-master and salt-minion (pytest-salt-factories daemons on loopback)
serving this repository's formula and extensions. Nothing here applies states for real: these
tests cover Salt's loading, syncing, rendering and CLI behaviour; the cluster tier applies.
"""

import pathlib

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
MINION_ID = "web-a"


@pytest.fixture(scope="package")
def pillar_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("pillar")
    (path / "top.sls").write_text("base:\n  '*':\n    - nginx_ha\n")
    return path


@pytest.fixture(scope="package")
def write_pillar(pillar_dir):
    def write(data):
        (pillar_dir / "nginx_ha.sls").write_text(yaml.safe_dump({"nginx_ha": data}))

    return write


@pytest.fixture(scope="package")
def salt_master(salt_factories, pillar_dir, write_pillar):
    write_pillar(yaml.safe_load((REPO / "pillar" / "nginx_ha.sls").read_text())["nginx_ha"])
    overrides = {
        "file_roots": {"base": [str(REPO / "salt")]},
        "pillar_roots": {"base": [str(pillar_dir)]},
        "interface": "127.0.0.1",
    }
    factory = salt_factories.salt_master_daemon("nginx-ha-master", overrides=overrides)
    with factory.started():
        yield factory


@pytest.fixture(scope="package")
def salt_minion(salt_master):
    factory = salt_master.salt_minion_daemon(MINION_ID, overrides={"master": "127.0.0.1"})
    with factory.started():
        ret = factory.salt_call_cli().run("saltutil.sync_all")
        assert ret.returncode == 0, ret
        yield factory


@pytest.fixture(scope="package")
def salt_cli(salt_master):
    return salt_master.salt_cli()


@pytest.fixture
def salt_call_cli(salt_minion):
    return salt_minion.salt_call_cli()
