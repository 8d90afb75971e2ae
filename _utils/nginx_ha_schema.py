"""
The ``nginx_ha`` pillar schema: every key, its type, range, default and documentation, in one place.

Validation (``normalize``), the defaults every node gets, the reference ``defaults.yaml`` and the
README's key table all come from :data:`SCHEMA`. Types are strict and positive (what a value *is*),
never a list of forbidden characters: a port is an integer 1-65535 (``8081`` or ``"8081"``), a
path is an absolute path of portable characters, a URL path is an RFC 3986 path (with an optional
query), a boolean is ``true`` or ``false``. ``normalize`` returns the value with defaults filled in
and scalars converted (``"8081"`` -> ``8081``), or raises :class:`SchemaError` listing every
problem as ``"<pillar key>: <message>"``.

Pure Python, standard library only: the minions need nothing beyond what Salt ships.
"""

import base64
import binascii
import copy
import ipaddress
import re
import shlex

__virtualname__ = "nginx_ha_schema"

ROOT = "nginx_ha"
REQUIRED = object()


def __virtual__():
    return __virtualname__


class SchemaError(ValueError):
    """The pillar is invalid. ``errors`` lists every problem, each naming its pillar key."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("invalid nginx_ha pillar:\n  " + "\n  ".join(self.errors))


class Invalid(Exception):
    """One value is not of its type (the message says what it should be)."""


HIDDEN = "(value not shown)"


def _show(value, kind=None):
    """The value for an error message; never a secret (what a type's ``secret(value)`` says, or any text holding a private key)."""
    text = repr(value)
    secret = getattr(kind, "secret", None) or getattr(getattr(kind, "inner", None), "secret", None)
    if (secret is not None and secret(value)) or "PRIVATE KEY" in text:
        return HIDDEN
    return text if len(text) <= 120 else text[:117] + "..."


# ---------------------------------------------------------------------------------------------
# Scalar types
# ---------------------------------------------------------------------------------------------


class Type:
    """A type: ``check(value)`` returns the normalized value or raises :class:`Invalid`."""

    what = "a value"

    def check(self, value):  # pragma: no cover - every type overrides it
        raise NotImplementedError

    def describe(self):
        return self.what


class Bool(Type):
    what = "true or false"

    def check(self, value):
        if not isinstance(value, bool):
            raise Invalid(f"is not {self.what}")
        return value


_INT_TEXT = re.compile(r"[+-]?[0-9]{1,12}")
_NUM_TEXT = re.compile(r"[+-]?(?:[0-9]{1,12}(?:\.[0-9]{0,9})?|\.[0-9]{1,9})")


class Int(Type):
    def __init__(self, low, high, what=None):
        self.low, self.high = low, high
        self.what = what or f"an integer within {low}-{high}"

    def check(self, value):
        if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"is not {self.what}")
        if not self.low <= value <= self.high:
            raise Invalid(f"is not {self.what}")
        return value


class Number(Type):
    def __init__(self, low, high):
        self.low, self.high = low, high
        self.what = f"a number within {low:g}-{high:g}"

    def check(self, value):
        if isinstance(value, str) and _NUM_TEXT.fullmatch(value.strip()):
            value = float(value.strip())
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise Invalid(f"is not {self.what}")
        if not self.low <= value <= self.high:
            raise Invalid(f"is not {self.what} (out of range)")
        return int(value) if isinstance(value, float) and value.is_integer() and value >= 1 else value


class Choice(Type):
    def __init__(self, *choices):
        self.choices = choices
        self.what = " or ".join(map(str, choices))

    def check(self, value):
        if isinstance(value, bool):
            raise Invalid(f"is not {self.what}")
        for choice in self.choices:
            if value == choice or (isinstance(choice, int) and isinstance(value, str) and value.strip() == str(choice)):
                return choice
        raise Invalid(f"is not {self.what}")


class Pattern(Type):
    """A string matching ``regex`` in full (never a trailing newline)."""

    def __init__(self, regex, what, max_len=255):
        self.regex = re.compile(regex)
        self.what = what
        self.max_len = max_len

    def check(self, value):
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise Invalid(f"is not {self.what}")
        text = str(value)
        if not text or len(text) > self.max_len or not self.regex.fullmatch(text):
            raise Invalid(f"is not {self.what}")
        return text


