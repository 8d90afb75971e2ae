"""
The TLS material of the nginx servers (``nginx_ha:nginx:servers:<name>:ssl_certificate`` and
``ssl_certificate_key``): where nginx reads it, what nginx-ha writes, and the checks it must pass
before anything is written.

Each value is PEM text from the pillar or the absolute path of a file already on the node. What
comes from the pillar is written into ONE file per server, ``<lookup:nginx:tls_dir>/<name>.nginx_ha.pem``
(the key, then the certificate and its chain; root, mode 0600): a single atomic replacement, so
nginx can never load a new certificate with an old key. nginx takes both from that file.

:func:`plan` is pure (the model uses it for the node view, which never holds PEM text);
:func:`check` reads the node's files and asks OpenSSL, as nginx will: the certificate parses and
is valid now, the key is one unencrypted private key, and the key matches the certificate
(``ssl.SSLContext.load_cert_chain``: the check nginx's own loading does). Every problem names its
pillar key; no message ever quotes PEM text. ``_states/nginx_ha_certs.py`` runs it before writing.
"""

import datetime
import os
import ssl
import sys

try:  # Salt's loader puts the extension utils directory on sys.path while it loads other modules
    import nginx_ha_schema as schema
except ImportError:  # loaded by the utils loader itself (or by path in tests): the sibling file
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    import nginx_ha_schema as schema

__virtualname__ = "nginx_ha_tls"

FIELDS = ("ssl_certificate", "ssl_certificate_key")
FILE_MODE = 0o600
DIR_MODE = 0o700
EXPIRY_NOTE_DAYS = 30


def __virtual__():
    return __virtualname__


def server_key(name):
    return f"{schema.ROOT}:nginx:servers:{name}"


FILE_SUFFIX = ".nginx_ha.pem"  # only files named so are ever removed (nginx_ha_certs.pruned)


def tls_file(tls_dir, name):
    """The file nginx-ha writes for server ``name`` (a schema NAME: a safe file name)."""
    return os.path.join(tls_dir, f"{name}{FILE_SUFFIX}")


def plan(nginx, tls_dir):
    """
    ``[{server, pillar_key, file, ssl_certificate, ssl_certificate_key, from_pillar}]`` for every
    server of the typed ``nginx`` pillar with TLS material, in name order: the paths nginx reads
    (``file`` when the pillar gives PEM text, else the node's path) and the file nginx-ha writes
    (None when both are paths on the node). Holds no PEM text.
    """
    out = []
    if not nginx.get("manage_sites", True):
        return out
    for name, server in sorted((nginx.get("servers") or {}).items()):
        if not isinstance(server, dict):
            continue
        values = {field: server.get(field) for field in FIELDS}
        if all(value is None for value in values.values()):
            continue
        from_pillar = [field for field, value in values.items() if schema.is_pem(value)]
        written = tls_file(tls_dir, name) if from_pillar else None
        entry = {"server": name, "pillar_key": server_key(name), "file": written, "from_pillar": from_pillar}
        entry.update({field: (written if field in from_pillar else value) for field, value in values.items()})
        out.append(entry)
    return out


def file_text(server):
    """What nginx-ha writes for one typed ``server``: its pillar key, then its pillar certificate chain."""
    parts = [server.get(field) for field in ("ssl_certificate_key", "ssl_certificate")]
    return "".join(part for part in parts if schema.is_pem(part))


# ---------------------------------------------------------------------------------------------
# Checks (read the node's files, ask OpenSSL)
# ---------------------------------------------------------------------------------------------


def _read(value, key, errors):
    """The PEM text of a pillar value or of the node's file it names; None (and an error) when unreadable."""
    if value is None:
        errors.append(f"{key}: is required (PEM text or the path of a file on this node)")
        return None
    if schema.is_pem(value):
        return value
    try:
        with open(value, "rb") as fh:
            data = fh.read(1 << 20)
    except FileNotFoundError:
        errors.append(f"{key}: {value} does not exist on this node")
        return None
    except IsADirectoryError:
        errors.append(f"{key}: {value} is a directory on this node, not a PEM file")
        return None
    except OSError as exc:
        errors.append(f"{key}: {value} cannot be read on this node ({exc.strerror})")
        return None
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        errors.append(f"{key}: {value} is not PEM text (binary data; DER files are not read by nginx)")
        return None


def _blocks(text, key, where, errors):
    try:
        return schema.pem_blocks(text)
    except schema.Invalid as exc:
        errors.append(f"{key}: {where}{exc}")
        return None


def _pem(label, der):
    import base64  # pylint: disable=import-outside-toplevel

    body = base64.encodebytes(der).decode()
    return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n"


def _utc(cert, name):
    value = getattr(cert, f"{name}_utc", None)  # cryptography >= 42
    if value is None:
        value = getattr(cert, name).replace(tzinfo=datetime.timezone.utc)
    return value


def _dns_names(cert, x509):
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [str(n).lower() for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        return [str(a.value).lower() for a in cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)]


def covers(pattern, name):
    """A certificate name (``*.example.com`` covers exactly one label) covers a server_name."""
    pattern, name = pattern.lower(), name.lower()
    if pattern == name:
        return True
    if pattern.startswith("*.") and not name.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return False


