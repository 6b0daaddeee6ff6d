# The two commands a new user needs: `make demo` and `make test`. Each sets itself up.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(PYTHON) -m uv
VENV := .venv
BIN := $(VENV)/bin
AXE := tests/axe/node_modules/.package-lock.json

ENGINE ?= builtin

.PHONY: demo test lint setup system clean bench release sanitize

# uv installs exactly what uv.lock pins; it is itself pinned and installed with pip. It builds
# the compiled relay core too (balancer._relay; without gcc the engine runs its Python relay).
$(BIN)/.synced: pyproject.toml uv.lock $(wildcard balancer/engines/builtin/core/*.[ch])
	@$(PYTHON) -m uv --version 2>/dev/null | grep -q " $(UV_VERSION)" || \
		$(PYTHON) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(UV) sync --frozen --quiet
	@touch $@

setup: $(BIN)/.synced

# The HAProxy engine runs Debian's haproxy; the tests run every scenario on both engines.
# The WebUI's browser tests drive Debian's chromium; npm installs their accessibility checker
# (Debian's npm only where there is none: a NodeSource nodejs carries its own and conflicts).
# The HA pair's floating IPs are Debian's keepalived (its package's own service stays unused).
# Directory sign-in's tests start their own slapd and freeradius on loopback (the packages'
# own services stay unused). gcc and the Python headers build the compiled relay core.
PYTHON_H = $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h
system:
	@command -v haproxy >/dev/null && command -v chromium >/dev/null && command -v npm >/dev/null && \
		command -v keepalived >/dev/null && command -v slapd >/dev/null && \
		command -v ldapadd >/dev/null && command -v freeradius >/dev/null && \
		command -v gcc >/dev/null && test -f "$(PYTHON_H)" || \
		{ apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy chromium keepalived \
		slapd ldap-utils freeradius gcc python3-dev \
		$$(command -v npm >/dev/null || echo npm) >/dev/null; }

# axe-core, the accessibility checker the WebUI's pages are run through, exactly as the lock pins.
$(AXE): tests/axe/package.json tests/axe/package-lock.json | system
	npm ci --prefix tests/axe --no-audit --no-fund --silent
	@touch $@

demo: setup
	@if [ "$(ENGINE)" = haproxy ]; then $(MAKE) --no-print-directory system; fi
	$(BIN)/balancer demo --engine $(ENGINE)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo --no-cache

# The suite waits on real processes (keepalived, HAProxy, chromium) and timers far more than it
# computes, so it runs on TEST_WORKERS pytest-xdist workers; a module stays on one worker
# (--dist loadscope), so its module-scoped fixtures start once. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 4
test: lint system $(AXE)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadscope
	$(MAKE) --no-print-directory sanitize

# The compiled relay core built with AddressSanitizer and UndefinedBehaviorSanitizer into a
# directory of its own, and the relay suite run on it alone: its engines load that build, with
# the sanitizers' runtime preloaded (tests/relay/conftest.py). A report from either fails the
# run and is shown. Leaks are left to the suite's soak: the interpreter's own would drown them.
SANITIZE := build/sanitize
sanitize: setup system
	@rm -rf $(SANITIZE) && mkdir -p $(SANITIZE)
	$(CC) -shared -fPIC -std=gnu11 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
		-fno-sanitize-recover=all -Wall -Wextra -Wno-unused-parameter \
		-I$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])') \
		-o $(SANITIZE)/_relay.so balancer/engines/builtin/core/relay.c
	BALANCER_SANITIZED=$(CURDIR)/$(SANITIZE)/_relay.so \
	SANITIZER_PRELOAD=$$($(CC) -print-file-name=libasan.so) \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:log_path=$(CURDIR)/$(SANITIZE)/report \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$(CURDIR)/$(SANITIZE)/report \
		$(BIN)/pytest -q -p no:cacheprovider tests/relay -k "core and not crash"; passed=$$?; \
	if ls $(SANITIZE)/report.* >/dev/null 2>&1; then cat $(SANITIZE)/report.*; exit 1; fi; \
	exit $$passed

# The built-in engine and HAProxy side by side (README, Performance); not part of `make test`.
# BENCH_ARGS=--quick for a short run while developing; python -m bench --help for the rest.
BENCH_ARGS ?=
# perf profiles the targets the built-in engine does not meet (bench/profile.py).
bench: setup system
	@command -v $(CC) >/dev/null && command -v perf >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc linux-perf >/dev/null; }
	@mkdir -p bench/build
	$(CC) -O2 -Wall -Wextra -o bench/build/loadgen bench/loadgen.c
	$(CC) -O2 -Wall -Wextra -o bench/build/backends bench/backends.c
	$(BIN)/python -m bench $(BENCH_ARGS)

# The offline update archive (README, Software Update): the wheel, the wheels of uv.lock's pins
# for this platform (pip checks each against the lock's hashes), and a manifest signed with the
# release private key, whose path RELEASE_KEY names; the key is never in the repository.
RELEASE := dist/release
release: setup
	@test -n "$(RELEASE_KEY)" || { echo "make release: RELEASE_KEY must name the release private key (PEM)" >&2; exit 2; }
	rm -rf $(RELEASE) && mkdir -p $(RELEASE)/wheels
	$(UV) build --wheel --quiet --out-dir $(RELEASE)/wheels
	$(UV) export --frozen --no-dev --no-emit-project --quiet --output-file $(RELEASE)/requirements.txt
	$(PYTHON) -m pip download --quiet --disable-pip-version-check --only-binary=:all: --no-deps \
		--requirement $(RELEASE)/requirements.txt --dest $(RELEASE)/wheels
	$(BIN)/python -m balancer.release --key "$(RELEASE_KEY)" --out dist \
		$(RELEASE)/requirements.txt $(RELEASE)/wheels/*.whl

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache tests/axe/node_modules
