{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import nginx_ha with context %}

nginx_ha_packages_installed:
  pkg.installed:
    - pkgs: {{ nginx_ha.lookup.packages | json }}
{%- if nginx_ha.pkg_refresh is not none %}
    - refresh: {{ nginx_ha.pkg_refresh | json }}
{%- endif %}
