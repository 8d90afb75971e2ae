"""
The Salt extension's packaging (pyproject.toml, saltext/nginx_ha): the wheel maps each of the
checkout's module folders, file for file, and nothing else; Salt finds them through the
"salt.loader" entry point.
"""

import configparser
import tarfile
import zipfile

import pytest

from saltext.nginx_ha import loader
from tests.support import package

KINDS = {"modules": "_modules", "states": "_states", "runners": "_runners", "engines": "_engines", "utils": "_utils"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The wheel's files ``{name: bytes}`` and the copy of the checkout it was built from."""
    tmp = tmp_path_factory.mktemp("wheel")
    path = package.build_wheel(tmp)
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}, tmp / "src"


@pytest.fixture(scope="module")
def wheel(built):
    return built[0]


def _sources(folder, root=package.REPO):
    return sorted(p.name for p in (root / folder).glob("*.py"))


def test_the_module_folders_have_no_init_file():
    # saltutil.sync_all would copy an __init__.py to every minion as a module named __init__
    for folder in package.FOLDERS:
        assert _sources(folder), folder
        assert not (package.REPO / folder / "__init__.py").exists(), folder


def test_wheel_maps_every_module_folder_file_for_file(built):
    wheel, src = built
    for folder in package.FOLDERS:
        inside = sorted(n.rsplit("/", 1)[1] for n in wheel if n.startswith(f"saltext/nginx_ha/{folder}/"))
        assert inside == _sources(folder, src), folder
        for name in inside:  # the checkout's bytes, not a copy kept elsewhere
            assert wheel[f"saltext/nginx_ha/{folder}/{name}"] == (src / folder / name).read_bytes()


def test_wheel_holds_nothing_else(built):
    wheel, src = built
    code = {n for n in wheel if not n.startswith("saltext_nginx_ha-")}
    expected = {"saltext/nginx_ha/__init__.py", "saltext/nginx_ha/loader.py"}
    expected |= {f"saltext/nginx_ha/{folder}/{name}" for folder in package.FOLDERS for name in _sources(folder, src)}
    assert code == expected
    assert not any(n.startswith("saltext/__init__") for n in wheel)  # saltext is a namespace shared with other extensions


def test_entry_point_is_salts_loader_hook(wheel):
    (name,) = [n for n in wheel if n.endswith(".dist-info/entry_points.txt")]
    points = configparser.ConfigParser()
    points.read_string(wheel[name].decode())
    assert dict(points["salt.loader"]) == {"nginx_ha": "saltext.nginx_ha.loader:get_dirs"}


def test_loader_names_one_directory_per_kind():
    # From the checkout (as with pip install -e) the folders are the checkout's own.
    assert loader.get_dirs() == {kind: [str(package.REPO / folder)] for kind, folder in KINDS.items()}


def test_sdist_carries_what_the_wheel_is_built_from(tmp_path):
    sdist = package.build_sdist(tmp_path)
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"pyproject.toml", "saltext/nginx_ha/__init__.py", "saltext/nginx_ha/loader.py"} <= names
    for folder in package.FOLDERS:
        assert {f"{folder}/{name}" for name in _sources(folder, tmp_path / "sdist-src")} <= names, folder
    assert not any(n.startswith(("tests/", "lab/", "bench/", "salt/")) for n in names)
