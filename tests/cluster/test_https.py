"""
HTTPS and several sites through the VIP, on the lab (issue 10): two nodes, each site with its own
certificate from a test CA made here with ``openssl``; a client that trusts only that CA.

* ``shop.lab.test``: certificate and key as PEM text in the pillar (nginx-ha writes them, 0600);
* ``blog.lab.test``: certificate and key already on the nodes (``/srv/tls``);

both ``listen 443 ssl http2`` with HTTP redirected to HTTPS.

Both names are served through the VIP before and after a failover (nginx stopped on the MASTER)
and after the repair, each answer naming the node that served it; bad TLS material (a key that is
not the certificate's, a missing file) changes nothing and is named by its pillar key; the key
text is nowhere but the 0600 file (state returns, node.json, the minion's debug log); and with
``manage_sites: false`` nginx-ha leaves the sites to another formula and keeps only its health
endpoint. The tests run in file order on one lab. Works on sysvinit and systemd hosts
(``NGINX_HA_LAB_INIT``). Run under the lab lock: ``flock /tmp/nginx-ha-lab.lock .venv/bin/pytest tests/cluster/test_https.py``.
"""

import json
import subprocess

import pytest

from lab import Lab
from tests.cluster.support import REPO, VIP, apply, base_pillar, changed, failed, pid_of, state_results, vip_holders, wait_for, write_pillar

pytestmark = pytest.mark.cluster

NODES = ("web-a", "web-b")
NAMES = {"shop": "shop.lab.test", "blog": "blog.lab.test"}
SITE = "/etc/nginx/conf.d/nginx_ha.conf"
TLS_DIR = "/etc/nginx/nginx_ha_tls"
SHOP_FILE = f"{TLS_DIR}/shop.nginx_ha.pem"
CA_ON_CLIENT = "/tmp/nginx-ha-test-ca.pem"
BLOG_CERT, BLOG_KEY = "/srv/tls/blog.crt", "/srv/tls/blog.key"


