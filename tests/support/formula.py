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
    import sys

    if str(REPO / "_utils") not in sys.path:  # as Salt's loader: the utils on sys.path while loading
        sys.path.append(str(REPO / "_utils"))
    path = REPO / kind / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"nginx_ha_test_{kind.strip('_')}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def defaults():
    return yaml.safe_load((FORMULA / "defaults.yaml").read_text())


def osfamilymap():
    """{os_family: its lookup}, as the schema gives it (OS_FAMILY_LOOKUP over LOOKUP's defaults)."""
    return {family: schema().lookup_for(family) for family in schema().OS_FAMILY_LOOKUP}


def example_pillar():
    return yaml.safe_load((REPO / "pillar" / "nginx_ha.sls").read_text())["nginx_ha"]


def merged(pillar, os_family="Debian"):
    """schema defaults <- the os_family's lookup <- pillar, as nginx_ha.merged_config does."""
    import salt.utils.dictupdate

    config = schema().defaults()
    config["lookup"] = salt.utils.dictupdate.update(config["lookup"], copy.deepcopy(osfamilymap()[os_family]), merge_lists=False)
    return salt.utils.dictupdate.update(config, copy.deepcopy(pillar), merge_lists=False)


_MODEL = None
_SCHEMA = None


def schema():
    global _SCHEMA
    if _SCHEMA is None:
        model()
        import nginx_ha_schema  # put on sys.path by the model, as Salt's loader does

        _SCHEMA = nginx_ha_schema
    return _SCHEMA


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


def health_endpoints(node, active=None):
    """The health endpoints the site serves (``active``: the node's current health settings)."""
    return model().health_endpoints(node, active)


def site(node, active=None):
    return render("nginx_site.conf.jinja", node=node, health_endpoints=health_endpoints(node, active))


def health_json(node):
    import json

    return json.dumps(node["health_settings"], sort_keys=True, indent=1) + "\n"


def tls_files(config):
    """The TLS files nginx_ha_certs writes for a merged ``config`` (the view holds no PEM text): {path: (text, 0o600)}."""
    import nginx_ha_tls  # put on sys.path by the model, as Salt's loader does

    typed = model().normalize(config)
    return {
        m["file"]: (nginx_ha_tls.file_text(typed["nginx"]["servers"][m["server"]]), 0o600)
        for m in nginx_ha_tls.plan(typed["nginx"], typed["lookup"]["nginx"]["tls_dir"])
        if m["file"]
    }


def rendered_files(node, active=None, tls=None):
    """
    Every file the formula writes for ``node`` under /etc/keepalived and /etc/nginx: {path: (text, mode) or None}.
    ``tls``: the TLS files (:func:`tls_files` of the merged config), which the node view cannot give.
    """
    lookup = node["lookup"]
    script_dir = lookup["keepalived"]["script_dir"]
    files = {
        lookup["keepalived"]["config"]: (render("keepalived.conf.jinja", node=node), 0o644),
        script_dir + "/health_watch.py": ((FILES / "health_watch.py").read_text(), 0o755),
        script_dir + "/health.json": (health_json(node), 0o644),
        lookup["nginx"]["site_config"]: (site(node, active), 0o644),
    }
    if node["events"]["notify_script"]:
        files[script_dir + "/notify_event.sh"] = (render("notify_event.sh.jinja", node=node), 0o755)
    if node["nginx"]["remove_default_site"] and lookup["nginx"]["default_site"]:
        files[lookup["nginx"]["default_site"]] = None
    files.update(tls or {})
    return files


def load_module_file(path):
    """Import a Python file (e.g. the formula's health_watch.py) under a unique name."""
    spec = importlib.util.spec_from_file_location(f"nginx_ha_test_file_{pathlib.Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shell_quote(value):
    """The notify script's quoting (its q() macro): one single-quoted shell word."""
    return "'" + str(value).replace("'", "'\\''") + "'"


def two_node_pillar(backup_priority=99):
    """The smallest cluster pillar the unit tests start from: VI_web, web-a MASTER (100), web-b BACKUP."""
    return {
        "vrrp_instances": {
            "VI_web": {
                "interface": "eth0",
                "virtual_router_id": 68,
                "virtual_ipaddress": ["203.0.113.100/24"],
                "nodes": {"web-a": {"state": "MASTER", "priority": 100}, "web-b": {"state": "BACKUP", "priority": backup_priority}},
            }
        }
    }


# The order of a state run that reloads (salt/nginx_ha/service.sls, watcher.sls), whichever SLS is
# applied: each step directly requires (require / watch / onchanges) the one before it.
RELOAD_CHAIN = (
    "nginx_ha_nginx_site_config_validated",
    "nginx_ha_nginx_running",
    "nginx_ha_keepalived_config_validated",
    "nginx_ha_health_path_switched",
    "nginx_ha_keepalived_running",
    "nginx_ha_nginx_site_config_final",
    "nginx_ha_nginx_reloaded_without_old_health_endpoint",
    "nginx_ha_node_config_recorded",
)


def sls_files():
    """Every SLS file of the formula (salt/nginx_ha/*.sls), sorted."""
    return sorted(FORMULA.glob("*.sls"))


def sls_name(path, root="nginx_ha"):
    """The name ``state.apply`` takes for an SLS file (init.sls is the formula itself)."""
    return root if path.stem == "init" else f"{root}.{path.stem}"
