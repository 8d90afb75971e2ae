"""
The configuration of a systemd host (``Lab(init="systemd")``): its private ``/etc/systemd``.

A systemd host boots Debian's systemd 252 as PID 1 with ``container=nginx-ha-lab`` (so systemd
follows its container rules), in a cgroup namespace of the lab's own (``lab.cgroup``), with
read-only ``/sys`` and ``/proc/sys`` (``/proc/sys/net``, the host's own, stays writable) and a
``/dev`` of its own (``lab.init``). Its ``/etc/systemd`` is the machine's, copied on first boot,
except ``system/``, which starts as this module writes it:

* ``default.target`` -> ``multi-user.target``; nothing the machine enabled is enabled here;
* masked (-> /dev/null): every unit the machine's static ``*.target.wants`` would start on the way
  to multi-user.target, and the ones that would touch the machine itself or are of no use in a
  lab host (journald and udev, sysctl/binfmt/modules, tmpfiles, sysusers, network managers,
  logind/dbus, gettys, timers, kernel file system mounts ...): :func:`masked_units`;
* every generator masked (``system-generators/*`` -> /dev/null): no fstab or SysV units;
* ``nginx-ha-lab-syslog.service`` (``python -m lab.init --syslog``: the host's /dev/log into
  /var/log/syslog, the lines the sysvinit kind writes; wanted by sysinit.target);
* ``salt-minion.service`` / ``salt-master.service`` for the venv's daemons, as Salt's own packages
  ship them (Type=notify, the minion with KillMode=process), enabled (with ``salt=True``).

keepalived and nginx keep Debian's units (/lib/systemd/system/keepalived.service, nginx.service),
installed but not enabled, not started: the formula's ``service.running`` + ``enable: True`` does that
through Salt's ``systemd_service`` (``systemctl``), and a power cycle then starts them at boot.
"""

import os
import shutil

UNIT_DIRS = ("/lib/systemd/system", "/usr/lib/systemd/system")
GENERATOR_DIRS = ("/lib/systemd/system-generators", "/usr/lib/systemd/system-generators",
                  "/usr/local/lib/systemd/system-generators")
# the targets on the way to multi-user.target (and the ones a failure would start)
TARGETS = ("sysinit", "sockets", "timers", "paths", "slices", "basic", "multi-user", "graphical", "getty",
           "local-fs", "local-fs-pre", "remote-fs", "remote-fs-pre", "network", "network-online",
           "network-pre", "rescue", "emergency", "cryptsetup", "swap", "time-set", "time-sync")
ALWAYS_MASKED = (
    # logging: the lab's syslog unit owns /dev/log
    "systemd-journald.service", "systemd-journald.socket", "systemd-journald-dev-log.socket",
    "systemd-journald-audit.socket", "systemd-journal-flush.service", "systemd-journal-catalog-update.service",
    # devices and the kernel: the machine's
    "systemd-udevd.service", "systemd-udevd-control.socket", "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service", "systemd-udev-settle.service", "systemd-hwdb-update.service",
    "kmod-static-nodes.service", "kmod.service", "systemd-modules-load.service", "systemd-sysctl.service",
    "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount", "proc-sys-fs-binfmt_misc.mount",
    "dev-hugepages.mount", "dev-mqueue.mount", "sys-kernel-config.mount", "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount", "sys-fs-fuse-connections.mount", "systemd-remount-fs.service",
    "systemd-fsck-root.service", "systemd-pstore.service", "systemd-random-seed.service",
    "systemd-rfkill.service", "systemd-rfkill.socket", "systemd-timesyncd.service", "systemd-time-wait-sync.service",
    "systemd-quotacheck.service", "systemd-repart.service", "systemd-pcrphase.service",
    "systemd-pcrphase-sysinit.service", "systemd-boot-update.service", "systemd-boot-system-token.service",
    # the shared file system: /etc, /var, /usr are the machine's
    "systemd-tmpfiles-setup.service", "systemd-tmpfiles-setup-dev.service", "systemd-tmpfiles-clean.service",
    "systemd-tmpfiles-clean.timer", "systemd-sysusers.service", "systemd-firstboot.service",
    "systemd-machine-id-commit.service", "ldconfig.service", "systemd-update-done.service", "systemd-sysext.service",
    "systemd-update-utmp.service", "systemd-update-utmp-runlevel.service",
    # networks are the lab's, set up from outside
    "systemd-networkd.service", "systemd-networkd.socket", "systemd-networkd-wait-online.service",
    "systemd-network-generator.service", "systemd-resolved.service", "networking.service", "ifupdown-pre.service",
    "ifupdown-wait-online.service", "NetworkManager.service", "NetworkManager-wait-online.service",
    # sessions, terminals, buses, periodic jobs
    "systemd-logind.service", "dbus.service", "dbus.socket", "getty.target", "console-getty.service",
    "getty-static.service", "systemd-ask-password-console.path", "systemd-ask-password-wall.path",
    "systemd-user-sessions.service", "systemd-initctl.socket", "apt-daily.timer", "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer", "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer", "man-db.timer",
    "cron.service", "anacron.timer", "rsyslog.service", "syslog.socket",
)
SYSLOG_UNIT = "nginx-ha-lab-syslog.service"
CONF = """\
# written by the nginx-ha lab: this host's manager
[Manager]
LogTarget=console
ShowStatus=no
DefaultStandardOutput=tty
DefaultStandardError=inherit
"""
SYSLOG = """\
# written by the nginx-ha lab: the host's syslog, /dev/log -> /var/log/syslog (no journald here)
[Unit]
Description=nginx-ha lab syslog (/dev/log into /var/log/syslog)
DefaultDependencies=no
Before=sysinit.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=notify
Environment=PYTHONPATH={repo} PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8
ExecStart={venv}/bin/python -m lab.init --syslog {hostdir}

[Install]
WantedBy=sysinit.target
"""
SALT = """\
# written by the nginx-ha lab: Salt's own unit for salt-{daemon}, with the lab's venv
[Unit]
Description=The Salt {title} (nginx-ha lab, {venv})
Documentation=man:salt-{daemon}(1)
After=network.target{after}

[Service]
Type=notify
NotifyAccess=all
LimitNOFILE={nofile}
{killmode}Environment=PATH={venv}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
Environment=HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1
ExecStart={venv}/bin/salt-{daemon}

[Install]
WantedBy=multi-user.target
"""