# Names we put into keepalived.conf and nginx configs as bare words.
NAME = Pattern(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", "a name of letters, digits, '_', '.', '-' (at most 64)")
MINION_ID = Pattern(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", "a minion id of letters, digits, '_', '.', '-'")
IFNAME = Pattern(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}", "an interface name (at most 15 letters, digits, '_', '.', '-')")
KEEPALIVED_OPTION = Pattern(r"[a-z][a-z0-9_]{0,63}", "a keepalived option name (lower case, '_')")
KEEPALIVED_WORD = Pattern(r"[A-Za-z0-9_.,:/@+=%-]{1,255}", "a keepalived value of letters, digits and _.,:/@+=%-")
PACKAGE = Pattern(r"[A-Za-z0-9][A-Za-z0-9_.+:~-]{0,127}", "a package name")
COMMAND_NAME = Pattern(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}", "a command name")
# nginx's server_name: a host name, with a wildcard only as a whole first or last label (*.example.com,
# www.example.*), or _ (nginx refuses "*" alone and "*x.example.com").
SERVER_NAME = Pattern(
    r"(?=.{1,253}$)(?:\*\.)?[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*(?:\.\*)?|_",
    "a server name (host name, *.wildcard or _)",
)
NGINX_TIME = Pattern(r"[0-9]{1,9}(?:ms|s|m|h|d)?", "an nginx time like 2s or 500ms")
NGINX_SIZE = Pattern(r"[0-9]{1,9}[kKmMgG]?", "an nginx size like 10m")

_PATH_CHARS = r"\-A-Za-z0-9_.,+@%:=~"


class AbsPath(Type):
    """An absolute path of portable characters (POSIX portable set plus ``+@%:=,~``)."""

    def __init__(self, spaces=False, directory=False):
        self.spaces, self.directory = spaces, directory
        extra = " " if spaces else ""
        self.regex = re.compile(rf"/[{_PATH_CHARS}{extra}/]*")
        self.what = "an absolute path" + ("" if spaces else " without spaces") + ("" if directory else " of a file")

    def check(self, value):
        if not isinstance(value, str) or len(value) > 1024 or not self.regex.fullmatch(value):
            raise Invalid(f"is not {self.what} (/ followed by letters, digits, '/' and _.,+@%:=~-)")
        if not self.directory and value.endswith("/"):
            raise Invalid(f"is not {self.what} (it ends with '/')")
        if any(part in (".", "..") for part in value.split("/")):
            raise Invalid(f"is not {self.what} ('.' and '..' components are not allowed)")
        return value


# RFC 3986: pchar = unreserved / pct-encoded / sub-delims / ":" / "@" (minus "%": nginx matches
# locations on the decoded path, so a percent-encoded location would not match).
_PCHAR = r"\-A-Za-z0-9._~!$&'()*+,;=:@"


class UrlPath(Type):
    """``/path`` or ``/path?query``: an RFC 3986 absolute path, with an optional query."""

    def __init__(self, query=True):
        self.query = query
        q = rf"(?:\?[{_PCHAR}/?%]*)?" if query else ""
        self.regex = re.compile(rf"/[{_PCHAR}/]*{q}")
        self.what = "a URL path like /nginx_ha/health" + (" (a ?query is allowed)" if query else "")

    def check(self, value):
        if not isinstance(value, str) or len(value) > 1024 or not self.regex.fullmatch(value):
            raise Invalid(f"is not {self.what}")
        return value


class IP(Type):
    what = "an IP address"

    def check(self, value):
        try:
            return str(ipaddress.ip_address(str(value).strip() if isinstance(value, str) else value))
        except ValueError:
            raise Invalid(f"is not {self.what}") from None


class Listen(Type):
    """An nginx listen address: a port (``80``, ``"80"``), ``ADDR:PORT``, ``[V6]:PORT`` or ``*:PORT``."""

    what = "a port 1-65535 or ADDRESS:PORT like 127.0.0.1:8081 or [::1]:8081"
    _re = re.compile(r"(?:(?P<v4>[0-9.]+)|\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<any>\*)):(?P<port>[0-9]{1,5})")

    def check(self, value):
        try:
            return PORT.check(value)
        except Invalid:
            pass
        match = self._re.fullmatch(value) if isinstance(value, str) else None
        if not match:
            raise Invalid(f"is not {self.what}")
        port = PORT.check(match.group("port"))
        if match.group("any"):
            return f"*:{port}"
        try:
            if match.group("v4"):
                return f"{ipaddress.IPv4Address(match.group('v4'))}:{port}"
            return f"[{ipaddress.IPv6Address(match.group('v6'))}]:{port}"
        except ValueError:
            raise Invalid(f"is not {self.what} (bad address)") from None


PORT = Int(1, 65535, "a port 1-65535")

_VIP_OPTIONS = {"dev": IFNAME, "label": Pattern(r"[A-Za-z0-9_.:-]{1,15}", "an address label"), "scope": Choice("host", "link", "global", "site", "nowhere"), "brd": IP(), "broadcast": IP()}
_VIP_FLAGS = ("no_track",)


class VIP(Type):
    """``ADDR[/PREFIX] [dev IF] [label L] [scope S] [brd B] [no_track]``, as keepalived takes it."""

    what = "a VIP like 203.0.113.100/24 [dev IF] [label L] [scope S] [brd ADDR] [no_track]"

    def check(self, value):
        if not isinstance(value, str) or not value.strip():
            raise Invalid(f"is not {self.what}")
        words = value.split()
        try:
            iface = ipaddress.ip_interface(words[0])
        except ValueError:
            raise Invalid("is not an IP address (like 203.0.113.100/24)") from None
        out, i, seen = [str(iface) if "/" in words[0] else str(iface.ip)], 1, set()
        while i < len(words):
            word = words[i]
            if word in seen or (word in ("brd", "broadcast") and {"brd", "broadcast"} & seen):
                raise Invalid(f"gives {word} twice")
            seen.add(word)
            if word in _VIP_FLAGS:
                out.append(word)
                i += 1
            elif word in _VIP_OPTIONS and i + 1 < len(words):
                try:
                    out += [word, str(_VIP_OPTIONS[word].check(words[i + 1]))]
                except Invalid as exc:
                    raise Invalid(f"{word} {words[i + 1]!r} {exc}") from None
                i += 2
            else:
                raise Invalid(f"{word!r} is not one of {', '.join(list(_VIP_OPTIONS) + list(_VIP_FLAGS))} (with its value)")
        # keepalived refuses these for IPv6 addresses (scope and label are IPv4 notions; no broadcast)
        if iface.version == 6 and seen & {"scope", "label", "brd", "broadcast"}:
            raise Invalid(f"is IPv6, which takes no {', '.join(sorted(seen & {'scope', 'label', 'brd', 'broadcast'}))} (keepalived refuses them)")
        for j, word in enumerate(out[:-1]):
            if word in ("brd", "broadcast") and ipaddress.ip_address(out[j + 1]).version != iface.version:
                raise Invalid(f"{word} {out[j + 1]} is not of the address's family")
        return " ".join(out)


class TrackInterface(Type):
    """``IF [weight W [reverse]]``, as keepalived's track_interface takes it (W within -253..253)."""

    what = "an interface to track like eth1, 'eth1 weight -60' or 'eth1 weight 10 reverse'"
    weight = Int(-253, 253, "an integer within -253..253")

    def check(self, value):
        words = value.split() if isinstance(value, str) else []
        if not words or len(words) > 4:
            raise Invalid(f"is not {self.what}")
        out = [IFNAME.check(words[0])]
        if len(words) > 1:
            if words[1] != "weight" or len(words) < 3:
                raise Invalid(f"is not {self.what} (after the interface: weight W [reverse])")
            try:
                out += ["weight", str(self.weight.check(words[2]))]
            except Invalid as exc:
                raise Invalid(f"weight {words[2]!r} {exc}") from None
            if len(words) == 4:
                if words[3] != "reverse":
                    raise Invalid(f"{words[3]!r} is not reverse")
                out.append("reverse")
        return " ".join(out)


def track_interface_parts(value):
    """``(interface, weight, reverse)`` of a normalized track_interface entry."""
    words = value.split()
    return words[0], int(words[2]) if len(words) > 2 else 0, words[-1] == "reverse"


class Hook(Type):
    """A program keepalived's notify runs (through nginx-ha's notify_hooks.py): its absolute path, then its arguments."""

    what = "a command as a list: the absolute path of a program, then its arguments (each a one-line string)"
    program = AbsPath()

    def check(self, value):
        if not isinstance(value, list) or not value or len(value) > 64:
            raise Invalid(f"is not {self.what} (at most 64 items)")
        try:
            out = [self.program.check(value[0])]
        except Invalid as exc:
            raise Invalid(f"program {value[0]!r} {exc}") from None
        for item in value[1:]:
            if isinstance(item, bool) or not isinstance(item, (str, int)) or len(str(item)) > 4096 or any(c in str(item) for c in "\0\n\r"):
                raise Invalid(f"argument {_show(item)} is not a one-line string (at most 4096 characters)")
            out.append(str(item))
        return out


_UPSTREAM_PARAMS = {
    "weight": Int(1, 1000),
    "max_fails": Int(0, 1000),
    "fail_timeout": NGINX_TIME,
    "max_conns": Int(0, 1000000),
}
_UPSTREAM_FLAGS = ("backup", "down")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*")


class UpstreamServer(Type):
    """``HOST:PORT [weight=N] [max_fails=N] [fail_timeout=T] [max_conns=N] [backup] [down]``."""

    what = "an upstream server like 10.0.0.11:8080 [weight=N max_fails=N fail_timeout=T max_conns=N backup down]"

    def check(self, value):
        if not isinstance(value, str) or not value.split():
            raise Invalid(f"is not {self.what}")
        words = value.split()
        host, _, port = words[0].rpartition(":")
        try:
            PORT.check(port)
        except Invalid:
            raise Invalid(f"{words[0]!r} is not HOST:PORT") from None
        if host.startswith("[") and host.endswith("]"):
            IP().check(host[1:-1]) if ":" in host else None
        elif not host or not (_HOSTNAME.fullmatch(host) or self._is_v4(host)):
            raise Invalid(f"{words[0]!r} is not HOST:PORT")
        for word in words[1:]:
            name, eq, val = word.partition("=")
            if not eq and name in _UPSTREAM_FLAGS:
                continue
            if not eq or name not in _UPSTREAM_PARAMS:
                raise Invalid(f"{word!r} is not one of {', '.join(list(_UPSTREAM_PARAMS) + list(_UPSTREAM_FLAGS))}")
            try:
                _UPSTREAM_PARAMS[name].check(val)
            except Invalid as exc:
                raise Invalid(f"{word!r}: {exc}") from None
        return " ".join(words)

    @staticmethod
    def _is_v4(host):
        try:
            ipaddress.IPv4Address(host)
            return True
        except ValueError:
            return False


class Argv(Type):
    """A command as a list of arguments (a string is split like a shell would, but never run by one)."""

    what = "a command: a list of arguments, or a string split into arguments"

    def check(self, value):
        if isinstance(value, str):
            try:
                value = shlex.split(value)
            except ValueError as exc:
                raise Invalid(f"cannot be split into arguments: {exc}") from None
        if not isinstance(value, list) or not value:
            raise Invalid(f"is not {self.what}")
        out = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, (str, int)) or any(c in str(item) for c in "\0\n\r"):
                raise Invalid(f"argument {item!r} is not a one-line string")
            out.append(str(item))
        return out


class Executable(Type):
    """An absolute path to a program, or a bare command name looked up on PATH."""

    what = "an absolute path or a command name"

    def __init__(self, spaces=False):
        self.path = AbsPath(spaces=spaces)

    def check(self, value):
        for kind in (self.path, COMMAND_NAME):
            try:
                return kind.check(value)
            except Invalid:
                continue
        raise Invalid(f"is not {self.what}")


class Nullable(Type):
    def __init__(self, inner):
        self.inner = inner
        self.what = f"{inner.describe()}, or null"

    def check(self, value):
        return None if value is None else self.inner.check(value)


class OneOrMany(Type):
    """One value or a list of them; normalized to a list."""

    def __init__(self, inner, min_items=1):
        self.inner, self.min_items = inner, min_items
        self.what = f"{inner.describe()}, or a list of them"

    def check(self, value):
        if isinstance(value, list) and len(value) < self.min_items:
            raise Invalid(f"is not {self.what} (at least {self.min_items})")
        return [self.inner.check(v) for v in value] if isinstance(value, list) else [self.inner.check(value)]


# ---------------------------------------------------------------------------------------------
# nginx server blocks: listen with flags, TLS material (PEM text or a path), return
# ---------------------------------------------------------------------------------------------

LISTEN_FLAGS = ("default_server", "ssl", "http2")


class ServerListen(Type):
    """A server block's listen, as nginx writes it: ``PORT`` or ``ADDRESS:PORT``, then any of default_server, ssl, http2."""

    what = "a listen like 80, '443 ssl http2' or '203.0.113.100:443 ssl' (a port or ADDRESS:PORT, then default_server, ssl, http2)"

    def check(self, value):
        if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).split():
            raise Invalid(f"is not {self.what}")
        words = str(value).split()
        address = Listen().check(words[0])
        flags = []
        for word in words[1:]:
            if word not in LISTEN_FLAGS:
                raise Invalid(f"{word!r} is not one of {', '.join(LISTEN_FLAGS)} (what may follow the address)")
            if word in flags:
                raise Invalid(f"{word!r} is given twice")
            flags.append(word)
        return " ".join([str(address)] + [flag for flag in LISTEN_FLAGS if flag in flags])


