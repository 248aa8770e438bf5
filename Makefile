# Every target sets itself up: a virtualenv in .venv with the pinned requirements.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-devstack.txt requirements-dev.txt | cksum | cut -d' ' -f1)
# demo and up install only what they run (the runtime and moto); a full install covers them too.
RUN_STAMP := $(VENV)/.installed-run-$(shell cat requirements.txt requirements-devstack.txt | cksum | cut -d' ' -f1)

.PHONY: demo up test lint scan format bench browser examples peers clean

demo: $(RUN_STAMP)  ## run the whole product locally: MLflow + S3 + watcher + wrapper, then clean up
	$(PY) -m devstack.demo

up: $(RUN_STAMP)  ## keep MLflow (UI) + S3 + the watcher (local target, webhooks) running until Ctrl-C
	$(PY) -m devstack.up

test: $(STAMP) browser peers  ## run the test suite against real MLflow, moto S3, kmock, uvicorn and Chromium
	$(PY) -m pytest -n 3 --dist loadfile

peers: $(STAMP)  ## the V2 peers' virtualenvs (MLServer + mlserver-mlflow + tritonclient; KServe), once, cached
	$(PY) -m tests.wrapper.oip_peers

lint: $(STAMP)  ## ruff + mypy + the layers (import-linter contracts in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

scan: $(STAMP)  ## checkov over the rendered model manifests and the cronjob/ kit (its own .venv-checkov)
	$(PY) -m devstack.scan

examples: $(STAMP)  ## re-render docs/examples/ after a template change
	$(PY) -m devstack.examples

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)  ## benchmarks; results go to BENCHMARKS.md by hand
	$(PY) -m bench.wrapper
	$(PY) -m bench.reconcile
	$(PY) -m bench.latency
	$(PY) -m bench.v2

$(STAMP): requirements.txt requirements-devstack.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $@ $(RUN_STAMP)

$(RUN_STAMP): requirements.txt requirements-devstack.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-devstack.txt
	rm -f $(VENV)/.installed-run-* && touch $@

# The Swagger page is tested in headless Chromium, the rollout figures from PROMETHEUS_URL against a real
# Prometheus (Debian's packages); install them when we can.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not installed: the browser test will be skipped (apt-get install chromium)"; fi; }
	@test -x /usr/bin/prometheus || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "prometheus not installed: the PROMETHEUS_URL tests will be skipped (apt-get install prometheus)"; fi; }

clean:
	rm -rf $(VENV) .venv-checkov .pytest_cache .mypy_cache .ruff_cache artifacts .state
