# Every target creates (or refreshes) its own virtualenv in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv test check lint typecheck demo bench bench-quick reliability stack-up stack-down clean

help:
	@echo "make demo         run the evil-cat demo: server + traffic + terminal view (DEMO_SECONDS=N bounds it)"
	@echo "make test         set up .venv and run the whole test suite"
	@echo "make check        ruff + mypy --strict on the package"
	@echo "make bench        benchmarks (bench-quick: under a minute)"
	@echo "make reliability  rerun the reliability suite and print its figures"
	@echo "make stack-up     Prometheus + Grafana + Alertmanager compose stack (needs Docker)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,demo,bench,dev]'
	@touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

check: $(STAMP)
	$(BIN)/ruff check mcp_metrics_middleware tests demo benchmarks
	$(BIN)/ruff format --check mcp_metrics_middleware
	$(BIN)/mypy

lint: check

demo: $(STAMP)
	$(BIN)/python -m demo.run

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.run --quick $(BENCH_ARGS)

reliability: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests/reliability -p no:cacheprovider -s

stack-up:
	@docker compose version >/dev/null 2>&1 || { echo "make stack-up: needs Docker with the compose plugin ('docker compose version' failed)"; exit 1; }
	cd deploy && docker compose up -d --build
	@echo "Grafana: http://127.0.0.1:3000  Prometheus: http://127.0.0.1:9090  Alertmanager: http://127.0.0.1:9093"

stack-down:
	@docker compose version >/dev/null 2>&1 || { echo "make stack-down: needs Docker with the compose plugin"; exit 1; }
	cd deploy && docker compose down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
