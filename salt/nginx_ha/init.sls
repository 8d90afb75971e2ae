{#- nginx_ha: keepalived + nginx high availability from one cluster pillar.
    `salt -C 'I@nginx_ha:vrrp_instances' state.apply nginx_ha` (after `saltutil.sync_all`).
    Every SLS below also applies on its own: each includes what its states require (relative
    includes, so the formula works under any directory name of file_roots). #}
include:
  - .package
  - .sysctl
  - .firewall
  - .scripts
  - .watcher
  - .nginx
  - .keepalived
  - .events
  - .service
  - .metrics
  - .grains
