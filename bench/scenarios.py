"""
The fault scenarios: how each one is injected on the MASTER (web-a) and how web-a is repaired.

``inject(bench, profile)`` returns the wall-clock time of the fault (taken inside the host right
before the signal, or right before the power cut). ``repair(bench, profile)`` gives web-a back
what it lost; the VIP's return (failback) is measured from there.
"""

MASTER = "web-a"
ENSURE_NGINX = "pgrep -x nginx >/dev/null || /etc/init.d/nginx start >/dev/null"
ENSURE_KEEPALIVED = "pgrep -x keepalived >/dev/null || /etc/init.d/keepalived start >/dev/null"
NGINX_CONF = "/etc/nginx/nginx.conf"


def _stamped(bench, command):
    """Run ``command`` on web-a right after printing the wall clock; return that time."""
    res = bench.lab.host(MASTER).run(f"date +%s.%N; {command}", timeout=30)
    return float(res.stdout.split()[0])


class Scenario:
    name = ""
    title = ""
    profiles = ("baseline", "ours")
    max_trials = None  # at most this many trials whatever --trials says (None: --trials)
    window = 12.0  # seconds after the fault before a trial gives up on recovery (censored outage)
    failback_window = 30.0  # seconds after the repair before a trial gives up on the VIP's return

    def inject(self, bench, profile):
        raise NotImplementedError

    def repair(self, bench, profile):
        raise NotImplementedError

    def cleanup(self, bench, profile, completed):
        """After the trial (``completed``: the VIP came back in time); the next trial needs a clean start."""


class Crash(Scenario):
    name = "crash"
    title = "nginx crashes on the MASTER (SIGKILL of every nginx process)"

    def inject(self, bench, profile):
        return _stamped(bench, "pkill -KILL -x nginx")

    def repair(self, bench, profile):
        bench.lab.host(MASTER).run(f"{ENSURE_NGINX}; {ENSURE_KEEPALIVED}", check=True, timeout=60)


class Hang(Scenario):
    name = "hang"
    title = "nginx on the MASTER hangs (SIGSTOP: processes alive, no answers)"
    window = 8.0  # the baseline never fails over: do not wait longer for nothing

    def inject(self, bench, profile):
        return _stamped(bench, "pkill -STOP -x nginx")

    def repair(self, bench, profile):
        bench.lab.host(MASTER).run(f"pkill -CONT -x nginx; {ENSURE_KEEPALIVED}", check=True, timeout=60)


class Broken(Scenario):
    name = "broken"
    title = "nginx dies and cannot start again (its configuration is broken)"

    def inject(self, bench, profile):
        bench.lab.host(MASTER).run(f"cp -p {NGINX_CONF} {NGINX_CONF}.bench-orig && "
                                   f"echo 'broken_by_nginx_ha_bench;' >> {NGINX_CONF}", check=True)
        return _stamped(bench, "pkill -KILL -x nginx")

    def repair(self, bench, profile):
        bench.lab.host(MASTER).run(f"mv -f {NGINX_CONF}.bench-orig {NGINX_CONF}; {ENSURE_NGINX}; {ENSURE_KEEPALIVED}",
                                   check=True, timeout=60)


class HostDeath(Scenario):
    name = "host_death"
    title = "the MASTER host dies (power cut)"

    def inject(self, bench, profile):
        import time

        t = time.time()
        bench.lab.power_off(MASTER)
        return t

    def repair(self, bench, profile):
        # Boot; on a real machine nginx and keepalived are enabled boot services, the lab's init
        # starts no services: start them as the boot would.
        bench.lab.power_on(MASTER, wait=False)
        bench.lab.host(MASTER).run("/etc/init.d/nginx start >/dev/null; /etc/init.d/keepalived start >/dev/null",
                                   check=True, timeout=60)


