"""
nginx_ha_certs.present / pruned with loader mocks: the TLS material is checked before anything is
written, the pillar's PEM text is written root-only (one file per server, key then chain, 0600)
and never appears in a state return, and files of dropped servers are removed (only ours).
"""

import json
import os
import stat

import pytest

from tests.support import formula, tls

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="writes root-owned files")

mod = formula.load_module("_states", "nginx_ha_certs")
VALID = tls.pair("valid")


@pytest.fixture
def opts():
    return {"test": False}


@pytest.fixture
def pillar(tmp_path):
    pillar = formula.two_node_pillar()
    pillar["lookup"] = {"nginx": {"tls_dir": str(tmp_path / "tls")}}
    pillar["nginx"] = {
        "servers": {
            "shop": {"server_name": list(tls.NAMES), "listen": ["443 ssl"], "ssl_certificate": VALID["certificate"], "ssl_certificate_key": VALID["key"]},
        }
    }
    return pillar


@pytest.fixture
def configure_loader_modules(opts, pillar):
    return {mod: {"__salt__": {"nginx_ha.merged_config": lambda: formula.merged(pillar)}, "__opts__": opts}}


def tls_dir(tmp_path):
    return str(tmp_path / "tls")


def no_secret(ret):
    text = json.dumps(ret)
    assert "-----" not in text and not any(line in text for line in VALID["key"].splitlines()[1:-1]), text


def test_writes_one_root_only_file_per_server_key_first(tmp_path):
    ret = mod.present(tls_dir(tmp_path))
    no_secret(ret)
    path = f"{tls_dir(tmp_path)}/shop.nginx_ha.pem"
    assert ret["result"] is True, ret
    assert ret["changes"] == {tls_dir(tmp_path): f"{tls_dir(tmp_path)} created (root, 0700)", path: "created: root, 0600 (content not shown)"}
    st = os.stat(path)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600)
    assert stat.S_IMODE(os.stat(tls_dir(tmp_path)).st_mode) == 0o700
    assert open(path).read() == VALID["key"] + VALID["certificate"]
    again = mod.present(tls_dir(tmp_path))
    assert again["result"] is True and again["changes"] == {} and "in the desired state" in again["comment"]


def test_a_renewed_certificate_replaces_the_file_and_a_wrong_mode_is_fixed(tmp_path, pillar):
    assert mod.present(tls_dir(tmp_path))["result"] is True
    path = f"{tls_dir(tmp_path)}/shop.nginx_ha.pem"
    os.chmod(path, 0o644)
    ret = mod.present(tls_dir(tmp_path))
    assert ret["changes"] == {path: "owner/mode 0:0 0644 -> root 0600"} and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    chain = tls.pair("chain")
    pillar["nginx"]["servers"]["shop"].update(ssl_certificate=chain["certificate"], ssl_certificate_key=chain["key"])
    ret = mod.present(tls_dir(tmp_path))
    no_secret(ret)
    assert ret["changes"] == {path: "written: root, 0600 (content not shown)"}
    assert open(path).read() == chain["key"] + chain["certificate"]


@pytest.mark.parametrize(
    "kind, message",
    [
        ("expired", "nginx_ha:nginx:servers:shop:ssl_certificate: the certificate expired on"),
        ("not_yet_valid", "nginx_ha:nginx:servers:shop:ssl_certificate: the certificate is not valid yet"),
        ("other_key", "nginx_ha:nginx:servers:shop:ssl_certificate_key: is not the key of nginx_ha:nginx:servers:shop:ssl_certificate"),
    ],
)
def test_bad_material_fails_before_anything_is_written(tmp_path, pillar, kind, message):
    material = tls.pair(kind)
    pillar["nginx"]["servers"]["blog"] = {"server_name": "blog.example.test", "listen": ["443 ssl"], "ssl_certificate": VALID["certificate"], "ssl_certificate_key": VALID["key"]}
    pillar["nginx"]["servers"]["shop"].update(ssl_certificate=material["certificate"], ssl_certificate_key=material["key"])
    ret = mod.present(tls_dir(tmp_path))
    no_secret(ret)
    assert ret["result"] is False and ret["changes"] == {}
    assert ret["comment"].startswith("TLS material refused; nothing was written") and message in ret["comment"]
    assert not os.path.exists(tls_dir(tmp_path))  # not even the good server's file


