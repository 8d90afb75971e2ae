{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import nginx_ha with context %}

{#- nginx may bind the VIP on a BACKUP, where the address is not (yet) local. #}
nginx_ha_sysctl_ip_nonlocal_bind:
  sysctl.present:
    - name: net.ipv4.ip_nonlocal_bind
    - value: 1
    - config: {{ nginx_ha.lookup.sysctl_config }}
{%- if nginx_ha.ipv6 %}

{#- The same for an IPv6 VIP (nginx listening on the address itself). Only on nodes with one: the
    key exists only where the kernel runs IPv6. With local_vip, IPv6 needs no arp_* counterpart: a
    node answers neighbour solicitations only for addresses on the interface they arrive on, and a
    VIP on lo is not on the VRRP interface. #}
nginx_ha_sysctl_ipv6_ip_nonlocal_bind:
  sysctl.present:
    - name: net.ipv6.ip_nonlocal_bind
    - value: 1
    - config: {{ nginx_ha.lookup.sysctl_config }}
{%- endif %}

{%- if nginx_ha.local_vip %}
{#- local_vip: the VIPs are on lo on every node; only the MASTER, which has them on the VRRP
    interface too, may answer ARP for them (arp_ignore 1), and no node may announce them as the
    source of its own ARP requests (arp_announce 2). sysctl(8) writes dots in interface names as '/'. #}
{%- for iface in nginx_ha.vrrp_interfaces %}
{%- for name, value in (('arp_ignore', 1), ('arp_announce', 2)) %}

nginx_ha_sysctl_{{ name }}_{{ iface }}:
  sysctl.present:
    - name: net.ipv4.conf.{{ iface | replace('.', '/') }}.{{ name }}
    - value: {{ value }}
    - config: {{ nginx_ha.lookup.sysctl_config }}
{%- endfor %}
{%- endfor %}
{%- endif %}