def listen_address(listen):
    """The socket of a listen (``80``, ``'443 ssl'``, ``'[::]:443'``...) as nginx compares them: ``*:80``, ``[::]:443``."""
    address = str(listen).split()[0]
    if ":" not in address:
        return f"*:{address}"
    host, _, port = address.rpartition(":")
    return f"*:{port}" if host in ("*", "0.0.0.0") else address


def listen_flags(listen):
    """The flags of a listen: a subset of LISTEN_FLAGS."""
    return set(str(listen).split()[1:])


_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]{1,64})-----\n(.*?)-----END ([A-Z0-9 ]{1,64})-----", re.S)
PEM_KEY_LABELS = ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")


def is_pem(value):
    """PEM text (not a path): holds a -----BEGIN line."""
    return isinstance(value, str) and "-----BEGIN" in value


def pem_blocks(text):
    """
    ``[(label, DER bytes)]`` of PEM ``text``, checked as OpenSSL reads it (lines outside the blocks
    are ignored, as OpenSSL does). Raises :class:`Invalid` saying what is wrong, never quoting it.
    """
    text = text.replace("\r\n", "\n")
    blocks, pos = [], 0
    for number, match in enumerate(_PEM_BLOCK.finditer(text), 1):
        if "-----" in text[pos:match.start()]:
            raise Invalid(f"has a broken PEM line before block {number} (a BEGIN without its END?)")
        label, body, end = match.groups()
        if "-----" in body:
            raise Invalid(f"block {number} ({label}) has a BEGIN line without its END")
        if end != label:
            raise Invalid(f"block {number}: BEGIN {label} ends with END {end}")
        if ":" in body:
            raise Invalid(f"block {number} ({label}) has PEM headers (an encrypted key?); give it unencrypted")
        try:
            der = base64.b64decode("".join(body.split()), validate=True)
        except (binascii.Error, ValueError):
            raise Invalid(f"block {number} ({label}) is not valid base64") from None
        if len(der) < 2 or der[0] != 0x30:
            raise Invalid(f"block {number} ({label}) holds no DER data")
        blocks.append((label, der))
        pos = match.end()
    if "-----" in text[pos:]:
        raise Invalid(f"has a broken PEM line after block {len(blocks)} (a BEGIN without its END?)" if blocks else "holds no complete PEM block")
    if not blocks:
        raise Invalid("holds no PEM block")
    return blocks


class TlsMaterial(Type):
    """
    ``ssl_certificate`` / ``ssl_certificate_key`` as nginx names them: PEM text from the pillar
    (written by nginx-ha) or the absolute path of a file already on the node. An error never shows
    a key's value, nor PEM text (:meth:`secret`).
    """

    def __init__(self, kind):
        self.kind = kind
        self.what = (
            "PEM text of a certificate (then its chain) or the absolute path of a file on the node"
            if kind == "certificate"
            else "PEM text of an unencrypted private key or the absolute path of a file on the node"
        )

    def secret(self, value):
        """A key's value is never shown; a certificate's only when it is not PEM text (a path, say)."""
        return self.kind != "certificate" or is_pem(value)

    def check(self, value):
        if not isinstance(value, str) or not value.strip():
            raise Invalid(f"is not {self.what}")
        if not is_pem(value):
            try:
                return AbsPath().check(value)
            except Invalid:
                raise Invalid(f"is not {self.what}") from None
        labels = [label for label, _ in pem_blocks(value)]
        if self.kind == "certificate":
            if any("PRIVATE KEY" in label for label in labels):
                raise Invalid("holds a private key: put it under ssl_certificate_key")
            if set(labels) != {"CERTIFICATE"}:
                raise Invalid(f"holds {', '.join(sorted(set(labels) - {'CERTIFICATE'}))}: only CERTIFICATE blocks (the certificate, then its chain)")
        else:
            keys = [label for label in labels if label != "EC PARAMETERS"]
            if "ENCRYPTED PRIVATE KEY" in keys:
                raise Invalid("is an encrypted private key: give it unencrypted (nginx-ha writes it root-only, mode 0600)")
            if len(keys) != 1 or keys[0] not in PEM_KEY_LABELS:
                raise Invalid(f"is not one private key ({' or '.join(PEM_KEY_LABELS)} block)")
        return value.replace("\r\n", "\n").strip() + "\n"


