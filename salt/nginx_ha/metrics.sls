{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import nginx_ha with context %}
{#- Prometheus metrics of this node (pillar nginx_ha:metrics; off unless textfile or listen is set):
    nginx_ha_metrics.py, the writer, and metrics.json, the settings it reads, beside health.json in
    the root-owned script directory. keepalived's check (health_watch.py, watcher.sls) starts the
    writer when metrics.json is there and none runs, so keepalived is its supervisor, as for the
    watcher; a changed program or settings file stops the running writer and the check starts the
    new one. Metrics off: the writer is stopped, its files and its textfile removed.
    After the health path (the check that starts the writer) is in place. #}

include:
  - .scripts
  - .watcher

{%- set script_dir = nginx_ha.lookup.keepalived.script_dir %}

nginx_ha_metrics_configured:
  nginx_ha_metrics.settings:
    - name: {{ (script_dir ~ "/metrics.json") | json }}
    - settings: {{ nginx_ha.metrics_settings | json }}
    - program_source: salt://{{ tplroot }}/files/nginx_ha_metrics.py
    - program_path: {{ (script_dir ~ "/nginx_ha_metrics.py") | json }}
    - require:
      - file: nginx_ha_script_dir_present
      - nginx_ha_health: nginx_ha_health_path_switched
