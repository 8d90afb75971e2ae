# nginx-ha cluster pillar: ONE description of the whole cluster, the same on every node.
# Each minion finds its own role under vrrp_instances:<name>:nodes:<minion id>.
# Option names are keepalived's (keepalived.conf(5)) and nginx's own. Generated from the schema
# (_utils/nginx_ha_schema.py) by python -m scripts.schema_docs: the commented keys below show every
# other key with its default; uncomment and change what you need.
nginx_ha:
  vrrp_instances:
    # One block per VRRP instance (one VIP group). Active-active: add a second instance whose
    # MASTER is the other node. Unset instance settings come from instance_defaults (below).
    VI_web:
      interface: eth0              # VRRP interface; a node may override it (nodes:<id>:interface)
      virtual_router_id: 68        # 1-255, unique per instance
      virtual_ipaddress:           # the VIPs; 'ADDR/PREFIX [dev IF] [label L]' as keepalived takes them
        - 203.0.113.100/24
      # options: {garp_master_delay: 1}   # any other vrrp_instance option, passed through
      nodes:                       # minion id -> role; exactly one MASTER, with the highest priority
        web-a: {state: MASTER, priority: 100}
        web-b: {state: BACKUP, priority: 99}

  # Per-node settings shared by all instances (instance nodes:<id> entries override them).
  # nodes:
  #   web-a: {unicast_src_ip: 203.0.113.11, interface: eth0}
  #   web-b: {unicast_src_ip: 203.0.113.12, interface: eth0}

  # this cluster's name: its nodes' pillar says which cluster they form, when one master runs
  # several (the fleet view groups by it, the reactor acts within it); recorded in node.json. Give
  # each cluster on a master its own name (salt-run nginx_ha.check_router_ids reports one reused)
  # (a cluster name of lower-case letters, digits, '_', '-' (at most 32))
  # cluster: default
  # settings every vrrp_instance gets unless it sets its own (a mapping)
  # instance_defaults:
    # seconds between adverts; below 1 or fractional needs version 3 (0.05: a dead MASTER is
    # replaced after 3 x 0.05 s + skew, about 0.18 s) (a number within 0.01-255)
    # advert_int: 0.05
    # VRRP version (2 or 3)
    # version: 3
    # a recovered MASTER does not take the VIP back (every node starts BACKUP) (true or false)
    # nopreempt: false
    # seconds a recovered node waits before taking the VIP back (an integer within 0-1000)
    # preempt_delay: 0
    # adverts go to the peers' unicast_src_ip instead of multicast (true or false)
    # unicast: false
    # ignore faults of the VRRP interface (keepalived's option) (true or false)
    # dont_track_primary: false
    # the VRRP interface of every node (a node may override it) (an interface name (at most 15
    # letters, digits, '_', '.', '-'), or null)
    # interface: null
    # more interfaces whose failure moves the VIP: unweighted, a down interface puts the instance
    # in FAULT; 'IF weight W' adds W to the priority while the interface is up (W > 0) or
    # subtracts -W while it is down (W < 0), reverse inverts that (a list of interfaces like eth1
    # or 'eth1 weight -60 [reverse]', or null)
    # track_interface: null
    # seconds after becoming MASTER before the second set of gratuitous ARPs / unsolicited NAs, 0:
    # none (null: global_defs vrrp_garp_master_delay, keepalived's default 5) (an integer within
    # 0-4294, or null)
    # garp_master_delay: null
    # gratuitous ARPs / NAs sent at a time after becoming MASTER (null: global
    # vrrp_garp_master_repeat, default 5) (an integer within 1-4294967295, or null)
    # garp_master_repeat: null
    # seconds between repeated gratuitous ARPs / NAs while MASTER, 0: none (null: global
    # vrrp_garp_master_refresh) (an integer within 0-4294967295, or null)
    # garp_master_refresh: null
    # gratuitous ARPs / NAs sent at each refresh (null: global vrrp_garp_master_refresh_repeat,
    # default 1) (an integer within 1-4294967295, or null)
    # garp_master_refresh_repeat: null
    # seconds before the second set of gratuitous ARPs / NAs after a MASTER hears a lower priority
    # advert (null: global vrrp_garp_lower_prio_delay) (an integer within 0-4294, or null)
    # garp_lower_prio_delay: null
    # gratuitous ARPs / NAs a MASTER sends when it hears a lower priority advert (null: global
    # vrrp_garp_lower_prio_repeat) (an integer within 0-2147483647, or null)
    # garp_lower_prio_repeat: null
    # VRRPv2 only (refused with version: 3, which has none): a password in every advert (PASS,
    # sent in clear) or IPsec AH. RFC 3768 removed authentication from VRRPv2: it protects nothing
    # (PASS is readable on the wire) and both nodes must agree; keepalived.conf becomes root-only
    # (0600) (keepalived's authentication {auth_type, auth_pass}, or null)
    # authentication: null
    # a program run when the instance becomes MASTER: [/absolute/path, arg, ...] (never through a
    # shell; see notify_timeout) (a command as a list: the absolute path of a program, then its
    # arguments (each a one-line string), or null)
    # notify_master: null
    # a program run when the instance becomes BACKUP: [/absolute/path, arg, ...] (a command as a
    # list: the absolute path of a program, then its arguments (each a one-line string), or null)
    # notify_backup: null
    # a program run when the instance goes FAULT: [/absolute/path, arg, ...] (a command as a list:
    # the absolute path of a program, then its arguments (each a one-line string), or null)
    # notify_fault: null
    # a program run when keepalived stops the instance: [/absolute/path, arg, ...] (a command as a
    # list: the absolute path of a program, then its arguments (each a one-line string), or null)
    # notify_stop: null
    # a program run on every transition, with keepalived's 4 arguments appended (INSTANCE, the
    # instance, MASTER/BACKUP/FAULT/STOP, the priority) (a command as a list: the absolute path of
    # a program, then its arguments (each a one-line string), or null)
    # notify: null
    # seconds a notify_* program may run; then its process group is killed. The programs must be
    # root-owned and not writable by group or others, nor their directories (checked at apply time
    # and before each run) (an integer within 1-3600)
    # notify_timeout: 10
  # instances that must move together (one instance per address family, e.g. an IPv4 and an IPv6
  # VIP): their nodes and roles must match; the health check and maintenance track the group (a
  # mapping of sync group name to {group, track_interface})
  # vrrp_sync_groups: {}
  # every node keeps the VIPs on lo and only the MASTER answers ARP (IPv4:
  # arp_ignore/arp_announce) or neighbour solicitations (IPv6 answers them only on the interface
  # holding the address) for them (true or false)
  # local_vip: true
  # keepalived global_defs, passed through (router_id defaults to the minion id) (a mapping of
  # keepalived option name to value (true for a flag))
  # global_defs: {vrrp_garp_lower_prio_repeat: ['5'], vrrp_garp_master_refresh: ['10'], vrrp_higher_prio_send_advert: true}
  # the nginx health check (a mapping)
  # check:
    # seconds between keepalived's runs of the check (vrrp_script) (an integer within 1-4294)
    # interval: 1
    # seconds before a check counts as failed (an integer within 1-4294)
    # timeout: 1
    # failures before the node goes FAULT (or loses weight) (an integer within 1-1000)
    # fall: 2
    # successes before it is healthy again (an integer within 1-1000)
    # rise: 2
    # 0: a failing health check puts the node in FAULT (the VIP moves at once). Negative: the
    # node's priority drops by -weight instead; it must then fall below every peer's priority
    # (checked), so a failing node always yields. Positive weights are refused: keepalived
    # multiplies the track file's value (1 = unhealthy) by the weight, so a failing MASTER would
    # gain priority and keep the VIP. (0 or a negative integer down to -253)
    # weight: 0
    # also vrrp_track_process nginx (needs the initial PID/network namespaces) (true or false)
    # track_process: false
    # the fast health watcher (a mapping)
    # watcher:
      # the fast path: a watcher probing nginx several times a second, writing a keepalived
      # track_file (true or false)
      # enabled: true
      # seconds between probes (a number within 0.01-60)
      # interval: 0.05
      # seconds to the next probe after a failed one (a number within 0.01-60)
      # retry_interval: 0.02
      # seconds for a whole probe (connect + answer); a hung nginx is unhealthy after about
      # interval + fall x timeout (a number within 0.01-60)
      # timeout: 0.1
      # failed probes in a row before the node is unhealthy (an integer within 1-1000)
      # fall: 2
      # good probes in a row before it is healthy again (an integer within 1-1000)
      # rise: 5
      # the Python 3 the watcher and the check run with (an absolute path without spaces of a
      # file)
      # python: /usr/bin/python3
      # the package that provides it (null: do not install) (a package name, or null)
      # package: python3
      # the track_file (in /run: a rebooted node starts unhealthy) (an absolute path without
      # spaces of a file)
      # state_file: /run/nginx_ha_health
  # VRRP transitions onto Salt's event bus (a mapping)
  # events:
    # keepalived's ordered notify FIFO, read by the nginx_ha_events engine (true or false)
    # notify_fifo: true
    # also a notify script sending each transition with salt-call (slower) (true or false)
    # notify_script: false
    # seconds the notify script may spend sending (a salt-call takes 1-5 s on a loaded node; a
    # failed send is logged as nginx_ha_notify) (an integer within 1-300)
    # notify_script_timeout: 15
    # the notify script's salt-call (a path where it is not on PATH) (an absolute path or a
    # command name)
    # salt_call: salt-call
    # salt-call -c for the notify script (null: Salt's default) (an absolute path, or null)
    # salt_config_dir: null
    # restart salt-minion once when the engine configuration changes (true or false)
    # restart_minion: true
    # how, as a list of arguments (null: salt-call --local service.restart salt-minion); never run
    # by a shell (a command: a list of arguments, or a string split into arguments, or null)
    # minion_restart_cmd: null
    # engine spool file (null: under the minion cachedir) (an absolute path of a file, or null)
    # spool: null
    # events kept while the master is unreachable (an integer within 1-1000000)
    # buffer_size: 1000
    # seconds per delivery attempt (an integer within 1-300)
    # send_timeout: 5
    # longest pause between delivery attempts (an integer within 1-3600)
    # backoff_max: 30
  # VRRP through the host firewall (nftables, iptables, firewalld): salt/nginx_ha/firewall.sls (a
  # mapping)
  # firewall:
    # keep VRRP (IP protocol 112) open in the host firewall, from this node's peers only (unicast)
    # or to the VRRP group on the VRRP interface (multicast), wherever a firewall could drop it; a
    # host whose firewall drops nothing is left alone. false: remove what nginx-ha added, then
    # leave the firewall alone (true or false)
    # manage: true
    # auto: firewalld where it runs, else nftables (chains nft manages) and iptables (the INPUT
    # chain iptables manages), each only where present; or exactly one of them (auto or nftables
    # or iptables or firewalld)
    # backend: auto
    # on systemd hosts: keepalived does not start without the rules (a drop-in ExecStartPre
    # applies them), and a start or reload of nftables.service / the iptables services re-applies
    # them (true or false)
    # hooks: true
  # Prometheus metrics of this node (VRRP state, priorities, VIPs held, health, transitions,
  # maintenance): off unless textfile or listen is set; salt/nginx_ha/metrics.sls, README: Metrics
  # (a mapping)
  # metrics:
    # write the metrics to this node_exporter textfile (replaced atomically: a temporary file in
    # the same directory, then rename; on every change and every interval), e.g.
    # /var/lib/prometheus/node-exporter/nginx_ha.prom (Debian's prometheus-node-exporter); null:
    # no file (an absolute path without spaces of a file named *.prom, or null)
    # textfile: null
    # serve them as HTTP GET /metrics on this port or ADDRESS:PORT (a bare port binds 127.0.0.1,
    # *:PORT every IPv4 address), e.g. 127.0.0.1:9650; null: no port (a port 1-65535 or
    # ADDRESS:PORT like 127.0.0.1:8081 or [::1]:8081, or null)
    # listen: null
    # seconds between two refreshes; a VIP that comes or goes, a health or maintenance change, a
    # new keepalived refresh them at once (an integer within 1-3600)
    # interval: 15
  # the nginx site on the VIP and the health endpoint (a mapping)
  # nginx:
    # where the single site listens (the site when nginx:servers is empty) (a list of ports or
    # ADDRESS:PORT)
    # listen: [80]
    # the single site's server_name (one or a list) (a server name (host name, *.wildcard or _),
    # or a list of them)
    # server_name: [_]
    # document root (of the single site, and of servers that set none) (an absolute path)
    # root: /var/www/nginx_ha
    # write an index.html naming the node that served it (true or false)
    # index_page: true
    # disable the distribution's default site (it also claims port 80) (true or false)
    # remove_default_site: true
    # nginx client_max_body_size (null: nginx's default) (an nginx size like 10m, or null)
    # client_max_body_size: null
    # the health endpoint keepalived's check and the watcher probe (a mapping)
    # health:
      # the local health server: a port or ADDRESS:PORT (a port 1-65535 or ADDRESS:PORT like
      # 127.0.0.1:8081 or [::1]:8081)
      # listen: 127.0.0.1:8081
      # the health URL path (an optional ?query is sent as is) (a URL path like /nginx_ha/health
      # (a ?query is allowed))
      # path: /nginx_ha/health
    # upstream groups (a mapping of upstream name to {servers, keepalive})
    # upstreams: {}
    # the single site's proxied locations (a mapping of URL path prefix to {proxy_pass, ...})
    # locations: {}
    # several server blocks (HTTPS, redirects), written in name order; when set they replace the
    # single site (listen, server_name and locations above stay unset) (a mapping of name to
    # server block)
    # servers: {}
    # false: nginx-ha writes only its health endpoint: no site, no index page, the default site
    # left alone (for nginx managed by another formula) (true or false)
    # manage_sites: true
  # refresh the package db before installing (null: Salt's default) (true or false, or null)
  # pkg_refresh: null
  # OS paths and names; defaults per os_family in OS_FAMILY_LOOKUP (_utils/nginx_ha_schema.py) (OS
  # paths and names (defaults per os_family in OS_FAMILY_LOOKUP))
  # lookup:
    # packages to install (a list of a package name)
    # packages: [keepalived, nginx, curl]
    # keepalived paths (a mapping)
    # keepalived:
      # service name (a name of letters, digits, '_', '.', '-' (at most 64))
      # service: keepalived
      # keepalived binary (an absolute path without spaces of a file)
      # binary: /usr/sbin/keepalived
      # keepalived.conf (an absolute path without spaces of a file)
      # config: /etc/keepalived/keepalived.conf
      # root-owned directory of the scripts keepalived runs (an absolute path without spaces)
      # script_dir: /etc/keepalived/nginx_ha
      # keepalived's pid file (an absolute path without spaces of a file)
      # pidfile: /run/keepalived.pid
      # where keepalived writes its JSON state dump (an absolute path without spaces of a file)
      # json_dump: /tmp/keepalived.json
      # the notify FIFO the engine reads (an absolute path without spaces of a file)
      # notify_fifo: /run/nginx_ha_vrrp.fifo
    # nginx paths (a mapping)
    # nginx:
      # service name (a name of letters, digits, '_', '.', '-' (at most 64))
      # service: nginx
      # nginx binary (an absolute path without spaces of a file)
      # binary: /usr/sbin/nginx
      # nginx's main configuration (an absolute path without spaces of a file)
      # config: /etc/nginx/nginx.conf
      # the site nginx-ha writes (an absolute path without spaces of a file)
      # site_config: /etc/nginx/conf.d/nginx_ha.conf
      # where certificates and keys given as PEM text are written, one <server>.nginx_ha.pem
      # (0600) each (created root 0700; an existing one must be writable by root alone) (an
      # absolute path without spaces)
      # tls_dir: /etc/nginx/nginx_ha_tls
      # the distribution's default site (null: none) (an absolute path without spaces of a file,
      # or null)
      # default_site: null
      # nginx's pid file (an absolute path without spaces of a file)
      # pidfile: /run/nginx.pid
    # curl (an absolute path without spaces of a file)
    # curl: /usr/bin/curl
    # ip(8) (an absolute path without spaces of a file)
    # ip: /usr/sbin/ip
    # sysctl drop-in (an absolute path without spaces of a file)
    # sysctl_config: /etc/sysctl.d/60-nginx-ha.conf
