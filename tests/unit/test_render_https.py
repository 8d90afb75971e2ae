"""
HTTPS and several sites (nginx:servers), and nginx-ha beside another nginx formula
(nginx:manage_sites: false): the schema's types, the model's cross-key checks, the rendered server
blocks fed to the real ``nginx -t`` (sandbox) with generated certificates, the SLS the formula
renders (order, and no PEM text anywhere but the key file), and the single-site keys rendering
exactly what they rendered before ``servers`` existed.
"""

import atexit
import json
import shlex
import shutil
import tempfile

import jinja2
import pytest
import yaml
from hypothesis import strategies as st

from tests.support import formula, sandbox, tls

model = formula.model()
schema = formula.schema()

VALID = tls.pair("valid")
BLOG = tls.pair("valid", ("blog.example.test",))
SITE = "/etc/nginx/conf.d/nginx_ha.conf"
TLS_DIR = "/etc/nginx/nginx_ha_tls"


# --- the property test's generator (tests/unit/test_schema_properties.py takes MUTATIONS) ----------
# Servers with ssl listens, redirects, returns and TLS material: pillar PEM text (valid, with its
# chain, expired, not yet valid, a key not its own), files on the node (valid, missing) and
# garbage. Certificates are made once per session (tests/support/tls.py); the node files live in
# one temporary directory, removed at exit.

_NODE_DIR = tempfile.mkdtemp(prefix="nginx-ha-tls-")
atexit.register(shutil.rmtree, _NODE_DIR, True)
_MATERIAL = {
    **{f"pillar:{kind}": (lambda kind=kind: (tls.pair(kind)["certificate"], tls.pair(kind)["key"])) for kind in ("valid", "chain", "expired", "not_yet_valid", "other_key")},
    "files:valid": lambda: tls.write(_NODE_DIR, "valid"),
    "files:missing": lambda: (_NODE_DIR + "/missing.crt", _NODE_DIR + "/missing.key"),
    "mixed": lambda: (tls.pair("valid")["certificate"], tls.write(_NODE_DIR, "valid")[1]),
    "garbage": lambda: ("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", "/etc/nginx"),
    "none": lambda: (None, None),
}
_GOOD_SSL = [["443 ssl http2"], ["443 ssl http2", "[::1]:443 ssl"], ["127.0.0.2:8443 ssl"], ["8443 ssl default_server"]]
_GOOD_PLAIN = [[80], ["8080"], ["127.0.0.2:80"]]
_ODD = {  # each server takes up to two of these in place of its coherent values
    "listen": st.lists(st.one_of(st.sampled_from(["443 spdy", "443 ssl ssl", "8080 ssl", "0"]), st.integers(1025, 65535), st.text(max_size=6)), max_size=2),
    "server_name": st.one_of(st.text(max_size=8), st.sampled_from(["_", "*.example.test", "shop.example.test", "other.example.test"])),
    "return": st.sampled_from(["301 https://$host$request_uri", "404", "302 /x?$args", "301 x", '200 "ok"']),
    "root": st.sampled_from(["/srv/site", "/srv/a b", "relative"]),
    "locations": st.sampled_from([{"/": {"proxy_pass": "app"}}, {"/api/": {"proxy_pass": "app"}}, {"/x/": {"proxy_pass": "nope"}}]),
    "redirect_to_https": st.booleans(),
    "material": st.sampled_from(sorted(_MATERIAL)),
}


@st.composite
def _servers(draw):
    servers = []
    for name in draw(st.lists(st.sampled_from(["shop", "blog", "api.v2"]), min_size=1, max_size=3, unique=True)):
        secure = draw(st.booleans())
        server = {"server_name": f"{name}.example.test", "listen": draw(st.sampled_from(_GOOD_SSL if secure else _GOOD_PLAIN))}
        material = draw(st.sampled_from(["pillar:valid", "pillar:chain", "files:valid", "mixed"])) if secure else "none"
        if secure and draw(st.booleans()):
            server["redirect_to_https"] = True
        for key in draw(st.lists(st.sampled_from(sorted(_ODD)), max_size=2, unique=True)):
            value = draw(_ODD[key])
            if key == "material":
                material = value
            else:
                server[key] = value
        servers.append((name, server, material))
    return servers


def _add_servers(pillar, servers):
    nginx = pillar.setdefault("nginx", {})
    nginx.setdefault("upstreams", {}).update(app={"servers": ["127.0.0.1:9000"]})
    for name, server, material in servers:
        cert, key = _MATERIAL[material]()
        server = dict(server, **{k: v for k, v in (("ssl_certificate", cert), ("ssl_certificate_key", key)) if v is not None})
        nginx.setdefault("servers", {})[name] = server


