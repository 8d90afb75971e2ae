{#- Remove what nginx-ha added to the host firewall, whatever the pillar says (before taking a node
    out of nginx-ha): the rules marked "nginx_ha: VRRP" (nftables), the NGINX_HA_VRRP chain and
    its jumps (iptables), the firewalld rich rules it recorded as added, its helper, its spec file
    and its systemd drop-ins. Nothing of the operator's ruleset is touched.
        salt web-a state.apply nginx_ha.firewall_absent
    No map.jinja here: it refuses a minion that is no longer a node of the cluster, which is when
    this runs. The paths are the pillar's (lookup:keepalived), else the schema's defaults; the state
    checks them again. Without Salt: python3 <script_dir>/vrrp_firewall.py remove <script_dir>/firewall.json #}
{%- set script_dir = salt['pillar.get']('nginx_ha:lookup:keepalived:script_dir', '/etc/keepalived/nginx_ha') %}
{%- set service = salt['pillar.get']('nginx_ha:lookup:keepalived:service', 'keepalived') %}

nginx_ha_firewall_vrrp:
  nginx_ha_firewall.vrrp_absent:
    - name: {{ (script_dir ~ "/firewall.json") | json }}
    - helper: {{ (script_dir ~ "/vrrp_firewall.py") | json }}
    - keepalived_service: {{ service | json }}
