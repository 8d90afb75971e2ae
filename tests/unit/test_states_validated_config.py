"""
nginx_ha.validated_config with loader mocks: in both test modes, for a new file, an unchanged
file, an accepted change and a refused change. The checker is a real process (sh), so what is on
disk while it runs is what a real `nginx -t` would see.
"""

import os
import subprocess

import pytest

from tests.support import formula

validated = formula.load_module("_states", "nginx_ha")

# Refuses any file containing BAD; records what it saw so tests can prove the new file was in place.
CHECKER = ["sh", "-c", 'cp "$1" "$1.seen"; ! grep -q BAD "$1"', "checker", "{path}"]


def run_all(cmd, python_shell=False, **_):
    assert python_shell is False and isinstance(cmd, list)
    res = subprocess.run(cmd, capture_output=True, text=True)
    return {"retcode": res.returncode, "stdout": res.stdout, "stderr": res.stderr}


@pytest.fixture(params=[False, True], ids=["apply", "test=True"])
def test_mode(request):
    return request.param


@pytest.fixture
def configure_loader_modules(test_mode):
    return {
        validated: {
            "__salt__": {"cmd.run_all": run_all, "file.apply_template_on_contents": lambda *a, **k: a[0], "cp.get_file_str": lambda *a, **k: None},
            "__opts__": {"test": test_mode},
            "__env__": "base",
        }
    }


def state(path, contents, **kw):
    return validated.validated_config(str(path), CHECKER, contents=contents, **kw)


def test_new_file(tmp_path, test_mode):
    path = tmp_path / "site.conf"
    ret = state(path, "good\n")
    if test_mode:
        assert ret["result"] is None and "would be updated" in ret["comment"]
        assert ret["changes"]["new"].endswith("would be created") and "+good" in ret["changes"]["diff"]
        assert not path.exists()
    else:
        assert ret["result"] is True and "+good" in ret["changes"]["diff"]
        assert path.read_text() == "good\n" and (tmp_path / "site.conf.seen").read_text() == "good\n"
        assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_unchanged_file_reports_no_changes(tmp_path, test_mode):
    path = tmp_path / "site.conf"
    path.write_text("good\n")
    path.chmod(0o644)
    ret = state(path, "good")
    assert ret["result"] is True and ret["changes"] == {} and "desired state" in ret["comment"]


def test_accepted_change(tmp_path, test_mode):
    path = tmp_path / "site.conf"
    path.write_text("old\n")
    path.chmod(0o644)
    ret = state(path, "new\n")
    assert "-old" in ret["changes"]["diff"] and "+new" in ret["changes"]["diff"]
    if test_mode:
        assert ret["result"] is None and path.read_text() == "old\n"
    else:
        assert ret["result"] is True and path.read_text() == "new\n"


def test_refused_change_restores_previous_file(tmp_path, test_mode):
    path = tmp_path / "site.conf"
    path.write_text("old\n")
    path.chmod(0o640)
    before = os.stat(path)
    ret = state(path, "BAD\n", mode="0640")
    if test_mode:
        assert ret["result"] is None
        assert not (tmp_path / "site.conf.seen").exists()
    else:
        assert ret["result"] is False and ret["changes"] == {}
        assert "refused" in ret["comment"] and "previous file is back" in ret["comment"]
        assert (tmp_path / "site.conf.seen").read_text() == "BAD\n"  # the checker saw the candidate in place
    assert path.read_text() == "old\n"
    assert os.stat(path).st_mode == before.st_mode


def test_refused_new_file_is_removed(tmp_path, test_mode):
    path = tmp_path / "site.conf"
    ret = state(path, "BAD\n")
    assert ret["result"] is (None if test_mode else False)
    assert not path.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".nginx_ha.")] == []


def test_mode_drift_is_a_change(tmp_path, test_mode):
    path = tmp_path / "site.conf"
    path.write_text("good\n")
    path.chmod(0o666)
    ret = state(path, "good\n")
    assert ret["changes"] == {"mode": "0666 -> 0644, root:root"}
    assert oct(path.stat().st_mode & 0o777) == ("0o666" if test_mode else "0o644")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "relative.conf"}, "not an absolute path"),
        ({"checker": "nginx -t"}, "is not a non-empty list"),
        ({"contents": None}, "give exactly one of source or contents"),
    ],
)
def test_bad_arguments(tmp_path, test_mode, kwargs, message):
    args = {"name": str(tmp_path / "x.conf"), "checker": CHECKER, "contents": "x"}
    args.update(kwargs)
    ret = validated.validated_config(**args)
    assert ret["result"] is False and message in ret["comment"]
    assert not (tmp_path / "x.conf").exists()


def test_missing_directory_without_makedirs(tmp_path, test_mode):
    path = tmp_path / "sub" / "x.conf"
    ret = state(path, "good\n")
    if test_mode:
        assert ret["result"] is None
    else:
        assert ret["result"] is False and "does not exist" in ret["comment"]
        ret = state(path, "good\n", makedirs=True)
        assert ret["result"] is True and path.read_text() == "good\n"
