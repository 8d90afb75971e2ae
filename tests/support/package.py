"""
Build the Salt extension (pyproject.toml) from a copy of this checkout, offline, and install it
into a fresh virtualenv that borrows Salt from the project's .venv.

The copy keeps the checkout clean (setuptools builds in the source tree: build/, *.egg-info) and
holds everything a release would see (tests/, lab/, ... included), so a test can check what the
wheel leaves out.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import types

REPO = pathlib.Path(__file__).resolve().parents[2]
FOLDERS = ("_modules", "_states", "_runners", "_engines", "_utils")  # mapped into the wheel as they are
_SKIP = {".git", ".venv", ".hypothesis", ".pytest_cache", "bench-results", "build", "__pycache__"}


def _env():
    return dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")


def _run(args, cwd=None):
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def copy_checkout(dest):
    """The checkout's files (no VCS, venv or caches) under ``dest``; returns ``dest``."""
    shutil.copytree(REPO, dest, symlinks=True, ignore=lambda d, names: [n for n in names if n in _SKIP or n.endswith(".egg-info")])
    return pathlib.Path(dest)


def build_wheel(tmp):
    """Build the wheel from a copy of the checkout (no network, no build isolation); its path."""
    tmp = pathlib.Path(tmp)
    src = copy_checkout(tmp / "src")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp / "dist", src])
    (wheel,) = (tmp / "dist").glob("*.whl")
    return wheel


def build_sdist(tmp):
    """Build the sdist from a copy of the checkout with setuptools' PEP 517 backend; its path."""
    tmp = pathlib.Path(tmp)
    src = copy_checkout(tmp / "sdist-src")
    out = tmp / "sdist"
    out.mkdir()
    name = _run([sys.executable, "-c", "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))", out], cwd=src).stdout.split()[-1]
    return out / name


def venv_with_package(tmp, wheel):
    """
    A new virtualenv in ``tmp/venv`` with the wheel installed. Salt and its dependencies come from
    this process's site-packages through a .pth file (appended to sys.path, after the venv's own
    site-packages), so nothing is downloaded. Returns ``SimpleNamespace(python, site_packages)``.
    """
    venv = pathlib.Path(tmp) / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    site = pathlib.Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    (site / "_nginx_ha_test_salt.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", wheel])
    return types.SimpleNamespace(python=python, site_packages=site)
