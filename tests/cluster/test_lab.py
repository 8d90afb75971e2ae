"""
The namespace lab itself, against the real thing: isolation of hosts, what Salt needs to see in
them (runlevel, no systemctl), PID 1 reaping, the two networks, real Salt daemons, link cuts,
power cycles, and that nothing is left behind. The safety check refusing a root namespace that
routes a lab range is tested on sample ``ip -j`` output (never by adding routes to this machine).
"""

import contextlib
import datetime
import json
import os
import re
import subprocess
import time

import pytest

from lab import Lab, LabError, check_root_netns
from lab.cleanup import leftovers, processes
from lab.common import check_root_netns_live, netns_names, proc_starttime, root_links

MINIONS = ("web-a", "web-b")
TOP = "base:\n  '*':\n    - lab\n"
LAB_SLS = "lab_marker: from-the-lab-pillar\n"


# -- the root namespace safety check (pure function) ---------------------------------------

ROUTES_OK = [
    {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0", "flags": []},
    {"dst": "192.0.2.0/24", "dev": "eth0", "protocol": "kernel", "scope": "link", "prefsrc": "192.0.2.2"},
    {"type": "local", "dst": "127.0.0.0/8", "dev": "lo", "table": "local", "scope": "host"},
    {"type": "broadcast", "dst": "192.0.2.255", "dev": "eth0", "table": "local", "scope": "link"},
]
ADDRS_OK = [
    {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8},
                                   {"family": "inet6", "local": "::1", "prefixlen": 128}]},
    {"ifname": "eth0", "addr_info": [{"family": "inet", "local": "192.0.2.2", "prefixlen": 24},
                                     {"family": "inet6", "local": "fd00::2", "prefixlen": 64}]},
    {"ifname": "nhl1234m", "addr_info": []},
]


def test_root_check_accepts_this_kind_of_machine():
    check_root_netns(ROUTES_OK, ADDRS_OK)


@pytest.mark.parametrize(
    "route",
    [
        {"dst": "198.51.100.0/24", "dev": "br0"},  # the management network routed
        {"dst": "203.0.113.0/24", "dev": "eth0", "gateway": "192.0.2.1"},  # the service network routed
        {"dst": "203.0.113.100", "dev": "eth0"},  # one VIP routed
        {"dst": "198.0.0.0/8", "dev": "eth0"},  # a wider route covering a lab range
        {"dst": "default", "gateway": "198.51.100.1", "dev": "eth0"},  # default route via a lab gateway
    ],
)
def test_root_check_refuses_a_route_to_a_lab_range(route):
    with pytest.raises(LabError, match="refusing to start"):
        check_root_netns(ROUTES_OK + [route], ADDRS_OK)


def test_root_check_refuses_a_lab_address():
    addrs = ADDRS_OK + [{"ifname": "br0", "addr_info": [{"family": "inet", "local": "203.0.113.7", "prefixlen": 24}]}]
    with pytest.raises(LabError, match=r"203\.0\.113\.7/24 on br0"):
        check_root_netns(ROUTES_OK, addrs)


def test_root_check_ignores_the_default_route_and_ipv6():
    check_root_netns(ROUTES_OK + [{"dst": "0.0.0.0/0", "dev": "eth0"}, {"dst": "2001:db8::/32", "dev": "eth0"}],
                     ADDRS_OK)


# -- one lab for the rest of the module -----------------------------------------------------

@pytest.fixture(scope="module")
def lab():
    start = time.monotonic()
    with Lab(minions=MINIONS, pillar_dir={"top.sls": TOP, "lab.sls": LAB_SLS}) as lab:
        lab.start_seconds = time.monotonic() - start
        run_id = lab.run_id
        yield lab
    assert leftovers({run_id}) == []


def ns_inode(pid, kind):
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def test_hosts_have_their_names_addresses_and_no_default_route(lab):
    assert sorted(lab.hosts) == sorted(["master", *MINIONS, "client"])
    expect = {
        "master": {"eth1": "198.51.100.2"},
        "web-a": {"eth0": "203.0.113.11", "eth1": "198.51.100.11"},
        "web-b": {"eth0": "203.0.113.12", "eth1": "198.51.100.12"},
        "client": {"eth0": "203.0.113.50", "eth1": "198.51.100.50"},
    }
    for name, addrs in expect.items():
        host = lab.host(name)
        assert host.run("hostname", check=True).stdout.strip() == name
        links = json.loads(host.run("ip -j addr", check=True).stdout)
        got = {link["ifname"]: a["local"] for link in links for a in link["addr_info"]
               if a["family"] == "inet" and link["ifname"] != "lo"}
        assert got == addrs
        assert host.addr("mgmt") == addrs["eth1"]
        assert json.loads(host.run("ip -j route show default", check=True).stdout) == []
    assert lab.host("web-a").addr("svc") == "203.0.113.11"
    with pytest.raises(LabError):
        lab.master.addr("svc")


