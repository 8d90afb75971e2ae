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


def _show(value):
    text = repr(value)
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
SERVER_NAME = Pattern(r"[A-Za-z0-9*_][A-Za-z0-9*_.-]{0,252}|_", "a server name (host name, *.wildcard or _)")
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
        out, i = [str(iface) if "/" in words[0] else str(iface.ip)], 1
        while i < len(words):
            word = words[i]
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
        return " ".join(out)


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
        errors.append(f"{key}: {_show(value)} {exc}")
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

NODE_FIELDS = {
    "state": Field(Nullable(ROLE), None, "the node's role in the instance: MASTER (exactly one, highest priority) or BACKUP"),
    "priority": Field(Nullable(Int(1, 254)), None, "VRRP priority 1-254; the MASTER's is the highest"),
    "interface": Field(Nullable(IFNAME), None, "this node's VRRP interface (overrides the instance's)"),
    "unicast_src_ip": Field(Nullable(IP()), None, "this node's address for unicast adverts (required with unicast: true)"),
}

INSTANCE_SETTINGS = {
    "advert_int": Field(Number(0.01, 255), 0.1, "seconds between adverts; below 1 or fractional needs version 3"),
    "version": Field(Choice(2, 3), 3, "VRRP version"),
    "nopreempt": Field(Bool(), False, "a recovered MASTER does not take the VIP back (every node starts BACKUP)"),
    "preempt_delay": Field(Int(0, 1000), 0, "seconds a recovered node waits before taking the VIP back"),
    "unicast": Field(Bool(), False, "adverts go to the peers' unicast_src_ip instead of multicast"),
    "dont_track_primary": Field(Bool(), False, "ignore faults of the VRRP interface (keepalived's option)"),
    "interface": Field(Nullable(IFNAME), None, "the VRRP interface of every node (a node may override it)"),
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
        options=Field(OPTIONS, {}, "any other vrrp_instance option, passed through: {garp_master_delay: 1}"),
        nodes=Field(MapOf(MINION_ID, Dict(NODE_FIELDS), "a mapping of minion id to {state, priority}", 1), None, "minion id -> role and priority", required=True),
    ),
    "a VRRP instance",
)

WATCHER = Dict(
    {
        "enabled": Field(Bool(), True, "the fast path: a watcher probing nginx several times a second, writing a keepalived track_file"),
        "interval": Field(Number(0.01, 60), 0.1, "seconds between probes"),
        "retry_interval": Field(Number(0.01, 60), 0.02, "seconds to the next probe after a failed one"),
        "timeout": Field(Number(0.01, 60), 0.25, "seconds for a whole probe (connect + answer)"),
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
        "notify_script_timeout": Field(Int(1, 300), 5, "seconds the notify script may spend sending"),
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

NGINX = Dict(
    {
        "listen": Field(ListOf(Listen(), 1, "a list of ports or ADDRESS:PORT"), [80], "where the site listens"),
        "server_name": Field(OneOrMany(SERVER_NAME), ["_"], "server_name (one or a list)"),
        "root": Field(AbsPath(spaces=True, directory=True), "/var/www/nginx_ha", "document root"),
        "index_page": Field(Bool(), True, "write an index.html naming the node that served it"),
        "remove_default_site": Field(Bool(), True, "disable the distribution's default site (it also claims port 80)"),
        "client_max_body_size": Field(Nullable(NGINX_SIZE), None, "nginx client_max_body_size (null: nginx's default)"),
        "health": Field(HEALTH, None, "the health endpoint keepalived's check and the watcher probe"),
        "upstreams": Field(MapOf(NAME, UPSTREAM, "a mapping of upstream name to {servers, keepalive}"), {}, "upstream groups"),
        "locations": Field(MapOf(UrlPath(query=False), LOCATION, "a mapping of URL path prefix to {proxy_pass, ...}"), {}, "proxied locations"),
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

SCHEMA = Dict(
    {
        "vrrp_instances": Field(MapOf(NAME, INSTANCE, "a mapping of instance name to VRRP instance", 1), None, "the VRRP instances (VIP groups)", required=True),
        "instance_defaults": Field(Dict(INSTANCE_SETTINGS), None, "settings every vrrp_instance gets unless it sets its own"),
        "nodes": Field(MapOf(MINION_ID, Dict(NODE_FIELDS)), {}, "per-node settings shared by all instances (interface, unicast_src_ip), by minion id"),
        "local_vip": Field(Bool(), True, "every node keeps the VIPs on lo and only the MASTER answers ARP for them"),
        "global_defs": Field(OPTIONS, GLOBAL_DEFS_DEFAULT, "keepalived global_defs, passed through (router_id defaults to the minion id)"),
        "check": Field(CHECK, None, "the nginx health check"),
        "events": Field(EVENTS, None, "VRRP transitions onto Salt's event bus"),
        "firewall": Field(FIREWALL, None, "VRRP through the host firewall (nftables, iptables, firewalld): salt/nginx_ha/firewall.sls"),
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
            else:
                rows.append((key, inner.describe(), REQUIRED if field.required else field.default, field.doc))

    walk(SCHEMA, ROOT)
    return rows