_RETURN_VARIABLES = ("host", "http_host", "request_uri", "uri", "args", "is_args", "scheme", "server_name", "server_port")
_RETURN_TEXT = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!&'()*+,;=%]*")
REDIRECT_CODES = (301, 302, 303, 307, 308)


class Return(Type):
    """nginx's ``return``: a redirect ``CODE URL`` (301, 302, 303, 307, 308) or a status code alone."""

    what = (
        "an nginx return: '301 https://$host$request_uri' (301, 302, 303, 307 or 308 then a URL starting"
        f" with https://, http://, $scheme:// or /; variables: ${', $'.join(_RETURN_VARIABLES)}) or a status code 200-599"
    )

    def check(self, value):
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise Invalid(f"is not {self.what}")
        words = str(value).split()
        if not words or len(words) > 2 or not _INT_TEXT.fullmatch(words[0]) or not 200 <= int(words[0]) <= 599:
            raise Invalid(f"is not {self.what}")
        code = int(words[0])
        if len(words) == 1:
            if code in REDIRECT_CODES:
                raise Invalid(f"is a redirect without its URL: {self.what}")
            return str(code)
        url = words[1]
        if code not in REDIRECT_CODES:
            raise Invalid(f"gives a URL with {code}, which is not a redirect ({', '.join(map(str, REDIRECT_CODES))})")
        if not url.startswith(("https://", "http://", "$scheme://", "/")):
            raise Invalid(f"is not {self.what}")
        for i, part in enumerate(url.split("$")):
            if i:
                name = re.match(r"[a-z_]*", part).group()
                if name not in _RETURN_VARIABLES:
                    raise Invalid(f"uses ${name or part[:1]}, not one of ${', $'.join(_RETURN_VARIABLES)}")
                part = part[len(name):]
            if not _RETURN_TEXT.fullmatch(part):
                raise Invalid(f"is not {self.what}")
        return f"{code} {url}"


# ---------------------------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------------------------


class Field:
    def __init__(self, kind, default=None, doc="", required=False):
        self.kind, self.default, self.doc, self.required = kind, default, doc, required


class Dict:
    """A mapping with known keys (unknown keys are errors: a typo never passes silently)."""

    def __init__(self, fields, what="a mapping"):
        self.fields, self.what = fields, what

    def describe(self):
        return self.what


class MapOf:
    """A mapping whose keys are of ``key`` type (e.g. names) and values of ``value`` type."""

    def __init__(self, key, value, what="a mapping", min_items=0):
        self.key, self.value, self.what, self.min_items = key, value, what, min_items

    def describe(self):
        return self.what


class ListOf:
    def __init__(self, item, min_items=0, what=None):
        self.item, self.min_items = item, min_items
        self.what = what or f"a list of {item.describe()}"

    def describe(self):
        return self.what


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.:/@+*?&=~-]{1,128}")


def _join(key, part):
    """``key:part``; a part that is not plain text (a newline, a space, a quote) is shown as its repr."""
    text = str(part)
    return f"{key}:{text}" if isinstance(part, (str, int)) and _PLAIN_KEY.fullmatch(text) else f"{key}:{part!r}"


def check(kind, value, key, errors, fill_defaults=True):
    """Normalize ``value`` of ``kind`` at pillar ``key``; append problems to ``errors``."""
    if isinstance(kind, Nullable) and isinstance(kind.inner, (Dict, MapOf, ListOf)):
        return None if value is None else check(kind.inner, value, key, errors, fill_defaults)
    if isinstance(kind, Dict):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            errors.append(f"{key}: {_show(value)} is not {kind.what}")
            return None
        out = {}
        for name in value:
            if name not in kind.fields:
                known = ", ".join(sorted(kind.fields))
                errors.append(f"{_join(key, name)}: is not a known key (known: {known})")
        for name, field in kind.fields.items():
            if name in value:
                out[name] = check(field.kind, value[name], _join(key, name), errors, fill_defaults)
            elif field.required:
                errors.append(f"{_join(key, name)}: is required ({field.kind.describe()})")
            elif fill_defaults:
                out[name] = copy.deepcopy(field.default)
                if field.default is None and isinstance(field.kind, Dict):
                    out[name] = check(field.kind, {}, _join(key, name), errors, fill_defaults)
        return out
    if isinstance(kind, MapOf):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            errors.append(f"{key}: {_show(value)} is not {kind.what}")
            return {}
        if len(value) < kind.min_items:
            errors.append(f"{key}: is required: {kind.what}")
        out = {}
        for name, item in value.items():
            try:
                norm_name = kind.key.check(name)
            except Invalid as exc:
                errors.append(f"{_join(key, name)}: {_show(name)} {exc}")
                continue
            out[norm_name] = check(kind.value, item, _join(key, name), errors, fill_defaults)
        return out
    if isinstance(kind, ListOf):
        if not isinstance(value, list):
            errors.append(f"{key}: {_show(value)} is not {kind.what}")
            return []
        if len(value) < kind.min_items:
            errors.append(f"{key}: needs at least {kind.min_items} item(s): {kind.what}")
        return [check(kind.item, item, _join(key, i), errors, fill_defaults) for i, item in enumerate(value)]
    try:
        return kind.check(value)
    except Invalid as exc:
        errors.append(f"{key}: {_show(value, kind)} {exc}")
        return None


# ---------------------------------------------------------------------------------------------
# The schema
# ---------------------------------------------------------------------------------------------

ROLE = Choice("MASTER", "BACKUP")
WEIGHT_DOC = (
    "0: a failing health check puts the node in FAULT (the VIP moves at once). Negative: the node's"
    " priority drops by -weight instead; it must then fall below every peer's priority (checked), so a"
    " failing node always yields. Positive weights are refused: keepalived multiplies the track file's"
    " value (1 = unhealthy) by the weight, so a failing MASTER would gain priority and keep the VIP."
)

UINT32, INT32 = 4294967295, 2147483647


class Network(Type):
    """An IP network in CIDR form, like 198.51.100.0/24 or 2001:db8::/48 (0.0.0.0/0, ::/0: the default route)."""

    what = "a network like 198.51.100.0/24 or 2001:db8::/48"

    def check(self, value):
        try:
            return str(ipaddress.ip_network(value.strip() if isinstance(value, str) else None))
        except (ValueError, TypeError):
            raise Invalid(f"is not {self.what} (address/prefix, no host bits set)") from None


ROUTE = Dict(
    {
        "to": Field(Network(), None, "the destination, like 198.51.100.0/24 (0.0.0.0/0 or ::/0 for a default route)", required=True),
        "via": Field(Nullable(IP()), None, "the gateway (a link-local IPv6 gateway needs dev)"),
        "src": Field(Nullable(IP()), None, "the preferred source address of the route"),
        "dev": Field(Nullable(IFNAME), None, "the interface (required unless no_track: keepalived watches a route through its interface)"),
        "table": Field(Nullable(Int(1, UINT32)), None, "the routing table (null: main)"),
        "metric": Field(Nullable(Int(0, UINT32)), None, "the route's metric"),
        "scope": Field(Nullable(Choice("global", "site", "link", "host", "nowhere")), None, "the route's scope"),
        "type": Field(Choice("unicast", "blackhole", "unreachable", "prohibit", "throw"), "unicast", "the route type"),
        "no_track": Field(Bool(), False, "keepalived does not watch the route (if deleted, it is restored only at the next transition to MASTER)"),
    },
    "a route {to, via, src, dev, table, metric, scope, type, no_track}",
)

