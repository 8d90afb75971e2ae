"""
The Salt master drop-in for nginx-ha, computed from the operator's own master configuration.

Salt merges the ``master.d/*.conf`` files among themselves (recursively, lists appended) and the
result REPLACES the same top-level keys of ``/etc/salt/master`` and of Salt's built-in defaults.
A drop-in that only named nginx-ha's paths (``file_roots: {base: [/srv/nginx-ha/salt]}``) would
take the operator's ``/srv/salt`` states and ``/srv/pillar`` pillars away at the next restart.

So this reads the master's *effective* configuration (``salt.config.master_config``, ignoring a
previous copy of its own drop-in) and writes ``master.d/nginx_ha.conf`` whose keys repeat every
value the master has for them and append nginx-ha's:

* ``file_roots``: every saltenv kept; ``<repo>/salt`` appended to ``base`` (the operator's roots
  keep precedence);
* ``pillar_roots``: kept as is (``--pillar`` appends ``<repo>/pillar``, the commented example);
* ``runner_dirs``: ``<repo>/_runners`` appended;
* ``peer``: ``.*: [nginx_ha.health]`` merged in;
* with ``--reactor``: ``reactor`` (the ``nginx_ha/vrrp/*`` reaction), ``schedule``
  (``nginx_ha_fleet_check``) and the ``nginx_ha_reactor`` settings (the documented defaults of
  ``conf/master.d/nginx_ha_reactor.conf``, without its placeholder webhook) unless the master
  already has them.

Usage (on the master, as root)::

    python -m scripts.master_dropin --repo /srv/nginx-ha            # print the drop-in
    python -m scripts.master_dropin --repo /srv/nginx-ha --write    # write master.d/nginx_ha.conf
    systemctl restart salt-master

Run it again after changing one of these keys in your own files: the drop-in is recomputed
(idempotent: the same settings give the same file). A drop-in edited by hand keeps every value
added to it. It refuses (exit 2, nothing written) when the master would not read the drop-in the
way it expects (``default_include`` elsewhere, or a key set in a file named by ``include:``, which
Salt reads after ``master.d``); then add the printed lines to your own file instead. After
writing, it reads the configuration back with ``salt.config.master_config`` and restores the
previous file if a value of the master went missing (exit 1). Nothing is written outside
``--config-dir``.
"""

import argparse
import contextlib
import copy
import fnmatch
import glob
import hashlib
import json
import os
import pathlib
import sys
import tempfile
from collections.abc import Mapping, Sequence
from unittest import mock

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
REACTOR_EXAMPLE = REPO / "conf" / "master.d" / "nginx_ha_reactor.conf"
DROPIN_NAME = "nginx_ha.conf"
MARK = "# nginx-ha master_dropin: "
REACTOR_TAG = "nginx_ha/vrrp/*"
FLEET_JOB = "nginx_ha_fleet_check"
BASE_KEYS = ("file_roots", "pillar_roots", "runner_dirs", "peer")
REACTOR_KEYS = ("reactor", "schedule", "nginx_ha_reactor")
NOTHING = object()

WHY = {
    "file_roots": "where the master's fileserver finds states; nginx-ha's formula and, through the\n"
    "_modules/_states/_utils/_engines links under salt/, the modules saltutil.sync_all brings to minions",
    "pillar_roots": "where pillars come from; put an nginx_ha.sls (see pillar/nginx_ha.sls) in your own pillar tree",
    "runner_dirs": "the fleet view (salt-run nginx_ha.status) and the event reactor's runner",
    "peer": "nginx_ha.maintenance on a node asks its peers for nginx_ha.health (read-only) through the\n"
    "master before it hands them the VIP; nothing else is allowed",
    "reactor": "every VRRP transition the nginx_ha_events engine sends goes to the nginx_ha_reactor runner",
    "schedule": "the fleet check (nginx_ha_reactor.check_fleet) every minute",
    "nginx_ha_reactor": "what the reactor runner may do; every key is documented in\n"
    "conf/master.d/nginx_ha_reactor.conf. Set webhook: url: to get alerts in a chat channel",
}