MUTATIONS = {"servers": (_servers(), _add_servers)}


def https_pillar(**servers):
    pillar = formula.two_node_pillar()
    pillar["nginx"] = {
        "upstreams": {"app": {"servers": ["127.0.0.1:9000"]}},
        "servers": servers
        or {
            "shop": {
                "server_name": list(tls.NAMES),
                "listen": ["443 ssl http2", "[::]:443 ssl"],
                "redirect_to_https": True,
                "ssl_certificate": VALID["certificate"],
                "ssl_certificate_key": VALID["key"],
            },
            "blog": {
                "server_name": "blog.example.test",
                "listen": ["443 ssl http2"],
                "redirect_to_https": True,
                "ssl_certificate": BLOG["certificate"],
                "ssl_certificate_key": BLOG["key"],
                "locations": {"/api/": {"proxy_pass": "app"}},
            },
        },
    }
    return pillar


def nginx_t(pillar, extra=None):
    """The formula's files for web-a (TLS files included) through the real nginx -t: CompletedProcess."""
    config = formula.merged(pillar)
    node = formula.node_view(pillar, "web-a")
    files = formula.rendered_files(node, tls=formula.tls_files(config))
    files.update(extra or {})
    return sandbox.run_checked(files, ["nginx", "-t", "-q"]), node, files


def refused(pillar):
    with pytest.raises(model.ModelError) as exc:
        formula.node_view(pillar, "web-a")
    return exc.value.errors


def render_sls(name, node):
    """A formula SLS rendered with plain Jinja and the Salt filters it uses, then YAML (as Salt would)."""
    stand_in = jinja2.DictLoader({"nginx_ha/map.jinja": '{%- set nginx_ha = salt["nginx_ha.node_config"]() %}'})
    env = jinja2.Environment(loader=jinja2.ChoiceLoader([stand_in, jinja2.FileSystemLoader(str(formula.FORMULA.parent))]), extensions=["jinja2.ext.do"])
    env.filters["json"] = json.dumps
    env.filters["yaml_dquote"] = json.dumps
    env.filters["quote"] = shlex.quote
    salt = {"nginx_ha.node_config": lambda **kw: node, "config.get": lambda key, default=None: default}
    text = env.get_template(f"nginx_ha/{name}.sls").render(tpldir="nginx_ha", salt=salt)
    return text, yaml.safe_load(text)


def sls_node(pillar):
    node = formula.node_view(pillar, "web-a")
    node["health_endpoints"] = {"transitional": formula.health_endpoints(node), "final": formula.health_endpoints(node)}
    node["node_file"] = "/etc/keepalived/nginx_ha/node.json"
    return node


def requisites(body, kind):
    return [ref for arg in next(iter(body.values())) if isinstance(arg, dict) and kind in arg for ref in arg[kind]]


# --- schema ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, normalized",
    [(443, "443"), ("443 http2 ssl", "443 ssl http2"), ("0.0.0.0:443 ssl default_server", "0.0.0.0:443 default_server ssl"), ("[::]:443 ssl", "[::]:443 ssl"), ("*:80", "*:80")],
)
def test_a_listen_takes_nginx_flags_in_any_order(value, normalized):
    assert schema.ServerListen().check(value) == normalized


@pytest.mark.parametrize("value", ["443 ssl ssl", "443 spdy", "443;", "ssl 443", "", True, "70000 ssl", "443 ssl\n; evil"])
def test_a_listen_refuses_what_is_not_nginx_listen(value):
    with pytest.raises(schema.Invalid):
        schema.ServerListen().check(value)


def test_listen_addresses_are_compared_as_nginx_binds_them():
    assert [schema.listen_address(x) for x in (80, "443 ssl", "0.0.0.0:443", "*:443", "[::]:443 ssl", "203.0.113.100:443")] == [
        "*:80", "*:443", "*:443", "*:443", "[::]:443", "203.0.113.100:443"
    ]


