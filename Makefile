# Herald: `make demo` runs the pipeline against the local stack; `make test` runs the tests.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
HERALD := $(VENV)/bin/herald
export NO_PROXY := 127.0.0.1,localhost$(if $(NO_PROXY),$(comma)$(NO_PROXY),)
comma := ,

.PHONY: install stack cluster promtool chromium lint test unit demo bench down clean

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is needed"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Kafka (KRaft, jars from Maven Central, cached under ~/.cache/herald), PostgreSQL, Redis
stack: install
	$(HERALD) stack up
	$(HERALD) db migrate

# promtool runs the alert-rule tests (tests/unit/test_monitoring.py); Debian ships it in the prometheus package,
# whose server the install would start: it is stopped and disabled again, only promtool is wanted
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
promtool:
	@command -v promtool >/dev/null || { \
	  echo "installing promtool (Debian package prometheus)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null && \
	  { ! command -v systemctl >/dev/null || $(SUDO) systemctl disable --now prometheus >/dev/null 2>&1 || true; }; }
	@promtool --version | head -1

# chromium runs the console's browser tests (tests/e2e/test_console.py, Playwright pointed at it): Debian's package,
# since Playwright's own browser download cannot reach its host
chromium:
	@command -v chromium >/dev/null || { \
	  echo "installing chromium (Debian package)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
	@chromium --version | head -1

# the 3-broker SASL_SSL cluster beside the single node (tests/integration/test_cluster.py, tests/e2e/test_cluster_faults.py);
# idempotent: a second run finds it answering
cluster: install
	$(HERALD) stack up --brokers 3 --security sasl_ssl

# ruff (rules in pyproject.toml [tool.ruff]) over the repo, then mypy over the six packages ([tool.mypy] files)
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint stack cluster promtool chromium
	$(PY) -m pytest tests -q

unit: install promtool
	$(PY) -m pytest tests/unit -q

demo: stack
	$(HERALD) demo

bench: stack
	$(PY) bench/route.py
	$(PY) bench/deliver.py
	$(PY) bench/campaign.py

down:
	-$(HERALD) stack down

clean: down
	rm -rf $(VENV) .pytest_cache
