# nginx-ha: `make demo` and `make test` are the two commands; each installs what it needs first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest

.PHONY: setup demo test test-unit test-integration test-cluster lab-clean bench bench-quick test-cluster-systemd

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m lab.demo

test: setup
	$(PYTEST) tests

test-unit: setup
	$(PYTEST) tests/unit

test-integration: setup
	$(PYTEST) tests/integration

test-cluster: setup
	$(PYTEST) tests/cluster

# The cluster tier on lab hosts that boot systemd as PID 1 (make test covers that kind with
# tests/cluster/test_systemd_hosts.py and test_firewall.py).
test-cluster-systemd: setup
	NGINX_HA_LAB_INIT=systemd $(PYTEST) tests/cluster

# Remove what an interrupted lab run may have left (namespaces, links, processes).
lab-clean: setup
	$(PY) -m lab.cleanup

# Failover benchmark: our defaults vs the tutorial's setup on the same lab, then the control-plane scale phase (as root; ~25 min).
# Results in bench-results/ (results.json, scale.json, PNG timelines; docs/failover.png for the README). BENCH_TRIALS=18 for more trials.
bench: setup
	$(PY) -m bench

# Smoke run of the benchmark: every scenario once per profile, a 2-minion scale phase (~6 min); docs/failover.png untouched.
bench-quick: setup
	$(PY) -m bench --quick
