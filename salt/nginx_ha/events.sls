{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import nginx_ha with context %}
{#- VRRP transitions onto the master's event bus: configure the nginx_ha_events engine (it reads
    keepalived's notify_fifo inside salt-minion). An engine starts with the minion, so a changed
    engine configuration restarts the minion once, in the background, after this run (the Salt
    FAQ's way: `cmd.run` with `bg: True` and `onchanges`); set nginx_ha:events:restart_minion:
    false to restart it yourself, nginx_ha:events:minion_restart_cmd where `service.restart
    salt-minion` is not how the minion is managed. #}
{%- set events = nginx_ha.events %}
{%- set conf = salt['config.get']('config_dir', '/etc/salt') ~ '/minion.d/nginx_ha_events.conf' %}

{%- if events.notify_fifo %}

{#- The engine the master serves in the environment this run applies, synced only when the
    minion's copy differs (one hash request; a saltutil.sync_engines in every run cost ~0.3 s). #}
nginx_ha_events_engine_synced:
  nginx_ha.engine_synced:
    - name: nginx_ha_events
    - saltenv: {{ saltenv | default("base", true) | json }}

nginx_ha_events_engine_config:
  file.serialize:
    - name: {{ conf | json }}
    - serializer: yaml
    - dataset:
        engines:
          - nginx_ha_events:
              fifo: {{ nginx_ha.lookup.keepalived.notify_fifo | json }}
              vips:
{%- for inst in nginx_ha.instances %}
                {{ inst.name | json }}: {{ inst.virtual_ipaddress | map(attribute='ip') | list | json }}
{%- endfor %}
{%- for key in ('spool', 'buffer_size', 'send_timeout', 'backoff_max') %}
{%- if events.get(key) is not none %}
              {{ key }}: {{ events.get(key) | json }}
{%- endif %}
{%- endfor %}
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: True
    - require:
      - nginx_ha: nginx_ha_events_engine_synced
{%- else %}

nginx_ha_events_engine_config:
  file.absent:
    - name: {{ conf | json }}
{%- endif %}

{%- if events.restart_minion %}
{#- minion_restart_cmd is a list of arguments (the schema splits a string like a shell would);
    cmd.run hands its name to a shell, so every argument is shell-quoted here. #}
{%- set restart_cmd = events.minion_restart_cmd or ['salt-call', '--local', 'service.restart', 'salt-minion'] %}

nginx_ha_events_minion_restart:
  cmd.run:
    - name: {{ restart_cmd | map('quote') | join(' ') | json }}
    - bg: True
    - order: last
    - onchanges:
      - file: nginx_ha_events_engine_config
{%- if events.notify_fifo %}
      - nginx_ha: nginx_ha_events_engine_synced
{%- endif %}
{%- endif %}
