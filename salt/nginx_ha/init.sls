{#- nginx_ha: keepalived + nginx high availability from one cluster pillar.
    `salt -C 'I@nginx_ha:vrrp_instances' state.apply nginx_ha` (after `saltutil.sync_all`). #}
include:
  - nginx_ha.package
  - nginx_ha.sysctl
  - nginx_ha.scripts
  - nginx_ha.watcher
  - nginx_ha.nginx
  - nginx_ha.keepalived
  - nginx_ha.events
  - nginx_ha.service
  - nginx_ha.grains