RULE = Dict(
    {
        "from": Field(Nullable(Network()), None, "the source network"),
        "to": Field(Nullable(Network()), None, "the destination network"),
        "iif": Field(Nullable(IFNAME), None, "the incoming interface"),
        "oif": Field(Nullable(IFNAME), None, "the outgoing interface"),
        "fwmark": Field(Nullable(Int(0, UINT32)), None, "the firewall mark"),
        "table": Field(Int(1, UINT32), None, "the routing table the rule selects", required=True),
        "priority": Field(Int(0, UINT32), None, "the rule's priority (preference): keepalived requires one", required=True),
        "no_track": Field(Bool(), False, "keepalived does not watch the rule"),
    },
    "a rule {from, to, iif, oif, fwmark, table, priority, no_track}",
)

AUTH_PASS = Pattern(r"[A-Za-z0-9_.,:/+=%@-]{1,8}", "a password of 1-8 letters, digits and _.,:/+=%@- (keepalived uses 8 characters)", max_len=8)
AUTH_PASS.secret = lambda value: True  # never shown in an error (see _show)

AUTHENTICATION = Dict(
    {
        "auth_type": Field(Choice("PASS", "AH"), None, "PASS (a clear-text password in each advert) or AH (IPsec AH, IP protocol 51: open it yourself, firewall:manage opens VRRP only)", required=True),
        "auth_pass": Field(AUTH_PASS, None, "the password, the same on every node (at most 8 characters)", required=True),
    },
    "keepalived's authentication {auth_type, auth_pass}",
)

NODE_FIELDS = {
    "state": Field(Nullable(ROLE), None, "the node's role in the instance: MASTER (exactly one, highest priority) or BACKUP"),
    "priority": Field(Nullable(Int(1, 254)), None, "VRRP priority 1-254; the MASTER's is the highest"),
    "interface": Field(Nullable(IFNAME), None, "this node's VRRP interface (overrides the instance's)"),
    "unicast_src_ip": Field(Nullable(IP()), None, "this node's address for unicast adverts (required with unicast: true)"),
}

INSTANCE_SETTINGS = {
    "advert_int": Field(Number(0.01, 255), 0.05, "seconds between adverts; below 1 or fractional needs version 3 (0.05: a dead MASTER is replaced after 3 x 0.05 s + skew, about 0.18 s)"),
    "version": Field(Choice(2, 3), 3, "VRRP version"),
    "nopreempt": Field(Bool(), False, "a recovered MASTER does not take the VIP back (every node starts BACKUP)"),
    "preempt_delay": Field(Int(0, 1000), 0, "seconds a recovered node waits before taking the VIP back"),
    "unicast": Field(Bool(), False, "adverts go to the peers' unicast_src_ip instead of multicast"),
    "dont_track_primary": Field(Bool(), False, "ignore faults of the VRRP interface (keepalived's option)"),
    "interface": Field(Nullable(IFNAME), None, "the VRRP interface of every node (a node may override it)"),
    # keepalived's own vocabulary, typed (keepalived.conf(5), vrrp_instance; ranges as keepalived 2.2.7 parses them)
    "track_interface": Field(
        Nullable(ListOf(TrackInterface(), 0, "a list of interfaces like eth1 or 'eth1 weight -60 [reverse]'")),
        None,
        "more interfaces whose failure moves the VIP: unweighted, a down interface puts the instance in FAULT;"
        " 'IF weight W' adds W to the priority while the interface is up (W > 0) or subtracts -W while it is down"
        " (W < 0), reverse inverts that",
    ),
    "garp_master_delay": Field(Nullable(Int(0, 4294)), None, "seconds after becoming MASTER before the second set of gratuitous ARPs / unsolicited NAs, 0: none (null: global_defs vrrp_garp_master_delay, keepalived's default 5)"),
    "garp_master_repeat": Field(Nullable(Int(1, UINT32)), None, "gratuitous ARPs / NAs sent at a time after becoming MASTER (null: global vrrp_garp_master_repeat, default 5)"),
    "garp_master_refresh": Field(Nullable(Int(0, UINT32)), None, "seconds between repeated gratuitous ARPs / NAs while MASTER, 0: none (null: global vrrp_garp_master_refresh)"),
    "garp_master_refresh_repeat": Field(Nullable(Int(1, UINT32)), None, "gratuitous ARPs / NAs sent at each refresh (null: global vrrp_garp_master_refresh_repeat, default 1)"),
    "garp_lower_prio_delay": Field(Nullable(Int(0, 4294)), None, "seconds before the second set of gratuitous ARPs / NAs after a MASTER hears a lower priority advert (null: global vrrp_garp_lower_prio_delay)"),
    "garp_lower_prio_repeat": Field(Nullable(Int(0, INT32)), None, "gratuitous ARPs / NAs a MASTER sends when it hears a lower priority advert (null: global vrrp_garp_lower_prio_repeat)"),
    "authentication": Field(
        Nullable(AUTHENTICATION),
        None,
        "VRRPv2 only (refused with version: 3, which has none): a password in every advert (PASS, sent in clear) or"
        " IPsec AH. RFC 3768 removed authentication from VRRPv2: it protects nothing (PASS is readable on the wire)"
        " and both nodes must agree; keepalived.conf becomes root-only (0600)",
    ),
    "notify_master": Field(Nullable(Hook()), None, "a program run when the instance becomes MASTER: [/absolute/path, arg, ...] (never through a shell; see notify_timeout)"),
    "notify_backup": Field(Nullable(Hook()), None, "a program run when the instance becomes BACKUP: [/absolute/path, arg, ...]"),
    "notify_fault": Field(Nullable(Hook()), None, "a program run when the instance goes FAULT: [/absolute/path, arg, ...]"),
    "notify_stop": Field(Nullable(Hook()), None, "a program run when keepalived stops the instance: [/absolute/path, arg, ...]"),
    "notify": Field(Nullable(Hook()), None, "a program run on every transition, with keepalived's 4 arguments appended (INSTANCE, the instance, MASTER/BACKUP/FAULT/STOP, the priority)"),
    "notify_timeout": Field(Int(1, 3600), 10, "seconds a notify_* program may run; then its process group is killed. The programs must be root-owned and not writable by group or others, nor their directories (checked at apply time and before each run)"),
}

OPTIONS = MapOf(KEEPALIVED_OPTION, Nullable(OneOrMany(KEEPALIVED_WORD)), "a mapping of keepalived option name to value (true for a flag)")


class _OptionValue(Type):
    """A keepalived pass-through option value: true (a flag), false/null (left out), a word or a list of words."""

    what = "true (a flag), false, a keepalived word or a list of words"

    def check(self, value):
        if isinstance(value, bool) or value is None:
            return value
        return OneOrMany(KEEPALIVED_WORD).check(value)


