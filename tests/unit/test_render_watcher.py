"""
The fast health path in the rendered configuration: keepalived tracks the watcher's file, the
check (the watcher program in check mode) keeps the watcher running, and nginx_ha:check:watcher
is validated.
"""

import copy

import pytest

from tests.support import formula, sandbox

PILLAR = formula.example_pillar()


def with_watcher(**watcher):
    pillar = copy.deepcopy(PILLAR)
    pillar.setdefault("check", {})["watcher"] = watcher
    return pillar


def errors_for(pillar):
    return formula.model().validate(formula.merged(pillar))


def test_defaults_render_the_track_file_and_start_the_watcher():
    node = formula.node_view(PILLAR, "web-a")
    conf = formula.render("keepalived.conf.jinja", node=node)
    assert 'track_file nginx_ha_health {\n    file "/run/nginx_ha_health"\n    weight 0\n    init_file 1\n}' in conf
    block = conf[conf.index("vrrp_instance VI_web"):]
    assert "track_file {\n        nginx_ha_maintenance\n        nginx_ha_health\n    }" in block
    assert "version 3" in block and "advert_int 0.05" in block
    assert "vrrp_garp_lower_prio_repeat 5" in conf and "vrrp_higher_prio_send_advert" in conf
    # keepalived's check runs the watcher program in check mode: no script text from the pillar,
    # the settings are data in health.json
    assert 'script "/usr/bin/python3 /etc/keepalived/nginx_ha/health_watch.py check /etc/keepalived/nginx_ha/health.json"' in conf
    settings = node["health_settings"]
    assert settings["enabled"] is True and settings["pidfile"] == "/run/nginx.pid" and settings["state_file"] == "/run/nginx_ha_health"
    assert (settings["timeout"], settings["fall"], settings["rise"], settings["interval"]) == (0.1, 2, 5, 0.05)


def test_weight_applies_to_the_health_file_too():
    pillar = copy.deepcopy(PILLAR)
    pillar["check"] = {"weight": -30}
    conf = formula.render("keepalived.conf.jinja", node=formula.node_view(pillar, "web-b"))
    assert 'file "/run/nginx_ha_health"\n    weight -30\n' in conf


def test_disabled_watcher_renders_neither():
    node = formula.node_view(with_watcher(enabled=False), "web-a")
    conf = formula.render("keepalived.conf.jinja", node=node)
    assert "nginx_ha_health" not in conf
    assert node["health_settings"]["enabled"] is False  # check mode starts no watcher


@pytest.mark.parametrize("enabled", [True, False])
def test_keepalived_accepts_it(enabled):
    node = formula.node_view(with_watcher(enabled=enabled), "web-a")
    lookup = node["lookup"]
    res = sandbox.run_checked(formula.rendered_files(node), ["keepalived", "-t", "-f", lookup["keepalived"]["config"]], ["eth0"])
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize(
    "watcher, expected",
    [
        ({"interval": 0}, "nginx_ha:check:watcher:interval: 0 is not a number within 0.01-60"),
        ({"timeout": "fast"}, "nginx_ha:check:watcher:timeout: 'fast' is not a number within 0.01-60"),
        ({"fall": 0}, "nginx_ha:check:watcher:fall: 0 is not an integer within 1-1000"),
        ({"rise": 1.5}, "nginx_ha:check:watcher:rise: 1.5 is not an integer within 1-1000"),
        ({"enabled": "yes"}, "nginx_ha:check:watcher:enabled: 'yes' is not true or false"),
        ({"state_file": "run/x; rm -rf /"}, "nginx_ha:check:watcher:state_file: 'run/x; rm -rf /' is not an absolute path"),
        ({"python": "/usr/bin/python3 -c x"}, "nginx_ha:check:watcher:python:"),
        ({"package": "python3 x"}, "nginx_ha:check:watcher:package:"),
    ],
)
def test_invalid_watcher_settings_name_key_and_value(watcher, expected):
    errors = errors_for(with_watcher(**watcher))
    assert any(expected in e for e in errors), errors


def test_fractional_watcher_settings_are_fine():
    assert errors_for(with_watcher(interval=0.05, retry_interval=0.01, timeout=0.2, fall=3, rise=10)) == []
