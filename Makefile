# The two set-up commands of the README: `make app` and `make test`. Each creates .venv and
# installs what it needs the first time (and again when a requirements file changes), prunekit
# itself included (editable), so `import prunekit` works from any folder.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: app serve test lint format

$(VENV)/.app-installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

$(VENV)/.test-installed: requirements-test.txt requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

app: $(VENV)/.app-installed
	$(PY) -m streamlit run app.py

# Served to others (README, "Serving the app to others"): every interface unless ADDRESS is given,
# uploads up to 20 MB, no tracebacks; folders only from PRUNEKIT_MODEL_ROOTS / PRUNEKIT_DATA_ROOTS.
ADDRESS ?= 0.0.0.0
serve: $(VENV)/.app-installed
	PRUNEKIT_SERVE=1 $(PY) -m streamlit run app.py --server.address $(ADDRESS) \
		--server.maxUploadSize 20 --client.showErrorDetails none --client.toolbarMode viewer

test: $(VENV)/.test-installed
	scripts/ensure-chromium
	$(PY) -m pytest

lint: $(VENV)/.test-installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(VENV)/.test-installed
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .
