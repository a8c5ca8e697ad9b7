# gridgate developer tasks. `make` alone lists them.
#
# Local services (see scripts/services.sh) listen on 127.0.0.1 only; override the ports with
#   make test GRIDGATE_MQTT_PORT=... GRIDGATE_INFLUX_PORT=... GRIDGATE_INFLUX_RPC_PORT=...

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
MAKEFLAGS += --no-print-directory

GRIDGATE_MQTT_PORT ?= 18830
GRIDGATE_INFLUX_PORT ?= 18086
GRIDGATE_INFLUX_RPC_PORT ?= 18088
export GRIDGATE_MQTT_PORT GRIDGATE_INFLUX_PORT GRIDGATE_INFLUX_RPC_PORT

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
SERVICES := scripts/services.sh
# root needs no sudo; anyone else installs Debian packages through it
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: help venv services stop lint test demo bench bench-peers bench-alerts bench-storm bench-api clean key node-red

help: ## list the targets
	@echo "gridgate make targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'
	@echo "ports: MQTT $(GRIDGATE_MQTT_PORT), InfluxDB $(GRIDGATE_INFLUX_PORT) (rpc $(GRIDGATE_INFLUX_RPC_PORT)), all on 127.0.0.1"

venv: $(STAMP) ## create .venv and install gridgate with the dev extra (editable)

$(STAMP): pyproject.toml
	@if ! command -v $(PYTHON) >/dev/null 2>&1; then \
	  echo "venv: $(PYTHON) not found; installing Debian's python3"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 \
	    || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3; }; \
	fi
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "venv: need Python >= 3.11, $(PYTHON) is $$($(PYTHON) -V 2>&1)" >&2; exit 1; }
	@if ! $(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1; then \
	  echo "venv: python3 -m venv unavailable; installing Debian's python3-venv"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv \
	    || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv; }; \
	fi
	@if [ -d $(VENV) ] && ! $(VENV)/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then \
	  echo "venv: $(VENV) is broken or too old; recreating"; rm -rf $(VENV); \
	fi
	@[ -x $(VENV)/bin/pip ] || { echo "venv: creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "venv: pip install -e '.[dev]'"
	@$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $@

services: ## start Mosquitto + InfluxDB on 127.0.0.1 (idempotent)
	@$(SERVICES) start

stop: ## stop the services started by `make services`
	@$(SERVICES) stop

lint: $(STAMP) ## ruff check + mypy (strict)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: $(STAMP) services key lint ## venv, services, lint, then pytest -n 2
	$(VENV)/bin/pytest -n 2 --dist loadgroup -p no:cacheprovider

KEY_FILE := .run/gridgate/pseudonym.key

key: $(STAMP) ## create the local pseudonymisation key (.run/gridgate/pseudonym.key) if missing
	@$(VENV)/bin/python -m privacy.keys ensure $(KEY_FILE)

demo: $(STAMP) services key ## run the end-to-end demo against the local services
	$(VENV)/bin/gridgate demo $(DEMO_ARGS)

bench: $(STAMP) services ## ingest benchmark against the local services
	$(VENV)/bin/python -m bench.ingest

NODE_RED := .run/node-red
NODE_RED_PACKAGES := node-red@4 node-red-contrib-influxdb@0.7

node-red: ## Node-RED 4 + node-red-contrib-influxdb into .run/node-red (Node and npm from Debian)
	@if ! command -v npm >/dev/null 2>&1; then \
	  echo "node-red: npm not found; installing Debian's nodejs and npm"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm \
	    || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm; }; \
	fi
	@[ -x $(NODE_RED)/node_modules/.bin/node-red ] || { echo "node-red: npm install $(NODE_RED_PACKAGES)"; \
	  mkdir -p $(NODE_RED) && npm install --no-audit --no-fund --silent --prefix $(NODE_RED) $(NODE_RED_PACKAGES); }

bench-peers: $(STAMP) services node-red ## gridgate beside mosquitto_sub, a naive paho loop and Node-RED
	$(VENV)/bin/python -m bench.peers $(PEERS_ARGS)

bench-alerts: $(STAMP) services ## level-I alert latency (p50/p99) under full community load
	$(VENV)/bin/python -m bench.alert_latency

bench-storm: $(STAMP) services ## 10-minute hostile + alarm-storm run, notifications vs bound
	$(VENV)/bin/python -m bench.alarm_storm

bench-api: $(STAMP) services ## API latency (alert list, readings history, raise-to-WebSocket) under load
	$(VENV)/bin/python -m bench.api

clean: ## stop services, remove .run, .venv and egg-info
	@if [ -x $(SERVICES) ]; then $(SERVICES) stop; fi
	rm -rf .run $(VENV) *.egg-info