class DropinError(Exception):
    """The drop-in cannot work on this master (the message says what to do instead)."""


# ---------------------------------------------------------------------------------------------
# Values: plain YAML data, and the three operations on it
# ---------------------------------------------------------------------------------------------


def plain(value):
    """Salt's OptsDict/ImmutableDict/ImmutableList as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {key: plain(val) for key, val in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(val) for val in value]
    return value


def union(dest, upd):
    """``dest`` with ``upd`` added: dicts recursively, list items appended once, a scalar of ``upd`` wins."""
    if isinstance(dest, dict) and isinstance(upd, dict):
        out = dict(dest)
        for key, val in upd.items():
            out[key] = union(dest[key], val) if key in dest else copy.deepcopy(val)
        return out
    if isinstance(dest, list) and isinstance(upd, list):
        return dest + [copy.deepcopy(val) for val in upd if val not in dest]
    return copy.deepcopy(upd)


def missing(had, has):
    """The part of ``had`` that ``has`` does not hold (NOTHING when none)."""
    if isinstance(had, dict) and isinstance(has, dict):
        out = {}
        for key, val in had.items():
            rest = missing(val, has[key]) if key in has else val
            if rest is not NOTHING:
                out[key] = rest
        return out or NOTHING
    if isinstance(had, list) and isinstance(has, list):
        return [val for val in had if val not in has] or NOTHING
    return NOTHING if had == has else had


# ---------------------------------------------------------------------------------------------
# Reading the master's configuration the way Salt does
# ---------------------------------------------------------------------------------------------


class _GlobWithout:
    """``glob`` for salt.config that never returns one file (our previous drop-in)."""

    def __init__(self, exclude):
        self._exclude = os.path.realpath(exclude)

    def glob(self, pattern, *args, **kwargs):
        return [path for path in glob.glob(pattern, *args, **kwargs) if os.path.realpath(path) != self._exclude]

    def __getattr__(self, name):
        return getattr(glob, name)


def master_opts(config_dir, exclude=None):
    """``salt.config.master_config(<config_dir>/master)`` as plain data, ``exclude`` unread."""
    import salt.config  # pylint: disable=import-outside-toplevel

    main = os.path.join(config_dir, "master")
    with contextlib.ExitStack() as stack:
        # The config dir given is the one read, whatever this shell's SALT_* variables say.
        stack.enter_context(mock.patch.dict(os.environ))
        for var in ("SALT_MASTER_CONFIG", "SALT_CONFIG_DIR"):
            os.environ.pop(var, None)
        if exclude is not None:
            stack.enter_context(mock.patch.object(salt.config, "glob", _GlobWithout(exclude)))
        opts = salt.config.master_config(main, exit_on_config_errors=True)
    return plain(opts)


def _read(path):
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    if not isinstance(data, dict):
        raise DropinError(f"{path}: not a mapping of settings")
    return data


def _expand(patterns, main):
    if not patterns:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    out = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        if not os.path.isabs(pattern):
            pattern = os.path.join(os.path.dirname(main), pattern)
        out.append(pattern)
    return out


def layout(config_dir, target):
    """Which files set which keys: {key: [(origin, value)]} in force, shadowed main-file keys, problems."""
    import salt.config  # pylint: disable=import-outside-toplevel

    main = os.path.join(config_dir, "master")
    own = _read(main) if os.path.isfile(main) else {}
    default_include = _expand(own.get("default_include", salt.config.DEFAULT_MASTER_OPTS["default_include"]), main)
    include = _expand(own.get("include"), main)
    if not any(fnmatch.fnmatch(target, pattern) for pattern in default_include):
        raise DropinError(
            f"{main} sets default_include: {own.get('default_include')!r}, so the master does not read {target}; "
            "add the printed values to your own configuration instead"
        )
    dropins = [(path, _read(path)) for pattern in default_include for path in sorted(glob.glob(pattern)) if os.path.realpath(path) != os.path.realpath(target)]
    included = [(path, _read(path)) for pattern in include for path in sorted(glob.glob(pattern))]
    return main, own, dropins, included


def _label(path, config_dir):
    rel = os.path.relpath(path, config_dir)
    return path if rel.startswith("..") else os.path.join(config_dir, rel)


def sources(config_dir, target, keys):
    """For each key, where the master's value comes from; shadowed settings; keys Salt reads after us."""
    import salt.config  # pylint: disable=import-outside-toplevel

    main, own, dropins, included = layout(config_dir, target)
    origins, shadowed, after_us = {}, {}, {}
    for key in keys:
        late = [path for path, data in included if key in data]
        if late:
            after_us[key] = late
        from_dropins = [(_label(path, config_dir), data[key]) for path, data in dropins if key in data]
        if from_dropins:
            origins[key] = from_dropins
            if key in own:
                shadowed[key] = (main, own[key], [label for label, _ in from_dropins])
        elif key in own:
            origins[key] = [(main, own[key])]
        elif salt.config.DEFAULT_MASTER_OPTS.get(key):
            origins[key] = [("Salt's built-in default", plain(salt.config.DEFAULT_MASTER_OPTS[key]))]
        else:
            origins[key] = []
    return origins, shadowed, after_us


