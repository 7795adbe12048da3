# The README's two commands: `make demo` (the main job) and `make test` (the test suite).
# Both set up .venv/ first (idempotent; see scripts/setup_env.sh).
PY := .venv/bin/python
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup demo test test-all clean

setup:
	@bash scripts/setup_env.sh

demo: setup
	$(PY) -m fairseq_eatt.cli.demo $(DEMO_ARGS)

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

# includes the slow tests (marked `slow`), which the default run skips
test-all: setup
	$(PY) -m pytest tests -m "" $(PYTEST_ARGS)

clean:
	rm -rf work .pytest_cache