class _Source:
    """A path OpenSSL can open for PEM text: the node's file, or an anonymous in-memory file (never on disk)."""

    def __init__(self, value, text):
        self.value, self.text, self.fd = value, text, None

    def __enter__(self):
        if not schema.is_pem(self.value):
            return self.value
        self.fd = os.memfd_create("nginx_ha_tls", os.MFD_CLOEXEC)
        os.write(self.fd, self.text.encode())
        return f"/proc/self/fd/{self.fd}"

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)


def check(material, server, now=None):
    """
    ``(errors, notes)`` for one ``material`` of :func:`plan` and its typed ``server`` (with the
    pillar's PEM text): errors block the write, notes are for the state's comment (expiry soon, a
    server_name the certificate does not cover). Each names its pillar key; none quotes PEM text.
    """
    try:
        from cryptography import x509  # pylint: disable=import-outside-toplevel
        from cryptography.hazmat.primitives import serialization  # pylint: disable=import-outside-toplevel
    except ImportError:  # pragma: no cover - Salt 3008 requires cryptography
        return [f"{material['pillar_key']}: cannot check TLS material: Python's cryptography package (a Salt dependency) is missing"], []
    now = now or datetime.datetime.now(datetime.timezone.utc)
    key = material["pillar_key"]
    cert_key, pkey_key = f"{key}:ssl_certificate", f"{key}:ssl_certificate_key"
    errors, notes = [], []
    values = {field: server.get(field) for field in FIELDS}
    # "" for pillar text, "<path>: " for a file on the node: the start of a message about it
    where = {field: ("" if schema.is_pem(value) else f"{value}: ") for field, value in values.items()}
    cert_text = _read(values["ssl_certificate"], cert_key, errors)
    key_text = _read(values["ssl_certificate_key"], pkey_key, errors)

    certs = []
    blocks = _blocks(cert_text, cert_key, where["ssl_certificate"], errors) if cert_text is not None else None
    if blocks is not None:
        ders = [der for label, der in blocks if label == "CERTIFICATE"]
        if not ders:
            errors.append(f"{cert_key}: {where['ssl_certificate']}holds no CERTIFICATE block")
        for number, der in enumerate(ders, 1):
            try:
                certs.append(x509.load_der_x509_certificate(der))
            except ValueError:
                errors.append(f"{cert_key}: {where['ssl_certificate']}certificate {number} is not an X.509 certificate")
                certs = []
                break
    if certs:
        leaf = certs[0]
        start, end = _utc(leaf, "not_valid_before"), _utc(leaf, "not_valid_after")
        if now < start:
            errors.append(f"{cert_key}: {where['ssl_certificate']}the certificate is not valid yet (from {start:%Y-%m-%d %H:%M:%S} UTC; now {now:%Y-%m-%d %H:%M:%S} UTC)")
        elif now > end:
            errors.append(f"{cert_key}: {where['ssl_certificate']}the certificate expired on {end:%Y-%m-%d %H:%M:%S} UTC")
        elif end - now < datetime.timedelta(days=EXPIRY_NOTE_DAYS):
            notes.append(f"{cert_key}: {where['ssl_certificate']}the certificate expires on {end:%Y-%m-%d} ({(end - now).days} days)")
        names = _dns_names(leaf, x509)
        missing = [n for n in server.get("server_name") or [] if n != "_" and not any(covers(p, n) for p in names)]
        if missing:
            notes.append(f"{key}:server_name: {', '.join(missing)} not in the certificate (it names {', '.join(names) or 'nothing'}); clients will refuse it")

    pkey = None
    blocks = _blocks(key_text, pkey_key, where["ssl_certificate_key"], errors) if key_text is not None else None
    if blocks is not None:
        keys = [(label, der) for label, der in blocks if "PRIVATE KEY" in label]
        if len(keys) != 1 or keys[0][0] not in schema.PEM_KEY_LABELS:
            what = "an encrypted private key" if any(label == "ENCRYPTED PRIVATE KEY" for label, _ in keys) else f"{len(keys)} private keys"
            errors.append(f"{pkey_key}: {where['ssl_certificate_key']}holds {what}; nginx needs one unencrypted private key")
        else:
            try:
                pkey = serialization.load_pem_private_key(_pem(*keys[0]).encode(), password=None)
            except (ValueError, TypeError):
                errors.append(f"{pkey_key}: {where['ssl_certificate_key']}is not a private key OpenSSL can read")

    if certs and pkey is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            with _Source(values["ssl_certificate"], cert_text) as certfile, _Source(values["ssl_certificate_key"], key_text) as keyfile:
                context.load_cert_chain(certfile, keyfile)
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                errors.append(
                    f"{pkey_key}: is not the key of {cert_key} (OpenSSL: key values mismatch;"
                    " the server's own certificate comes first, then its chain)"
                )
            else:
                errors.append(f"{cert_key}: OpenSSL (as nginx) cannot load the certificate with its key: {exc.reason or exc.library or 'refused'}")
        except OSError as exc:
            errors.append(f"{cert_key}: cannot be loaded ({exc.strerror})")
    return errors, notes


def check_all(nginx, tls_dir, now=None):
    """``(errors, notes)`` of every server's TLS material in the typed ``nginx`` pillar."""
    errors, notes = [], []
    for material in plan(nginx, tls_dir):
        found, said = check(material, nginx["servers"][material["server"]], now)
        errors += found
        notes += said
    return errors, notes
