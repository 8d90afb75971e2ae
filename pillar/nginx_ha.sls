# nginx-ha cluster pillar: ONE description of the whole cluster, the same on every node.
# Each minion finds its own role under vrrp_instances:<name>:nodes:<minion id>.
# Option names are keepalived's (keepalived.conf(5)) and nginx's own. Defaults live in
# salt/nginx_ha/defaults.yaml; everything below that is commented out shows a default or an option.
nginx_ha:
  vrrp_instances:
    # One block per VRRP instance (one VIP group). Active-active: add a second instance whose
    # MASTER is the other node.
    VI_web:
      interface: eth0              # VRRP interface; a node may override it (nodes:<id>:interface)
      virtual_router_id: 68        # 1-255, unique per instance
      # advert_int: 0.1            # seconds between adverts (a dead MASTER is replaced after ~3.6 of them)
      # version: 3                 # VRRP version; 2 allows only whole-second advert_int
      virtual_ipaddress:           # the VIPs; 'ADDR/PREFIX [dev IF] [label L]' as keepalived takes them
        - 203.0.113.100/24
      # nopreempt: false           # true: a recovered MASTER does not take the VIP back (all nodes start BACKUP)
      # preempt_delay: 0           # seconds a recovered node waits before taking the VIP back (keepalived
      #                            # ignores it on the node whose initial state is MASTER; the health check
      #                            # already keeps a node without a healthy nginx from taking the VIP)
      # unicast: false             # true: adverts go to the peers' unicast_src_ip instead of multicast
      # dont_track_primary: false
      # options: {}                # any other vrrp_instance option, passed through: {garp_master_delay: 1}
      nodes:                       # minion id -> role; exactly one MASTER, with the highest priority
        web-a: {state: MASTER, priority: 100}
        web-b: {state: BACKUP, priority: 99}

  # Per-node settings shared by all instances (instance nodes:<id> entries override them).
  # nodes:
  #   web-a: {unicast_src_ip: 203.0.113.11, interface: eth0}
  #   web-b: {unicast_src_ip: 203.0.113.12, interface: eth0}

  # local_vip: true             # every node keeps the VIPs on lo (ARP answered by the MASTER only), so a
  #                            # request still reaching a node after the VIP moved is served or refused
  #                            # at once, never black-holed (defaults.yaml; false: VIP on the MASTER only)

  # keepalived global_defs, passed through (router_id defaults to the minion id;
  # enable_script_security and script_user root are always on).
  # global_defs:                         # the defaults (salt/nginx_ha/defaults.yaml) re-announce the VIP
  #   vrrp_higher_prio_send_advert: true  # after a split brain heals; replace or extend them here
  #   vrrp_garp_lower_prio_repeat: 5
  #   vrrp_garp_master_refresh: 10

  # The health check keepalived runs against nginx (vrrp_script): an HTTP GET of the health
  # endpoint, so a hung nginx fails like a dead one.
  # check:
  #   interval: 1
  #   timeout: 1
  #   fall: 2
  #   rise: 2
  #   weight: 0                # 0: failing check -> FAULT (VIP moves); otherwise priority +/- weight
  #   track_process: false     # add vrrp_track_process nginx (not in containers: needs the initial PID/net namespace)
  #   watcher:                 # the fast path: a health watcher writing a keepalived track_file
  #     enabled: true
  #     interval: 0.1          # seconds between probes
  #     retry_interval: 0.02   # after a failed probe
  #     timeout: 0.25          # seconds for one probe
  #     fall: 2                # failed probes before FAULT (one is enough right after nginx's master exited)
  #     rise: 5                # good probes before healthy again
  #     python: /usr/bin/python3
  #     package: python3
  #     state_file: /run/nginx_ha_health

  # The nginx site served on the VIP. With no nginx key, a default site serves an index page
  # that names the node which answered.
  # nginx:
  #   listen: [80]
  #   server_name: _
  #   root: /var/www/nginx_ha
  #   index_page: true
  #   remove_default_site: true
  #   client_max_body_size: 10m
  #   health: {listen: 127.0.0.1:8081, path: /nginx_ha/health}
  #   upstreams:
  #     app:
  #       servers: ['10.0.0.21:8080', '10.0.0.22:8080 backup']
  #       keepalive: 16
  #   locations:
  #     /api/: {proxy_pass: app, proxy_connect_timeout: 2s, proxy_read_timeout: 30s}

  # pkg_refresh: null          # refresh the package db before installing (null: Salt's default)
  # lookup: {}                 # override OS paths/names from salt/nginx_ha/osfamilymap.yaml