@pytest.mark.parametrize(
    "value, ok",
    [
        ("301 https://$host$request_uri", True), ("308 https://shop.example.test:8443$request_uri", True), ("302 /maintenance.html", True),
        ("301 $scheme://$host$uri$is_args$args", True), (404, True), ("444", True), ("301", False), ("200 hello", False),
        ("301 https://$host$evil", False), ("301 https://x/\"; evil", False), ("301 https://${host}", False), ("301 ftp://x", False), ("600", False),
    ],
)
def test_return_is_a_redirect_with_a_url_or_a_status(value, ok):
    if ok:
        assert schema.Return().check(value).split()[0] == str(value).split()[0]
    else:
        with pytest.raises(schema.Invalid):
            schema.Return().check(value)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("ssl_certificate_key", VALID["key"].replace("\n-----END", "!\n-----END"), "block 1 (PRIVATE KEY) is not valid base64"),
        ("ssl_certificate_key", VALID["key"][:90], "holds no complete PEM block"),
        ("ssl_certificate_key", VALID["certificate"], "is not one private key"),
        ("ssl_certificate_key", VALID["key"] + VALID["key"], "is not one private key"),
        ("ssl_certificate", VALID["key"] + VALID["certificate"], "holds a private key: put it under ssl_certificate_key"),
        ("ssl_certificate", VALID["certificate"].replace("CERTIFICATE-----\nMII", "CERTIFICATE-----\nProc-Type: 4\nMII", 1), "has PEM headers"),
        ("ssl_certificate", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CRL-----\n", "BEGIN CERTIFICATE ends with END CRL"),
        ("ssl_certificate", "-----BEGIN CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n", "block 1 (CERTIFICATE) has a BEGIN line without its END"),
        ("ssl_certificate", "-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n", "holds X509 CRL: only CERTIFICATE blocks"),
    ],
)
def test_malformed_pem_is_refused_naming_the_key_and_never_showing_it(field, value, message):
    server = {"server_name": "shop.example.test", "listen": ["443 ssl"], "ssl_certificate": VALID["certificate"], "ssl_certificate_key": VALID["key"]}
    server[field] = value
    errors = refused(https_pillar(shop=server))
    assert errors == [f"nginx_ha:nginx:servers:shop:{field}: (value not shown) " + errors[0].split("(value not shown) ", 1)[1]], errors
    assert message in errors[0]
    assert "MII" not in errors[0] and "-----" not in errors[0]


def test_an_encrypted_key_is_refused():
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(VALID["key"].encode(), None)
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")).decode()
    errors = refused(https_pillar(shop={"server_name": "a.test", "listen": ["443 ssl"], "ssl_certificate": VALID["certificate"], "ssl_certificate_key": encrypted}))
    assert errors == ["nginx_ha:nginx:servers:shop:ssl_certificate_key: (value not shown) is an encrypted private key: give it unencrypted (nginx-ha writes it root-only, mode 0600)"]


def test_a_private_key_is_never_shown_wherever_it_is_misplaced():
    pillar = https_pillar()
    pillar["nginx"]["servers"]["shop"]["server_name"] = VALID["key"]
    pillar["nginx"]["servers"]["oops"] = VALID["key"]
    pillar["nginx"]["root"] = VALID["key"]
    errors = refused(pillar)
    assert len(errors) >= 3 and all("(value not shown)" in e for e in errors), errors
    assert "MII" not in repr(errors)


def test_a_certificate_path_is_shown_a_key_path_is_not():
    errors = refused(https_pillar(shop={"server_name": "a.test", "listen": ["443 ssl"], "ssl_certificate": "certs/a.pem", "ssl_certificate_key": "keys/a.key"}))
    assert errors[0].startswith("nginx_ha:nginx:servers:shop:ssl_certificate: 'certs/a.pem' is not PEM text")
    assert errors[1].startswith("nginx_ha:nginx:servers:shop:ssl_certificate_key: (value not shown) is not PEM text")


# --- model: cross-key checks --------------------------------------------------------------------

CERT = {"ssl_certificate": "/etc/ssl/a.crt", "ssl_certificate_key": "/etc/ssl/a.key"}


