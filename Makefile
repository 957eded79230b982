# FireLink: `make demo` runs an alarm end to end on a virtual device; `make test` runs every test.
# Both install what they need: a virtual environment with pinned packages and, when missing,
# mosquitto from Debian's packages (as root; otherwise they say how to install it), and build the
# broker's certificate-binding plugin (mosquitto_plugin/, with mosquitto's and OpenSSL's headers).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt host_tools/pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=
# The suites run across pytest-xdist workers (PYTEST_JOBS; JIG_JOBS for make test's jig pass).
# Their tests mostly wait (on a device, a broker, a deadline: run in one process they keep one core
# about 20 % busy), so there are more workers than this machine's 2 cores. Tests go out one at a
# time (--maxschedchunk 1) in the order tests/conftest.py gives them, the long HIL scenarios
# first. PYTEST_JOBS=1: one process.
PYTEST_JOBS ?= 4
JIG_JOBS ?= 2
xdist = $(if $(filter-out 0 1,$(1)),-n $(1) --maxschedchunk 1)
XDIST = $(call xdist,$(PYTEST_JOBS))
PLUGIN := build/fl_certbind.so

.PHONY: test test-all test-jig-pass test-firmware test-host test-hil test-hil-jig test-hil-nojig test-hil-board demo bench pinmap board-check jig-check deps mosquitto mosquitto-dev plugin clean

deps: $(STAMP) mosquitto plugin

$(STAMP): requirements.txt host_tools/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "FireLink needs Python 3.10 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e host_tools
	rm -f $(VENV)/.installed-*
	touch $@

mosquitto:
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing mosquitto from Debian's packages"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null; \
	else \
		echo "mosquitto is missing: install it with 'sudo apt-get install mosquitto mosquitto-clients', then run make again" >&2; \
		exit 1; \
	fi

# The TLS listener's username must be the client certificate's CN (docs/threat-model.md):
# firelink.site.broker copies this plugin next to the broker's files and names it in mosquitto.conf.
plugin: $(PLUGIN)

$(PLUGIN): mosquitto_plugin/fl_certbind.c | mosquitto-dev
	@mkdir -p $(dir $@)
	$(CC) -std=c99 -Wall -Wextra -Werror -O2 -fPIC -shared -o $@ $< -lcrypto

mosquitto-dev:
	@if [ -f /usr/include/mosquitto_broker.h ] && [ -f /usr/include/mosquitto.h ] && \
		[ -f /usr/include/openssl/x509.h ] && command -v $(CC) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing mosquitto's plugin headers, OpenSSL's and a C compiler from Debian's packages"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto-dev libmosquitto-dev libssl-dev gcc >/dev/null; \
	else \
		echo "the broker plugin needs headers: install them with 'sudo apt-get install mosquitto-dev libmosquitto-dev libssl-dev gcc', then run make again" >&2; \
		exit 1; \
	fi

# Every test, and the HIL scenarios that drive something a jig provides (inputs, EOL, power,
# reset, indicators: `-m jig`) again through the simulated test jig (issue 13: the jig firmware
# under the unix port on a pty driving the virtual device; link faults through the proxy; the
# others would only repeat the first pass: `make test-hil-jig` runs them all), and the board
# stand-in without a jig (`make test-hil-nojig`: the virtual device's port as `--dut`, provisioned
# through the REPL as a board is; every scenario needing the jig skipped with its reason, the
# rest pass, and tests/hil/standin_check.py fails the stage if it did not test what it could).
# The stages (TEST_STAGES) run side by side, each printed whole when it ends, so that a long
# scenario run in two of them costs its time once; make fails if any stage fails. The stand-in
# drives one device, so its scenarios run one at a time.
TEST_STAGES := test-all test-jig-pass test-hil-nojig

test: deps
	@echo "make test: $(TEST_STAGES) side by side; each one's output follows when it ends"
	@$(MAKE) --no-print-directory -j$(words $(TEST_STAGES)) --output-sync=target $(TEST_STAGES)

test-all: deps
	$(BIN)/pytest $(XDIST) $(PYTEST_ARGS)

test-jig-pass: deps
	$(BIN)/pytest tests/hil --jig sim -m jig $(call xdist,$(JIG_JOBS)) $(PYTEST_ARGS)

test-firmware: deps
	$(BIN)/pytest tests/firmware $(XDIST) $(PYTEST_ARGS)

test-host: deps
	$(BIN)/pytest tests/host $(XDIST) $(PYTEST_ARGS)

test-hil: deps
	$(BIN)/pytest tests/hil $(XDIST) $(PYTEST_ARGS)

test-hil-jig: deps
	$(BIN)/pytest tests/hil --jig sim $(XDIST) $(PYTEST_ARGS)

test-hil-nojig: deps
	$(BIN)/python -m tests.hil.standin $(PYTEST_ARGS)

# The board-and-jig path end to end: the virtual device's port stands in for a board, a simulated
# jig's port for the jig (--dut PTY --jig PTY): provisioning through the REPL, the serial jig.
test-hil-board: deps
	$(BIN)/python -m tests.hil.standin --with-jig $(PYTEST_ARGS)

demo: deps
	$(BIN)/firelink demo

bench: deps
	$(BIN)/python -m tests.bench.run

# hardware/pinmap-<board>.md is generated from hardware/boards/<board>.json (a test fails when they disagree).
pinmap: deps
	$(BIN)/python -m firelink.board.boarddoc --write

board-check: deps
	$(BIN)/python -m firelink.board.boardcheck

# hardware/jig.json (the test jig's wiring) against the Pico's pins and hardware/board.json.
jig-check: deps
	$(BIN)/python -m firelink.board.jigcheck

clean:
	rm -rf $(VENV) build run .pytest_cache
