"""
Property-based tests of the pillar schema and the renderers (hypothesis).

For any generated pillar, either validation rejects it with errors that each name a pillar key
and the value, or every file the formula renders is accepted by the real ``keepalived -t`` and
``nginx -t`` (in the sandbox), the health settings are accepted by the watcher, and the one shell
script (the notify script) passes ``sh -n`` and hands every pillar string to its command as one
argument, byte for byte, whatever the string holds.
"""

import copy
import json
import os
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import formula, sandbox
from tests.unit import test_render_https as https
from tests.unit import test_render_keepalived_vocabulary as vocabulary

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="keepalived -t / nginx -t in a private namespace need root")

model = formula.model()
schema = formula.schema()
EXAMPLES = int(os.environ.get("NGINX_HA_HYPOTHESIS_EXAMPLES", "300"))

BASE = formula.two_node_pillar(backup_priority=90)  # low enough for the negative weights generated below

# Ordinary-but-unusual text: spaces, quotes, shell and config metacharacters, newlines, unicode.
NASTY = st.text(alphabet=st.sampled_from(list("aZ09 /._-?&=;:$`'\"\\{}#%@+,~*()[]!<>|\n\t\r") + ["é", "\x00"]), max_size=24)
# Values of the right type but unusual: every character the type allows, ports as strings, ...
PCHAR = st.text(alphabet=st.sampled_from(list("abcXYZ019-._~!$&'()*+,;=:@/")), max_size=16)
PORT = st.integers(1025, 65535)
GOOD_PORT = st.one_of(PORT, PORT.map(str))
GOOD_PATH = st.text(alphabet=st.sampled_from(list("abcXYZ019-_.,+@%:=~")), min_size=1, max_size=12).filter(lambda t: t not in (".", "..")).map(lambda t: "/srv/" + t)
GOOD_URLPATH = st.tuples(PCHAR, st.one_of(st.just(""), PCHAR.map(lambda q: "?" + q))).map(lambda t: "/h/" + t[0] + t[1])
GOOD_LISTEN = st.one_of(GOOD_PORT, PORT.map(lambda p: f"127.0.0.2:{p}"), PORT.map(lambda p: f"[::1]:{p}"), PORT.map(lambda p: f"*:{p}"))

PORTISH = st.one_of(GOOD_PORT, GOOD_PORT, st.integers(-5, 70000), NASTY, st.booleans(), st.floats(allow_nan=True))
PATHISH = st.one_of(GOOD_PATH, GOOD_PATH, st.just("/"), NASTY, NASTY.map(lambda s: "/" + s), st.sampled_from(["/var/www/a b", "/srv/site+1", "/x/../y", "/run/h\n"]))
URLPATH = st.one_of(
    GOOD_URLPATH,
    GOOD_URLPATH,
    NASTY.map(lambda s: "/" + s),
    st.sampled_from(["/health?a=1&b=2", "/h;x", "/h'q", "/h$x", "/h?x=$(id)", "/h%20", "/h#f", "/a b"]),
)
LISTEN = st.one_of(GOOD_LISTEN, GOOD_LISTEN, PORTISH, st.sampled_from(["127.0.0.1:8081", "[::1]:8081", "*:8082", "127.0.0.1:80801", "1.2.3:80", "[zz]:1", "127.0.0.1:8081\n"]))
NUMBERISH = st.one_of(st.integers(-300, 300), st.floats(-1, 100, allow_nan=False), st.sampled_from(["1", "0.5", "x", "", True]))

