"""
Load the project's Salt extension files and the formula's data the way Salt would, for tests.

``load_module(name)`` imports ``_modules/<name>.py`` (or ``_states``/``_utils``) under a unique
module name so pytest-salt-factories' loader mocks can fill its dunders.
``render(template, node)`` renders a formula template with plain Jinja, as the states do.
``node_view(pillar, minion_id)`` merges defaults + Debian lookup + pillar and computes a node's view
through the real execution module code.
"""

import copy
import importlib.util
import pathlib

import jinja2
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
FORMULA = REPO / "salt" / "nginx_ha"
FILES = FORMULA / "files"


def load_module(kind, name):
    path = REPO / kind / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"nginx_ha_test_{kind.strip('_')}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def defaults():
    return yaml.safe_load((FORMULA / "defaults.yaml").read_text())


def osfamilymap():
    return yaml.safe_load((FORMULA / "osfamilymap.yaml").read_text())


def example_pillar():
    return yaml.safe_load((REPO / "pillar" / "nginx_ha.sls").read_text())["nginx_ha"]


def merged(pillar, os_family="Debian"):
    """defaults.yaml <- osfamilymap[os_family] (as lookup) <- pillar, as nginx_ha.merged_config does."""
    import salt.utils.dictupdate

    config = copy.deepcopy(defaults()["nginx_ha"])
    config["lookup"] = copy.deepcopy(osfamilymap()[os_family])
    return salt.utils.dictupdate.update(config, copy.deepcopy(pillar), merge_lists=False)


_MODEL = None


def model():
    global _MODEL
    if _MODEL is None:
        _MODEL = load_module("_utils", "nginx_ha_model")
    return _MODEL


def node_view(pillar, minion_id, os_family="Debian"):
    config = merged(pillar, os_family)
    view = model().node_view(config, minion_id)
    view["lookup"] = config["lookup"]
    return view


_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(str(FILES)), undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def render(template, **context):
    return _ENV.get_template(template).render(**context)