def test_a_missing_file_on_the_node_fails_naming_the_key(tmp_path, pillar):
    pillar["nginx"]["servers"]["shop"].update(ssl_certificate="/etc/ssl/nginx-ha-test/none.crt", ssl_certificate_key="/etc/ssl/nginx-ha-test/none.key")
    ret = mod.present(tls_dir(tmp_path))
    assert ret["result"] is False
    assert "nginx_ha:nginx:servers:shop:ssl_certificate: /etc/ssl/nginx-ha-test/none.crt does not exist on this node" in ret["comment"]


def test_files_on_the_node_are_checked_and_nothing_is_written(tmp_path, pillar):
    cert, key = tls.write(str(tmp_path / "node"), "valid")
    pillar["nginx"]["servers"]["shop"].update(ssl_certificate=cert, ssl_certificate_key=key)
    ret = mod.present(tls_dir(tmp_path))
    assert ret["result"] is True and ret["changes"] == {} and "servers: shop" in ret["comment"]
    assert not os.path.exists(tls_dir(tmp_path))


def test_test_mode_checks_and_writes_nothing(tmp_path, opts):
    opts["test"] = True
    ret = mod.present(tls_dir(tmp_path))
    no_secret(ret)
    assert ret["result"] is None and f"{tls_dir(tmp_path)}/shop.nginx_ha.pem" in ret["changes"]
    assert "the site's nginx -t in this test run cannot load them" in ret["comment"]
    assert not os.path.exists(tls_dir(tmp_path))


def test_an_invalid_pillar_fails_without_showing_the_key(tmp_path, pillar):
    pillar["nginx"]["servers"]["shop"]["ssl_certificate_key"] = VALID["key"].replace("-----END", "x-----END")
    ret = mod.present(tls_dir(tmp_path))
    no_secret(ret)
    assert ret["result"] is False and "nginx_ha:nginx:servers:shop:ssl_certificate_key: (value not shown)" in ret["comment"]


def test_a_directory_others_may_write_is_refused(tmp_path):
    os.makedirs(tls_dir(tmp_path), mode=0o777)
    os.chmod(tls_dir(tmp_path), 0o777)
    ret = mod.present(tls_dir(tmp_path))
    assert ret["result"] is False and "not writing keys there" in ret["comment"]
    assert os.listdir(tls_dir(tmp_path)) == []


def test_the_name_must_be_the_nodes_tls_dir(tmp_path):
    ret = mod.present("/etc/elsewhere")
    assert ret["result"] is False and "is not this node's lookup:nginx:tls_dir" in ret["comment"]


def test_no_servers_no_files(tmp_path, pillar):
    pillar["nginx"] = {}
    ret = mod.present(tls_dir(tmp_path))
    assert ret["result"] is True and ret["changes"] == {} and not os.path.exists(tls_dir(tmp_path))


def test_pruned_removes_only_unused_files_of_ours(tmp_path, opts):
    base = tmp_path / "tls"
    base.mkdir()
    for name in ("shop.nginx_ha.pem", "old.nginx_ha.pem", ".nginx_ha.tmp123", "operator.pem", "notes.txt"):
        (base / name).write_text("x")
    os.symlink("/etc/hostname", base / "link.nginx_ha.pem")
    opts["test"] = True
    ret = mod.pruned(str(base), keep=[str(base / "shop.nginx_ha.pem")])
    assert ret["result"] is None and ret["changes"] == {"removed": [str(base / ".nginx_ha.tmp123"), str(base / "old.nginx_ha.pem")]}
    assert len(os.listdir(base)) == 6
    opts["test"] = False
    ret = mod.pruned(str(base) + "/", keep=[str(base / "shop.nginx_ha.pem")])
    assert ret["result"] is True and ret["changes"] == {"removed": [str(base / ".nginx_ha.tmp123"), str(base / "old.nginx_ha.pem")]}
    assert sorted(os.listdir(base)) == ["link.nginx_ha.pem", "notes.txt", "operator.pem", "shop.nginx_ha.pem"]
    assert mod.pruned(str(base), keep=[str(base / "shop.nginx_ha.pem")])["changes"] == {}
    assert mod.pruned(str(tmp_path / "none"))["result"] is True