OPTIONS = MapOf(KEEPALIVED_OPTION, _OptionValue(), "a mapping of keepalived option name to value (true for a flag)")

def _unset(fields):
    """The same settings, unset by default: an instance takes what it leaves out from instance_defaults."""
    return {
        name: Field(field.kind if isinstance(field.kind, Nullable) else Nullable(field.kind), None, field.doc + " (unset: instance_defaults)")
        for name, field in fields.items()
    }


INSTANCE = Dict(
    dict(
        _unset(INSTANCE_SETTINGS),
        virtual_router_id=Field(Int(1, 255), None, "VRRP router id 1-255, unique per instance on the network", required=True),
        virtual_ipaddress=Field(ListOf(VIP(), 1, "a list of VIPs like 203.0.113.100/24"), None, "the VIPs", required=True),
        virtual_ipaddress_excluded=Field(
            ListOf(VIP(), 0, "a list of VIPs like 2001:db8::100/64"),
            [],
            "more VIPs that move with the instance but are not listed in its adverts (either address family)",
        ),
        virtual_routes=Field(ListOf(ROUTE, 0, "a list of routes {to, via, dev, ...}"), [], "routes the MASTER adds (and removes on leaving MASTER)"),
        virtual_rules=Field(ListOf(RULE, 0, "a list of rules {from, to, table, priority, ...}"), [], "policy routing rules the MASTER adds (and removes on leaving MASTER)"),
        options=Field(
            OPTIONS,
            {},
            "any other vrrp_instance option, passed through: {lower_prio_no_advert: true}. Not what the keys above"
            " set, nor notify*, track_*, authentication (refused: they have their own keys)",
        ),
        nodes=Field(MapOf(MINION_ID, Dict(NODE_FIELDS), "a mapping of minion id to {state, priority}", 1), None, "minion id -> role and priority", required=True),
    ),
    "a VRRP instance",
)

SYNC_GROUP = Dict(
    {
        "group": Field(ListOf(NAME, 2, "a list of at least two instance names"), None, "the instances that change state together (each in one group at most)", required=True),
        "track_interface": Field(
            ListOf(TrackInterface(), 0, "a list of interfaces like eth1 or 'eth1 weight -60 [reverse]'"),
            [],
            "interfaces whose failure moves the whole group (keepalived ignores weights on the members themselves)",
        ),
    },
    "a sync group {group, track_interface}",
)

WATCHER = Dict(
    {
        "enabled": Field(Bool(), True, "the fast path: a watcher probing nginx several times a second, writing a keepalived track_file"),
        "interval": Field(Number(0.01, 60), 0.05, "seconds between probes"),
        "retry_interval": Field(Number(0.01, 60), 0.02, "seconds to the next probe after a failed one"),
        "timeout": Field(Number(0.01, 60), 0.1, "seconds for a whole probe (connect + answer); a hung nginx is unhealthy after about interval + fall x timeout"),
        "fall": Field(Int(1, 1000), 2, "failed probes in a row before the node is unhealthy"),
        "rise": Field(Int(1, 1000), 5, "good probes in a row before it is healthy again"),
        "python": Field(AbsPath(), "/usr/bin/python3", "the Python 3 the watcher and the check run with"),
        "package": Field(Nullable(PACKAGE), "python3", "the package that provides it (null: do not install)"),
        "state_file": Field(AbsPath(), "/run/nginx_ha_health", "the track_file (in /run: a rebooted node starts unhealthy)"),
    }
)

CHECK = Dict(
    {
        "interval": Field(Int(1, 4294), 1, "seconds between keepalived's runs of the check (vrrp_script)"),
        "timeout": Field(Int(1, 4294), 1, "seconds before a check counts as failed"),
        "fall": Field(Int(1, 1000), 2, "failures before the node goes FAULT (or loses weight)"),
        "rise": Field(Int(1, 1000), 2, "successes before it is healthy again"),
        "weight": Field(Int(-253, 0, "0 or a negative integer down to -253"), 0, WEIGHT_DOC),
        "track_process": Field(Bool(), False, "also vrrp_track_process nginx (needs the initial PID/network namespaces)"),
        "watcher": Field(WATCHER, None, "the fast health watcher"),
    }
)

EVENTS = Dict(
    {
        "notify_fifo": Field(Bool(), True, "keepalived's ordered notify FIFO, read by the nginx_ha_events engine"),
        "notify_script": Field(Bool(), False, "also a notify script sending each transition with salt-call (slower)"),
        "notify_script_timeout": Field(Int(1, 300), 15, "seconds the notify script may spend sending (a salt-call takes 1-5 s on a loaded node; a failed send is logged as nginx_ha_notify)"),
        "salt_call": Field(Executable(spaces=True), "salt-call", "the notify script's salt-call (a path where it is not on PATH)"),
        "salt_config_dir": Field(Nullable(AbsPath(spaces=True, directory=True)), None, "salt-call -c for the notify script (null: Salt's default)"),
        "restart_minion": Field(Bool(), True, "restart salt-minion once when the engine configuration changes"),
        "minion_restart_cmd": Field(Nullable(Argv()), None, "how, as a list of arguments (null: salt-call --local service.restart salt-minion); never run by a shell"),
        "spool": Field(Nullable(AbsPath(spaces=True)), None, "engine spool file (null: under the minion cachedir)"),
        "buffer_size": Field(Int(1, 1000000), 1000, "events kept while the master is unreachable"),
        "send_timeout": Field(Int(1, 300), 5, "seconds per delivery attempt"),
        "backoff_max": Field(Int(1, 3600), 30, "longest pause between delivery attempts"),
    }
)

FIREWALL = Dict(
    {
        "manage": Field(
            Bool(),
            True,
            "keep VRRP (IP protocol 112) open in the host firewall, from this node's peers only (unicast) or to"
            " the VRRP group on the VRRP interface (multicast), wherever a firewall could drop it; a host whose"
            " firewall drops nothing is left alone. false: remove what nginx-ha added, then leave the firewall alone",
        ),
        "backend": Field(
            Choice("auto", "nftables", "iptables", "firewalld"),
            "auto",
            "auto: firewalld where it runs, else nftables (chains nft manages) and iptables (the INPUT chain"
            " iptables manages), each only where present; or exactly one of them",
        ),
        "hooks": Field(
            Bool(),
            True,
            "on systemd hosts: keepalived does not start without the rules (a drop-in ExecStartPre applies"
            " them), and a start or reload of nftables.service / the iptables services re-applies them",
        ),
    }
)


class PromFile(AbsPath):
    """An absolute path of a ``*.prom`` file: node_exporter's textfile collector reads no other name."""

    def __init__(self):
        super().__init__()
        self.what = "an absolute path without spaces of a file named *.prom"

    def check(self, value):
        value = super().check(value)
        if not value.endswith(".prom") or value.rsplit("/", 1)[1] == ".prom":
            raise Invalid(f"is not {self.what} (node_exporter's textfile collector reads only *.prom files)")
        return value


