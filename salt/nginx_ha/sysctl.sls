{%- from tpldir ~ "/map.jinja" import nginx_ha with context %}

{#- nginx may bind the VIP on a BACKUP, where the address is not (yet) local. #}
nginx_ha_sysctl_ip_nonlocal_bind:
  sysctl.present:
    - name: net.ipv4.ip_nonlocal_bind
    - value: 1
    - config: {{ nginx_ha.lookup.sysctl_config }}
