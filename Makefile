# Vigil: two commands for a new user, `make demo` and `make test`.
PYTHON ?= python3
export VIGIL_STATE ?= $(CURDIR)/.vigil
PYTEST_ARGS ?=
export KAFKA_NODES ?= 1

.PHONY: lock setup infra-up infra-down demo test test-unit bench bench-recording ui-audit gpu-carry gpu-rehearsal lint format clean

lock:  ## regenerate requirements.lock (every package pinned with hashes) from pyproject.toml's ranges
	$(PYTHON) -m uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
	  --generate-hashes --upgrade --quiet --custom-compile-command "make lock" -o requirements.lock

setup:  ## install system packages, Python package (editable) and Kafka jars; idempotent
	bash deploy/local/setup.sh

infra-up: setup  ## start Kafka (KRaft; KAFKA_NODES=3: 3 brokers, SASL + ACLs), Redis; wait until healthy
	bash deploy/local/services.sh up

infra-down:  ## stop the local services and delete their throw-away data
	bash deploy/local/services.sh down

test: setup  ## unit + integration tests against real local services (started and stopped here)
	bash deploy/local/with-services.sh $(PYTHON) -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(PYTHON) -m pytest -m "not integration" $(PYTEST_ARGS)

demo: setup  ## the whole chain on real footage, end to end
	bash deploy/local/with-services.sh $(PYTHON) -m pipeline.cli demo $(DEMO_ARGS)

bench: setup
	bash deploy/local/with-services.sh sh -c '$(PYTHON) -m pipeline.cli bench --out BENCHMARKS.json && $(PYTHON) -m pipeline.cli alerts bench && $(PYTHON) -m pipeline.bench.recording --out BENCHMARKS-recording.json'

bench-recording: setup  ## the recording figures alone (BENCHMARKS.md, issue 24 section 5), a few minutes
	bash deploy/local/with-services.sh $(PYTHON) -m pipeline.bench.recording --out BENCHMARKS-recording.json

ui-audit: setup  ## Lighthouse (pinned in deploy/ui-audit) on every console page, phone and desktop, logged in (docs/console.md)
	bash deploy/ui-audit/setup.sh
	bash deploy/local/with-services.sh $(PYTHON) deploy/ui-audit/audit.py $(AUDIT_ARGS)

gpu-carry:  ## .gpu-carry/: wheels (pinned by requirements.lock) + footage + weights the GPU bench needs on a bare GPU machine (deploy/gpu/carry.py)
	$(PYTHON) deploy/gpu/carry.py build --out .gpu-carry

gpu-rehearsal: gpu-carry  ## deploy/gpu/bench_gpu.sh on the CPU, in a Python 3.12 venv holding only what the GPU machine has
	PYTHON=$(PYTHON) bash deploy/gpu/rehearse.sh

lint:  ## ruff, the import contracts (docs/architecture.md), the k8s manifests (deploy/k8s/check.py)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -c "from importlinter.cli import lint_imports_command; lint_imports_command()"
	$(PYTHON) deploy/k8s/check.py

format:
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

clean:
	rm -rf $(VIGIL_STATE) .pytest_cache build *.egg-info
