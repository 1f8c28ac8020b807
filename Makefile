# Each entry point creates .venv from the pinned requirements.lock when it is missing.
PY ?= python3
PYTEST_ARGS ?= -n 2 --dist loadgroup
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench serve clean-venv

$(STAMP): requirements.lock requirements-spark.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	if command -v java >/dev/null 2>&1; then \
		$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-spark.lock; \
	else echo "java not found: the optional spark engine (requirements-spark.lock) is not installed"; fi
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sluice demo $(DEMO_ARGS)

test: $(STAMP) lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check --no-cache sandbox policy metering disclosure tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

serve: $(STAMP)
	$(BIN)/sluice serve

clean-venv:
	rm -rf $(VENV)
