# arqond: the two commands users need are `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := socat jq tmux mandoc iproute2 util-linux procps
# The benchmarks' load generator (node; npm comes with it or as Debian's npm), brokers, shell peers.
BENCH_APT_PACKAGES := nodejs nats-server mosquitto inotify-tools jq
PYTEST_ARGS ?=

.PHONY: run test setup system-deps clean bench bench-quick bench-deps bench-system-deps

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

# Debian packages the daemon's tests drive (socat, jq, tmux as the seed's shell examples use).
system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# Set up and run arqond in the foreground with the default configuration.
run: setup
	install -d -m 0755 /var/lib/arqond /run/arqond
	install -d -m 2775 /var/moo /var/log/moo
	$(VENV)/bin/arqond $(ARGS)

# Set up and pass the whole test suite.
test: setup system-deps
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Benchmarks (bench/README.md): Python peers and uvloop into the venv, Node's ws into
# bench/node_modules from the lockfile. Brokers (nats-server, mosquitto) come from apt.
bench/node_modules/.installed: bench/package.json bench/package-lock.json
	cd bench && npm ci --no-audit --no-fund --silent
	touch $@

$(VENV)/.bench-installed: $(VENV)/.installed bench/requirements.txt
	$(PY) -m pip install --quiet -r bench/requirements.txt
	touch $@

bench-system-deps:
	@$(MAKE) --no-print-directory system-deps APT_PACKAGES="$(BENCH_APT_PACKAGES)"

bench-deps: bench-system-deps $(VENV)/.bench-installed bench/node_modules/.installed

# Every scenario, repeated, with uvloop and the brokers; prints the table, writes bench/results.json.
bench: bench-deps
	$(PY) -m bench $(BENCH_ARGS)

# The reduced suite, under a minute.
bench-quick: bench-deps
	$(PY) -m bench --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache bench/node_modules
