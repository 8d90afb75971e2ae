{%- from tpldir ~ "/map.jinja" import nginx_ha with context %}
{%- set lookup = nginx_ha.lookup.nginx %}
{#- The nginx site on the VIP. The new config goes live only if `nginx -t` accepts the whole
    configuration tree; otherwise the previous file is restored and nginx is not reloaded. #}

{%- if nginx_ha.nginx.remove_default_site and lookup.default_site %}

nginx_ha_nginx_default_site_disabled:
  file.absent:
    - name: {{ lookup.default_site }}
    - require_in:
      - nginx_ha: nginx_ha_nginx_site_config_validated
{%- endif %}

{%- if nginx_ha.nginx.index_page %}

nginx_ha_nginx_index_page_managed:
  file.managed:
    - name: {{ nginx_ha.nginx.root }}/index.html
    - source: salt://{{ tpldir }}/files/index.html.jinja
    - template: jinja
    - context:
        node_id: {{ nginx_ha.id | json }}
    - makedirs: True
    - user: root
    - group: root
    - mode: '0644'
{%- endif %}

nginx_ha_nginx_site_config_validated:
  nginx_ha.validated_config:
    - name: {{ lookup.site_config }}
    - source: salt://{{ tpldir }}/files/nginx_site.conf.jinja
    - context:
        node: {{ nginx_ha | json }}
    - checker: [{{ lookup.binary }}, -t, -q, -c, {{ lookup.config }}]
    - require:
      - pkg: nginx_ha_packages_installed