# ---------------------------------------------------------------------------------------------
# nginx-ha's part
# ---------------------------------------------------------------------------------------------


def additions(repo, reactor=False, pillar=False):
    """What nginx-ha appends to each key (lists and dict entries that are merged in)."""
    repo = repo.rstrip("/") or "/"
    add = {
        "file_roots": {"base": [f"{repo}/salt"]},
        "pillar_roots": {"base": [f"{repo}/pillar"]} if pillar else {},
        "runner_dirs": [f"{repo}/_runners"],
        "peer": {".*": ["nginx_ha.health"]},
    }
    if reactor:
        add["reactor"] = [{REACTOR_TAG: [f"{repo}/reactor/vrrp.sls"]}]
    return add


def reactor_defaults():
    """The fleet-check job and the nginx_ha_reactor settings of the documented example."""
    example = yaml.safe_load(REACTOR_EXAMPLE.read_text(encoding="utf-8"))
    settings = copy.deepcopy(example["nginx_ha_reactor"])
    settings["webhook"]["url"] = None  # the example's URL is a placeholder
    return {FLEET_JOB: example["schedule"][FLEET_JOB]}, settings


def _marker(text):
    for line in text.splitlines():
        if line.startswith(MARK):
            try:
                return json.loads(line[len(MARK) :])
            except ValueError:
                return None
    return None


def _body(text):
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#") and line.strip())