MUTATIONS = {
    "health_listen": (LISTEN, lambda p, v: p.setdefault("nginx", {}).setdefault("health", {}).update(listen=v)),
    "health_path": (URLPATH, lambda p, v: p.setdefault("nginx", {}).setdefault("health", {}).update(path=v)),
    "root": (PATHISH, lambda p, v: p.setdefault("nginx", {}).update(root=v)),
    "listen": (st.lists(LISTEN, max_size=3), lambda p, v: p.setdefault("nginx", {}).update(listen=v)),
    "server_name": (st.one_of(NASTY, st.lists(NASTY, max_size=3)), lambda p, v: p.setdefault("nginx", {}).update(server_name=v)),
    "weight": (st.one_of(st.integers(-253, -11), NUMBERISH), lambda p, v: p.setdefault("check", {}).update(weight=v)),
    "priority_b": (NUMBERISH, lambda p, v: p["vrrp_instances"]["VI_web"]["nodes"]["web-b"].update(priority=v)),
    "interval": (NUMBERISH, lambda p, v: p.setdefault("check", {}).update(interval=v)),
    "watcher_timeout": (NUMBERISH, lambda p, v: p.setdefault("check", {}).setdefault("watcher", {}).update(timeout=v)),
    "state_file": (st.one_of(GOOD_PATH.map(lambda p: "/run" + p), PATHISH), lambda p, v: p.setdefault("check", {}).setdefault("watcher", {}).update(state_file=v)),
    # a python that does not exist is refused by keepalived -t itself ("not found"): not generated here
    "python": (st.one_of(st.just("/usr/bin/python3"), st.just("/usr/bin/python3.11"), NASTY), lambda p, v: p.setdefault("check", {}).setdefault("watcher", {}).update(python=v)),
    "vip": (st.one_of(NASTY, st.sampled_from(["203.0.113.101/24 dev eth0 label eth0:1", "2001:db8::1/64", "203.0.113.9 no_track", "203.0.113.9 dev"])),
            lambda p, v: p["vrrp_instances"]["VI_web"].update(virtual_ipaddress=[v])),
    "option": (st.tuples(NASTY, st.one_of(NASTY, st.booleans(), st.integers(0, 99))),
               lambda p, v: p["vrrp_instances"]["VI_web"].update(options={v[0]: v[1]})),
    "upstream": (st.one_of(NASTY, st.sampled_from(["10.0.0.1:80 weight=5 backup", "localhost:8080 max_fails=2 fail_timeout=5s", "10.0.0.1:99999"])),
                 lambda p, v: p.setdefault("nginx", {}).update(upstreams={"app": {"servers": [v]}}, locations={"/api/": {"proxy_pass": "app"}})),
    "location": (st.one_of(PCHAR.map(lambda t: "/p/" + t), URLPATH), lambda p, v: p.setdefault("nginx", {}).update(upstreams={"app": {"servers": ["10.0.0.1:80"]}}, locations={v: {"proxy_pass": "app"}})),
    "instance_name": (NASTY, lambda p, v: p["vrrp_instances"].update({v: p["vrrp_instances"].pop("VI_web")})),
    "node_id": (NASTY, lambda p, v: p["vrrp_instances"]["VI_web"]["nodes"].update({v: {"state": "BACKUP", "priority": 50}})),
    "notify": (st.tuples(st.one_of(PCHAR, NASTY), st.one_of(GOOD_PATH, NASTY)), lambda p, v: p.update(events={"notify_script": True, "salt_call": "/opt/salt " + v[0], "salt_config_dir": "/etc/" + v[1]})),
    "restart_cmd": (st.one_of(NASTY, st.lists(NASTY, max_size=3)), lambda p, v: p.setdefault("events", {}).update(minion_restart_cmd=v)),
    "flag": (st.one_of(st.booleans(), NASTY, st.integers(0, 2)), lambda p, v: p.update(local_vip=v)),
    "firewall": (st.fixed_dictionaries({}, optional={"manage": st.one_of(st.booleans(), NASTY), "hooks": st.booleans(),
                                                     "backend": st.one_of(st.sampled_from(["auto", "nftables", "iptables", "firewalld"]), NASTY)}),
                 lambda p, v: p.update(firewall=v)),
    "unicast": (st.tuples(st.one_of(st.just("203.0.113.12"), st.just("2001:db8::12"), NASTY), st.booleans()),
                lambda p, v: (p["vrrp_instances"]["VI_web"].update(unicast=v[1]),
                              p.update(nodes={"web-a": {"unicast_src_ip": "203.0.113.11"}, "web-b": {"unicast_src_ip": v[0]}}))),
    # keepalived's vocabulary and IPv6 (issue 10): tests/unit/test_render_keepalived_vocabulary.py
    **vocabulary.MUTATIONS,
    # several servers, HTTPS, redirects, TLS material good and bad (issue 10): tests/unit/test_render_https.py
    **https.MUTATIONS,
}
FIREWALL_STATE = formula.load_module("_states", "nginx_ha_firewall")
import nginx_ha_tls as TLS  # noqa: E402  (on sys.path through the model, as Salt's loader puts it)


@st.composite
def pillars(draw):
    pillar = copy.deepcopy(BASE)
    chosen = draw(st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=1, max_size=4, unique=True))
    chosen.sort(key=lambda name: name == "instance_name")  # it renames VI_web: last
    for name in chosen:
        strategy, apply = MUTATIONS[name]
        apply(pillar, draw(strategy))
    return chosen, pillar


