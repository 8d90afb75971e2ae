{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import nginx_ha with context %}
{%- set lookup = nginx_ha.lookup.nginx %}
{#- The nginx site on the VIP. The new config goes live only if `nginx -t` accepts the whole
    configuration tree; otherwise the live file is untouched and nginx is not reloaded.
    The site is written twice in a run that changes the health endpoint: first serving the new
    endpoint and the one the watcher probes now (health.json on the node), then, once the health
    path has switched (watcher.sls), the new one alone. In a run that changes nothing else both
    render the same file.
    TLS material (nginx:servers) is checked first, before anything here is written, and the PEM
    text the pillar gives is written by nginx_ha_certs.present, which reads it from the pillar
    itself: it is never in this file, the node view or any state's return. #}

include:
  - .package
  - .watcher
  - .service

nginx_ha_nginx_tls_material:
  nginx_ha_certs.present:
    - name: {{ lookup.tls_dir | json }}
    - require:
      - pkg: nginx_ha_packages_installed
    {#- a renewed certificate under the same path: nginx reloads to serve it #}
    - watch_in:
      - service: nginx_ha_nginx_running

{%- if nginx_ha.nginx.remove_default_site and lookup.default_site %}

nginx_ha_nginx_default_site_disabled:
  file.absent:
    - name: {{ lookup.default_site | json }}
    - require:
      - nginx_ha_certs: nginx_ha_nginx_tls_material
    - require_in:
      - nginx_ha: nginx_ha_nginx_site_config_validated
{%- endif %}

{%- if nginx_ha.nginx.index_page %}

nginx_ha_nginx_index_page_managed:
  file.managed:
    - name: {{ (nginx_ha.nginx.root ~ "/index.html") | json }}
    - source: salt://{{ tplroot }}/files/index.html.jinja
    - template: jinja
    - context:
        node_id: {{ nginx_ha.id | json }}
    - makedirs: True
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - nginx_ha_certs: nginx_ha_nginx_tls_material
{%- endif %}

{%- for step, endpoints in (("validated", nginx_ha.health_endpoints.transitional), ("final", nginx_ha.health_endpoints.final)) %}

nginx_ha_nginx_site_config_{{ step }}:
  nginx_ha.validated_config:
    - name: {{ lookup.site_config | json }}
    - source: salt://{{ tplroot }}/files/nginx_site.conf.jinja
    - context:
        node: {{ nginx_ha | json }}
        health_endpoints: {{ endpoints | json }}
    - checker: {{ [lookup.binary, "-t", "-q", "-c", lookup.config] | json }}
    - user: root
    - group: root
    - mode: '0644'
    - timeout: 30
    - require:
      - pkg: nginx_ha_packages_installed
      - nginx_ha_certs: nginx_ha_nginx_tls_material
{%- if step == "final" %}
      - nginx_ha_health: nginx_ha_health_path_switched
      {#- the old endpoint goes only once keepalived runs with the new health path #}
      - service: nginx_ha_keepalived_running
{%- endif %}
{%- endfor %}

{#- The second reload of a run that changed the health endpoint (the first is service.sls's). #}
nginx_ha_nginx_reloaded_without_old_health_endpoint:
  module.run:
    - service.reload:
      - name: {{ lookup.service | json }}
    - onchanges:
      - nginx_ha: nginx_ha_nginx_site_config_final

{#- TLS files of servers the live site no longer names (a server dropped from the pillar). #}
nginx_ha_nginx_tls_unused_removed:
  nginx_ha_certs.pruned:
    - name: {{ lookup.tls_dir | json }}
    - keep: {{ nginx_ha.nginx.tls | map(attribute="file") | select | list | json }}
    - require:
      - nginx_ha: nginx_ha_nginx_site_config_final