def masked_units():
    """ALWAYS_MASKED plus every unit the machine's units pull in statically on the way to multi-user."""
    names = set(ALWAYS_MASKED)
    for base in UNIT_DIRS:
        for target in TARGETS:
            for kind in ("wants", "requires"):
                path = os.path.join(base, f"{target}.target.{kind}")
                if os.path.isdir(path):
                    names.update(os.listdir(path))
    return sorted(names)


def generators():
    names = set()
    for path in GENERATOR_DIRS:
        if os.path.isdir(path):
            names.update(os.listdir(path))
    return sorted(names)


def unit_text(daemon, venv):
    if daemon == "minion":
        return SALT.format(daemon="minion", title="Minion", venv=venv, after=" salt-master.service", nofile=8192,
                           killmode="KillMode=process\n")
    return SALT.format(daemon="master", title="Master", venv=venv, after="", nofile=100000, killmode="")


def _link(target, path):
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if os.path.lexists(path):
        os.unlink(path)
    os.symlink(target, path)


def prepare_etc(etc_systemd, role, venv, repo, hostdir, salt=True):
    """Make ``etc_systemd`` (the host's private /etc/systemd, a fresh copy of the machine's) a lab host's."""
    system = os.path.join(etc_systemd, "system")
    shutil.rmtree(system, ignore_errors=True)
    os.makedirs(system, mode=0o755)
    for name in masked_units():
        if name != SYSLOG_UNIT:
            _link("/dev/null", os.path.join(system, name))
    shutil.rmtree(os.path.join(etc_systemd, "system-generators"), ignore_errors=True)
    for name in generators():
        _link("/dev/null", os.path.join(etc_systemd, "system-generators", name))
    _link("/lib/systemd/system/multi-user.target", os.path.join(system, "default.target"))
    conf_d = os.path.join(etc_systemd, "system.conf.d")
    os.makedirs(conf_d, mode=0o755, exist_ok=True)
    with open(os.path.join(conf_d, "nginx-ha-lab.conf"), "w") as fh:
        fh.write(CONF)
    units = {SYSLOG_UNIT: (SYSLOG.format(venv=venv, repo=repo, hostdir=hostdir), "sysinit.target")}
    if salt and role in ("master", "minion"):
        units[f"salt-{role}.service"] = (unit_text(role, venv), "multi-user.target")
    for name, (text, wanted_by) in units.items():
        with open(os.path.join(system, name), "w") as fh:
            fh.write(text)
        _link(f"../{name}", os.path.join(system, f"{wanted_by}.wants", name))
