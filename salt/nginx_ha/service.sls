{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import nginx_ha with context %}
{#- Configuration changes reload (SIGHUP / nginx -s reload), never restart: a restart of
    keepalived would drop the VIP. The order of a run (watcher.sls explains it), each step
    requiring the one before:
      nginx site validated -> nginx reloaded -> keepalived.conf validated -> health path switched
      -> keepalived reloaded -> final nginx site + reload -> node.json recorded #}

include:
  - .sysctl
  - .firewall
  - .nginx
  - .keepalived
  - .watcher

{#- Salt's service.running first asks for service.offline, which the sysvinit service module
    (debian_service) lacks: the miss makes the loader import every execution module, about a
    second of each run. This answers it as Salt would (False), for this run, where it is missing. #}
nginx_ha_service_offline_answered:
  nginx_ha.service_offline_answered:
    - require_in:
      - service: nginx_ha_nginx_running
      - service: nginx_ha_keepalived_running

nginx_ha_nginx_running:
  service.running:
    - name: {{ nginx_ha.lookup.nginx.service }}
    - enable: True
    - reload: True
    - watch:
      - nginx_ha: nginx_ha_nginx_site_config_validated
{%- if nginx_ha.nginx.remove_default_site and nginx_ha.lookup.nginx.default_site %}
      - file: nginx_ha_nginx_default_site_disabled
{%- endif %}
    {#- keepalived.conf is validated (and goes live) only after nginx reloaded the site #}
    - require_in:
      - nginx_ha: nginx_ha_keepalived_config_validated

nginx_ha_keepalived_running:
  service.running:
    - name: {{ nginx_ha.lookup.keepalived.service }}
    {#- Debian's keepalived init script has no `status`: find the daemon by its command line. #}
    - sig: {{ nginx_ha.lookup.keepalived.binary }}
    - enable: True
    - reload: True
    - watch:
      - nginx_ha: nginx_ha_keepalived_config_validated
    - require:
      - service: nginx_ha_nginx_running
      {#- keepalived loads a config whose health path (track file, check) is in place #}
      - nginx_ha_health: nginx_ha_health_path_switched
      {#- VRRP is let through the host firewall before keepalived (re)loads (firewall.sls) #}
      - nginx_ha_firewall: nginx_ha_firewall_vrrp
      - sysctl: nginx_ha_sysctl_ip_nonlocal_bind
{%- if nginx_ha.local_vip %}
{%- for iface in nginx_ha.vrrp_interfaces %}
      - sysctl: nginx_ha_sysctl_arp_ignore_{{ iface }}
      - sysctl: nginx_ha_sysctl_arp_announce_{{ iface }}
{%- endfor %}
{%- endif %}

{#- What the queries (nginx_ha.vip_status, health, maintenance, ...) answer from, on the node,
    with or without the master (`salt-call --local`): this node's configuration, recorded once
    keepalived runs with it. Root-only: it holds the whole node view. Recorded as deployed at the
    end of the run, when nginx serves the final health endpoints: the transitional ones depend on
    the health.json the run started from, and would make the next run rewrite this file. #}
{%- set deployed = dict(nginx_ha, health_endpoints={"transitional": nginx_ha.health_endpoints.final, "final": nginx_ha.health_endpoints.final}) %}
nginx_ha_node_config_recorded:
  file.serialize:
    - name: {{ nginx_ha.node_file | yaml_dquote }}
    - dataset: {{ deployed | json }}
    - serializer: json
    - show_changes: False
    - user: root
    - group: root
    - mode: '0600'
    - makedirs: True
    - require:
      - service: nginx_ha_keepalived_running
      {#- and after the final site (the old health endpoint dropped) is live #}
      - module: nginx_ha_nginx_reloaded_without_old_health_endpoint
