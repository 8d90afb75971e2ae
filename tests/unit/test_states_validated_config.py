"""
nginx_ha.validated_config with loader mocks, in both test modes. The checker is a real process run
the way the state runs it (private mount namespace), so what it sees is what a real `nginx -t`
would see; the recording checker also reads the live path *from outside* the namespace
(``/proc/<pytest pid>/root<path>``) while it runs, which proves the live file was never the
candidate. Further down: the real `nginx -t` and `keepalived -t`, a timeout, a minion SIGKILLed
while its checker runs.

The namespace needs root and util-linux `unshare`/`mount` (present here and in CI); without them
the namespace tests are skipped with that reason.
"""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.support import formula

validated = formula.load_module("_states", "nginx_ha")

NGINX = "/usr/sbin/nginx"
KEEPALIVED = "/usr/sbin/keepalived"


def _namespaces_work():
    if os.geteuid() != 0:
        return False
    try:
        res = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


NAMESPACES = _namespaces_work()
needs_ns = pytest.mark.skipif(not NAMESPACES, reason="needs root and a private mount namespace (unshare --mount)")


@pytest.fixture(params=[False, True], ids=["apply", "test=True"])
def test_mode(request):
    return request.param


@pytest.fixture
def configure_loader_modules(test_mode):
    return {
        validated: {
            "__salt__": {"file.apply_template_on_contents": lambda *a, **k: a[0], "cp.get_file_str": lambda *a, **k: None},
            "__opts__": {"test": test_mode},
            "__env__": "base",
        }
    }


@pytest.fixture
def rec(tmp_path):
    """A directory for what the checker records, outside every live directory."""
    path = tmp_path / "record"
    path.mkdir()
    return path


@pytest.fixture
def etc(tmp_path):
    path = tmp_path / "etc"
    path.mkdir()
    return path


def recorder(rec, refuse="BAD", outside="{path}"):
    """
    A checker that records what it sees at ``{path}`` (seen) and what everybody else sees at
    ``outside`` at the same moment (MISSING when there is no file), and refuses content with BAD.
    ``outside`` must not be a symlink: an absolute link met under /proc/PID/root is followed from
    the reader's own root, i.e. inside the namespace.
    """
    script = (
        'cat "$1" > "$2/seen" 2>&1 || echo MISSING > "$2/seen";'
        ' cat "/proc/$3/root$5" > "$2/outside" 2>/dev/null || echo MISSING > "$2/outside";'
        ' if grep -q "$4" "$1"; then echo "refusing: found $4 in $1" >&2; exit 1; fi'
    )
    return ["sh", "-c", script, "checker", "{path}", str(rec), str(os.getpid()), refuse, str(outside)]


def state(path, contents, checker, **kw):
    return validated.validated_config(str(path), checker, contents=contents, **kw)


def leftovers(directory):
    return sorted(p.name for p in pathlib.Path(directory).iterdir() if p.name.startswith(".nginx_ha."))


# --------------------------------------------------------------------------------------------
# With a recording checker
# --------------------------------------------------------------------------------------------


@needs_ns
def test_new_file(etc, rec, test_mode):
    (etc / "other.conf").write_text("other\n")
    path = etc / "site.conf"
    ret = state(path, "good\n", recorder(rec))
    assert (rec / "seen").read_text() == "good\n"  # checked in both modes
    assert (rec / "outside").read_text() == "MISSING\n"  # never visible to anyone else while checked
    if test_mode:
        assert ret["result"] is None and "would be updated" in ret["comment"] and "accepts it" in ret["comment"]
        assert ret["changes"]["new"].endswith("would be created") and "+good" in ret["changes"]["diff"]
        assert not path.exists()
    else:
        assert ret["result"] is True and "+good" in ret["changes"]["diff"]
        assert path.read_text() == "good\n"
        st = path.stat()
        assert (oct(st.st_mode & 0o7777), st.st_uid, st.st_gid) == ("0o644", 0, 0)
    assert leftovers(etc) == [] and sorted(p.name for p in etc.iterdir()) == ["other.conf"] + ([] if test_mode else ["site.conf"])


@needs_ns
def test_new_file_sees_the_rest_of_its_directory(etc, rec, test_mode):
    """The tmpfs view for a new file still shows every other entry, subdirectories and symlinks."""
    (etc / "sub").mkdir()
    (etc / "sub" / "inc.conf").write_text("included\n")
    (etc / ".hidden").write_text("hidden\n")
    (etc / "link.conf").symlink_to("sub/inc.conf")
    path = etc / "site.conf"
    script = 'cat "$1" "$(dirname "$1")/sub/inc.conf" "$(dirname "$1")/.hidden" "$(dirname "$1")/link.conf" > "$2/seen"'
    ret = state(path, "good\n", ["sh", "-c", script, "checker", "{path}", str(rec)])
    assert ret["result"] is (None if test_mode else True), ret["comment"]
    assert (rec / "seen").read_text() == "good\nincluded\nhidden\nincluded\n"


