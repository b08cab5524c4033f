# The two set-up commands of the README: `make app` and `make test`. Each creates .venv and
# installs what it needs the first time (and again when a requirements file changes).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: app test

$(VENV)/.app-installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.test-installed: requirements-test.txt requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $@

app: $(VENV)/.app-installed
	$(PY) -m streamlit run app.py

test: $(VENV)/.test-installed
	scripts/ensure-chromium
	$(PY) -m pytest
