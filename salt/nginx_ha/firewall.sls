{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import nginx_ha with context %}
{#- VRRP (IP protocol 112) through the host firewall: from this node's peers only (unicast) or to
    the VRRP group on the VRRP interface (multicast), in every input chain of the operator's
    ruleset that could drop it, marked "nginx_ha: VRRP" and removed by nginx-ha alone
    (_states/nginx_ha_firewall.py explains the nftables, iptables and firewalld details).
    keepalived must be (re)loaded only once this is in place: service.sls requires this state
    (`- nginx_ha_firewall: nginx_ha_firewall_vrrp`). On systemd hosts, with firewall:hooks, the
    rules also come back at keepalived's start (ExecStartPre: keepalived does not start without
    them) and after every start or reload of the firewall units.
    firewall:manage: false removes what nginx-ha added (same state id, so the order holds either
    way); firewall_absent.sls removes it whatever the pillar says. #}
{%- set fw = nginx_ha.firewall %}
{%- set script_dir = nginx_ha.lookup.keepalived.script_dir %}

include:
  - .scripts

nginx_ha_firewall_vrrp:
{%- if fw.manage %}
  nginx_ha_firewall.vrrp_allowed:
    - name: {{ (script_dir ~ "/firewall.json") | json }}
    - rules: {{ fw.vrrp | json }}
    - backend: {{ fw.backend | json }}
    - hooks: {{ fw.hooks | json }}
    - helper: {{ (script_dir ~ "/vrrp_firewall.py") | json }}
    - python: {{ nginx_ha.check.watcher.python | json }}
    - keepalived_service: {{ nginx_ha.lookup.keepalived.service | json }}
{%- else %}
  nginx_ha_firewall.vrrp_absent:
    - name: {{ (script_dir ~ "/firewall.json") | json }}
    - helper: {{ (script_dir ~ "/vrrp_firewall.py") | json }}
    - keepalived_service: {{ nginx_ha.lookup.keepalived.service | json }}
{%- endif %}
    - require:
      - file: nginx_ha_script_dir_present