def test_root_side_links_have_no_address_and_no_route(lab):
    links = json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True).stdout)
    mine = [link for link in links if link["ifname"].startswith(lab.prefix)]
    assert len(mine) == 2 + sum(len(h.nets) for h in lab.hosts.values())  # bridges + one veth per link
    for link in mine:
        assert link["addr_info"] == [], link  # no IPv4, no IPv6 link-local
        assert "NOARP" in link["flags"]
    for family in ("-4", "-6"):
        routes = subprocess.run(["ip", family, "route", "show", "table", "all"], capture_output=True, text=True).stdout
        assert lab.prefix not in routes
    check_root_netns_live()  # the lab itself never makes the root namespace fail its own check


def test_hosts_have_their_own_namespaces(lab):
    hosts = list(lab.hosts.values())
    for kind in ("net", "mnt", "pid", "uts"):
        inodes = {ns_inode(h.pid, kind) for h in hosts}
        assert len(inodes) == len(hosts), kind
        assert ns_inode(os.getpid(), kind) not in inodes, kind


def test_etc_nginx_is_private_per_host(lab):
    web_a, web_b = lab.host("web-a"), lab.host("web-b")
    probe = "/etc/nginx/lab-isolation-probe"
    web_a.write_file(probe, "only on web-a\n")
    try:
        assert web_a.read_file(probe) == "only on web-a\n"
        assert web_b.read_file(probe, missing_ok=True) is None
        assert not os.path.exists(probe)  # the root file system's /etc/nginx
        # the rest of the copied tree is there
        assert "http {" in web_b.read_file("/etc/nginx/nginx.conf")
    finally:
        web_a.run(["rm", "-f", probe])


def test_run_tmp_and_salt_config_are_private(lab):
    assert "id" in lab.host("web-a").read_file("/etc/salt/minion")
    assert lab.master.read_file("/etc/salt/minion", missing_ok=True) is None
    assert "198.51.100.2" in lab.master.read_file("/etc/salt/master")
    lab.host("web-b").write_file("/tmp/probe", "x")
    assert lab.host("web-a").read_file("/tmp/probe", missing_ok=True) is None
    assert not os.path.exists("/run/salt-minion.pid")  # pidfiles live in each host's /run


def test_ps_shows_only_the_hosts_own_processes(lab):
    def commands(host):
        out = host.run(["ps", "-e", "-o", "pid=,args="], check=True).stdout
        return {int(line.split(None, 1)[0]): line.split(None, 1)[1] for line in out.splitlines()}

    web_a = commands(lab.host("web-a"))
    if lab.init == "systemd":  # (NGINX_HA_LAB_INIT=systemd) PID 1 is systemd, the syslog one of its units
        assert web_a[1].startswith("/lib/systemd/systemd ")
        assert any("lab.init --syslog" in args and "/web-a" in args for args in web_a.values())
    else:
        assert "lab.init" in web_a[1] and "web-a" in web_a[1]  # PID 1 is the lab's init
    assert any("salt-minion" in args for args in web_a.values())
    assert not any("salt-master" in args or "lab.init" in args and "web-a" not in args for args in web_a.values())
    master = commands(lab.master)
    assert any("salt-master" in args for args in master.values())
    assert not any("salt-minion" in args for args in master.values())
    assert len(web_a) < 40


def test_runlevel_says_2_and_systemctl_is_hidden(lab):
    if lab.init == "systemd":
        pytest.skip("sysvinit hosts only; systemd hosts: tests/cluster/test_systemd_hosts.py")
    host = lab.host("web-a")
    assert host.run("runlevel", check=True).stdout.strip() == "N 2"
    assert host.run("/usr/sbin/runlevel", check=True).stdout.strip() == "N 2"
    res = host.run("systemctl --version")
    assert res.returncode != 0
    assert host.run("test -x /usr/bin/systemctl").returncode != 0
    # so Salt picked the sysvinit service module (systemd_service would have service.offline)
    assert "not available" in str(lab.salt("web-a", "service.offline"))
    assert lab.salt("web-a", "cmd.run", "runlevel") == "N 2"
    # and the root file system still has the real ones
    assert os.path.islink("/usr/sbin/runlevel")


