{%- from tpldir ~ "/map.jinja" import nginx_ha with context %}
{%- set lookup = nginx_ha.lookup.keepalived %}
{#- keepalived.conf goes live only if `keepalived -t` accepts it (interfaces included); otherwise
    the previous file is restored and keepalived is not reloaded. #}

nginx_ha_keepalived_config_validated:
  nginx_ha.validated_config:
    - name: {{ lookup.config }}
    - source: salt://{{ tpldir }}/files/keepalived.conf.jinja
    - context:
        node: {{ nginx_ha | json }}
    - checker: [{{ lookup.binary }}, -t, -f, '{path}']
    - makedirs: True
    - require:
      - pkg: nginx_ha_packages_installed
      - file: nginx_ha_check_script_managed
