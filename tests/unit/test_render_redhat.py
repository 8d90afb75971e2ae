"""
The formula on the RedHat family (issue 11): this node's view computed by the real execution
module with a Rocky Linux 9 node's grains (os_family RedHat, so OS_FAMILY_LOOKUP["RedHat"]), the
files the formula writes rendered from it and put over EL9's stock /etc/nginx and
/etc/keepalived (no sites-enabled; the default server inside nginx.conf; ``user nginx;``), then:

* the real ``keepalived -t`` and ``nginx -t`` accept them (in the sandbox: tests/support/sandbox.py);
* nginx started for real on that tree (in the sandbox, private /run, logs and document root)
  answers port 80 with the formula's site, whatever the Host, and the health endpoint: EL9's own
  default server (``listen 80;`` without ``default_server``) does not take the VIP's requests;
* EL7/EL8's stock nginx.conf (``listen 80 default_server;``) makes ``nginx -t`` refuse the
  formula's site ("a duplicate default server"), so ``nginx_ha.validated_config`` never puts it
  live there: the operator removes that server block first (README).

What the SLS files render with RedHat grains through real Salt is covered by
tests/integration/test_sls_standalone.py.
"""

import copy
import fnmatch
import os
import pathlib

import pytest

from tests.support import formula, sandbox

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="keepalived -t / nginx -t in a private namespace need root")

mod = formula.load_module("_modules", "nginx_ha")

ROCKY_9 = {"os_family": "RedHat", "os": "Rocky", "osfinger": "Rocky Linux-9", "osmajorrelease": 9, "osrelease": "9.4"}

# EL9's /etc/nginx/nginx.conf as the nginx package of RHEL 9 / Rocky 9 / Alma 9 ships it.
EL9_NGINX_CONF = """\
# For more information on configuration, see:
#   * Official English Documentation: http://nginx.org/en/docs/
#   * Official Russian Documentation: http://nginx.org/ru/docs/

user nginx;
worker_processes auto;
error_log /var/log/nginx/error.log;
pid /run/nginx.pid;

# Load dynamic modules. See /usr/share/doc/nginx/README.dynamic.
include /usr/share/nginx/modules/*.conf;

events {
    worker_connections 1024;
}

http {
    log_format  main  '$remote_addr - $remote_user [$time_local] "$request" '
                      '$status $body_bytes_sent "$http_referer" '
                      '"$http_user_agent" "$http_x_forwarded_for"';

    access_log  /var/log/nginx/access.log  main;

    sendfile            on;
    tcp_nopush          on;
    keepalive_timeout   65;
    types_hash_max_size 4096;

    include             /etc/nginx/mime.types;
    default_type        application/octet-stream;

    # Load modular configuration files from the /etc/nginx/conf.d directory.
    # See http://nginx.org/en/docs/ngx_core_module.html#include
    # for more information.
    include /etc/nginx/conf.d/*.conf;

    server {
        listen       80;
        listen       [::]:80;
        server_name  _;
        root         /usr/share/nginx/html;

        # Load configuration files for the default server block.
        include /etc/nginx/default.d/*.conf;

        error_page 404 /404.html;
        location = /404.html {
        }

        error_page 500 502 503 504 /50x.html;
        location = /50x.html {
        }
    }
}
"""

# EL7/EL8's: the same default server, but it claims default_server on port 80.
EL8_NGINX_CONF = EL9_NGINX_CONF.replace("listen       80;", "listen       80 default_server;").replace(
    "listen       [::]:80;", "listen       [::]:80 default_server;"
)

# EL9's keepalived package ships the upstream sample as /etc/keepalived/keepalived.conf.
EL9_KEEPALIVED_CONF = """\
! Configuration File for keepalived

global_defs {
   notification_email {
     acassen@firewall.loc
   }
   notification_email_from Alexandre.Cassen@firewall.loc
   smtp_server 192.168.200.1
   smtp_connect_timeout 30
   router_id LVS_DEVEL
   vrrp_skip_check_adv_addr
   vrrp_strict
   vrrp_garp_interval 0
   vrrp_gna_interval 0
}

vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 100
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass 1111
    }
    virtual_ipaddress {
        192.168.200.16
    }
}
"""