METRICS = Dict(
    {
        "textfile": Field(
            Nullable(PromFile()),
            None,
            "write the metrics to this node_exporter textfile (replaced atomically: a temporary file in the same"
            " directory, then rename; on every change and every interval), e.g."
            " /var/lib/prometheus/node-exporter/nginx_ha.prom (Debian's prometheus-node-exporter); null: no file",
        ),
        "listen": Field(
            Nullable(Listen()),
            None,
            "serve them as HTTP GET /metrics on this port or ADDRESS:PORT (a bare port binds 127.0.0.1, *:PORT"
            " every IPv4 address), e.g. 127.0.0.1:9650; null: no port",
        ),
        "interval": Field(
            Int(1, 3600),
            15,
            "seconds between two refreshes; a VIP that comes or goes, a health or maintenance change, a new"
            " keepalived refresh them at once",
        ),
    }
)

UPSTREAM = Dict(
    {
        "servers": Field(ListOf(UpstreamServer(), 1, "a list of servers like 10.0.0.11:8080"), None, "the upstream's servers", required=True),
        "keepalive": Field(Nullable(Int(1, 100000)), None, "idle keepalive connections to the upstream"),
    }
)

LOCATION = Dict(
    {
        "proxy_pass": Field(NAME, None, "the name of an upstream under nginx:upstreams", required=True),
        "proxy_connect_timeout": Field(Nullable(NGINX_TIME), None, "nginx proxy_connect_timeout"),
        "proxy_read_timeout": Field(Nullable(NGINX_TIME), None, "nginx proxy_read_timeout"),
    }
)

HEALTH = Dict(
    {
        "listen": Field(Listen(), "127.0.0.1:8081", "the local health server: a port or ADDRESS:PORT"),
        "path": Field(UrlPath(), "/nginx_ha/health", "the health URL path (an optional ?query is sent as is)"),
    }
)

SERVER = Dict(
    {
        "server_name": Field(OneOrMany(SERVER_NAME), None, "server_name (one or a list)", required=True),
        "listen": Field(
            ListOf(ServerListen(), 1, "a list of listens like 443 ssl http2"),
            [80],
            "nginx's listen: a port or ADDRESS:PORT, then default_server, ssl, http2 ('443 ssl http2')",
        ),
        "root": Field(Nullable(AbsPath(spaces=True, directory=True)), None, "document root (null: nginx:root, where the page naming the node is)"),
        "locations": Field(
            MapOf(UrlPath(query=False), LOCATION, "a mapping of URL path prefix to {proxy_pass, ...}"),
            {},
            "proxied locations, to nginx:upstreams ('/' proxies everything the server gets)",
        ),
        "return": Field(Nullable(Return()), None, "nginx's return for every request, e.g. '301 https://example.com$request_uri' (no root, no locations)"),
        "redirect_to_https": Field(
            Bool(),
            False,
            "also listen on port 80 of each ssl listen's address and answer 301 https://$host$request_uri there"
            " (with the https port when it is not 443)",
        ),
        "ssl_certificate": Field(
            Nullable(TlsMaterial("certificate")),
            None,
            "the certificate, then its chain: PEM text (written under lookup:nginx:tls_dir) or the path of a file on the node",
        ),
        "ssl_certificate_key": Field(
            Nullable(TlsMaterial("key")),
            None,
            "its private key: PEM text (written root-only, mode 0600, never shown) or the path of a file on the node",
        ),
        "client_max_body_size": Field(Nullable(NGINX_SIZE), None, "nginx client_max_body_size (null: nginx:client_max_body_size)"),
    },
    "an nginx server block",
)

NGINX = Dict(
    {
        "listen": Field(ListOf(Listen(), 1, "a list of ports or ADDRESS:PORT"), [80], "where the single site listens (the site when nginx:servers is empty)"),
        "server_name": Field(OneOrMany(SERVER_NAME), ["_"], "the single site's server_name (one or a list)"),
        "root": Field(AbsPath(spaces=True, directory=True), "/var/www/nginx_ha", "document root (of the single site, and of servers that set none)"),
        "index_page": Field(Bool(), True, "write an index.html naming the node that served it"),
        "remove_default_site": Field(Bool(), True, "disable the distribution's default site (it also claims port 80)"),
        "client_max_body_size": Field(Nullable(NGINX_SIZE), None, "nginx client_max_body_size (null: nginx's default)"),
        "health": Field(HEALTH, None, "the health endpoint keepalived's check and the watcher probe"),
        "upstreams": Field(MapOf(NAME, UPSTREAM, "a mapping of upstream name to {servers, keepalive}"), {}, "upstream groups"),
        "locations": Field(MapOf(UrlPath(query=False), LOCATION, "a mapping of URL path prefix to {proxy_pass, ...}"), {}, "the single site's proxied locations"),
        "servers": Field(
            MapOf(NAME, SERVER, "a mapping of name to server block"),
            {},
            "several server blocks (HTTPS, redirects), written in name order; when set they replace the single site"
            " (listen, server_name and locations above stay unset)",
        ),
        "manage_sites": Field(
            Bool(),
            True,
            "false: nginx-ha writes only its health endpoint: no site, no index page, the default site left alone"
            " (for nginx managed by another formula)",
        ),
    }
)

LOOKUP_KEEPALIVED = Dict(
    {
        "service": Field(NAME, "keepalived", "service name"),
        "binary": Field(AbsPath(), "/usr/sbin/keepalived", "keepalived binary"),
        "config": Field(AbsPath(), "/etc/keepalived/keepalived.conf", "keepalived.conf"),
        "script_dir": Field(AbsPath(directory=True), "/etc/keepalived/nginx_ha", "root-owned directory of the scripts keepalived runs"),
        "pidfile": Field(AbsPath(), "/run/keepalived.pid", "keepalived's pid file"),
        "json_dump": Field(AbsPath(), "/tmp/keepalived.json", "where keepalived writes its JSON state dump"),
        "notify_fifo": Field(AbsPath(), "/run/nginx_ha_vrrp.fifo", "the notify FIFO the engine reads"),
    }
)

LOOKUP_NGINX = Dict(
    {
        "service": Field(NAME, "nginx", "service name"),
        "binary": Field(AbsPath(), "/usr/sbin/nginx", "nginx binary"),
        "config": Field(AbsPath(), "/etc/nginx/nginx.conf", "nginx's main configuration"),
        "site_config": Field(AbsPath(), "/etc/nginx/conf.d/nginx_ha.conf", "the site nginx-ha writes"),
        "tls_dir": Field(AbsPath(directory=True), "/etc/nginx/nginx_ha_tls", "where certificates and keys given as PEM text are written, one <server>.nginx_ha.pem (0600) each (created root 0700; an existing one must be writable by root alone)"),
        "default_site": Field(Nullable(AbsPath()), None, "the distribution's default site (null: none)"),
        "pidfile": Field(AbsPath(), "/run/nginx.pid", "nginx's pid file"),
    }
)

LOOKUP = Dict(
    {
        "packages": Field(ListOf(PACKAGE, 1), ["keepalived", "nginx", "curl"], "packages to install"),
        "keepalived": Field(LOOKUP_KEEPALIVED, None, "keepalived paths"),
        "nginx": Field(LOOKUP_NGINX, None, "nginx paths"),
        "curl": Field(AbsPath(), "/usr/bin/curl", "curl"),
        "ip": Field(AbsPath(), "/usr/sbin/ip", "ip(8)"),
        "sysctl_config": Field(AbsPath(), "/etc/sysctl.d/60-nginx-ha.conf", "sysctl drop-in"),
    },
    "OS paths and names (defaults per os_family in OS_FAMILY_LOOKUP)",
)