def check_all(node, tmp_path, tls=None):
    """Every rendered file through the real checkers; the health settings through the watcher."""
    files = formula.rendered_files(node, active={"listen": 8099, "location": "/old/health"}, tls=tls)
    command = ["sh", "-c", 'keepalived -t -f "$1" && nginx -t -q', "sh", node["lookup"]["keepalived"]["config"]]
    res = sandbox.run_checked(files, command, sorted({i["interface"] for i in node["instances"]} | set(node["interfaces"]) | {"eth0"}))
    if "host not found in upstream" in res.stderr:  # a host name the sandbox cannot resolve: nginx -t is right
        return
    assert res.returncode == 0, res.stdout + res.stderr + "\n" + "\n".join(t[0] for t in files.values() if t)
    settings_path = tmp_path / "health.json"
    settings_path.write_text(formula.health_json(node))
    os.chmod(settings_path, 0o644)
    watcher = formula.load_module_file(formula.FILES / "health_watch.py")
    assert watcher.load_settings(str(settings_path))["request"] == node["nginx"]["health"]["path"]
    if node["notify_hooks"]:  # the notify programs' settings, as notify_hooks.py reads them: the pillar's argv as given
        hooks_path = tmp_path / "notify_hooks.json"
        hooks_path.write_text(json.dumps(node["notify_hooks"]))
        hooks = formula.load_module_file(formula.FILES / "notify_hooks.py").load_settings(str(hooks_path))["instances"]
        for inst in node["instances"]:
            assert {kind: v[0]["argv"] for kind, v in hooks.get(inst["name"], {}).items()} == inst["hooks"]


def check_notify_script(node, tmp_path):
    """sh -n, then run it with a recorder in place of salt-call: each pillar string arrives as one argument."""
    events = node["events"]
    text = formula.render("notify_event.sh.jinja", node=node)
    script = tmp_path / "notify.sh"
    script.write_text(text)
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    recorder = tmp_path / "recorder"
    recorder.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done > "$OUT"\n')
    recorder.chmod(0o755)
    # the script names its salt-call; put the recorder there (a path we can create under tmp)
    salt_call = events["salt_call"]
    text = text.replace(formula.shell_quote(salt_call), formula.shell_quote(str(recorder)))
    script.write_text(text)
    out = tmp_path / "argv"
    subprocess.run(["sh", str(script), "INSTANCE", "VI_web", "MASTER", "100"], env={"OUT": str(out), "PATH": "/usr/bin:/bin"}, check=True, timeout=10)
    argv = out.read_bytes().split(b"\0")[:-1]
    assert argv[:2] == [b"-c", events["salt_config_dir"].encode()], argv


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=pillars())
def test_a_pillar_is_refused_with_key_and_value_or_renders_configs_the_daemons_accept(case, tmp_path):
    chosen, pillar = case
    config = formula.merged(pillar)
    try:
        node = model.node_view(config, "web-a")
    except model.ModelError as exc:
        assert exc.errors
        for error in exc.errors:
            assert error.startswith("nginx_ha:") and ": " in error and "\n" not in error.rstrip("\n"), error
        return
    except ValueError as exc:  # pragma: no cover - any other refusal must be a ModelError
        pytest.fail(f"{chosen}: refused without naming keys: {exc}")
    node["lookup"] = config["lookup"]
    # TLS material: nginx_ha_certs refuses it (naming keys, never quoting PEM) before anything is written
    typed = model.normalize(config)
    tls_errors, _ = TLS.check_all(typed["nginx"], typed["lookup"]["nginx"]["tls_dir"])
    if tls_errors:
        assert all(e.startswith("nginx_ha:nginx:servers:") and "-----" not in e for e in tls_errors), tls_errors
        return
    check_all(node, tmp_path, formula.tls_files(config))
    # the firewall state takes the node view's rules as they are (it refuses anything else)
    assert FIREWALL_STATE.normalize_rules(node["firewall"]["vrrp"]) == node["firewall"]["vrrp"]
    if node["events"]["notify_script"]:
        check_notify_script(node, tmp_path)


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda p: p.update(nginx={"health": {"path": "/health?a=1&b=2"}}), None),
        (lambda p: p.update(nginx={"health": {"listen": "8081"}}), None),
        (lambda p: p.update(nginx={"health": {"listen": "127.0.0.1:80801"}}), "nginx_ha:nginx:health:listen: '127.0.0.1:80801'"),
        (lambda p: p.update(nginx={"health": {"path": "/h > /etc/passwd"}}), "nginx_ha:nginx:health:path: '/h > /etc/passwd'"),
        (lambda p: p.update(check={"weight": 10}), "nginx_ha:check:weight: 10"),
        (lambda p: p.update(check={"weight": -5}), "nginx_ha:check:weight: -5 leaves a failing web-a"),
        (lambda p: p.update(check={"watcher": {"state_file": "/run/health\n"}}), "nginx_ha:check:watcher:state_file: '/run/health\\n'"),
        (lambda p: p["vrrp_instances"]["VI_web"]["nodes"].update({"web-c\n": {"state": "BACKUP", "priority": 1}}), "nginx_ha:vrrp_instances:VI_web:nodes:'web-c\\n': 'web-c\\n' is not a minion id"),
        (lambda p: p.update(nginx={"root": "/var/www/$host"}), "nginx_ha:nginx:root: '/var/www/$host'"),
        (lambda p: p.update(local_vip="yes"), "nginx_ha:local_vip: 'yes' is not true or false"),
        (lambda p: p.update(chekc={}), "nginx_ha:chekc: is not a known key"),
    ],
)
def test_examples_from_the_review(change, key, tmp_path):
    """Each example of issue 9's class, red before the schema: refused with key and value, or working."""
    pillar = copy.deepcopy(BASE)
    change(pillar)
    config = formula.merged(pillar)
    if key is None:
        node = model.node_view(config, "web-a")
        node["lookup"] = config["lookup"]
        check_all(node, tmp_path)
        return
    with pytest.raises(model.ModelError) as exc:
        model.node_view(config, "web-a")
    assert any(key in e for e in exc.value.errors), exc.value.errors


