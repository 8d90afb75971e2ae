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
    window = 12.0  # seconds after the fault before a trial gives up on recovery (censored outage)

    def inject(self, bench, profile):
        raise NotImplementedError

    def repair(self, bench, profile):
        raise NotImplementedError


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


class Maintenance(Scenario):
    """Planned switchover: ``salt web-a nginx_ha.maintenance on``, then ``off`` (ours only)."""

    name = "maintenance"
    title = "planned switchover: salt web-a nginx_ha.maintenance on, then off"
    profiles = ("ours",)


FAULTS = (Crash(), Hang(), Broken(), HostDeath())
ALL = FAULTS + (Maintenance(),)
BY_NAME = {s.name: s for s in ALL}
# The failback "scenario" is measured in the repair phase of every fault trial whose VIP moved.
FAILBACK = "failback"
ORDER = ("crash", "hang", "broken", "host_death", FAILBACK, "maintenance")
TITLES = {s.name: s.title for s in ALL}
TITLES[FAILBACK] = "failback: the old MASTER is repaired and takes the VIP back"
