{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import nginx_ha with context %}
{#- Target nodes by their configured role:
      salt -G 'nginx_ha:roles:VI_web:MASTER' test.ping                  # the node the pillar makes MASTER
      salt -G 'nginx_ha:instances:VI_web' nginx_ha.is_master VI_web     # who holds VI_web right now #}
{%- set roles = {} %}
{%- for inst in nginx_ha.instances %}
{%-   do roles.update({inst.name: inst.role}) %}
{%- endfor %}

nginx_ha_grains_roles_present:
  grains.present:
    - name: nginx_ha
    - force: True
    - value:
        instances: {{ roles | list | sort | json }}
        roles: {{ roles | json }}
