"""
Test certificates for the HTTPS tests, made with the ``cryptography`` package (a Salt dependency):
EC P-256 keys, so a whole set takes milliseconds. Each kind is made once per test session.

``pair("valid")`` -> ``{"certificate": PEM, "key": PEM, "ca": PEM}`` for ``shop.example.test`` and
``www.shop.example.test``, issued by a test CA; ``"expired"``, ``"not_yet_valid"``, ``"other_key"``
(a valid certificate with a key that is not its own) and ``"chain"`` (the certificate followed by
the CA) are the other kinds. ``write(directory, kind)`` puts one on disk (key 0600).
"""

import datetime
import functools
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NAMES = ("shop.example.test", "www.shop.example.test")
KINDS = ("valid", "chain", "expired", "not_yet_valid", "other_key")


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@functools.lru_cache(maxsize=None)
def ca():
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("nginx-ha test CA"))
        .issuer_name(_name("nginx-ha test CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(names=NAMES, start_days=-1, end_days=90, key=None):
    """A certificate for ``names`` valid from now + start_days to now + end_days, and its key."""
    ca_cert, ca_key = ca()
    key = key or _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=start_days))
        .not_valid_after(now + datetime.timedelta(days=end_days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


@functools.lru_cache(maxsize=None)
def pair(kind="valid", names=NAMES):
    """``{"certificate", "key", "ca"}`` PEM text of one kind (see the module doc)."""
    if kind in ("valid", "chain", "other_key"):
        cert, key = issue(names)
    elif kind == "expired":
        cert, key = issue(names, -30, -1)
    elif kind == "not_yet_valid":
        cert, key = issue(names, 2, 90)
    else:
        raise ValueError(kind)
    chain = cert_pem(cert) + (cert_pem(ca()[0]) if kind == "chain" else "")
    return {"certificate": chain, "key": key_pem(_key() if kind == "other_key" else key), "ca": cert_pem(ca()[0])}


def write(directory, kind="valid", names=NAMES):
    """Write a pair into ``directory``: ``(certificate path, key path)``, the key root-only (0600)."""
    material = pair(kind, names)
    os.makedirs(directory, exist_ok=True)
    cert, key = os.path.join(directory, f"{kind}.crt"), os.path.join(directory, f"{kind}.key")
    with open(cert, "w") as fh:
        fh.write(material["certificate"])
    with open(key, "w") as fh:
        fh.write(material["key"])
    os.chmod(key, 0o600)
    return cert, key
