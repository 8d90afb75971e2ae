{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import nginx_ha with context %}
{#- The health path: health_watch.py (keepalived's check, and the watcher it keeps running, which
    writes the keepalived track_file that moves the VIP within a fraction of a second) and
    health.json, the settings both read. Scripts take no pillar text: only this data file.

    Order (the health path never points at something nginx or keepalived has not loaded):
      1. nginx.sls: the site, serving the new health endpoint *and* the one probed now, validated;
         service.sls reloads nginx.
      2. keepalived.sls: keepalived.conf validated (after the nginx reload: service.sls).
      3. here: once nginx answers the new endpoint, health.json and the watcher switch to it.
         A refused config fails its state and this one never runs: the health path is unchanged.
      4. service.sls reloads keepalived; then nginx.sls drops the old endpoint and reloads nginx;
         then service.sls records node.json.
    Each step requires the one before it (require/watch/onchanges), so this order holds whichever
    SLS of the formula is applied, not only `nginx_ha`. #}

include:
  - .scripts
  - .keepalived
  - .service

{%- set watcher = nginx_ha.check.watcher %}
{%- set script_dir = nginx_ha.lookup.keepalived.script_dir %}
{%- if watcher.package %}

nginx_ha_watcher_python_installed:
  pkg.installed:
    - name: {{ watcher.package | json }}
{%- if nginx_ha.pkg_refresh is not none %}
    - refresh: {{ nginx_ha.pkg_refresh | json }}
{%- endif %}
    - require_in:
      - nginx_ha_health: nginx_ha_health_path_switched
{%- endif %}

nginx_ha_health_path_switched:
  nginx_ha_health.settings:
    - name: {{ (script_dir ~ "/health.json") | json }}
    - settings: {{ nginx_ha.health_settings | json }}
    - watcher_source: salt://{{ tplroot }}/files/health_watch.py
    - watcher_path: {{ (script_dir ~ "/health_watch.py") | json }}
    - require:
      - file: nginx_ha_script_dir_present
      - service: nginx_ha_nginx_running
      - nginx_ha: nginx_ha_keepalived_config_validated
