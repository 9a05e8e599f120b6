# sensor-service: `make dev` runs it locally, `make test` tests it. Needs Python >= 3.11.
PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
UV := $(VENV)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON_DOWNLOADS := never

.PHONY: install dev test lint format check-docker bench-devdata clean

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# The lock file pins every package; --inexact keeps the uv that bootstrapped the venv.
$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-groups --inexact --python $(VENV)/bin/python
	touch $@

install: $(VENV)/.installed ## Create .venv with everything to run, test and benchmark

dev: install ## Start PostgreSQL/S3 if needed, seed demo data, serve http://127.0.0.1:8000
	$(VENV)/bin/python -m app.devstack

test: install ## Run the test suite against real PostgreSQL and SeaweedFS
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: install ## ruff check, ruff format --check, mypy
	$(VENV)/bin/ruff check app tests bench
	$(VENV)/bin/ruff format --check app tests bench
	$(VENV)/bin/mypy app tests bench

format: install
	$(VENV)/bin/ruff check --fix app tests bench
	$(VENV)/bin/ruff format app tests bench

check-docker: install ## Validate the Dockerfile and docker-compose.yml without an engine
	$(VENV)/bin/hadolint Dockerfile
	docker-compose config -q

bench-devdata: install ## Measure the dataset generator against a plain disk write
	$(VENV)/bin/python bench/devdata.py --preset 5m

clean:
	rm -rf $(VENV) .dev .mypy_cache .ruff_cache .pytest_cache
