"""nginx_ha.claim / claim_done / claims: the per-event claim that makes several masters act once."""

import json
import multiprocessing
import os
import stat

import pytest
from salt.exceptions import SaltInvocationError

from tests.support import formula

mod = formula.load_module("_modules", "nginx_ha")
KEY = "vrrp|VI_web|0f3c1d2e-aaaa-bbbb-cccc-123456789abc|1700000000123"


class BootClock:
    """The node's boot clock (boot id, seconds since boot), moved by the test."""

    def __init__(self):
        self.boot, self.now = "boot-1", 1000.0

    def __call__(self):
        return self.boot, self.now


@pytest.fixture
def clock(monkeypatch):
    c = BootClock()
    monkeypatch.setattr(mod, "_boot_clock", c)
    return c


@pytest.fixture
def claim_dir(tmp_path):
    return tmp_path / "claims"


@pytest.fixture
def configure_loader_modules(claim_dir):
    return {mod: {"__salt__": {}, "__grains__": {"id": "web-a"}, "__opts__": {"nginx_ha.claim_dir": str(claim_dir)}, "__context__": {}}}


def test_the_first_master_wins_and_the_second_is_told_who_holds_it(clock, claim_dir):
    first = mod.claim(KEY, "m1", lease=60, info={"node": "web-a", "state": "FAULT"})
    second = mod.claim(KEY, "m2", lease=60)
    assert first["won"] is True and first["holder"] == "m1" and first["expires_in"] == 60
    assert second["won"] is False and second["holder"] == "m1" and second["state"] == "held"
    assert second["info"] == {"node": "web-a", "state": "FAULT"}
    # root-only: the directory 0700, each record 0600
    assert stat.S_IMODE(os.stat(claim_dir).st_mode) == 0o700
    records = [p for p in claim_dir.iterdir() if p.suffix == ".json"]
    assert len(records) == 1 and stat.S_IMODE(records[0].stat().st_mode) == 0o600


def test_the_holder_renews_its_own_claim(clock):
    assert mod.claim(KEY, "m1", lease=10)["won"]
    clock.now += 8
    again = mod.claim(KEY, "m1", lease=10)
    assert again["won"] is True and again["expires_in"] == 10 and "taken_over" not in again


def test_an_expired_lease_is_taken_over_and_says_from_whom(clock):
    assert mod.claim(KEY, "m1", lease=30, info={"state": "FAULT"})["won"]
    clock.now += 29.9
    assert mod.claim(KEY, "m2", lease=30)["won"] is False
    clock.now += 0.2  # m1 died without claim_done: its lease ran out
    taken = mod.claim(KEY, "m2", lease=30)
    assert taken["won"] is True and taken["taken_over"] == "m1" and taken["holder"] == "m2"
    assert taken["info"] == {"state": "FAULT"}  # what the event was survives the takeover
    assert mod.claim(KEY, "m1", lease=30)["won"] is False  # m1, back, finds m2 holding it


def test_a_finished_claim_is_never_won_again_even_after_its_lease(clock):
    assert mod.claim(KEY, "m1", lease=5)["won"]
    done = mod.claim_done(KEY, "m1", result="restarted")
    assert done["done"] is True and done["state"] == "done"
    clock.now += 3600
    late = mod.claim(KEY, "m2", lease=5)
    assert late["won"] is False and late["holder"] == "m1" and late["state"] == "done" and late["result"] == "restarted"
    assert mod.claims(expired=True) == []


def test_claim_done_by_a_holder_that_lost_its_claim_changes_nothing(clock):
    mod.claim(KEY, "m1", lease=5)
    clock.now += 6
    assert mod.claim(KEY, "m2", lease=5)["won"]
    late = mod.claim_done(KEY, "m1", result="restarted")
    assert late["done"] is False and late["holder"] == "m2"
    assert mod.claim_done(KEY, "m2", result="already-healthy")["done"] is True


