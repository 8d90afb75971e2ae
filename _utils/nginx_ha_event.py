"""
The wire format of nginx-ha's VRRP events, in one place: what the ``nginx_ha_events`` engine
(on the nodes) sends and the ``nginx_ha_reactor`` runner (on the master) accepts. Pure Python, no
Salt calls; both import it as ordinary Python (``import nginx_ha_event``).

* **Tag**: ``nginx_ha/vrrp/<instance>/<state lowercase>``, the state one of :data:`STATES`
  (:func:`make_tag`; :data:`TAG` is what the runner accepts, :data:`INSTANCE_NAME` the instance
  names the engine sends, a stricter subset).
* **Data**: ``{instance, state, previous_state, priority, vips, time, seq, boot, sig}``; ``boot``
  is the node's boot id (:data:`BOOT`, at most :data:`BOOT_ID_MAX` characters).
* **Signature** (``sig``): base64 of the PKCS#1 v1.5 / SHA-256 signature with the minion's own RSA
  key (``<pki_dir>/minion.pem``) over :func:`canonical` ``(minion id, tag, data without sig)``
  (:class:`Signer` on the node, :func:`verify` on the master with the minion's accepted key).
  The sender is the minion id Salt authenticated, never a payload field.

Changing anything here changes the bytes on the wire: engines and the runner must agree.
"""

import base64
import json
import re

__virtualname__ = "nginx_ha_event"

TAG_PREFIX = "nginx_ha/vrrp"
STATES = ("MASTER", "BACKUP", "FAULT", "STOP")
SIG = "sig"  # the payload field that carries the signature (not covered by it)
BOOT_ID_MAX = 256  # characters of the boot id the engine reads

# The tags the runner accepts: any instance name without '/' or white space.
TAG = re.compile(rf"^{re.escape(TAG_PREFIX)}/(?P<instance>[^/\s]{{1,128}})/(?P<state>{'|'.join(s.lower() for s in STATES)})$")
# The instance names the engine sends (no quotes, backslashes or '*' either).
INSTANCE_NAME = re.compile(r"^[^\s\"'/\\*]{1,128}$")
# A boot id: printable ASCII, no spaces.
BOOT = re.compile(rf"^[\x21-\x7e]{{1,{BOOT_ID_MAX}}}$")


def __virtual__():
    return __virtualname__


def make_tag(instance, state):
    """``nginx_ha/vrrp/<instance>/<state lowercase>``."""
    return f"{TAG_PREFIX}/{instance}/{state.lower()}"


def parse_tag(tag):
    """``(instance, STATE)`` of a tag :data:`TAG` accepts, else None."""
    match = TAG.fullmatch(tag) if isinstance(tag, str) else None
    if not match:
        return None
    return match.group("instance"), match.group("state").upper()


def canonical(minion_id, tag, data):
    """The bytes a signature covers: the sender, the tag and the payload without ``sig``."""
    body = {"id": minion_id, "tag": tag, "data": {k: v for k, v in data.items() if k != SIG}}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


class Signer:
    """PKCS#1 v1.5 / SHA-256 signatures with the minion's own RSA key (``<pki_dir>/minion.pem``)."""

    def __init__(self, key_path, minion_id):
        from cryptography.hazmat.primitives import hashes, serialization  # pylint: disable=import-outside-toplevel
        from cryptography.hazmat.primitives.asymmetric import padding  # pylint: disable=import-outside-toplevel

        with open(key_path, "rb") as fh:
            self._key = serialization.load_pem_private_key(fh.read(), password=None)
        self._padding = padding.PKCS1v15()
        self._hash = hashes.SHA256()
        self.minion_id = minion_id

    def __call__(self, tag, data):
        sig = self._key.sign(canonical(self.minion_id, tag, data), self._padding, self._hash)
        return base64.b64encode(sig).decode("ascii")


def verify(minion_id, tag, data, public_pem):
    """True when ``data['sig']`` is ``minion_id``'s signature over (id, tag, data)."""
    from cryptography.exceptions import InvalidSignature  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives import hashes, serialization  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives.asymmetric import padding  # pylint: disable=import-outside-toplevel

    sig = data.get(SIG)
    if not isinstance(sig, str) or not public_pem:
        return False
    try:
        key = serialization.load_pem_public_key(public_pem.encode() if isinstance(public_pem, str) else public_pem)
        key.verify(base64.b64decode(sig, validate=True), canonical(minion_id, tag, data), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
