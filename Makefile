# Herald: `make demo` runs the pipeline against the local stack; `make test` runs the tests.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
HERALD := $(VENV)/bin/herald
export NO_PROXY := 127.0.0.1,localhost$(if $(NO_PROXY),$(comma)$(NO_PROXY),)
comma := ,

.PHONY: install stack test unit demo bench down clean

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

test: stack
	$(PY) -m pytest tests -q

unit: install
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
