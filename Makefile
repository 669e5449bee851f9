# Two commands do everything on a fresh machine:
#   make run    install, check serve_config.yaml, serve it on 127.0.0.1:8000
#   make test   install with test extras, run the whole suite
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; install it first so nothing pulls a CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install install-test run run-haproxy check lint test clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[server]'

install-test: $(PY)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[server,test,bench]'

check: install
	$(PY) -m longserve.server.check serve_config.yaml

run: check
	$(VENV)/bin/serve run serve_config.yaml

# The same behind Ray Serve's HAProxy ingress (less CPU per request, job uploads
# flow-controlled; it also opens a stats page and a metrics port on every interface):
# docs/benchmarks.md.
run-haproxy: check
	RAY_SERVE_ENABLE_HA_PROXY=1 $(VENV)/bin/serve run serve_config.yaml

# ruff (lint and format) and mypy over the package, then the whole suite.
lint: install-test
	$(VENV)/bin/ruff check longserve
	$(VENV)/bin/ruff format --check longserve
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) *.egg-info