def _digest(text):
    return hashlib.sha256(_body(text).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# The drop-in
# ---------------------------------------------------------------------------------------------


class Plan:
    """Everything one run decided: the values, where they came from, and the notes for the operator."""

    def __init__(self, config_dir, repo, reactor, pillar):
        self.config_dir = os.path.abspath(config_dir)
        self.repo = os.path.abspath(repo)
        self.target = os.path.join(self.config_dir, "master.d", DROPIN_NAME)
        self.previous_text = pathlib.Path(self.target).read_text(encoding="utf-8") if os.path.isfile(self.target) else None
        mark = _marker(self.previous_text) if self.previous_text is not None else None
        self.notes = []
        # Options of a previous run stay on (never take away what the master has).
        if mark and mark.get("reactor") and not reactor:
            self.notes.append("keeping --reactor: the previous drop-in had it (delete the file to start over)")
            reactor = True
        if mark and mark.get("pillar") and not pillar:
            self.notes.append("keeping --pillar: the previous drop-in had it (delete the file to start over)")
            pillar = True
        self.reactor, self.pillar = reactor, pillar
        self.keys = BASE_KEYS + (REACTOR_KEYS if reactor else ())

        opts = master_opts(self.config_dir, exclude=self.target)
        self.effective = {key: copy.deepcopy(opts.get(key)) for key in self.keys}
        self.fileserver_backend = opts.get("fileserver_backend") or []
        self.added = additions(self.repo, reactor, pillar)
        self.origins, self.shadowed, after_us = sources(self.config_dir, self.target, self.keys)
        if after_us:
            where = "; ".join(f"{key} in {', '.join(paths)}" for key, paths in after_us.items())
            lines = {key: self.added[key] for key in after_us if self.added.get(key)}
            raise DropinError(
                f"Salt reads the files named by include: after master.d, and they set {where}: a drop-in cannot "
                f"add to those keys. Add nginx-ha's entries to them there: {_flow(lines)}"
                + ("" if not set(after_us) & set(REACTOR_KEYS) else " (and the reactor settings of conf/master.d/nginx_ha_reactor.conf)")
            )

        self.have = {}
        for key in self.keys:
            have = self.effective[key]
            if key == "schedule":
                have = self._schedule_without_salts_own(have or {})
            self.have[key] = have
        fresh, _ = self._combine({})

        # A previous drop-in that this script wrote and nobody touched is recomputed from the
        # settings (plus what an earlier run kept); one edited by hand (or copied from the example)
        # keeps every value it had that is neither in the settings nor an older nginx-ha path.
        self.kept = {}
        if self.previous_text is not None:
            if mark and mark.get("digest") == _digest(self.previous_text):
                previous = mark.get("kept") or {}
                ours_before = {}
            else:
                previous = yaml.safe_load(self.previous_text) or {}
                if not isinstance(previous, dict):
                    raise DropinError(f"{self.target}: not a mapping of settings; move it aside and run again")
                ours_before = additions(mark["repo"], mark.get("reactor"), mark.get("pillar")) if mark and mark.get("repo") else {}
            for key, val in previous.items():
                rest = missing(val, fresh[key]) if key in fresh and fresh[key] is not None else val
                if key in ours_before and rest is not NOTHING:
                    rest = missing(rest, ours_before[key])
                if rest is not NOTHING:
                    self.kept[key] = rest
        self.values, self.defaulted = self._combine(self.kept)
        if reactor:
            self._check_reactions(self.values["reactor"])

        if "roots" not in self.fileserver_backend:
            self.notes.append(
                f"fileserver_backend is {self.fileserver_backend}: file_roots is not served. Add nginx-ha to your "
                "gitfs_remotes (with root: salt) in the file where your remotes are, or add roots to fileserver_backend"
            )
        for key, (main, _, labels) in self.shadowed.items():
            self.notes.append(f"{main} sets {key}, but {', '.join(labels)} already replaces it: those values are not in force and are not added")
        for key, val in self.kept.items():
            self.notes.append(f"kept from the previous {DROPIN_NAME} (not in your other settings): {key}: {_flow(val)}")

    def _combine(self, kept):
        """Per key: the master's values, then what a previous drop-in keeps, then nginx-ha's."""
        values, defaulted = {}, {}
        for key in self.keys:
            val = copy.deepcopy(self.have[key])
            if key in kept:
                val = union(val, kept[key]) if val is not None else copy.deepcopy(kept[key])
            if key in self.added:
                val = union(val if val is not None else type(self.added[key])(), self.added[key])
            values[key] = val
        if self.reactor:
            job, settings = reactor_defaults()
            if FLEET_JOB not in (values["schedule"] or {}):
                values["schedule"] = union(values["schedule"] or {}, job)
                defaulted["schedule"] = job
            if not values["nginx_ha_reactor"]:
                values["nginx_ha_reactor"] = settings
                defaulted["nginx_ha_reactor"] = settings
        for key, val in kept.items():
            if key not in values:
                values[key] = copy.deepcopy(val)
        return values, defaulted

    def _schedule_without_salts_own(self, schedule):
        """Jobs Salt itself persisted to master.d/_schedule.conf merge on their own; not repeated."""
        own_file = os.path.join(self.config_dir, "master.d", "_schedule.conf")
        if not os.path.isfile(own_file):
            return schedule
        persisted = (_read(own_file).get("schedule") or {}).keys()
        return {name: job for name, job in schedule.items() if name not in persisted}

    def _check_reactions(self, reactions):
        for reaction in reactions or []:
            for tag, files in (reaction or {}).items():
                for path in files or []:
                    if str(path).endswith("/reactor/vrrp.sls") and path != f"{self.repo}/reactor/vrrp.sls":
                        self.notes.append(f"reactor: {tag} also runs {path} (another nginx-ha checkout?): remove that reaction, or each event is handled twice")

    # -----------------------------------------------------------------------------------------

    def render(self):
        argv = f"--repo {self.repo} --config-dir {self.config_dir}" + (" --reactor" if self.reactor else "") + (" --pillar" if self.pillar else "")
        main = os.path.join(self.config_dir, "master")
        out = [f"# Salt master drop-in for nginx-ha, generated by: python -m scripts.master_dropin {argv}", "#"]
        out += _wrap(
            "Why your own values are repeated here: Salt merges the master.d/*.conf files among themselves (lists "
            f"appended) and the result REPLACES the same top-level keys of {main} and of Salt's built-in defaults. "
            "A drop-in naming only nginx-ha's paths would take your states and pillars away. So each key below "
            "holds every value your master had for it (from your files or Salt's defaults), then nginx-ha's "
            "entries, appended: your roots keep precedence.",
            lead="#",
        )
        out.append("#")
        out += _wrap(
            f"While this file exists, Salt ignores these keys in {main}: change them there and run the command "
            "again (it recomputes this file from your settings), or edit them here (a run keeps whatever was added "
            "here by hand). Values from other master.d files are repeated too: Salt merges them anyway, and "
            "repeating them keeps them ahead of nginx-ha's.",
            lead="#",
        )
        marker_at = len(out)
        body = []
        for key in self.keys:
            body.append("")
            body.extend(self._comment(key))
            body.append(_dump({key: self.values[key]}).rstrip("\n"))
        extra = [key for key in self.values if key not in self.keys]
        for key in extra:
            body.append("")
            body.append(f"# {key}: kept from the previous {DROPIN_NAME}")
            body.append(_dump({key: self.values[key]}).rstrip("\n"))
        text_body = "\n".join(body) + "\n"
        mark = {"repo": self.repo, "reactor": self.reactor, "pillar": self.pillar, "digest": _digest(text_body)}
        if self.kept:
            mark["kept"] = self.kept
        out.insert(marker_at, MARK + json.dumps(mark, sort_keys=True, default=str))
        return "\n".join(out) + "\n" + text_body

    def _comment(self, key):
        lines = [f"# {key}: " + WHY[key].split("\n")[0]] + ["#   " + more for more in WHY[key].split("\n")[1:]]
        origins = self.origins.get(key) or []
        for origin, val in origins:
            shown = val
            if key == "schedule" and isinstance(val, dict):
                shown = {name: job for name, job in val.items() if name in (self.values.get(key) or {})}
                if not shown:
                    continue
            lines.extend(_wrap(f"repeated from {origin}: {_flow(shown)}"))
        if not origins:
            lines.append("#   (your master had no value for it)")
        if key in self.shadowed:
            main, _, labels = self.shadowed[key]
            lines.extend(_wrap(f"not repeated: the value in {main}, already replaced by {', '.join(labels)}"))
        if self.added.get(key):
            lines.extend(_wrap(f"added for nginx-ha: {_flow(self.added[key])}"))
        elif key == "pillar_roots":
            lines.append("#   nothing added (--pillar would add nginx-ha's commented example pillar)")
        if key in self.defaulted:
            lines.extend(_wrap(f"added for nginx-ha (your master had none): {_flow(self.defaulted[key]) if key == 'schedule' else 'the documented defaults'}"))
        if key in self.kept:
            lines.extend(_wrap(f"kept from the previous {DROPIN_NAME}: {_flow(self.kept[key])}"))
        return lines

    # -----------------------------------------------------------------------------------------

    def write(self, text):
        """Write the drop-in (atomically), read the configuration back, restore on a lost value."""
        config_dir = os.path.realpath(self.config_dir)
        dropin_dir = os.path.dirname(self.target)
        real_dir = os.path.realpath(dropin_dir) if os.path.exists(dropin_dir) else os.path.join(config_dir, "master.d")
        if os.path.commonpath([config_dir, real_dir]) != config_dir:
            raise DropinError(f"{dropin_dir} leads outside {self.config_dir}; nothing written")
        if self.previous_text == text:
            return False
        before = master_opts(self.config_dir)
        os.makedirs(dropin_dir, mode=0o755, exist_ok=True)
        like = self.target if self.previous_text is not None else os.path.join(self.config_dir, "master")
        mode, owner = 0o644, None
        if os.path.exists(like):
            stat = os.stat(like)
            mode, owner = stat.st_mode & 0o777, (stat.st_uid, stat.st_gid)
        fd, tmp = tempfile.mkstemp(prefix=".nginx_ha.conf.", suffix=".tmp", dir=dropin_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(tmp, mode)
            if owner is not None and os.geteuid() == 0:
                os.chown(tmp, *owner)
            os.replace(tmp, self.target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        try:
            after = master_opts(self.config_dir)
            lost = {}
            for key in self.keys:
                for wanted in (self.effective[key], self.added.get(key), self.kept.get(key)):
                    if wanted in (None, NOTHING):
                        continue
                    gone = missing(wanted, after.get(key) if after.get(key) is not None else type(wanted)())
                    if gone is not NOTHING:
                        lost[key] = gone
            if lost:
                raise DropinError(f"after writing {self.target}, the master would lose {_flow(lost)}; previous file restored")
        except BaseException:
            if self.previous_text is None:
                os.unlink(self.target)
            else:
                pathlib.Path(self.target).write_text(self.previous_text, encoding="utf-8")
            raise
        for key in self.keys:
            gone = missing(before.get(key), after.get(key)) if before.get(key) is not None else NOTHING
            if gone is not NOTHING:
                self.notes.append(f"no longer in {key} (your settings do not have it any more): {_flow(gone)}")
        return True


class _Dumper(yaml.SafeDumper):
    """Block lists indented under their key, as people write them."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def _dump(data):
    return yaml.dump(data, Dumper=_Dumper, default_flow_style=False, sort_keys=False, width=1000, allow_unicode=True)


def _flow(value):
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=100000).strip().removesuffix("...").strip()


def _wrap(text, width=99, lead="#  ", more="#     "):
    lines, line = [], lead
    for word in text.split(" "):
        if len(line) + len(word) + 1 > width and line.strip("# "):
            lines.append(line)
            line = more if lead != "#" else "#"
        line = f"{line} {word}"
    lines.append(line)
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m scripts.master_dropin",
        description="Print or write master.d/nginx_ha.conf: nginx-ha's master settings added to (never replacing) this master's own.",
    )
    parser.add_argument("--repo", default=str(REPO), help="where this repository is on the master (default: this checkout, %(default)s)")
    parser.add_argument("--config-dir", default="/etc/salt", help="the master's configuration directory (default: %(default)s)")
    parser.add_argument("--reactor", action="store_true", help="also the event reactor, the fleet-check schedule and nginx_ha_reactor settings")
    parser.add_argument("--pillar", action="store_true", help="also serve nginx-ha's example pillar dir (<repo>/pillar) after your own pillar_roots")
    parser.add_argument("--write", action="store_true", help="write <config-dir>/master.d/nginx_ha.conf (default: print it)")
    args = parser.parse_args(argv)

    def note(text):
        print(f"master_dropin: {text}", file=sys.stderr)

    if not os.path.isabs(args.repo):
        args.repo = os.path.abspath(args.repo)
    if not os.path.isfile(os.path.join(args.repo, "salt", "nginx_ha", "init.sls")):
        if args.write:
            note(f"no nginx-ha checkout at {args.repo} (salt/nginx_ha/init.sls is missing); nothing written")
            return 2
        note(f"warning: no nginx-ha checkout at {args.repo} on this machine")
    try:
        plan = Plan(args.config_dir, args.repo, args.reactor, args.pillar)
        text = plan.render()
        if args.write:
            changed = plan.write(text)
            note(("wrote " if changed else "unchanged: ") + plan.target + ("; restart the salt-master" if changed else ""))
        else:
            sys.stdout.write(text)
    except DropinError as err:
        note(str(err))
        return 1 if "restored" in str(err) else 2
    except OSError as err:
        note(f"{err}; nothing written")
        return 2
    for line in plan.notes:
        note(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
