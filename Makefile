# The README's two set-up commands: `make demo` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench install system-deps

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# mosquitto is needed only by the uplink tests, mosquitto_sub (mosquitto-clients) by the test that pipes
# its output through `edge-agent decode`; installed from Debian when missing and we are root.
system-deps:
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	  else echo "mosquitto missing: sudo apt-get install mosquitto (uplink tests will be skipped)"; fi; }
	@command -v mosquitto_sub >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto-clients >/dev/null; \
	  else echo "mosquitto_sub missing: sudo apt-get install mosquitto-clients (the decode pipe test will be skipped)"; fi; }
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null; \
	  else echo "chromium missing: sudo apt-get install chromium fonts-noto-cjk (the report's browser test will be skipped)"; fi; }

demo: $(BIN)/.installed
	$(BIN)/edge-agent demo

test: $(BIN)/.installed system-deps
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed
	$(BIN)/edge-agent bench modbus