def openssl(directory, *argv):
    subprocess.run(["openssl", *argv], cwd=directory, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A test CA and one certificate per name (EC P-256, valid two days), made with openssl; {name: text}."""
    d = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(d, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=nginx-ha lab test CA")
    for site, host in NAMES.items():
        openssl(d, "req", *ec, "-keyout", f"{site}.key", "-out", f"{site}.csr", "-subj", f"/CN={host}")
        (d / f"{site}.ext").write_text(f"subjectAltName=DNS:{host}\n")
        openssl(d, "x509", "-req", "-in", f"{site}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                "-extfile", f"{site}.ext", "-out", f"{site}.crt")
    return {p.name: p.read_text() for p in d.iterdir() if p.suffix in (".pem", ".crt", ".key")}


def https_pillar(certs, **nginx):
    pillar = base_pillar()
    pillar["nginx"] = nginx or {
        "servers": {
            "shop": {
                "server_name": NAMES["shop"],
                "listen": ["443 ssl http2"],
                "redirect_to_https": True,
                "ssl_certificate": certs["shop.crt"],
                "ssl_certificate_key": certs["shop.key"],
            },
            "blog": {
                "server_name": NAMES["blog"],
                "listen": ["443 ssl http2"],
                "redirect_to_https": True,
                "ssl_certificate": BLOG_CERT,
                "ssl_certificate_key": BLOG_KEY,
            },
        }
    }
    return pillar


def key_lines(certs):
    """The base64 lines of both private keys: none may appear anywhere but the key files."""
    return [line for name in ("shop.key", "blog.key") for line in certs[name].splitlines() if "-----" not in line]


@pytest.fixture(scope="module")
def pillar_dir(tmp_path_factory, certs):
    path = tmp_path_factory.mktemp("pillar")
    path.chmod(0o755)
    write_pillar(path, https_pillar(certs))
    return path


@pytest.fixture(scope="module")
def lab(pillar_dir, certs):
    # the minions log at debug: the key must not reach the log even then
    with Lab(minions=NODES, pillar_dir=str(pillar_dir), file_roots=[str(REPO / "salt")], minion_extra={"log_level_logfile": "debug"}) as lab:
        lab.client.write_file(CA_ON_CLIENT, certs["ca.pem"])
        for node in NODES:
            host = lab.host(node)
            host.run(["mkdir", "-p", "-m", "0700", "/srv/tls"], check=True)
            host.write_file(BLOG_CERT, certs["blog.crt"])
            host.write_file(BLOG_KEY, certs["blog.key"], mode=0o600)
            lab.salt(node, "saltutil.sync_all", timeout=120)
        yield lab


def set_pillar(lab, pillar_dir, pillar):
    write_pillar(pillar_dir, pillar)
    for node in NODES:
        lab.salt(node, "saltutil.refresh_pillar", "wait=True", timeout=60)


def https(lab, name, path="/", extra=()):
    """GET https://<name><path> through the VIP from the client, trusting the test CA only: (exit code, body, http version)."""
    res = lab.client.run(
        ["curl", "-sS", "-m", "3", "--cacert", CA_ON_CLIENT, "--resolve", f"{name}:443:{VIP}", "-w", "\n%{http_version}", *extra, f"https://{name}{path}"],
        timeout=15,
    )
    body, _, version = res.stdout.rpartition("\n")
    return res.returncode, body, version


def served_over_https(lab, name):
    code, body, _ = https(lab, name)
    if code != 0:
        return None
    return next((node for node in NODES if f"served by {node}" in body), "?")


@pytest.fixture(scope="module")
def first_apply(lab):
    rets = {node: apply(lab, node) for node in NODES}
    for node, ret in rets.items():
        assert failed(ret) == {}, (node, failed(ret))
    wait_for(lambda: vip_holders(lab) == ["web-a"], 15, what="VIP on web-a")
    return rets


def test_both_names_are_served_over_https_through_the_vip_by_the_master(lab, first_apply):
    for name in NAMES.values():
        assert wait_for(lambda: served_over_https(lab, name) == "web-a", 10, what=f"https://{name}/ from web-a")
    # each name gets its own certificate (SNI): curl verified it against the name with the test CA only;
    # listen 443 ssl http2: HTTP/2 negotiated
    for name in NAMES.values():
        assert https(lab, name, extra=["--http2"])[::2] == (0, "2")
    # a name the certificate does not cover is refused by the client: verification is real
    res = lab.client.run(["curl", "-sS", "-m", "3", "--cacert", CA_ON_CLIENT, "--resolve", f"other.lab.test:443:{VIP}", "https://other.lab.test/"], timeout=15)
    assert res.returncode != 0


def test_http_is_redirected_to_https(lab, first_apply):
    for name in NAMES.values():
        res = lab.client.run(
            ["curl", "-sS", "-m", "3", "-o", "/dev/null", "-D", "-", "-w", "%{http_code} %{redirect_url}", "--resolve", f"{name}:80:{VIP}", f"http://{name}/a/b?c=1"],
            timeout=15,
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout.rstrip().endswith(f"301 https://{name}/a/b?c=1"), res.stdout
        assert "X-Served-By: web-a" in res.stdout


def test_the_pillar_key_is_written_root_only_and_nowhere_else(lab, first_apply, certs):
    for node in NODES:
        host = lab.host(node)
        modes = host.run(["stat", "-c", "%U %a", TLS_DIR, SHOP_FILE], check=True).stdout.split()
        assert modes == ["root", "700", "root", "600"], (node, modes)
        assert host.read_file(SHOP_FILE) == certs["shop.key"] + certs["shop.crt"]
        site = host.read_file(SITE)
        assert f'ssl_certificate_key "{SHOP_FILE}";' in site and f'ssl_certificate_key "{BLOG_KEY}";' in site
        results = state_results(first_apply[node])
        assert results["nginx_ha_nginx_tls_material"]["changes"][SHOP_FILE] == "created: root, 0600 (content not shown)"
        everywhere = [json.dumps(first_apply[node]), site, host.read_file("/etc/keepalived/nginx_ha/node.json"),
                      host.read_file("/var/log/salt/minion", missing_ok=True) or "", json.dumps(lab.salt(node, "nginx_ha.node_config"))]
        for text in everywhere:
            assert "-----BEGIN" not in text and not any(line in text for line in key_lines(certs)), node


def test_second_apply_changes_nothing(lab, first_apply):
    ret = apply(lab, "web-a")
    assert failed(ret) == {} and changed(ret) == {}, changed(ret)


def test_failover_and_back_keeps_both_names_on_https(lab, first_apply):
    web_a = lab.host("web-a")
    web_a.run(["nginx", "-s", "stop"], check=True)  # nginx stopped on the MASTER
    try:
        assert wait_for(lambda: vip_holders(lab) == ["web-b"], 15, what="VIP moved to web-b")
        for name in NAMES.values():
            assert wait_for(lambda: served_over_https(lab, name) == "web-b", 10, what=f"https://{name}/ from web-b")
        res = lab.client.run(["curl", "-sS", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", "--resolve", f"{NAMES['shop']}:80:{VIP}", f"http://{NAMES['shop']}/"], timeout=15)
        assert res.stdout == "301"
    finally:
        lab.salt("web-a", "service.start", "nginx", timeout=60)
    assert wait_for(lambda: vip_holders(lab) == ["web-a"], 20, what="VIP back on web-a")
    for name in NAMES.values():
        assert wait_for(lambda: served_over_https(lab, name) == "web-a", 10, what=f"https://{name}/ from web-a again")


def test_bad_tls_material_changes_nothing_and_names_the_keys(lab, pillar_dir, first_apply, certs):
    host = lab.host("web-a")
    stat = ["stat", "-c", "%n %Y %s", SITE, SHOP_FILE]
    before, nginx_pid = host.run(stat, check=True).stdout, pid_of(host, "/run/nginx.pid")
    pillar = https_pillar(certs)
    pillar["nginx"]["servers"]["shop"]["ssl_certificate_key"] = certs["blog.key"]  # not the certificate's key
    pillar["nginx"]["servers"]["blog"]["ssl_certificate"] = "/srv/tls/renewed.crt"  # not on the node
    set_pillar(lab, pillar_dir, pillar)
    try:
        ret = apply(lab, "web-a")
    finally:
        set_pillar(lab, pillar_dir, https_pillar(certs))
    errors = failed(ret)
    comment = errors["nginx_ha_nginx_tls_material"]
    assert comment.startswith("TLS material refused; nothing was written")
    assert "nginx_ha:nginx:servers:shop:ssl_certificate_key: is not the key of nginx_ha:nginx:servers:shop:ssl_certificate" in comment
    assert "nginx_ha:nginx:servers:blog:ssl_certificate: /srv/tls/renewed.crt does not exist on this node" in comment
    assert "nginx_ha_nginx_site_config_validated" in errors  # its requisite failed: never checked, never written
    assert "-----BEGIN" not in json.dumps(ret) and not any(line in json.dumps(ret) for line in key_lines(certs))
    assert host.run(stat, check=True).stdout == before
    assert pid_of(host, "/run/nginx.pid") == nginx_pid
    assert served_over_https(lab, NAMES["shop"]) == "web-a"


def test_manage_sites_false_leaves_the_sites_to_another_formula(lab, pillar_dir, first_apply):
    """nginx-ha keeps keepalived, its health endpoint and the checks; the sites (and the default site) are the other formula's."""
    foreign = "server {{\n    listen 80 default_server;\n    location / {{ return 200 \"other formula on {node}\\n\"; }}\n}}\n"
    for node in NODES:
        lab.host(node).write_file("/etc/nginx/sites-enabled/default", foreign.format(node=node))
    set_pillar(lab, pillar_dir, {**base_pillar(), "nginx": {"manage_sites": False}})
    for node in NODES:
        ret = apply(lab, node)
        assert failed(ret) == {}, (node, failed(ret))
        results = state_results(ret)
        assert "nginx_ha_nginx_default_site_disabled" not in results and "nginx_ha_nginx_index_page_managed" not in results
        assert results["nginx_ha_nginx_tls_unused_removed"]["changes"] == {"removed": [SHOP_FILE]}
        host = lab.host(node)
        site = host.read_file(SITE)
        assert site.count("server {") == 1 and "server_name" not in site and "ssl" not in site and "/nginx_ha/health" in site
        assert host.read_file("/etc/nginx/sites-enabled/default", missing_ok=True) is not None
        assert lab.salt(node, "nginx_ha.health")["healthy"] is True
    assert vip_holders(lab) == ["web-a"]
    res = lab.client.run(["curl", "-sS", "-m", "3", f"http://{VIP}/"], timeout=15)
    assert res.stdout == "other formula on web-a\n", res.stdout + res.stderr
