"""
_utils/nginx_ha_tls.py: where each server's TLS material goes, and the checks it passes before
anything is written (certificate parses and is valid now, one unencrypted key, the key matches
the certificate as OpenSSL loads them, files on the node exist). Every message names its pillar
key and none quotes PEM text.
"""

import copy
import datetime
import os

import pytest

from tests.support import formula, tls

model = formula.model()
import nginx_ha_tls  # noqa: E402  (on sys.path through the model, as Salt's loader puts it)

TLS_DIR = "/etc/nginx/nginx_ha_tls"
KEY = "nginx_ha:nginx:servers:shop"


def typed(**server):
    pillar = formula.two_node_pillar()
    pillar["nginx"] = {"servers": {"shop": dict({"server_name": list(tls.NAMES), "listen": ["443 ssl"]}, **server)}}
    return model.normalize(formula.merged(pillar))["nginx"]


def check(cert, key, **server):
    return nginx_ha_tls.check_all(typed(ssl_certificate=cert, ssl_certificate_key=key, **server), TLS_DIR)


def assert_no_pem(messages):
    for message in messages:
        assert "-----" not in message and "MII" not in message, message
        for kind in tls.KINDS:
            body = tls.pair(kind)["key"].splitlines()[1]
            assert body not in message


@pytest.mark.parametrize("kind", ["valid", "chain"])
def test_a_valid_pair_passes(kind):
    material = tls.pair(kind)
    errors, notes = check(material["certificate"], material["key"])
    assert errors == [] and notes == []


@pytest.mark.parametrize(
    "kind, message",
    [
        ("expired", f"{KEY}:ssl_certificate: the certificate expired on "),
        ("not_yet_valid", f"{KEY}:ssl_certificate: the certificate is not valid yet (from "),
        ("other_key", f"{KEY}:ssl_certificate_key: is not the key of {KEY}:ssl_certificate (OpenSSL: key values mismatch"),
    ],
)
def test_expired_not_yet_valid_and_mismatched_pairs_fail_naming_the_key(kind, message):
    material = tls.pair(kind)
    errors, _ = check(material["certificate"], material["key"])
    assert len(errors) == 1 and errors[0].startswith(message), errors
    assert_no_pem(errors)


def test_a_chain_in_the_wrong_order_is_a_mismatch():
    material = tls.pair("chain")
    ca_first = material["ca"] + material["certificate"].replace(material["ca"], "")
    errors, _ = check(ca_first, material["key"])
    assert len(errors) == 1 and "key values mismatch" in errors[0] and "comes first" in errors[0]


def test_files_on_the_node_are_read_and_checked(tmp_path):
    cert, key = tls.write(str(tmp_path), "valid")
    assert check(cert, key) == ([], [])
    _, other = tls.write(str(tmp_path), "other_key")
    errors, _ = check(cert, other)
    assert len(errors) == 1 and errors[0].startswith(f"{KEY}:ssl_certificate_key: is not the key of")
    expired, expired_key = tls.write(str(tmp_path), "expired")
    errors, _ = check(expired, expired_key)
    assert errors == [f"{KEY}:ssl_certificate: {expired}: " + errors[0].split(f"{expired}: ", 1)[1]]
    assert "expired on" in errors[0]


def test_a_combined_file_serves_as_both(tmp_path):
    material = tls.pair("valid")
    combined = tmp_path / "combined.pem"
    combined.write_text(material["key"] + material["certificate"])
    assert check(str(combined), str(combined)) == ([], [])


def test_missing_unreadable_and_wrong_files_are_named(tmp_path):
    (tmp_path / "empty.pem").write_text("")
    (tmp_path / "der.crt").write_bytes(b"\x30\x82\x01\xff\x00")
    cert, key = tls.write(str(tmp_path), "valid")
    errors, _ = check(f"{tmp_path}/nope.crt", f"{tmp_path}/nope.key")
    assert errors == [f"{KEY}:ssl_certificate: {tmp_path}/nope.crt does not exist on this node", f"{KEY}:ssl_certificate_key: {tmp_path}/nope.key does not exist on this node"]
    errors, _ = check(str(tmp_path), f"{tmp_path}/empty.pem")
    assert errors == [f"{KEY}:ssl_certificate: {tmp_path} is a directory on this node, not a PEM file", f"{KEY}:ssl_certificate_key: {tmp_path}/empty.pem: holds no PEM block"]
    errors, _ = check(f"{tmp_path}/der.crt", key)
    assert errors == [f"{KEY}:ssl_certificate: {tmp_path}/der.crt is not PEM text (binary data; DER files are not read by nginx)"]
    errors, _ = check(key, cert)  # swapped
    assert errors == [f"{KEY}:ssl_certificate: {key}: holds no CERTIFICATE block", f"{KEY}:ssl_certificate_key: {cert}: holds 0 private keys; nginx needs one unencrypted private key"]
    assert_no_pem(errors)