@needs_ns
def test_unchanged_file_reports_no_changes_and_runs_no_checker(etc, rec, test_mode):
    path = etc / "site.conf"
    path.write_text("good\n")
    ret = state(path, "good", recorder(rec))
    assert ret["result"] is True and ret["changes"] == {} and "desired state" in ret["comment"]
    assert not (rec / "seen").exists()


@needs_ns
def test_accepted_change(etc, rec, test_mode):
    path = etc / "site.conf"
    path.write_text("old\n")
    ret = state(path, "new\n", recorder(rec))
    assert "-old" in ret["changes"]["diff"] and "+new" in ret["changes"]["diff"]
    assert (rec / "seen").read_text() == "new\n" and (rec / "outside").read_text() == "old\n"
    if test_mode:
        assert ret["result"] is None and path.read_text() == "old\n"
    else:
        assert ret["result"] is True and path.read_text() == "new\n"
    assert leftovers(etc) == []


@needs_ns
def test_refused_change_never_touches_the_live_file(etc, rec, test_mode):
    path = etc / "site.conf"
    path.write_bytes(b"old\n")
    path.chmod(0o640)
    before = os.stat(path)
    ret = state(path, "BAD\n", recorder(rec))
    assert ret["result"] is False and ret["changes"] == {}  # test=True reports the refusal too
    assert "was refused by sh" in ret["comment"] and "live file was not touched" in ret["comment"]
    assert "refusing: found BAD" in ret["comment"]  # the checker's output
    assert (rec / "seen").read_text() == "BAD\n"  # the checker saw the candidate at the live path
    assert (rec / "outside").read_bytes() == b"old\n"  # while everybody else saw the old file
    after = os.stat(path)
    assert path.read_bytes() == b"old\n"
    assert (after.st_ino, after.st_mtime_ns, after.st_mode) == (before.st_ino, before.st_mtime_ns, before.st_mode)
    assert leftovers(etc) == []


@needs_ns
def test_refused_new_file_is_never_created(etc, rec, test_mode):
    path = etc / "site.conf"
    ret = state(path, "BAD\n", recorder(rec))
    assert ret["result"] is False and "refused" in ret["comment"]
    assert (rec / "seen").read_text() == "BAD\n" and (rec / "outside").read_text() == "MISSING\n"
    assert list(etc.iterdir()) == []


@needs_ns
def test_existing_owner_and_mode_are_kept_by_default(etc, rec, test_mode):
    path = etc / "site.conf"
    path.write_text("old\n")
    os.chown(path, 1234, 4321)
    path.chmod(0o640)
    ret = state(path, "new\n", recorder(rec))
    assert set(ret["changes"]) == {"diff"}
    st = path.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, 1234, 4321)
    assert path.read_text() == ("old\n" if test_mode else "new\n")


@needs_ns
def test_mode_and_owner_when_given_are_enforced(etc, rec, test_mode):
    path = etc / "site.conf"
    path.write_text("good\n")
    os.chown(path, 1234, 4321)
    path.chmod(0o666)
    ret = state(path, "good\n", recorder(rec), mode="0644", user="root", group=0)
    assert ret["changes"] == {"mode": "0666 -> 0644", "owner": "1234:4321 -> root:root"}
    assert not (rec / "seen").exists()  # same content: nothing to check
    st = path.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == ((0o666, 1234, 4321) if test_mode else (0o644, 0, 0))
    assert ret["result"] is (None if test_mode else True)


@needs_ns
def test_given_owner_and_mode_apply_to_a_new_file_and_the_checker_sees_them(etc, rec, test_mode):
    path = etc / "site.conf"
    script = 'stat -c "%a %u %g" "$1" > "$2/seen"'
    ret = state(path, "x\n", ["sh", "-c", script, "checker", "{path}", str(rec)], mode="0600", user=1234, group="0")
    assert (rec / "seen").read_text() == "600 1234 0\n"
    if not test_mode:
        st = path.stat()
        assert ret["result"] is True and (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o600, 1234, 0)