def test_a_port_written_as_a_string_is_an_integer():
    node = model.node_view(formula.merged(dict(copy.deepcopy(BASE), nginx={"health": {"listen": "8081"}, "listen": ["80", "[::]:8080"]})), "web-a")
    assert node["nginx"]["health"]["listen"] == 8081 and node["nginx"]["listen"] == [80, "[::]:8080"]
    assert node["health_settings"]["port"] == 8081 and node["health_settings"]["host"] == "127.0.0.1"


def test_schema_defaults_are_the_documented_defaults():
    """defaults.yaml, the example pillar and the README's key table come from the schema, up to date."""
    from scripts import schema_docs

    assert (formula.FORMULA / "defaults.yaml").read_text() == schema_docs.defaults_yaml()
    assert (formula.REPO / "pillar" / "nginx_ha.sls").read_text() == schema_docs.example_pillar()
    readme = (formula.REPO / "README.md").read_text()
    assert schema_docs.readme_table() in readme


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
def test_the_generator_reaches_the_daemons():
    """Enough generated pillars are valid for the checker runs above to matter (not only refusals)."""
    valid = 0
    for _ in range(200):
        _, pillar = pillars().example()
        try:
            model.node_view(formula.merged(pillar), "web-a")
            valid += 1
        except model.ModelError:
            pass
    assert valid >= 40, valid


def render_sls(name, node):
    """Render a formula SLS with plain Jinja and Salt's filters that it uses (json, quote), then YAML."""
    import json
    import shlex

    import jinja2
    import yaml

    # map.jinja's import_yaml is Salt's own tag: a stand-in that asks node_config as map.jinja does
    stand_in = jinja2.DictLoader({"nginx_ha/map.jinja": '{%- set nginx_ha = salt["nginx_ha.node_config"]() %}'})
    env = jinja2.Environment(loader=jinja2.ChoiceLoader([stand_in, jinja2.FileSystemLoader(str(formula.FORMULA.parent))]), extensions=["jinja2.ext.do"])
    env.filters["json"] = lambda v: json.dumps(v)
    env.filters["quote"] = shlex.quote
    salt = {"nginx_ha.node_config": lambda **kw: node, "config.get": lambda key, default=None: default}
    text = env.get_template(f"nginx_ha/{name}.sls").render(tpldir="nginx_ha", salt=salt)
    return yaml.safe_load(text)


@settings(max_examples=100, deadline=None)
@given(argv=st.lists(NASTY.filter(lambda a: "\x00" not in a and "\n" not in a and "\r" not in a), min_size=1, max_size=4))
def test_the_minion_restart_command_reaches_the_shell_quoted(argv):
    """events:minion_restart_cmd (cmd.run hands its name to a shell): each argument arrives as itself."""
    import shlex

    pillar = copy.deepcopy(BASE)
    pillar["events"] = {"minion_restart_cmd": argv}
    config = formula.merged(pillar)
    try:
        node = model.node_view(config, "web-a")
    except model.ModelError as exc:
        assert all(e.startswith("nginx_ha:events:minion_restart_cmd") for e in exc.errors), exc.errors
        return
    node["lookup"] = config["lookup"]
    states = render_sls("events", node)
    name = states["nginx_ha_events_minion_restart"]["cmd.run"][0]["name"]
    assert shlex.split(name) == argv
