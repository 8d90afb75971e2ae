"""
`make demo`: a two-node nginx-ha cluster built by Salt in the namespace lab, failed over and back.

Builds a Salt master host, two minion hosts (web-a, web-b) and a client host; applies the
nginx_ha formula through the master; shows who holds the VIP and the page the client gets; hangs
nginx on the MASTER (processes alive, no answers: the tutorial's `ps -C nginx` check would miss
it), shows the VIP and the page move to the BACKUP; repairs nginx and shows the VIP return.
Everything is torn down at the end, also on failure or Ctrl-C.
"""

import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

from lab import Lab, minion_restart_cmd

REPO = pathlib.Path(__file__).resolve().parents[1]
VIP = "203.0.113.100"
NODES = ("web-a", "web-b")
SITE = "shop.example.test"  # served over HTTPS through the VIP, certificate from a demo CA made at start
CA_ON_CLIENT = "/tmp/nginx-ha-demo-ca.pem"

PILLAR = {
    "nginx_ha": {
        "pkg_refresh": False,
        "events": {"minion_restart_cmd": minion_restart_cmd()},
        "vrrp_instances": {
            "VI_web": {
                "interface": "eth0",
                "virtual_router_id": 68,
                "advert_int": 1,
                "virtual_ipaddress": [f"{VIP}/24"],
                "nodes": {"web-a": {"state": "MASTER", "priority": 100}, "web-b": {"state": "BACKUP", "priority": 99}},
            }
        },
    }
}


def make_certificate():
    """A demo CA and a certificate for SITE (EC P-256, valid a day), with openssl: {file name: text}."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    with tempfile.TemporaryDirectory(prefix="nginx-ha-demo-tls-") as scratch:
        directory = pathlib.Path(scratch)

        def run(*argv):
            subprocess.run(["openssl", *argv], cwd=directory, check=True, capture_output=True, timeout=30)

        run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=nginx-ha demo CA")
        run("req", *ec, "-keyout", "site.key", "-out", "site.csr", "-subj", f"/CN={SITE}")
        (directory / "site.ext").write_text(f"subjectAltName=DNS:{SITE}\n")
        run("x509", "-req", "-in", "site.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
            "-extfile", "site.ext", "-out", "site.crt")
        return {name: (directory / name).read_text() for name in ("ca.pem", "site.crt", "site.key")}


def say(text):
    print(f"\n==> {text}", flush=True)


def detail(text):
    print(f"    {text}", flush=True)


def holders(lab):
    out = []
    for name in NODES:
        if f"inet {VIP}/" in lab.host(name).run("ip -4 addr show dev eth0").stdout:
            out.append(name)
    return out


def client_page(lab):
    res = lab.client.run(["curl", "-s", "-m", "1", "--cacert", CA_ON_CLIENT, "--resolve", f"{SITE}:443:{VIP}", f"https://{SITE}/"])
    for line in res.stdout.splitlines():
        if "<h1>" in line:
            return line.strip().replace("<h1>", "").replace("</h1>", "")
    return f"(no answer, curl exit {res.returncode})"


def wait_until(predicate, timeout):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.1)
    raise SystemExit(f"demo: gave up after {timeout}s")


def show(lab):
    detail(f"VIP {VIP} is held by: {', '.join(holders(lab)) or 'nobody'}")
    detail(f"client -> https://{SITE}/ (VIP {VIP}, certificate checked against the demo CA) : {client_page(lab)}")
    res = lab.client.run(["curl", "-s", "-m", "1", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "--resolve", f"{SITE}:80:{VIP}", f"http://{SITE}/"])
    detail(f"client -> http://{SITE}/ : {res.stdout}")


def main():
    pillar_dir = pathlib.Path(tempfile.mkdtemp(prefix="nginx-ha-demo-pillar-", dir="/var/tmp"))
    pillar_dir.chmod(0o755)
    tls = make_certificate()  # the pillar carries the site's certificate and key as PEM text
    pillar = dict(PILLAR, nginx_ha=dict(PILLAR["nginx_ha"], nginx={"servers": {"shop": {
        "server_name": SITE, "listen": ["443 ssl http2"], "redirect_to_https": True,
        "ssl_certificate": tls["site.crt"], "ssl_certificate_key": tls["site.key"]}}}))
    (pillar_dir / "top.sls").write_text("base:\n  'web-*':\n    - nginx_ha\n")
    (pillar_dir / "nginx_ha.sls").write_text(yaml.safe_dump(pillar))
    try:
        say("Building the lab: a Salt master host, minion hosts web-a and web-b, a client host")
        with Lab(minions=NODES, pillar_dir=str(pillar_dir), file_roots=[str(REPO / "salt")]) as lab:
            lab.client.write_file(CA_ON_CLIENT, tls["ca.pem"])  # the client trusts the demo CA only
            say("salt '*' saltutil.sync_all  (brings nginx_ha's module, state and utils to the minions)")
            for node in NODES:
                lab.salt(node, "saltutil.sync_all", timeout=120)
            say("salt 'web-*' state.apply nginx_ha  (through the master)")
            for node in NODES:
                start = time.monotonic()
                before = lab.minion_pid(node)
                ret = lab.salt(node, "state.apply", "nginx_ha", timeout=600)
                if any(v.get("__id__") == "nginx_ha_events_minion_restart" and v.get("changes") for v in ret.values()):
                    lab.wait_minion_restart(node, before)  # the run restarted the minion to load the events engine
                bad = [v.get("__id__", k) for k, v in ret.items() if v.get("result") is False]
                changed = [v.get("__id__", k) for k, v in ret.items() if v.get("changes")]
                detail(f"{node}: {len(ret)} states, {len(changed)} changed, {len(bad)} failed ({time.monotonic() - start:.1f}s)")
                if bad:
                    raise SystemExit(f"demo: state.apply failed on {node}: {bad}")
            wait_until(lambda: holders(lab) == ["web-a"], 15)
            show(lab)

            say("Again: salt 'web-*' state.apply nginx_ha  (idempotent: nothing to change)")
            for node in NODES:
                ret = lab.salt(node, "state.apply", "nginx_ha", timeout=600)
                detail(f"{node}: {sum(1 for v in ret.values() if v.get('changes'))} changed")

            say("Breaking nginx on the MASTER (web-a): SIGSTOP, so its processes exist but never answer")
            lab.host("web-a").run("pkill -STOP -x nginx", check=True)
            took = wait_until(lambda: holders(lab) == ["web-b"], 20)
            detail(f"keepalived's health check failed and the VIP moved after {took:.1f}s")
            wait_until(lambda: "web-b" in client_page(lab), 5)
            show(lab)

            say("Repairing nginx on web-a (SIGCONT)")
            lab.host("web-a").run("pkill -CONT -x nginx", check=True)
            took = wait_until(lambda: holders(lab) == ["web-a"], 20)
            detail(f"web-a is healthy again and took the VIP back after {took:.1f}s (preemption)")
            wait_until(lambda: "web-a" in client_page(lab), 5)
            show(lab)
            say("Tearing the lab down")
        say("Done: every namespace, link and process of the lab is gone")
    finally:
        shutil.rmtree(pillar_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