@needs_ns
def test_symlink_is_written_through_and_kept(tmp_path, etc, rec, test_mode):
    avail = tmp_path / "available"
    avail.mkdir()
    real = avail / "site.conf"
    real.write_text("old\n")
    link = etc / "site.conf"
    link.symlink_to(real)
    ret = state(link, "new\n", recorder(rec, outside=real))
    assert (rec / "seen").read_text() == "new\n" and (rec / "outside").read_text() == "old\n"
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == ("old\n" if test_mode else "new\n")
    assert f"through the symlink {link} -> {real}" in ret["comment"]
    ret = state(link, "BAD\n", recorder(rec))
    assert ret["result"] is False and link.is_symlink() and real.read_text() == ("old\n" if test_mode else "new\n")
    assert leftovers(etc) == [] and leftovers(avail) == []


@needs_ns
def test_dangling_symlink_creates_its_target(tmp_path, etc, rec, test_mode):
    real = tmp_path / "available-site.conf"
    link = etc / "site.conf"
    link.symlink_to(real)
    ret = state(link, "new\n", recorder(rec, outside=real))
    assert (rec / "seen").read_text() == "new\n" and (rec / "outside").read_text() == "MISSING\n"
    assert ret["result"] is (None if test_mode else True), ret["comment"]
    assert link.is_symlink() and (real.exists() is not test_mode)


def test_symlink_loop_fails_loudly(etc, rec, test_mode):
    link = etc / "site.conf"
    link.symlink_to(etc / "loop.conf")
    (etc / "loop.conf").symlink_to(link)
    ret = state(link, "new\n", recorder(rec))
    assert ret["result"] is False and "symlink loop" in ret["comment"]
    assert not (rec / "seen").exists()


def test_not_a_regular_file_fails_loudly(etc, rec, test_mode):
    path = etc / "site.conf"
    path.mkdir()
    ret = state(path, "new\n", recorder(rec))
    assert ret["result"] is False and "not a regular file" in ret["comment"]


@needs_ns
def test_checker_timeout_is_a_refusal_and_kills_the_process_group(etc, rec, test_mode):
    path = etc / "site.conf"
    path.write_text("old\n")
    # the checker starts a grandchild in its process group, then hangs
    script = 'sleep 300 & echo $! > "$2/child"; sleep 300'
    started = time.monotonic()
    ret = state(path, "new\n", ["sh", "-c", script, "checker", "{path}", str(rec)], timeout=1)
    assert time.monotonic() - started < 10
    assert ret["result"] is False and "did not finish within 1 s" in ret["comment"] and "killed" in ret["comment"]
    assert path.read_text() == "old\n" and leftovers(etc) == []
    child = int((rec / "child").read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


@needs_ns
def test_file_changed_while_checked_is_not_overwritten(etc, rec, test_mode):
    path = etc / "site.conf"
    path.write_text("old\n")
    script = 'echo "by hand" > "/proc/$3/root$1"'  # someone edits the live file meanwhile
    ret = state(path, "new\n", ["sh", "-c", script, "checker", "{path}", str(rec), str(os.getpid())])
    assert path.read_text() == "by hand\n"
    if not test_mode:
        assert ret["result"] is False and "changed while it was being checked" in ret["comment"]


@pytest.mark.parametrize("unshare", ["/nonexistent/unshare", "false"])
def test_no_namespace_fails_loudly_and_writes_nothing(etc, rec, test_mode, monkeypatch, unshare):
    monkeypatch.setattr(validated, "UNSHARE", unshare)
    path = etc / "site.conf"
    path.write_text("old\n")
    ret = state(path, "new\n", recorder(rec))
    assert ret["result"] is False and "private mount namespace could not be made" in ret["comment"]
    assert "nothing was written" in ret["comment"]
    assert path.read_text() == "old\n" and not (rec / "seen").exists() and leftovers(etc) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "relative.conf"}, "not an absolute path"),
        ({"checker": "nginx -t"}, "is not a non-empty list"),
        ({"checker": []}, "is not a non-empty list"),
        ({"contents": None}, "give exactly one of source or contents"),
        ({"timeout": 0}, "timeout: 0 is not a positive number"),
        ({"mode": "rw"}, "mode: 'rw' is not an octal file mode"),
        ({"user": "no-such-user-nginx-ha"}, "does not exist"),
        ({"group": "no-such-group-nginx-ha"}, "does not exist"),
    ],
)
def test_bad_arguments(tmp_path, test_mode, kwargs, message):
    args = {"name": str(tmp_path / "x.conf"), "checker": ["true"], "contents": "x"}
    args.update(kwargs)
    ret = validated.validated_config(**args)
    assert ret["result"] is False and message in ret["comment"]
    assert not (tmp_path / "x.conf").exists()


