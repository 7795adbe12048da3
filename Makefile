# The README's two commands: `make demo` (the main job) and `make test` (the test suite).
# Both set up .venv/ first (idempotent; see scripts/setup_env.sh).
PY := .venv/bin/python
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup demo test test-e2e test-all clean

setup:
	@bash scripts/setup_env.sh

demo: setup
	$(PY) -m fairseq_eatt.cli.demo $(DEMO_ARGS)

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

# the end-to-end runs through fairseq's command-line tools (marked `e2e`), which the default run skips; CI runs them
test-e2e: setup
	$(PY) -m pytest tests -m "e2e and not slow" $(PYTEST_ARGS)

# everything: the default selection, `e2e` and the `slow` tests
test-all: setup
	$(PY) -m pytest tests -m "" $(PYTEST_ARGS)

clean:
	rm -rf work .pytest_cache