def test_each_host_has_its_own_syslog(lab):
    before = time.time()
    lab.host("web-a").run("logger -t labtest syslog-probe-from-web-a", check=True)
    assert wait(lambda: "labtest: syslog-probe-from-web-a" in (lab.host("web-a").read_file("/var/log/syslog")), 5)
    line = next(x for x in lab.host("web-a").read_file("/var/log/syslog").splitlines() if "syslog-probe-from-web-a" in x)
    stamp, _, message = line.partition(" ")  # reception time with microseconds (the benchmark times by it)
    assert message.startswith("labtest")
    assert before - 0.01 <= datetime.datetime.fromisoformat(stamp).timestamp() <= time.time(), line
    assert "syslog-probe" not in (lab.host("web-b").read_file("/var/log/syslog", missing_ok=True) or "")
    assert "syslog-probe-from-web-a" in lab.logs()


def test_pid1_reaps_orphans(lab):
    host = lab.host("web-b")
    # sh exits at once; its background sleep is re-parented to PID 1
    out = host.run("sh -c 'sleep 0.4 &'; sleep 0.1; ps -o ppid= -C sleep", check=True).stdout.split()
    assert out == ["1"]
    time.sleep(0.8)
    ps = host.run(["ps", "-e", "-o", "pid=,ppid=,stat=,comm="], check=True).stdout
    rows = [line.split() for line in ps.splitlines()]
    assert not [r for r in rows if r[3] == "sleep"], ps
    assert not [r for r in rows if r[1] == "1" and r[2].startswith("Z")], ps


def test_client_reaches_a_minion_over_the_service_network(lab):
    web_a = lab.host("web-a")
    web_a.run("mkdir -p /tmp/www && echo hello-from-web-a > /tmp/www/index.html", check=True)
    web_a.spawn("cd /tmp/www && exec python3 -m http.server 8080 --bind 203.0.113.11", "/tmp/http.log")
    try:
        def fetch(host, url):
            return host.run(f"curl -s -m 2 {url}", timeout=15)

        for _ in range(50):
            res = fetch(lab.client, "http://203.0.113.11:8080/")
            if res.returncode == 0:
                break
            time.sleep(0.1)
        assert res.stdout.strip() == "hello-from-web-a"
        assert fetch(lab.client, "http://web-a:8080/").stdout.strip() == "hello-from-web-a"  # lab /etc/hosts
        # the master host has no service interface and no route to it
        assert fetch(lab.master, "http://203.0.113.11:8080/").returncode != 0
    finally:
        web_a.run("pkill -f 'http.server 8080'")


def test_salt_master_and_minions_answer(lab):
    assert lab.salt("*", "test.ping") == {"web-a": True, "web-b": True}
    assert lab.salt("web-a", "test.ping") is True
    assert lab.salt("web-b", "grains.get", "ip4_interfaces:eth0") == ["203.0.113.12"]
    assert lab.salt("web-a", "pillar.get", "lab_marker", unmask=True) == "from-the-lab-pillar"
    retcode, up = lab.salt_run("manage.up")
    assert retcode == 0 and sorted(up) == list(MINIONS)
    with pytest.raises(LabError, match="no minion returned"):
        lab.salt("web-z", "test.ping", timeout=5)


def curl_ok(lab, url="http://203.0.113.12:8081/", timeout=1):
    return lab.client.run(f"curl -s -o /dev/null -m {timeout} {url}", timeout=15).returncode == 0


def test_set_link_cuts_and_restores_the_service_link(lab):
    web_b = lab.host("web-b")
    web_b.spawn("exec python3 -m http.server 8081 --bind 203.0.113.12 --directory /var/www", "/tmp/http2.log")
    try:
        assert wait(lambda: curl_ok(lab), 5)
        lab.set_link("web-b", "svc", up=False)
        assert "NO-CARRIER" in web_b.run("ip link show eth0", check=True).stdout
        assert not curl_ok(lab)
        lab.set_link("web-b", "svc", up=True)
        assert wait(lambda: curl_ok(lab), 10)
        # a dead switch port: carrier stays up, traffic does not pass
        lab.set_link("web-b", "svc", up=False, keep_carrier=True)
        assert "NO-CARRIER" not in web_b.run("ip link show eth0", check=True).stdout
        assert not curl_ok(lab)
        lab.set_link("web-b", "svc", up=True, keep_carrier=True)
        assert wait(lambda: curl_ok(lab), 10)
    finally:
        lab.set_link("web-b", "svc", up=True)
        web_b.run("pkill -f 'http.server 8081'")


