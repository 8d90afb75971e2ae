"""
The lab's recorder of the Salt master's event bus, for tests and the benchmark.

The master's ``event_return`` (Salt's ``rawfile_json`` returner) appends one JSON object
``{tag, data}`` per line to :data:`BUS_LOG` in the master host. Salt's EventReturn process reads
the bus from the master's start, before its request server accepts minions, so unlike a
``salt-run state.event`` listener it cannot miss what is delivered right after a master
(re)start. Each event carries the master's ``_stamp`` (UTC, microseconds): the time the event
was on the master's bus.

    with Lab(..., master_extra=recorder(["nginx_ha/*"])) as lab:
        ...
        for event in events(lab, "nginx_ha/vrrp/*", after=t0):
            event["tag"], event["stamp"], event["data"]["id"], event["data"]["data"]
"""

import datetime
import fnmatch
import json

BUS_LOG = "/var/log/salt/nginx_ha_bus.jsonl"  # in the master host


def recorder(tags):
    """master configuration that records the events whose tags match the globs ``tags``."""
    return {
        "event_return": "rawfile_json",
        "rawfile_json.filename": BUS_LOG,
        "event_return_queue": 0,
        "event_return_whitelist": list(tags),
    }


def epoch(stamp):
    """Seconds since the epoch of a master ``_stamp`` (ISO 8601, UTC when it names no zone), or None."""
    try:
        when = datetime.datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def parse(text, pattern="*", after=0.0, where=None):
    """Events in the recorder's ``text`` matching the tag glob, stamped at or after ``after``, in bus order."""
    found = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        tag, data = event.get("tag"), event.get("data")
        if not isinstance(tag, str) or not isinstance(data, dict) or not fnmatch.fnmatchcase(tag, pattern):
            continue
        stamp = epoch(data.get("_stamp"))
        if stamp is None or stamp < after:
            continue
        event["stamp"] = stamp
        if where is None or where(event):
            found.append(event)
    return found


def events(lab, pattern="*", after=0.0, where=None, master=None):
    """The recorded events of ``lab``'s master (``master``: that master's name; see :func:`parse`)."""
    host = lab.master if master is None else lab.host(master)
    if not host.running:
        return []
    return parse(host.read_file(BUS_LOG, missing_ok=True) or "", pattern, after, where)
