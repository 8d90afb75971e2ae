"""
The wire format of the VRRP events (_utils/nginx_ha_event.py): tag, states, the signed bytes and
the signature scheme, pinned byte for byte (engines in the field and the master's runner must keep
agreeing across versions).
"""

import base64

import pytest

from tests.support import formula

formula.load_module("_utils", "nginx_ha_event")  # puts _utils/ on sys.path, as Salt's loader does
import nginx_ha_event  # noqa: E402

PAYLOAD = {
    "instance": "VI_web",
    "state": "FAULT",
    "previous_state": "MASTER",
    "priority": 100,
    "vips": ["203.0.113.100"],
    "time": 1800000000.25,
    "seq": 1800000000250,
    "boot": "6b085cff-9d20-454d-a7a8-1c2e37e6298f",
}
TAG = "nginx_ha/vrrp/VI_web/fault"
# What the engine and the runner signed before the format moved here (issue 11): unchanged.
CANONICAL = (
    b'{"data":{"boot":"6b085cff-9d20-454d-a7a8-1c2e37e6298f","instance":"VI_web","previous_state":"MASTER",'
    b'"priority":100,"seq":1800000000250,"state":"FAULT","time":1800000000.25,"vips":["203.0.113.100"]},'
    b'"id":"web-a","tag":"nginx_ha/vrrp/VI_web/fault"}'
)


@pytest.fixture(scope="module")
def keypair(tmp_path_factory):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("pki") / "minion.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    return str(path), key.public_key()


def test_tag_and_states():
    assert nginx_ha_event.STATES == ("MASTER", "BACKUP", "FAULT", "STOP")
    assert nginx_ha_event.make_tag("VI_web", "FAULT") == TAG
    assert nginx_ha_event.parse_tag(TAG) == ("VI_web", "FAULT")
    # the patterns as they were in the runner before they moved here
    assert nginx_ha_event.TAG.pattern == r"^nginx_ha/vrrp/(?P<instance>[^/\s]{1,128})/(?P<state>master|backup|fault|stop)$"
    assert nginx_ha_event.BOOT.pattern == r"^[\x21-\x7e]{1,256}$"


@pytest.mark.parametrize(
    "tag",
    ["nginx_ha/vrrp/VI_web/FAULT", "nginx_ha/vrrp/VI_web/deleted", "nginx_ha/vrrp/VI/web/fault", "nginx_ha/vrrp//fault", "nginx_ha/vrrp/VI web/fault",
     "nginx_ha/vrrp/" + "x" * 129 + "/fault", "nginx_ha/vrrp/VI_web/fault/x", "salt/nginx_ha/vrrp/VI_web/fault", None, 7],
)
def test_parse_tag_refuses(tag):
    assert nginx_ha_event.parse_tag(tag) is None


def test_every_tag_the_engine_makes_parses_back():
    for state in nginx_ha_event.STATES:
        for name in ("VI_web", "a", "x" * 128, "VI-1.2_b"):
            assert nginx_ha_event.INSTANCE_NAME.match(name)
            assert nginx_ha_event.parse_tag(nginx_ha_event.make_tag(name, state)) == (name, state)


def test_canonical_bytes_are_pinned():
    assert nginx_ha_event.canonical("web-a", TAG, dict(PAYLOAD, sig="anything")) == CANONICAL
    assert nginx_ha_event.canonical("web-a", TAG, PAYLOAD) == CANONICAL  # sig is not covered
    assert nginx_ha_event.canonical("wéb", "t", {"previous_state": None}) == b'{"data":{"previous_state":null},"id":"w\\u00e9b","tag":"t"}'


def test_signature_is_pkcs1v15_sha256_over_the_canonical_bytes(keypair):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    key_path, public = keypair
    sig = nginx_ha_event.Signer(key_path, "web-a")(TAG, PAYLOAD)
    public.verify(base64.b64decode(sig), CANONICAL, padding.PKCS1v15(), hashes.SHA256())  # raises when not
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signed = dict(PAYLOAD, sig=sig)
    assert nginx_ha_event.verify("web-a", TAG, signed, pem) and nginx_ha_event.verify("web-a", TAG, signed, pem.decode())
    assert not nginx_ha_event.verify("web-b", TAG, signed, pem)
    assert not nginx_ha_event.verify("web-a", TAG, dict(signed, seq=1), pem)
    assert not nginx_ha_event.verify("web-a", TAG, dict(signed, sig=None), pem)
    assert not nginx_ha_event.verify("web-a", TAG, dict(signed, sig="not base64!"), pem)
    assert not nginx_ha_event.verify("web-a", TAG, signed, None)
    assert not nginx_ha_event.verify("web-a", TAG, signed, "not a key")
