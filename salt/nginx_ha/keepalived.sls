{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import nginx_ha with context %}
{%- set lookup = nginx_ha.lookup.keepalived %}
{#- keepalived.conf goes live only if `keepalived -t` accepts it (interfaces included); otherwise
    the live file is untouched and keepalived is not reloaded. keepalived is reloaded (service.sls)
    only after the health path it tracks has switched (watcher.sls). Applied on its own, this SLS
    validates and writes keepalived.conf only (no reload); with service.sls in the run, it is
    validated after nginx has reloaded (service.sls orders it). #}

include:
  - .package
  - .scripts

nginx_ha_keepalived_config_validated:
  nginx_ha.validated_config:
    - name: {{ lookup.config }}
    - source: salt://{{ tplroot }}/files/keepalived.conf.jinja
    - context:
        node: {{ nginx_ha | json }}
    - checker: [{{ lookup.binary }}, -t, -f, '{path}']
    - user: root
    - group: root
    - mode: '0644'
    - timeout: 30
    - makedirs: True
    - require:
      - pkg: nginx_ha_packages_installed
      - file: nginx_ha_script_dir_present
