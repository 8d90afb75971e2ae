{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import nginx_ha with context %}
{#- Scripts keepalived runs: root-owned, not writable by others, in a root-owned directory, as
    enable_script_security demands (keepalived silently drops a script that fails it). The health
    check and watcher (health_watch.py) and their settings are the health path: watcher.sls. #}

nginx_ha_script_dir_present:
  file.directory:
    - name: {{ nginx_ha.lookup.keepalived.script_dir }}
    - user: root
    - group: root
    - dir_mode: '0755'
    - makedirs: True
{%- if nginx_ha.events.notify_script %}

{#- keepalived's notify script (events.notify_script): each transition to the master's event bus
    with salt-call. Same ownership rules as the check script. #}
nginx_ha_notify_script_managed:
  file.managed:
    - name: {{ nginx_ha.lookup.keepalived.script_dir }}/notify_event.sh
    - source: salt://{{ tplroot }}/files/notify_event.sh.jinja
    - template: jinja
    - context:
        node: {{ nginx_ha | json }}
    - user: root
    - group: root
    - mode: '0755'
    - require:
      - file: nginx_ha_script_dir_present
{%- endif %}