def test_a_claim_of_an_earlier_boot_has_expired(clock):
    mod.claim(KEY, "m1", lease=600)
    clock.boot, clock.now = "boot-2", 5.0  # the node rebooted: its boot clock started again
    assert mod.claim(KEY, "m2", lease=600)["won"] is True


def test_claims_lists_the_expired_held_ones_for_a_takeover(clock):
    mod.claim("vrrp|VI_web|b|1", "m1", lease=10, info={"state": "FAULT", "seq": 1})
    mod.claim("vrrp|VI_web|b|2", "m1", lease=100)
    mod.claim("vrrp|VI_web|b|3", "m1", lease=10)
    mod.claim_done("vrrp|VI_web|b|3", "m1", result="recorded")
    clock.now += 11
    expired = mod.claims(expired=True)
    assert [(c["key"], c["holder"], c["info"]) for c in expired] == [("vrrp|VI_web|b|1", "m1", {"state": "FAULT", "seq": 1})]
    assert sorted(c["key"] for c in mod.claims()) == ["vrrp|VI_web|b|1", "vrrp|VI_web|b|2", "vrrp|VI_web|b|3"]


def test_old_claims_are_removed_a_day_after_they_ended(clock, claim_dir):
    mod.claim("old", "m1", lease=10)
    mod.claim_done("old", "m1")
    clock.now += mod.CLAIM_KEEP + 1
    mod.claim("new", "m1", lease=10)
    assert [c["key"] for c in mod.claims()] == ["new"]


def test_an_old_claim_that_cannot_be_removed_is_logged_and_kept(clock, claim_dir, monkeypatch, caplog):
    mod.claim("old", "m1", lease=10)
    mod.claim_done("old", "m1")
    clock.now += mod.CLAIM_KEEP + 1
    real_unlink = os.unlink

    def refuse(path, *args, **kwargs):
        if str(path).startswith(str(claim_dir)) and str(path).endswith(".json"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(mod.os, "unlink", refuse)
    with caplog.at_level("WARNING"):
        assert mod.claim("new", "m1", lease=10)["won"] is True
    assert "cannot remove the expired claim record" in caplog.text and "Permission denied" in caplog.text
    assert sorted(c["key"] for c in mod.claims()) == ["new", "old"]
    assert mod.claim("old", "m2", lease=10)["won"] is False  # a finished claim is never won again


def test_an_unreadable_record_counts_as_expired(clock, claim_dir):
    mod.claim(KEY, "m1", lease=600)
    (path,) = [p for p in claim_dir.iterdir() if p.suffix == ".json"]
    path.write_text("{not json")
    assert mod.claim(KEY, "m2", lease=600)["won"] is True


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"key": "a b", "holder": "m1"}, "key"),
        ({"key": "x;rm -rf /", "holder": "m1"}, "key"),
        ({"key": "", "holder": "m1"}, "key"),
        ({"key": "k", "holder": "m 1"}, "holder"),
        ({"key": "k", "holder": "m1", "lease": 0}, "lease"),
        ({"key": "k", "holder": "m1", "lease": "soon"}, "lease"),
        ({"key": "k", "holder": "m1", "info": ["x"]}, "info"),
        ({"key": "k", "holder": "m1", "info": {"x": "y" * 3000}}, "info"),
    ],
)
def test_bad_arguments_are_refused(clock, kwargs, match):
    with pytest.raises(SaltInvocationError, match=match):
        mod.claim(**kwargs)


def _race(claim_dir, holder, out):
    mod.__opts__ = {"nginx_ha.claim_dir": claim_dir}
    mod._boot_clock = lambda: ("boot-1", 1000.0)
    out.put((holder, mod.claim(KEY, holder, lease=60)["won"]))


def test_concurrent_claimers_in_separate_processes_have_one_winner(claim_dir):
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(claim_dir), f"m{i}", out)) for i in range(8)]
    for p in procs:
        p.start()
    results = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(30)
    winners = [h for h, won in results if won]
    assert len(winners) == 1, results
    (record,) = [json.loads(p.read_text()) for p in claim_dir.iterdir() if p.suffix == ".json"]
    assert record["holder"] == winners[0]