@needs_ns
def test_missing_directory(etc, rec, test_mode):
    path = etc / "sub" / "deeper" / "x.conf"
    ret = state(path, "good\n", recorder(rec))
    assert ret["result"] is False and "does not exist" in ret["comment"] and not (rec / "seen").exists()
    ret = state(path, "BAD\n", recorder(rec), makedirs=True)
    assert ret["result"] is False and (rec / "seen").read_text() == "BAD\n"
    assert not (etc / "sub").exists()  # nothing is created for a refused candidate
    ret = state(path, "good\n", recorder(rec), makedirs=True)
    assert (rec / "seen").read_text() == "good\n" and (rec / "outside").read_text() == "MISSING\n"
    if test_mode:
        assert ret["result"] is None and not (etc / "sub").exists()
    else:
        assert ret["result"] is True and path.read_text() == "good\n"
        assert oct((etc / "sub").stat().st_mode & 0o777) == "0o755"


# --------------------------------------------------------------------------------------------
# Killed halfway: the minion dies while its checker runs
# --------------------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from tests.support import formula
    mod = formula.load_module("_states", "nginx_ha")
    mod.__opts__ = {"test": False}
    mod.__salt__ = {}
    mod.__env__ = "base"
    print(mod.validated_config(sys.argv[2], sys.argv[4:], contents=sys.argv[3]))
    """
)


@needs_ns
@pytest.mark.parametrize("test_mode", [False], ids=["apply"])
def test_minion_killed_while_the_checker_runs_leaves_the_old_file(etc, rec, test_mode):
    path = etc / "site.conf"
    path.write_bytes(b"old\n")
    script = 'echo $$ > "$2/checker"; cat "/proc/$3/root$1" > "$2/outside"; exec sleep 300'
    work_dirs = set(pathlib.Path(validated.tempfile.gettempdir()).glob("nginx_ha.validate.*"))
    minion = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(formula.REPO), str(path), "new\n", "sh", "-c", script, "checker", "{path}", str(rec), str(os.getpid())],
        cwd=str(formula.REPO),
    )
    checker = None
    try:
        deadline = time.monotonic() + 20
        while not (rec / "outside").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (rec / "outside").exists(), "the checker did not start"
        checker = int((rec / "checker").read_text())
        assert path.read_bytes() == b"old\n"  # while the checker runs
        minion.send_signal(signal.SIGKILL)
        minion.wait(10)
        assert path.read_bytes() == b"old\n"  # after the minion died mid-check
        assert leftovers(etc) == [] and sorted(p.name for p in etc.iterdir()) == ["site.conf"]
    finally:
        if minion.poll() is None:
            minion.kill()
            minion.wait(10)
        if checker is not None:
            try:
                os.killpg(checker, signal.SIGKILL)  # the checker's own group (we started it)
            except ProcessLookupError:
                pass
        # the killed minion's private work directory (the state sweeps them after a day)
        for left in set(pathlib.Path(validated.tempfile.gettempdir()).glob("nginx_ha.validate.*")) - work_dirs:
            shutil.rmtree(left, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# The real checkers
# --------------------------------------------------------------------------------------------

needs_nginx = pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason=f"{NGINX} is not installed")
needs_keepalived = pytest.mark.skipif(not os.access(KEEPALIVED, os.X_OK), reason=f"{KEEPALIVED} is not installed")


@pytest.fixture
def nginx_tree(tmp_path):
    """A private nginx tree whose main config includes conf.d by absolute path, as Debian's does."""
    root = tmp_path / "nginx"
    (root / "conf.d").mkdir(parents=True)
    (root / "nginx.conf").write_text(
        textwrap.dedent(
            f"""\
            pid {root}/nginx.pid;
            error_log {root}/error.log;
            events {{}}
            http {{
                access_log off;
                include {root}/conf.d/*.conf;
            }}
            """
        )
    )
    (root / "conf.d" / "other.conf").write_text("server { listen 127.0.0.1:18081; }\n")
    return root


def snapshot_checker(rec, live, checker):
    """Wrap a real checker: record the live file as everybody else sees it while the checker runs."""
    script = 'cat "/proc/$1/root$2" > "$3/outside" 2>/dev/null || echo MISSING > "$3/outside"; shift 3; exec "$@"'
    return ["sh", "-c", script, "snapshot", str(os.getpid()), str(live), str(rec), *checker]


GOOD_SITE = "server {\n    listen 127.0.0.1:18080;\n    location / { return 204; }\n}\n"
BAD_SITE = "server {\n    listen 127.0.0.1:18080;\n    bogus_directive on;\n}\n"


