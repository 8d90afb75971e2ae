#!/bin/bash
# Baseline profile: the tutorial's check script, verbatim but for the heredoc escapes and
# `systemctl stop keepalived` -> the init script (the lab has no systemd).
counter=$(ps -C nginx --no-heading|wc -l)
if [ "${counter}" = "0" ]; then
    /usr/sbin/nginx
    sleep 2
    counter=$(ps -C nginx --no-heading|wc -l)
    if [ "${counter}" = "0" ]; then
        /etc/init.d/keepalived stop
    fi
fi
