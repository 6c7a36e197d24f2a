# gossipkv: `make run` starts a local three-node cluster, `make test` runs the whole default suite.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The modules setup.py compiles with mypyc: rebuilt in place whenever one of them changes.
BUILT := $(VENV)/.compiled
COMPILED_SRC := $(wildcard gossipkv/crdt/*.py gossipkv/store/*.py gossipkv/commands/*.py gossipkv/resp/*.py) gossipkv/cluster/outbox.py

.PHONY: run test lint bench bench-ae chaos system-deps clean

# Installed editable as plain Python, then compiled in place by $(BUILT).
$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	GOSSIPKV_PURE=1 $(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

$(BUILT): $(STAMP) $(COMPILED_SRC)
	@echo "compiling the request path with mypyc (about a minute)"
	$(PY) setup.py -q build_ext --inplace --force >$(VENV)/build.log 2>&1 || { tail -20 $(VENV)/build.log; exit 1; }
	touch $(BUILT)

# redis-server is the reference the differential tests and benchmarks compare against;
# redis-cli and redis-benchmark are how users drive gossipkv.
system-deps:
	@if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then \
		echo "installing redis-server and redis-tools"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server redis-tools >/dev/null; \
	fi

# Three nodes in three regions (eu-1, us-1, ap-1) on 127.0.0.1, clients on ports 6379-6381,
# forming one cluster; Ctrl-C stops all three.
run: $(BUILT)
	$(VENV)/bin/gossipkv local-cluster

lint: $(STAMP)
	$(VENV)/bin/ruff check gossipkv tests bench chaos
	$(VENV)/bin/mypy

test: $(BUILT) system-deps lint
	$(PY) -m pytest -q

bench: $(BUILT) system-deps
	$(PY) -m bench.run

# Anti-entropy on two nodes holding 1M keys: repair time and bytes for 1, 100 and 10,000
# differing keys, the in-sync check, and SET throughput during exchanges (bench/antientropy.py).
bench-ae: $(BUILT) system-deps
	$(PY) -m bench.antientropy

# Faults injected into real three-node clusters under load (partition, kill -9, SIGSTOP,
# loss and delay, a partition past the replication backlog); each prints PASS or FAIL.
chaos: $(BUILT)
	$(PY) -m chaos

clean:
	rm -rf $(VENV) build gossipkv/*.so gossipkv/*/*.so .pytest_cache .mypy_cache .ruff_cache .hypothesis