@pytest.mark.parametrize(
    "servers, nginx, expected",
    [
        ({"a": {"server_name": "a.test", "listen": ["443 ssl"]}}, {}, "nginx_ha:nginx:servers:a:ssl_certificate: is required: the server listens with ssl ('443 ssl')"),
        ({"a": {"server_name": "a.test", "listen": ["443 ssl"], "ssl_certificate": "/etc/ssl/a.crt"}}, {}, "nginx_ha:nginx:servers:a:ssl_certificate_key: is required"),
        ({"a": dict(CERT, server_name="a.test", listen=[80])}, {}, "nginx_ha:nginx:servers:a:listen: has no ssl listen, so ssl_certificate would never be used"),
        ({"a": {"server_name": "a.test", "listen": [80], "ssl_certificate_key": "/k"}}, {}, "nginx_ha:nginx:servers:a:ssl_certificate: is missing (ssl_certificate_key is set)"),
        ({"a": {"server_name": "a.test", "redirect_to_https": True}}, {}, "nginx_ha:nginx:servers:a:redirect_to_https: needs an ssl listen"),
        ({"a": dict(CERT, server_name="a.test", listen=["443 ssl", 80], redirect_to_https=True)}, {}, "nginx_ha:nginx:servers:a:redirect_to_https: its listen '80' is already in the server's listen"),
        ({"a": {"server_name": "a.test", "listen": [80, "0.0.0.0:80"]}}, {}, "nginx_ha:nginx:servers:a:listen:1: '0.0.0.0:80' is a second listen on *:80"),
        ({"a": {"server_name": "x.test"}, "b": {"server_name": ["y.test", "x.test"]}}, {}, "nginx_ha:nginx:servers:b:server_name: x.test on *:80 is also a name of server a there"),
        ({"a": dict(CERT, server_name="a.test", listen=["8443 ssl"]), "b": {"server_name": "b.test", "listen": [8443]}}, {}, "nginx_ha:nginx:servers: *:8443 is an ssl listen of a but not of b; nginx has one socket there"),
        ({"a": dict(CERT, server_name="a.test", listen=["443 ssl http2"]), "b": dict(CERT, server_name="b.test", listen=["443 ssl"])}, {}, "nginx_ha:nginx:servers: *:443 is an http2 listen of a but not of b"),
        ({"a": {"server_name": "a.test", "listen": ["80 default_server"]}, "b": {"server_name": "b.test", "listen": ["*:80 default_server"]}}, {}, "nginx_ha:nginx:servers: *:80 has default_server in a, b"),
        ({"a": {"server_name": "a.test", "listen": ["127.0.0.1:8081"]}}, {}, "nginx_ha:nginx:servers:a:listen: '127.0.0.1:8081' is where the health endpoint listens"),
        ({"a": {"server_name": "a.test", "locations": {"/x/": {"proxy_pass": "nope"}}}}, {}, "nginx_ha:nginx:servers:a:locations:/x/:proxy_pass: 'nope' is not an upstream"),
        ({"a": {"server_name": "a.test", "return": 404, "locations": {"/x/": {"proxy_pass": "app"}}}}, {"upstreams": {"app": {"servers": ["127.0.0.1:1"]}}}, "nginx_ha:nginx:servers:a:locations: would never be used"),
        ({"a": {"server_name": "a.test"}}, {"listen": [8080]}, "nginx_ha:nginx:listen: belongs to the single site, which nginx:servers replaces"),
        ({"a": {"server_name": "a.test"}}, {"server_name": "x.test"}, "nginx_ha:nginx:server_name: belongs to the single site"),
        ({"a": {"listen": [80]}}, {}, "nginx_ha:nginx:servers:a:server_name: is required"),
        ({}, {"manage_sites": False, "server_name": "x.test"}, "nginx_ha:nginx:server_name: is set, but manage_sites: false writes no site"),
        ({"a": {"server_name": "a.test"}}, {"manage_sites": False}, "nginx_ha:nginx:servers: is set, but manage_sites: false"),
        ({}, {"manage_sites": False, "upstreams": {"app": {"servers": ["127.0.0.1:1"]}}}, "nginx_ha:nginx:upstreams: is set, but manage_sites: false"),
    ],
)
def test_cross_key_problems_are_refused_naming_the_key(servers, nginx, expected):
    pillar = formula.two_node_pillar()
    pillar["nginx"] = dict(nginx, **({"servers": servers} if servers else {}))
    errors = refused(pillar)
    assert any(e.startswith(expected) for e in errors), errors


# --- rendering, the real nginx -t ----------------------------------------------------------------


def test_single_site_keys_render_exactly_what_they_rendered_before_servers():
    """No servers: the one site of nginx:listen/server_name/root/locations, byte for byte as before."""
    pillar = formula.two_node_pillar()
    pillar["nginx"] = {
        "listen": [80, 8080], "server_name": ["www.example.test", "example.test"], "client_max_body_size": "10m",
        "upstreams": {"app": {"servers": ["192.0.2.21:8080"]}}, "locations": {"/api/": {"proxy_pass": "app"}},
    }
    node = formula.node_view(pillar, "web-a")
    assert [s["name"] for s in node["nginx"]["sites"]] == ["default"] and node["nginx"]["tls"] == []
    site = formula.site(node)
    assert site.startswith(
        "# Managed by Salt (nginx_ha formula) on web-a. Local edits are overwritten.\n\nupstream app {\n    server 192.0.2.21:8080;\n}\n\n"
        "server {\n    listen 80 default_server;\n    listen 8080;\n    server_name www.example.test example.test;\n"
        '    root "/var/www/nginx_ha";\n    index index.html;\n    client_max_body_size 10m;\n    add_header X-Served-By web-a always;\n\n'
        "    location / {\n        try_files $uri $uri/ =404;\n    }\n\n"
        '    location "/api/" {\n        proxy_pass http://app;\n'
    ), site
    assert "ssl" not in site and "return 301" not in site


