# Every node of the cluster gets the one cluster description; nodes find their role by minion id.
base:
  'web-*':
    - nginx_ha
