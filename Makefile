# ESP RainMaker agent for MicroPython: host-side entry points.
# `make help` lists the targets.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
CLOUD   ?= .cloud
BOARD_DIR ?= .sim/board

.DEFAULT_GOAL := help
.PHONY: help sim test typecheck bench console cloud bundle clean distclean firmware

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.ok: requirements.txt
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found: install Python 3.10+"; exit 1; }
	@echo "Creating $(VENV) and installing host dependencies (one time)..."
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements.txt
	$(VPY) -m tools.typecheck --stubs  # .venv/esp32-stubs, named by pyrightconfig.json
	@touch $@

sim: $(VENV)/.ok ## Bring a simulated board online against a local mTLS broker (MICROPYTHON=bin: on MicroPython)
	$(VPY) -m tools.simulate --cloud $(CLOUD) --board $(BOARD_DIR) $(if $(MICROPYTHON),--micropython $(MICROPYTHON)) $(ARGS)

test: $(VENV)/.ok ## Run the whole test suite
	$(VPY) -m pytest tests -q

firmware: $(VENV)/.ok ## MicroPython with the agent frozen in: make firmware MICROPYTHON_SRC=<checkout> [ARGS=--board ...]
	@test -n "$(MICROPYTHON_SRC)" || { echo "error: set MICROPYTHON_SRC to a MicroPython source checkout (git clone https://github.com/micropython/micropython)"; exit 1; }
	$(VPY) -m tools.firmware --micropython $(MICROPYTHON_SRC) $(ARGS)

typecheck: $(VENV)/.ok ## Type-check firmware/ against the ESP32 MicroPython stubs (part of make test)
	$(VPY) -m tools.typecheck

bench: $(VENV)/.ok ## Run the benchmarks (printed, not asserted)
	$(VPY) -m tests.bench

cloud: $(VENV)/.ok ## Run only the local cloud (broker, recorder, OTA file server) in the foreground
	$(VPY) -m tools.cloud --dir $(CLOUD) $(ARGS)

console: $(VENV)/.ok ## Cloud-side console, e.g. make console ARGS="set <node> Light.Power=true"
	$(VPY) -m tools.console --dir $(CLOUD) $(ARGS)

bundle: $(VENV)/.ok ## App bundle for OTA: make bundle ARGS="--version 1.2.0 --chip esp32 -o app.rmb"
	$(VPY) -m tools.bundle $(ARGS)

clean: ## Remove the simulated board and recorded cloud state (keeps the CA, identities, venv)
	rm -rf .sim $(CLOUD)/nodes $(CLOUD)/traffic.log* $(CLOUD)/ota $(CLOUD)/otaserver.log* .pytest_cache

distclean: clean ## Also remove the venv and the whole local cloud: the CA and every key in it
	@echo "Removing $(CLOUD) (CA and device identities) and $(VENV)."
	rm -rf $(VENV) $(CLOUD)

# ---------------------------------------------------------------- real boards
# PORT is the board's serial port (/dev/ttyUSB0, /dev/ttyACM0, ...).
.PHONY: flash deploy repl logs identity hil
NEED_PORT = $(if $(PORT),,$(error give the board's serial port, e.g. PORT=/dev/ttyUSB0))

flash: $(VENV)/.ok ## Flash MicroPython: make flash PORT=/dev/ttyUSB0 FIRMWARE=ESP32_GENERIC-OTA-...bin
	$(NEED_PORT)$(VPY) -m tools.flash --port $(PORT) $(if $(FIRMWARE),--firmware $(FIRMWARE)) $(ARGS)

identity: $(VENV)/.ok ## Device key + certificate from the local CA: make identity PORT=... (or NODE_ID=...)
	$(if $(NODE_ID),,$(NEED_PORT))$(VPY) -m provisioning.identity issue $(if $(NODE_ID),$(NODE_ID),--port $(PORT)) $(ARGS)

deploy: $(VENV)/.ok ## Deploy agent, app and credentials: make deploy PORT=... (or BOARD=sim)
	@# not echoed: ARGS may hold a Wi-Fi password
	@$(if $(filter sim,$(BOARD)),,$(NEED_PORT))$(VPY) -m tools.deploy $(if $(filter sim,$(BOARD)),--sim --board-dir $(BOARD_DIR),--port $(PORT)) $(ARGS)

repl: $(VENV)/.ok ## MicroPython REPL on the board (Ctrl-] leaves): make repl PORT=...
	$(NEED_PORT)$(VENV)/bin/mpremote connect $(PORT) repl

logs: $(VENV)/.ok ## Follow the board's serial log: make logs PORT=... [ARGS=--reset]
	$(NEED_PORT)$(VPY) -m tools.logs --port $(PORT) $(ARGS)

hil: $(VENV)/.ok ## Hardware test: flash, deploy, node online: make hil PORT=... [FIRMWARE=...bin]
	$(NEED_PORT)RM_HIL_PORT=$(PORT) RM_HIL_FIRMWARE=$(FIRMWARE) $(VPY) -m pytest tests/test_flash.py -q -k hil -rs