def test_several_https_sites_with_redirects_pass_the_real_nginx_t():
    res, node, files = nginx_t(https_pillar())
    assert res.returncode == 0, res.stdout + res.stderr
    site = files[SITE][0]
    assert [s["name"] for s in node["nginx"]["sites"]] == ["blog", "blog (redirect_to_https)", "shop", "shop (redirect_to_https)"]
    assert "    listen 443 ssl http2;\n    listen [::]:443 ssl;\n    server_name shop.example.test www.shop.example.test;\n" in site
    assert f'    ssl_certificate "{TLS_DIR}/shop.nginx_ha.pem";\n    ssl_certificate_key "{TLS_DIR}/shop.nginx_ha.pem";\n' in site
    assert "    listen 80;\n    listen [::]:80;\n    server_name shop.example.test www.shop.example.test;\n    add_header X-Served-By web-a always;\n" in site
    assert site.count('    return 301 "https://$host$request_uri";\n') == 2
    assert 'location "/api/" {\n        proxy_pass http://app;' in site and site.count("try_files") == 2
    assert files[f"{TLS_DIR}/shop.nginx_ha.pem"] == (VALID["key"] + VALID["certificate"], 0o600)
    # the health endpoint and the page naming the node stay
    assert 'location = "/nginx_ha/health"' in site and node["nginx"]["index_page"] is True and node["nginx"]["root"] == "/var/www/nginx_ha"


def test_a_redirect_keeps_a_port_other_than_443_and_a_server_may_proxy_everything():
    cert, key = tls.pair("chain")["certificate"], tls.pair("chain")["key"]
    pillar = https_pillar(
        api={"server_name": "api.example.test", "listen": ["127.0.0.1:8443 ssl default_server"], "redirect_to_https": True,
             "ssl_certificate": cert, "ssl_certificate_key": key, "locations": {"/": {"proxy_pass": "app"}}, "client_max_body_size": "1m"},
        old={"server_name": "old.example.test", "return": "301 https://shop.example.test$request_uri"},
    )
    res, node, files = nginx_t(pillar)
    assert res.returncode == 0, res.stdout + res.stderr
    site = files[SITE][0]
    assert "    listen 127.0.0.1:80;\n    server_name api.example.test;\n" in site
    assert 'return 301 "https://$host:8443$request_uri";' in site
    assert 'return 301 "https://shop.example.test$request_uri";' in site
    api = site[site.index("listen 127.0.0.1:8443"):]
    api = api[: api.index("\n}\n")]
    assert "try_files" not in api and 'location "/" {\n        proxy_pass http://app;' in api and "client_max_body_size 1m;" in api


def test_certificate_and_key_from_files_on_the_node(tmp_path):
    """Paths on the node go into the site as they are; nothing is written for them."""
    cert, key = tls.write(str(tmp_path), "valid")
    pillar = https_pillar(shop={"server_name": "shop.example.test", "listen": ["443 ssl"], "ssl_certificate": cert, "ssl_certificate_key": key})
    res, node, files = nginx_t(pillar)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f'ssl_certificate "{cert}";\n    ssl_certificate_key "{key}";' in files[SITE][0]
    assert node["nginx"]["tls"] == [{"server": "shop", "pillar_key": "nginx_ha:nginx:servers:shop", "file": None, "from_pillar": [], "ssl_certificate": cert, "ssl_certificate_key": key}]


def test_nginx_t_refuses_a_mismatched_pair_that_our_check_refuses_first():
    """The sandbox's nginx -t is real: it refuses what nginx_ha_certs refuses before any write."""
    import nginx_ha_tls

    other = tls.pair("other_key")
    pillar = https_pillar(shop={"server_name": "shop.example.test", "listen": ["443 ssl"], "ssl_certificate": other["certificate"], "ssl_certificate_key": other["key"]})
    res, _, _ = nginx_t(pillar)
    assert res.returncode != 0 and "key values mismatch" in res.stderr
    typed = model.normalize(formula.merged(pillar))
    errors, _ = nginx_ha_tls.check_all(typed["nginx"], TLS_DIR)
    assert errors and errors[0].startswith("nginx_ha:nginx:servers:shop:ssl_certificate_key: is not the key of")


