# Batchboard: `make run` starts everything, `make test` runs the whole suite. Nothing else to install.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
SIM_PORT ?= 8100
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: run test setup bench-smoke clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: $(BIN)/python requirements.txt
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

var:
	mkdir -p var

# Local runs keep a generated encryption key in var/ (git-ignored); production sets BATCHBOARD_ENCRYPTION_KEYS.
var/encryption.key: | var $(VENV)/.runtime
	$(BIN)/python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())' > $@
	chmod 600 $@

setup: $(VENV)/.runtime var/encryption.key
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py migrate --no-input
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py bootstrap --simulator-url http://127.0.0.1:$(SIM_PORT)/v1

run: setup
	@DEBUG=$${DEBUG:-1} HOST=$(HOST) PORT=$(PORT) SIM_PORT=$(SIM_PORT) BIN=$(BIN) bash dashboard/run.sh

test: $(VENV)/.dev | var
	@bash tests/ensure-chromium.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Every benchmark at a tiny size, so none of them rots (CI runs this); full sizes are the scripts' defaults.
bench-smoke: $(VENV)/.dev | var
	$(BIN)/python bench/sync.py --sizes 150,300 --active 5 --polls 20
	$(BIN)/python bench/pages.py --batches 300 --snapshots 3000 --detail-snapshots 500 --rounds 1 --request-batches 3 --requests-per-batch 400
	$(BIN)/python bench/download.py --megabytes 5
	$(BIN)/python bench/results.py --requests 2000 --megabytes 8
	$(BIN)/python bench/retry.py --requests 2000 --megabytes 8
	$(BIN)/python bench/import_budget.py --batches 600 --latency-ms 20 --budget 0.3
	$(BIN)/python bench/freshness.py --changes 2 --max-minutes 1
	$(BIN)/python bench/scale_out.py --connections 2 --batches 200 --active 5 --workers 1 --minutes 0.3
	$(BIN)/python bench/webhooks.py --changes 2 --max-minutes 1
	$(BIN)/python bench/metrics.py --batches 2000 --rounds 3
	$(BIN)/python bench/usage.py --batches 2000 --rounds 2

clean:
	rm -rf $(VENV) var