def test_an_encrypted_key_file_is_refused(tmp_path):
    from cryptography.hazmat.primitives import serialization

    material = tls.pair("valid")
    key = serialization.load_pem_private_key(material["key"].encode(), None)
    path = tmp_path / "enc.key"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    cert = tmp_path / "c.crt"
    cert.write_text(material["certificate"])
    errors, _ = check(str(cert), str(path))
    assert errors == [f"{KEY}:ssl_certificate_key: {path}: holds an encrypted private key; nginx needs one unencrypted private key"]


def test_a_certificate_that_is_not_x509_is_refused(tmp_path):
    bogus = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"
    path = tmp_path / "bogus.crt"
    path.write_text(bogus)
    errors, _ = check(str(path), tls.write(str(tmp_path), "valid")[1])
    assert errors == [f"{KEY}:ssl_certificate: {path}: certificate 1 is not an X.509 certificate"]


def test_notes_name_uncovered_server_names_and_near_expiry():
    material = tls.pair("valid")
    errors, notes = check(material["certificate"], material["key"], server_name=["shop.example.test", "blog.example.test", "_"])
    assert errors == []
    assert notes == [f"{KEY}:server_name: blog.example.test not in the certificate (it names shop.example.test, www.shop.example.test); clients will refuse it"]
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=80)
    errors, notes = nginx_ha_tls.check_all(typed(ssl_certificate=material["certificate"], ssl_certificate_key=material["key"]), TLS_DIR, now=later)
    assert errors == [] and len(notes) == 1 and notes[0].startswith(f"{KEY}:ssl_certificate: the certificate expires on ")


@pytest.mark.parametrize(
    "pattern, name, covered",
    [("a.example", "a.example", True), ("*.example", "a.example", True), ("*.example", "a.b.example", False), ("*.example", "example", False), ("A.Example", "a.example", True), ("*.example", "*.example", True)],
)
def test_certificate_names_cover_server_names(pattern, name, covered):
    assert nginx_ha_tls.covers(pattern, name) is covered


def test_the_plan_holds_paths_never_pem_text(tmp_path):
    material = tls.pair("valid")
    cert, key = tls.write(str(tmp_path), "valid")
    nginx = typed(ssl_certificate=material["certificate"], ssl_certificate_key=key)
    nginx["servers"]["blog"] = copy.deepcopy(nginx["servers"]["shop"])
    nginx["servers"]["blog"].update(ssl_certificate=cert, ssl_certificate_key=key)
    nginx["servers"]["both"] = copy.deepcopy(nginx["servers"]["shop"])
    nginx["servers"]["both"].update(ssl_certificate_key=material["key"])
    plan = nginx_ha_tls.plan(nginx, TLS_DIR)
    assert [m["server"] for m in plan] == ["blog", "both", "shop"]
    blog, both, shop = plan
    assert blog["file"] is None and (blog["ssl_certificate"], blog["ssl_certificate_key"]) == (cert, key)
    assert both["file"] == f"{TLS_DIR}/both.nginx_ha.pem" == both["ssl_certificate"] == both["ssl_certificate_key"]
    assert shop["file"] == shop["ssl_certificate"] and shop["ssl_certificate_key"] == key and shop["from_pillar"] == ["ssl_certificate"]
    assert_no_pem([repr(plan)])
    # one file, key first: a single atomic write holds a matching pair
    assert nginx_ha_tls.file_text(nginx["servers"]["both"]) == material["key"] + material["certificate"]
    assert nginx_ha_tls.file_text(nginx["servers"]["shop"]) == material["certificate"]


def test_pillar_text_is_checked_in_memory_never_on_disk(monkeypatch):
    """OpenSSL gets the pillar's PEM text as anonymous memory files (memfd), closed afterwards: never a file on disk."""
    seen = []
    real = nginx_ha_tls.ssl.SSLContext.load_cert_chain

    def spy(self, certfile, keyfile=None, password=None):
        seen.append([(path, os.readlink(path)) for path in (certfile, keyfile)])
        return real(self, certfile, keyfile)

    monkeypatch.setattr(nginx_ha_tls.ssl.SSLContext, "load_cert_chain", spy)
    material = tls.pair("valid")
    assert check(material["certificate"], material["key"]) == ([], [])
    assert len(seen) == 1
    for path, target in seen[0]:
        assert path.startswith("/proc/self/fd/") and target.startswith("/memfd:nginx_ha_tls"), seen
        assert not os.path.exists(path) or not os.readlink(path).startswith("/memfd:nginx_ha_tls")  # closed