def test_no_pem_text_in_the_view_the_site_the_sls_or_node_json():
    """The key's text reaches only nginx_ha_certs (from the pillar) and the 0600 file."""
    pillar = https_pillar()
    node = sls_node(pillar)
    secrets = [line for line in (VALID["key"] + BLOG["key"] + VALID["certificate"]).splitlines() if "-----" not in line]
    view = json.dumps(node)
    assert "-----" not in view and not any(s in view for s in secrets)
    assert node["nginx"]["servers"]["shop"]["ssl_certificate_key"] == f"{TLS_DIR}/shop.nginx_ha.pem"
    for sls in ("nginx", "service"):
        text, _ = render_sls(sls, node)
        assert "-----" not in text and not any(s in text for s in secrets), sls
    assert "-----" not in formula.site(node)


def test_the_sls_checks_tls_before_anything_is_written_and_reloads_on_a_new_certificate():
    _, states = render_sls("nginx", sls_node(https_pillar()))
    tls_state = states["nginx_ha_nginx_tls_material"]
    assert list(tls_state) == ["nginx_ha_certs.present"]
    assert {"name": TLS_DIR} in tls_state["nginx_ha_certs.present"]
    assert {"service": "nginx_ha_nginx_running"} in requisites(tls_state, "watch_in")
    for sid in ("nginx_ha_nginx_default_site_disabled", "nginx_ha_nginx_index_page_managed", "nginx_ha_nginx_site_config_validated", "nginx_ha_nginx_site_config_final"):
        assert {"nginx_ha_certs": "nginx_ha_nginx_tls_material"} in requisites(states[sid], "require"), sid
    pruned = states["nginx_ha_nginx_tls_unused_removed"]["nginx_ha_certs.pruned"]
    assert {"keep": [f"{TLS_DIR}/blog.nginx_ha.pem", f"{TLS_DIR}/shop.nginx_ha.pem"]} in pruned
    assert {"require": [{"nginx_ha": "nginx_ha_nginx_site_config_final"}]} in pruned


# --- beside another nginx formula: manage_sites: false --------------------------------------------


FOREIGN_SITE = "server {\n    listen 80 default_server;\n    server_name _;\n    return 200 'the other formula';\n}\n"


def test_manage_sites_false_writes_only_the_health_endpoint_and_leaves_the_default_site():
    pillar = formula.two_node_pillar()
    pillar["nginx"] = {"manage_sites": False, "health": {"listen": "127.0.0.1:8082"}}
    extra = {"/etc/nginx/sites-enabled/default": (FOREIGN_SITE, 0o644)}  # what the other formula manages
    res, node, files = nginx_t(pillar, extra)
    assert res.returncode == 0, res.stdout + res.stderr
    assert node["nginx"]["sites"] == [] and node["nginx"]["tls"] == []
    assert node["nginx"]["index_page"] is False and node["nginx"]["remove_default_site"] is False
    site = files[SITE][0]
    assert site.count("server {") == 1 and "listen 127.0.0.1:8082;" in site and 'location = "/nginx_ha/health"' in site
    assert "server_name" not in site and "upstream" not in site and "80" not in site.replace("8082", "")
    assert files["/etc/nginx/sites-enabled/default"] == (FOREIGN_SITE, 0o644)  # the formula does not remove it
    _, states = render_sls("nginx", sls_node(pillar))
    assert "nginx_ha_nginx_default_site_disabled" not in states and "nginx_ha_nginx_index_page_managed" not in states
    assert "nginx_ha_nginx_site_config_validated" in states and "nginx_ha_nginx_tls_material" in states
    _, services = render_sls("service", sls_node(pillar))
    assert requisites(services["nginx_ha_nginx_running"], "watch") == [{"nginx_ha": "nginx_ha_nginx_site_config_validated"}]


def test_manage_sites_true_is_the_default_and_removes_the_default_site():
    res, node, files = nginx_t(formula.two_node_pillar())
    assert res.returncode == 0
    assert node["nginx"]["manage_sites"] is True and files["/etc/nginx/sites-enabled/default"] is None
    assert "listen 80 default_server;" in files[SITE][0]
