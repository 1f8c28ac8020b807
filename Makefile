# Each entry point creates .venv from the pinned requirements.lock when it is missing.
PY ?= python3
PYTEST_ARGS ?= -n 2 --dist loadgroup
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench serve clean-venv mutants mutants-known

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

# Mutation testing of the security-critical functions (not part of `make test`). Configuration in pyproject.toml
# [tool.mutmut] (fast tests only); kill rate and measured run time in docs/testing.md. One group alone, reusing
# mutants/ (mutmut re-runs every mutant a pattern names): `.venv/bin/mutmut run --max-children 2 'sandbox.jobs.x_review__mutmut_*'`.
MUTANTS ?= 'policy.output.x_apply_output_control__mutmut_*' 'policy.output.xǁ_Controlǁ*' \
	'policy.sql_rules.*' 'policy.sql_allowlist.*' 'sandbox.jobs.x_review__mutmut_*' \
	'sandbox.jobs.x_check_grant_usable__mutmut_*' 'sandbox.runs.x_check_runnable__mutmut_*' \
	'sandbox.grants.x_effective_status__mutmut_*' 'sandbox.identity.x_authenticate__mutmut_*' \
	'sandbox.identity.xǁKeyCacheǁ*' 'sandbox.executor.lockdown.x_lockdown_statements__mutmut_*'

mutants: $(STAMP)
	rm -rf mutants
	time $(BIN)/mutmut run --max-children 2 $(MUTANTS)
	$(BIN)/mutmut results

# The mutants issue 7's experiment found surviving, each applied and reverted in turn (a few minutes).
mutants-known: $(STAMP)
	$(BIN)/python tests/known_mutants.py

serve: $(STAMP)
	$(BIN)/sluice serve

# The service image from deploy/Dockerfile, with docker, buildah or podman (docs/deploy.md). IMAGE_ARGS, e.g.
# `--stand-in` where Docker Hub is unreachable, or `--tag sluice:1.0`.
.PHONY: image
image:
	deploy/build-image.sh $(IMAGE_ARGS)

clean-venv:
	rm -rf $(VENV)
