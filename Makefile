# ESP RainMaker agent for MicroPython: host-side entry points.
# `make help` lists the targets.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
CLOUD   ?= .cloud
BOARD_DIR ?= .sim/board

.DEFAULT_GOAL := help
.PHONY: help sim test bench console cloud clean distclean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.ok: requirements.txt
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found: install Python 3.10+"; exit 1; }
	@echo "Creating $(VENV) and installing host dependencies (one time)..."
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements.txt
	@touch $@

sim: $(VENV)/.ok ## Bring a simulated board online against a local mTLS broker
	$(VPY) -m tools.simulate --cloud $(CLOUD) --board $(BOARD_DIR) $(ARGS)

test: $(VENV)/.ok ## Run the whole test suite
	$(VPY) -m pytest tests -q

bench: $(VENV)/.ok ## Run the benchmarks (printed, not asserted)
	$(VPY) -m tests.bench

cloud: $(VENV)/.ok ## Run only the local cloud (broker + recorder) in the foreground
	$(VPY) -m tools.cloud --dir $(CLOUD)

console: $(VENV)/.ok ## Cloud-side console, e.g. make console ARGS="set <node> Light.Power=true"
	$(VPY) -m tools.console --dir $(CLOUD) $(ARGS)

clean: ## Remove the simulated board and local cloud state (keeps the venv)
	rm -rf .sim $(CLOUD) .pytest_cache

distclean: clean ## Also remove the virtual environment
	rm -rf $(VENV)
