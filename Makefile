# FireLink: `make demo` runs an alarm end to end on a virtual device; `make test` runs every test.
# Both install what they need: a virtual environment with pinned packages and, when missing,
# mosquitto from Debian's packages (as root; otherwise they say how to install it).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt host_tools/pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: test test-firmware test-host test-hil demo bench pinmap board-check deps mosquitto clean

deps: $(STAMP) mosquitto

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

test: deps
	$(BIN)/pytest $(PYTEST_ARGS)

test-firmware: deps
	$(BIN)/pytest tests/firmware $(PYTEST_ARGS)

test-host: deps
	$(BIN)/pytest tests/host $(PYTEST_ARGS)

test-hil: deps
	$(BIN)/pytest tests/hil $(PYTEST_ARGS)

demo: deps
	$(BIN)/firelink demo

bench: deps
	$(BIN)/python -m tests.bench.run

# hardware/pinmap-<board>.md is generated from hardware/boards/<board>.json (a test fails when they disagree).
pinmap: deps
	$(BIN)/python -m firelink.boarddoc --write

board-check: deps
	$(BIN)/python -m firelink.boardcheck

clean:
	rm -rf $(VENV) build run .pytest_cache