PILLARS = {
    "example": formula.example_pillar(),
    "active-active": {
        "vrrp_instances": {
            "VI_a": {
                "interface": "eth0",
                "virtual_router_id": 51,
                "virtual_ipaddress": ["203.0.113.100/24"],
                "nodes": {"web-a": {"state": "MASTER", "priority": 100}, "web-b": {"state": "BACKUP", "priority": 90}},
            },
            "VI_b": {
                "interface": "eth0",
                "virtual_router_id": 52,
                "virtual_ipaddress": ["203.0.113.101/24"],
                "nodes": {"web-a": {"state": "BACKUP", "priority": 90}, "web-b": {"state": "MASTER", "priority": 100}},
            },
        },
        "events": {"notify_script": True},
        "nginx": {"listen": [80, "[::]:8080"], "upstreams": {"app": {"servers": ["192.0.2.21:8080"]}}, "locations": {"/api/": {"proxy_pass": "app"}}},
    },
}


def el_tree(nginx_conf=EL9_NGINX_CONF):
    """EL's /etc/nginx and /etc/keepalived as the packages install them (mime.types is upstream's, as on Debian)."""
    return {
        "/etc/nginx/nginx.conf": (nginx_conf, 0o644),
        "/etc/nginx/mime.types": (pathlib.Path("/etc/nginx/mime.types").read_text(), 0o644),
        "/etc/nginx/conf.d/.keep": ("", 0o644),
        "/etc/nginx/default.d/.keep": ("", 0o644),
        "/etc/keepalived/keepalived.conf": (EL9_KEEPALIVED_CONF, 0o644),
    }


@pytest.fixture
def pillar():
    return {"nginx_ha": copy.deepcopy(PILLARS["example"])}


@pytest.fixture
def configure_loader_modules(pillar, tmp_path):
    return {
        mod: {
            "__salt__": {"pillar.get": lambda key, default=None, unmask=False: pillar.get(key, default)},
            "__grains__": {"id": "web-a", **ROCKY_9},
            "__opts__": {"saltenv": None, "nginx_ha.node_file": str(tmp_path / "node.json")},
            "__context__": {},
        }
    }


def redhat_node(pillar, data, minion_id="web-a"):
    """The node view the states render from, computed as on a Rocky 9 minion (nginx_ha.node_config)."""
    pillar["nginx_ha"] = copy.deepcopy(data)
    mod.__grains__["id"] = minion_id
    return mod.node_config()


def check(files, command, interfaces=("eth0",), nginx_conf=EL9_NGINX_CONF, **kwargs):
    return sandbox.run_checked(files, command, interfaces, base=el_tree(nginx_conf), users=("nginx",), **kwargs)


def test_the_redhat_lookup_names_el9s_packages_paths_and_services(pillar):
    node = redhat_node(pillar, PILLARS["example"])
    lookup = node["lookup"]
    assert lookup["packages"] == ["keepalived", "nginx"]  # not curl: EL9's curl-minimal conflicts with it
    assert (lookup["keepalived"]["service"], lookup["nginx"]["service"]) == ("keepalived", "nginx")
    assert (lookup["keepalived"]["binary"], lookup["nginx"]["binary"]) == ("/usr/sbin/keepalived", "/usr/sbin/nginx")
    assert lookup["keepalived"]["config"] == "/etc/keepalived/keepalived.conf"
    assert (lookup["nginx"]["config"], lookup["nginx"]["pidfile"]) == ("/etc/nginx/nginx.conf", "/run/nginx.pid")
    assert "pid /run/nginx.pid;" in EL9_NGINX_CONF
    assert lookup["nginx"]["default_site"] is None  # EL has no sites-enabled: nothing to remove
    # the site lands where EL9's nginx.conf includes it, inside http {}
    http = EL9_NGINX_CONF[EL9_NGINX_CONF.index("http {"):]
    include = next(line.split()[1].rstrip(";") for line in http.splitlines() if line.strip().startswith("include /etc/nginx/conf.d/"))
    assert fnmatch.fnmatch(lookup["nginx"]["site_config"], include), (lookup["nginx"]["site_config"], include)
    files = formula.rendered_files(node)
    assert not any(path.startswith("/etc/nginx/sites-") for path in files)


