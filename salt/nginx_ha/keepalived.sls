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

{%- set script_dir = lookup.script_dir %}
{%- set hooks_program = script_dir ~ "/notify_hooks.py" %}
{%- set hooks_settings = script_dir ~ "/notify_hooks.json" %}
{%- if nginx_ha.notify_hooks %}

{#- The pillar's notify_* programs: keepalived runs notify_hooks.py, which runs them (no shell, with
    a timeout) from notify_hooks.json, data Salt writes. Before keepalived.conf goes live, every
    program must be one keepalived's script security would run (root-owned, not writable by group
    or others, nor its directories): the check fails this state, and keepalived.conf stays as it is. #}
nginx_ha_notify_hooks_program:
  file.managed:
    - name: {{ hooks_program | json }}
    - source: salt://{{ tplroot }}/files/notify_hooks.py
    - user: root
    - group: root
    - mode: '0755'
    - require:
      - file: nginx_ha_script_dir_present

nginx_ha_notify_hooks_settings:
  file.serialize:
    - name: {{ hooks_settings | json }}
    - dataset: {{ nginx_ha.notify_hooks | json }}
    - serializer: json
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - file: nginx_ha_script_dir_present

{%- set hooks_check = [nginx_ha.check.watcher.python, hooks_program, "check", hooks_settings] | map("quote") | join(" ") %}
nginx_ha_notify_hooks_checked:
  cmd.run:
    - name: {{ hooks_check | json }}
    - unless: {{ hooks_check | json }}
    - require:
      - file: nginx_ha_notify_hooks_program
      - file: nginx_ha_notify_hooks_settings
{%- endif %}

nginx_ha_keepalived_config_validated:
  nginx_ha.validated_config:
    - name: {{ lookup.config }}
    - source: salt://{{ tplroot }}/files/keepalived.conf.jinja
    - context:
        node: {{ nginx_ha | json }}
    - checker: [{{ lookup.binary }}, -t, -f, '{path}']
    - user: root
    - group: root
    {#- root-only when it holds a VRRP password (authentication) #}
    - mode: '{{ "0600" if nginx_ha.instances | selectattr("authentication") | list else "0644" }}'
    - timeout: 30
    - makedirs: True
    - require:
      - pkg: nginx_ha_packages_installed
      - file: nginx_ha_script_dir_present
{%- if nginx_ha.notify_hooks %}
      - cmd: nginx_ha_notify_hooks_checked
{%- else %}

{#- No notify programs (any more): keepalived.conf no longer names notify_hooks.py; remove it. #}
{%- for path in (hooks_program, hooks_settings) %}
nginx_ha_notify_hooks_absent_{{ loop.index }}:
  file.absent:
    - name: {{ path | json }}
    - require:
      - nginx_ha: nginx_ha_keepalived_config_validated
{%- endfor %}
{%- endif %}