class Heal(Scenario):
    """
    Split brain and its heal: web-a's service port goes dead while its link stays up (it keeps
    the VIP, the client cannot reach it, web-b takes over and the client learns web-b's MAC), then
    the port comes back: web-a, the higher priority, wins again. What matters is the heal (the
    "failback" of this scenario): web-a kept the VIP all along, so unless it sends gratuitous
    ARPs when it sees web-b's lower-priority adverts, the client keeps sending to web-b, which has
    just dropped the VIP.
    """

    name = "heal"
    title = "split brain healed: web-a's service port dead (link up), then back"
    max_trials = 5  # no outage target: failed requests after the heal are what it shows
    window = 8.0
    failback_window = 15.0

    def inject(self, bench, profile):
        import time

        t = time.time()
        bench.lab.set_link(MASTER, "svc", up=False, keep_carrier=True)
        return t

    def repair(self, bench, profile):
        bench.lab.set_link(MASTER, "svc", up=True, keep_carrier=True)

    def cleanup(self, bench, profile, completed):
        if not completed:
            # the client still sends to web-b's MAC (no gratuitous ARP after the heal): what its ARP
            # cache would do by itself after tens of seconds, done now so that the next trial can start
            bench.lab.client.run("ip neigh flush to 203.0.113.100", timeout=30)


class Maintenance(Scenario):
    """Planned switchover: ``salt web-a nginx_ha.maintenance on``, then ``off`` (ours only)."""

    name = "maintenance"
    title = "planned switchover: salt web-a nginx_ha.maintenance on, then off"
    profiles = ("ours",)
    max_trials = 5  # its target is a count of failed requests, not a p95


class Load(Scenario):
    """
    No fault: does the setup fail over *falsely* under load? For ``seconds``:

    * both cores saturated: CPU hogs on web-a and on web-b (as many as the machine has cores,
      plus one, on each; the lab's hosts share the machine's cores, so every host competes);
    * a request flood on the VIP: two loops requesting as fast as they get answers, plus an
      open-loop stream of ``flood_rate`` requests a second;
    * a slow upstream that keeps nginx's workers busy: each web node proxies port
      ``SLOW_PORT`` to a local upstream that answers after ``slow_delay`` seconds
      (``bench/slow_upstream.py``), and the client keeps ``slow_rate`` such requests a second
      in flight on the VIP (about ``slow_rate * slow_delay`` open connections in nginx at once);

    while the poller measures as usual. A VIP move or a keepalived transition on web-a or web-b
    during that time is a false failover.
    """

    name = "load"
    max_trials = 1  # one long trial
    title = "no fault: both cores saturated, request flood on the VIP, slow upstream: false failovers?"
    seconds = 60
    flood_rate = 200
    slow_rate = 100
    slow_delay = 0.5


SLOW_PORT = 8090  # not 8080-8081: the formula's health endpoint is 127.0.0.1:8081
SLOW_UPSTREAM_PORT = 8091
SLOW_SITE = "/etc/nginx/conf.d/bench-slow.conf"
SLOW_SITE_TEXT = f"""# nginx-ha bench: a port proxied to a slow local upstream (bench/scenarios.py: Load)
server {{
    listen {SLOW_PORT};
    location / {{
        proxy_pass http://127.0.0.1:{SLOW_UPSTREAM_PORT};
        proxy_read_timeout 10s;
    }}
}}
"""


FAULTS = (Crash(), Hang(), Broken(), HostDeath(), Heal())
FAULT_TYPES = (Crash, Hang, Broken, HostDeath, Heal)
ALL = FAULTS + (Maintenance(), Load())
BY_NAME = {s.name: s for s in ALL}
# The failback "scenario" is measured in the repair phase of every fault trial whose VIP moved.
FAILBACK = "failback"
ORDER = ("crash", "hang", "broken", "host_death", FAILBACK, "heal", "maintenance", "load")
TITLES = {s.name: s.title for s in ALL}
TITLES[FAILBACK] = "failback: the old MASTER is repaired and takes the VIP back"