@pytest.mark.parametrize("name", sorted(PILLARS))
@pytest.mark.parametrize("minion_id", ["web-a", "web-b"])
def test_keepalived_and_nginx_accept_the_files_rendered_for_el9(pillar, name, minion_id):
    node = redhat_node(pillar, PILLARS[name], minion_id)
    files = formula.rendered_files(node)
    command = ["sh", "-c", 'keepalived -t -f "$1" && nginx -t -c "$2"', "sh", node["lookup"]["keepalived"]["config"], node["lookup"]["nginx"]["config"]]
    res = check(files, command)
    assert res.returncode == 0, res.stdout + res.stderr
    # EL9's default server stays, without default_server: nginx only notes the shared name "_"
    assert "duplicate default server" not in res.stderr


def test_nginx_on_el9_serves_the_formula_site_on_port_80_and_the_health_endpoint(pillar):
    """nginx started for real on EL9's nginx.conf with the formula's files: who answers port 80."""
    node = redhat_node(pillar, PILLARS["example"])
    files = formula.rendered_files(node)
    files[node["nginx"]["root"] + "/index.html"] = (formula.render("index.html.jinja", node_id=node["id"]), 0o644)
    health = node["nginx"]["health"]
    script = f"""
nginx -c /etc/nginx/nginx.conf || exit 97
i=0; until curl -s -o /dev/null http://127.0.0.1/; do i=$((i+1)); [ $i -gt 50 ] && exit 98; sleep 0.1; done
echo "vip: $(curl -s -H 'Host: 203.0.113.100' http://127.0.0.1/ | tr -d '\\n')"
echo "other-host: $(curl -s -H 'Host: www.example.org' http://127.0.0.1/ | tr -d '\\n')"
echo "underscore: $(curl -s -H 'Host: _' http://127.0.0.1/ | tr -d '\\n')"
echo "health: $(curl -s {health['url']})"
echo "ipv6: $(curl -s -g 'http://[::1]/' | tr -d '\\n')"
"""
    res = check(files, ["sh", "-c", script], private=("/run", "/var/log/nginx", "/var/lib/nginx", "/var/www"), pid=True)
    assert res.returncode == 0, res.stdout + res.stderr
    out = dict(line.split(": ", 1) for line in res.stdout.splitlines() if ": " in line)
    for request in ("vip", "other-host", "underscore"):
        assert "served by web-a" in out[request], (request, res.stdout, res.stderr)
    assert out["health"] == "ok web-a", res.stdout
    # EL9's default server still has [::]:80 to itself (the site listens where nginx:listen says)
    assert "served by" not in out["ipv6"] and "<html" in out["ipv6"].lower(), res.stdout


def test_el7_el8_default_server_makes_nginx_refuse_the_site(pillar):
    """EL7/EL8's nginx.conf claims default_server on 80: nginx -t refuses, so the site never goes live."""
    node = redhat_node(pillar, PILLARS["example"])
    res = check(formula.rendered_files(node), ["nginx", "-t", "-q", "-c", "/etc/nginx/nginx.conf"], nginx_conf=EL8_NGINX_CONF)
    assert res.returncode != 0
    assert "a duplicate default server for 0.0.0.0:80" in res.stderr, res.stderr
    # with that server block removed (what the README tells the operator to do), it is accepted
    server = EL8_NGINX_CONF[EL8_NGINX_CONF.index("    server {"):EL8_NGINX_CONF.rindex("}")]
    res = check(formula.rendered_files(node), ["nginx", "-t", "-q", "-c", "/etc/nginx/nginx.conf"], nginx_conf=EL8_NGINX_CONF.replace(server, ""))
    assert res.returncode == 0, res.stderr