# What differs from LOOKUP's defaults on each supported os_family (grain). A node merges: LOOKUP's
# defaults < its family's entry < the pillar's nginx_ha:lookup. Families not listed here are
# refused unless the pillar gives the lookup (see lookup_for()). Kept here, in Python, so a node
# needs nothing from the master's fileserver at run time.
OS_FAMILY_LOOKUP = {
    "Debian": {
        "nginx": {"default_site": "/etc/nginx/sites-enabled/default"},
    },
    # RHEL/Rocky/Alma/CentOS Stream 9 (tests/unit/test_render_redhat.py renders for them over EL9's
    # stock /etc/nginx and /etc/keepalived and runs the real nginx -t / keepalived -t). Binaries,
    # configs, pid files, service names and conf.d are the schema's defaults. What differs:
    "RedHat": {
        # No `curl`: EL9 preinstalls curl-minimal, which conflicts with the curl package (dnf
        # refuses without --allowerasing). Nothing nginx-ha runs needs curl (the check is Python).
        "packages": ["keepalived", "nginx"],
        # No default site file: EL's default server is a server block inside nginx.conf. EL9's
        # listens on 80 without default_server, so the formula's site (listen 80 default_server)
        # answers every request that names no other server; nginx.conf is left alone. EL7/EL8's
        # says `listen 80 default_server`: nginx -t refuses the formula's site as "a duplicate
        # default server" and nothing goes live until that block (or its default_server) is removed.
        "nginx": {"default_site": None},
    },
}


def lookup_for(os_family):
    """LOOKUP's defaults merged with ``os_family``'s entry of OS_FAMILY_LOOKUP; None for an unknown family."""
    if os_family not in OS_FAMILY_LOOKUP:
        return None

    def merge(base, extra):
        out = copy.deepcopy(base)
        for key, value in extra.items():
            out[key] = merge(out.get(key) or {}, value) if isinstance(value, dict) else copy.deepcopy(value)
        return out

    return merge(defaults()["lookup"], OS_FAMILY_LOOKUP[os_family])

GLOBAL_DEFS_DEFAULT = {
    # After a split brain heals, the MASTER that kept the VIP sends no gratuitous ARP by itself: the
    # node that yields sends one last advert, the winner answers a lower-priority advert with
    # gratuitous ARPs, and every MASTER re-announces its VIPs every 10 s.
    "vrrp_higher_prio_send_advert": True,
    "vrrp_garp_lower_prio_repeat": ["5"],
    "vrrp_garp_master_refresh": ["10"],
}

CLUSTER_NAME = Pattern(r"[a-z0-9][a-z0-9_-]{0,31}", "a cluster name of lower-case letters, digits, '_', '-' (at most 32)")
DEFAULT_CLUSTER = "default"

SCHEMA = Dict(
    {
        "cluster": Field(
            CLUSTER_NAME,
            DEFAULT_CLUSTER,
            "this cluster's name: its nodes' pillar says which cluster they form, when one master runs several"
            " (the fleet view groups by it, the reactor acts within it); recorded in node.json. Give each"
            " cluster on a master its own name (salt-run nginx_ha.check_router_ids reports one reused)",
        ),
        "vrrp_instances": Field(MapOf(NAME, INSTANCE, "a mapping of instance name to VRRP instance", 1), None, "the VRRP instances (VIP groups)", required=True),
        "instance_defaults": Field(Dict(INSTANCE_SETTINGS), None, "settings every vrrp_instance gets unless it sets its own"),
        "nodes": Field(MapOf(MINION_ID, Dict(NODE_FIELDS)), {}, "per-node settings shared by all instances (interface, unicast_src_ip), by minion id"),
        "vrrp_sync_groups": Field(
            MapOf(NAME, SYNC_GROUP, "a mapping of sync group name to {group, track_interface}"),
            {},
            "instances that must move together (one instance per address family, e.g. an IPv4 and an IPv6 VIP):"
            " their nodes and roles must match; the health check and maintenance track the group",
        ),
        "local_vip": Field(
            Bool(),
            True,
            "every node keeps the VIPs on lo and only the MASTER answers ARP (IPv4: arp_ignore/arp_announce) or"
            " neighbour solicitations (IPv6 answers them only on the interface holding the address) for them",
        ),
        "global_defs": Field(OPTIONS, GLOBAL_DEFS_DEFAULT, "keepalived global_defs, passed through (router_id defaults to the minion id)"),
        "check": Field(CHECK, None, "the nginx health check"),
        "events": Field(EVENTS, None, "VRRP transitions onto Salt's event bus"),
        "firewall": Field(FIREWALL, None, "VRRP through the host firewall (nftables, iptables, firewalld): salt/nginx_ha/firewall.sls"),
        "metrics": Field(
            METRICS,
            None,
            "Prometheus metrics of this node (VRRP state, priorities, VIPs held, health, transitions, maintenance):"
            " off unless textfile or listen is set; salt/nginx_ha/metrics.sls, README: Metrics",
        ),
        "nginx": Field(NGINX, None, "the nginx site on the VIP and the health endpoint"),
        "pkg_refresh": Field(Nullable(Bool()), None, "refresh the package db before installing (null: Salt's default)"),
        "lookup": Field(LOOKUP, None, "OS paths and names; defaults per os_family in OS_FAMILY_LOOKUP (_utils/nginx_ha_schema.py)"),
    },
    "the nginx_ha pillar",
)


def normalize(config, fill_defaults=True):
    """Return ``config`` (the ``nginx_ha`` pillar) typed and with defaults; raise SchemaError."""
    errors = []
    out = check(SCHEMA, config, ROOT, errors, fill_defaults)
    if errors:
        raise SchemaError(errors)
    return out


def problems(config):
    """Every schema problem of ``config`` (an empty list when it is well typed)."""
    errors = []
    check(SCHEMA, config, ROOT, errors)
    return errors


def defaults():
    """The defaults of every key that has one (what a node gets for keys the pillar omits)."""

    def walk(kind):
        out = {}
        for name, field in kind.fields.items():
            if field.required:
                continue
            if isinstance(field.kind, Dict) and field.default is None:
                out[name] = walk(field.kind)
            else:
                out[name] = copy.deepcopy(field.default)
        return out

    return walk(SCHEMA)


def keys():
    """``[(pillar key, type, default, doc)]`` for every key, in schema order (docs and tables)."""
    rows = []

    def walk(kind, prefix):
        for name, field in kind.fields.items():
            key = f"{prefix}:{name}"
            inner = field.kind
            if isinstance(inner, Dict):
                rows.append((key, inner.describe(), None, field.doc))
                walk(inner, key)
            elif isinstance(inner, MapOf) and isinstance(inner.value, Dict):
                rows.append((key, inner.describe(), field.default if not field.required else REQUIRED, field.doc))
                walk(inner.value, f"{key}:<name>")
            elif isinstance(getattr(inner, "inner", None), Dict) or isinstance(getattr(inner, "item", None), Dict):
                # a mapping that may be null, or a list of mappings: the row, then each of its keys
                rows.append((key, inner.describe(), REQUIRED if field.required else field.default, field.doc))
                walk(inner.inner if isinstance(inner, Nullable) else inner.item, f"{key}:<n>" if isinstance(inner, ListOf) else key)
            else:
                rows.append((key, inner.describe(), REQUIRED if field.required else field.default, field.doc))

    walk(SCHEMA, ROOT)
    return rows
