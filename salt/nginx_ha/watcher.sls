{%- from tpldir ~ "/map.jinja" import nginx_ha with context %}
{#- The fast health path (nginx_ha:check:watcher): health_watch.py probes nginx several times a
    second and writes the keepalived track_file that moves the VIP. keepalived's check script
    starts and supervises it, so nothing here runs it; an update of the watcher or of its
    arguments (in the check script) makes the running one exit, and the check script starts the
    new one within a check interval (the track file keeps its value meanwhile). #}
{%- set watcher = nginx_ha.check.watcher %}
{%- set script_dir = nginx_ha.lookup.keepalived.script_dir %}
{%- set lock = watcher.state_file ~ ".lock" %}

{%- if watcher.enabled %}
{%- if watcher.package %}

nginx_ha_watcher_python_installed:
  pkg.installed:
    - name: {{ watcher.package | json }}
{%- if nginx_ha.pkg_refresh is not none %}
    - refresh: {{ nginx_ha.pkg_refresh | json }}
{%- endif %}
    - require_in:
      - file: nginx_ha_watcher_managed
{%- endif %}

nginx_ha_watcher_managed:
  file.managed:
    - name: {{ script_dir }}/health_watch.py
    - source: salt://{{ tpldir }}/files/health_watch.py
    - user: root
    - group: root
    - mode: '0755'
    - require:
      - file: nginx_ha_script_dir_present
    - require_in:
      - nginx_ha: nginx_ha_keepalived_config_validated

nginx_ha_watcher_restarted:
  cmd.run:
    - name: 'if ! flock -n {{ lock }} true; then kill "$(cat {{ lock }})" || true; fi'
    - onchanges:
      - file: nginx_ha_watcher_managed
      - file: nginx_ha_check_script_managed
{%- else %}

nginx_ha_watcher_stopped:
  cmd.run:
    - name: 'kill "$(cat {{ lock }})"'
    - onlyif: '! flock -n {{ lock }} true'
{%- endif %}