@needs_ns
@needs_nginx
@pytest.mark.parametrize("existing", [True, False], ids=["existing-site", "new-site"])
def test_real_nginx_refuses_and_the_live_file_never_changes(nginx_tree, rec, test_mode, existing):
    site = nginx_tree / "conf.d" / "nginx_ha.conf"
    if existing:
        site.write_text(GOOD_SITE)
    before = site.read_bytes() if existing else None
    checker = snapshot_checker(rec, site, [NGINX, "-t", "-q", "-c", str(nginx_tree / "nginx.conf")])
    ret = state(site, BAD_SITE, checker)
    assert ret["result"] is False and ret["changes"] == {}
    # nginx found the candidate through the absolute include glob, at the live path
    assert f'unknown directive "bogus_directive" in {site}:3' in ret["comment"], ret["comment"]
    assert (rec / "outside").read_bytes() == (before if existing else b"MISSING\n")
    assert (site.read_bytes() if site.exists() else None) == before
    assert leftovers(nginx_tree / "conf.d") == []


@needs_ns
@needs_nginx
def test_real_nginx_accepts(nginx_tree, rec, test_mode):
    site = nginx_tree / "conf.d" / "nginx_ha.conf"
    checker = snapshot_checker(rec, site, [NGINX, "-t", "-q", "-c", str(nginx_tree / "nginx.conf")])
    ret = state(site, GOOD_SITE, checker)
    assert (rec / "outside").read_text() == "MISSING\n"
    assert ret["result"] is (None if test_mode else True), ret["comment"]
    assert site.exists() is not test_mode


@needs_ns
@needs_nginx
def test_real_nginx_sees_a_conflict_with_the_rest_of_the_tree(nginx_tree, rec, test_mode):
    """Validated against the whole tree: a duplicate of another file's server is refused."""
    (nginx_tree / "conf.d" / "other.conf").write_text("upstream dup { server 127.0.0.1:1; }\n")
    site = nginx_tree / "conf.d" / "nginx_ha.conf"
    ret = state(site, "upstream dup { server 127.0.0.1:2; }\n", [NGINX, "-t", "-q", "-c", str(nginx_tree / "nginx.conf")])
    assert ret["result"] is False and 'duplicate upstream "dup"' in ret["comment"], ret["comment"]
    assert not site.exists()


KEEPALIVED_OK = "global_defs {\n    router_id nginx_ha_test\n}\ninclude {extra}\n"


@needs_ns
@needs_keepalived
@pytest.mark.parametrize("existing", [True, False], ids=["existing", "first-install"])
def test_real_keepalived(tmp_path, rec, test_mode, existing):
    conf_dir = tmp_path / "keepalived"
    conf_dir.mkdir()
    extra = conf_dir / "extra.conf"
    extra.write_text("vrrp_script chk { script /bin/true\n interval 2 }\n")
    conf = conf_dir / "keepalived.conf"
    ok = KEEPALIVED_OK.replace("{extra}", str(extra))
    if existing:
        conf.write_text(ok)
    checker = snapshot_checker(rec, conf, [KEEPALIVED, "-t", "-f", "{path}"])
    ret = state(conf, ok.replace("router_id", "no_such_keyword"), checker)
    assert ret["result"] is False and "Unknown keyword 'no_such_keyword'" in ret["comment"], ret["comment"]
    assert (rec / "outside").read_text() == (ok if existing else "MISSING\n")
    assert (conf.read_text() if conf.exists() else None) == (ok if existing else None)

    accepted = ok.replace("nginx_ha_test", "nginx_ha_new")
    ret = state(conf, accepted, checker)
    assert ret["result"] is (None if test_mode else True), ret["comment"]
    assert (conf.read_text() if conf.exists() else None) == (accepted if not test_mode else (ok if existing else None))


@needs_ns
@pytest.mark.parametrize("test_mode", [False], ids=["apply"])
def test_stale_work_directories_are_swept(etc, rec, test_mode):
    base = pathlib.Path(validated.tempfile.gettempdir())
    stale, fresh = base / "nginx_ha.validate.stale-test", base / "nginx_ha.validate.fresh-test"
    try:
        for path in (stale, fresh):
            path.mkdir(mode=0o700)
            (path / "candidate").write_text("x\n")
        two_days_ago = time.time() - 2 * 86400
        os.utime(stale, (two_days_ago, two_days_ago))
        assert state(etc / "site.conf", "good\n", recorder(rec))["result"] is True
        assert not stale.exists() and fresh.exists()
    finally:
        shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(fresh, ignore_errors=True)