def wait(predicate, timeout, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def test_power_off_and_on(lab):
    web_b = lab.host("web-b")
    web_b.write_file("/etc/nginx/survives-power-loss", "disk\n")
    web_b.write_file("/run/gone-after-power-loss", "ram\n")
    old_pidns = ns_inode(web_b.pid, "pid")
    old_init = (web_b.pid, proc_starttime(web_b.pid))
    veths = [web_b.veth(n) for n in web_b.nets]

    lab.power_off("web-b")
    assert not web_b.running
    with pytest.raises(LabError, match="powered off"):
        web_b.run("true")
    assert not [p for p in processes() if p["pidns"] and p["pidns"][1] == old_pidns]
    assert not set(veths) & set(root_links())
    assert web_b.netns not in netns_names()
    assert lab.host("web-a").run("true").returncode == 0  # the others carry on

    lab.power_on("web-b")
    assert web_b.running and (web_b.pid, proc_starttime(web_b.pid)) != old_init  # (ns inodes get reused)
    assert web_b.read_file("/etc/nginx/survives-power-loss") == "disk\n"
    assert web_b.read_file("/run/gone-after-power-loss", missing_ok=True) is None
    assert web_b.run("hostname", check=True).stdout.strip() == "web-b"
    assert lab.salt("web-b", "test.ping") is True
    assert lab.salt("*", "test.ping") == {"web-a": True, "web-b": True}


def test_minions_come_back_after_the_master_power_cycles(lab):
    lab.power_off("master")
    lab.power_on("master")  # same keys (its /etc/salt is on "disk"), new AES session key
    lab.wait_minions(timeout=40)
    assert lab.salt("*", "test.ping") == {"web-a": True, "web-b": True}


def test_restart_master_applies_new_master_settings(lab):
    old_pid = lab.master.run("cat /run/salt-master.pid", check=True).stdout.strip()
    lab.restart_master({"nginx_ha_lab_marker": "restarted"})
    assert lab.salt_run("config.get", "nginx_ha_lab_marker", timeout=60) == (0, "restarted")
    assert lab.salt("*", "test.ping") == {"web-a": True, "web-b": True}
    new_pid = lab.master.run("cat /run/salt-master.pid", check=True).stdout.strip()
    running = lab.master.run("pgrep -f 'bin/[s]alt-master'").stdout.split()
    assert new_pid != old_pid and new_pid in running and old_pid not in running


def test_start_time_is_reasonable(lab):
    assert lab.start_seconds < 45, lab.timings
    t0 = time.monotonic()
    for _ in range(10):
        lab.client.run("true", check=True)
    assert (time.monotonic() - t0) / 10 < 0.5


# -- teardown ---------------------------------------------------------------------------

def lab_processes(net_inodes):
    return [p for p in processes() if p["net"] and p["net"][1] in net_inodes]


def test_nothing_is_left_after_the_lab_exits():
    with Lab(minions=("web-x",), salt=False) as lab:
        run_id, prefix, run_dir = lab.run_id, lab.prefix, lab.run_dir
        net_inodes = {ns_inode(h.pid, "net") for h in lab.hosts.values()}
        lab.host("web-x").spawn("exec sleep 600")
        assert len(lab_processes(net_inodes)) >= 4
    assert leftovers({run_id}) == []
    assert not [n for n in netns_names() if n.startswith(prefix)]
    assert not [n for n in root_links() if n.startswith(prefix)]
    assert not lab_processes(net_inodes)
    assert not os.path.exists(run_dir)


def test_nothing_is_left_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with Lab(minions=("web-x",), salt=False, client=False) as lab:
            run_id = lab.run_id
            1 / 0
    assert leftovers({run_id}) == []


def test_pytest_tmp_path_works_as_pillar_dir(tmp_path):
    """Under /tmp, which every host has a private copy of: bound into the hosts at its own path,
    alone (the rest of the machine's /tmp stays invisible)."""
    (tmp_path / "pillar").mkdir()
    (tmp_path / "pillar" / "top.sls").write_text(TOP)
    (tmp_path / "pillar" / "lab.sls").write_text("lab_marker: from-tmp-path\n")
    (tmp_path / "sibling").write_text("not shared\n")
    pillar = str((tmp_path / "pillar").resolve())
    with Lab(minions=("web-x",), client=False, pillar_dir=pillar) as lab:
        assert lab.shares == [pillar]
        assert lab.salt("web-x", "pillar.get", "lab_marker", unmask=True) == "from-tmp-path"
        for host in (lab.master, lab.host("web-x")):
            assert host.read_file(f"{pillar}/lab.sls") == "lab_marker: from-tmp-path\n"
            assert host.read_file(str(tmp_path / "sibling"), missing_ok=True) is None
        run_id = lab.run_id
    assert leftovers({run_id}) == []


def test_a_refused_pillar_path_leaves_nothing():
    with pytest.raises(LabError, match="private copy"):
        Lab(minions=("web-x",), pillar_dir="/tmp").start()
    assert not [n for n in netns_names() if re.match(r"^nhl[0-9a-f]{4}-web-x$", n)]


# -- any checkout path ------------------------------------------------------------------------

CLONE_DRIVER = r"""
import json, sys
from lab.core import REPO as LAB_REPO
from lab import Lab

with Lab(minions=("web-a",), client=False) as lab:   # default pillar_dir/file_roots: the copy's own
    out = {
        "run_id": lab.run_id, "repo": LAB_REPO, "venv": lab.venv, "shares": lab.shares, "file_roots": lab.file_roots,
        "ping": lab.salt("web-a", "test.ping"),
        "files": lab.salt("web-a", "cp.list_master"),
        "marker": lab.salt("web-a", "cp.get_file_str", "salt://lab-clone-marker.txt"),
        "pillar": lab.salt("web-a", "pillar.get", "nginx_ha_lab_clone", unmask=True),
        "ps": lab.host("web-a").run("ps -eo args=", check=True).stdout,
    }
print("RESULT " + json.dumps(out))
"""


def copy_checkout(dst):
    """
    The working tree (as it is now, uncommitted changes included) copied to ``dst``, with a
    ``.venv`` of its own inside the copy, like scripts/setup.sh makes: a real venv (its own
    python, salt scripts whose #! names the copy's python) that borrows this venv's packages.
    """
    import shutil
    import sys
    import sysconfig

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    shutil.copytree(repo, dst, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", ".pytest_cache", "bench-results", "*.pyc"))
    venv = os.path.join(dst, ".venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=60)
    site = os.path.join(venv, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages")
    with open(os.path.join(site, "_lab_test_borrowed.pth"), "w") as fh:
        fh.write(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    for name in ("salt", "salt-master", "salt-minion", "salt-call", "salt-key", "salt-run"):
        with open(os.path.join(sys.prefix, "bin", name)) as fh:
            body = fh.read().split("\n", 1)[1]
        path = os.path.join(venv, "bin", name)
        with open(path, "w") as fh:
            fh.write(f"#!{venv}/bin/python\n{body}")
        os.chmod(path, 0o755)
    with open(os.path.join(dst, "salt", "lab-clone-marker.txt"), "w") as fh:
        fh.write(f"served from {dst}\n")
    with open(os.path.join(dst, "pillar", "nginx_ha.sls"), "a") as fh:
        fh.write(f"\nnginx_ha_lab_clone: {dst}\n")
    return venv


@pytest.mark.parametrize("parent", ["/tmp", "/srv"])
def test_a_checkout_under_a_private_path_works(parent):
    """A clone in /tmp/x/nginx-ha or /srv/x/nginx-ha (paths every host has a private copy of), its
    .venv inside it: the hosts still see both at their own path; the master serves the copy."""
    import shutil
    import tempfile

    made_parent = not os.path.exists(parent)
    os.makedirs(parent, exist_ok=True)
    top = tempfile.mkdtemp(prefix="nginx-ha-lab-clone-", dir=parent)
    try:
        os.chmod(top, 0o755)
        dst = os.path.join(top, "nginx-ha")
        venv = copy_checkout(dst)
        proc = subprocess.run([os.path.join(venv, "bin", "python"), "-c", CLONE_DRIVER], cwd=dst,
                              env={**os.environ, "PYTHONPATH": dst}, capture_output=True, text=True, timeout=120)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
        out = json.loads(lines[-1][len("RESULT "):])
        assert out["repo"] == dst and out["venv"] == venv
        assert out["shares"] == [dst]  # the venv, file_roots and pillar come along with the checkout
        assert out["file_roots"] == [os.path.join(dst, "salt")]
        assert out["ping"] is True
        assert "nginx_ha/init.sls" in out["files"] and "lab-clone-marker.txt" in out["files"]
        assert out["marker"] == f"served from {dst}\n"
        assert out["pillar"] == dst
        assert f"{venv}/bin/salt-minion" in out["ps"]  # the copy's venv, run inside the host
        assert f"{venv}/bin/python -m lab.init" in out["ps"]  # PID 1 (sysvinit) or the syslog unit (systemd)
        assert leftovers({out["run_id"]}) == []
    finally:
        shutil.rmtree(top, ignore_errors=True)
        if made_parent:
            with contextlib.suppress(OSError):
                os.rmdir(parent)
