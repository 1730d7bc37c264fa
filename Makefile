# The two commands a newcomer needs (README.md):
#   sudo make run    the main job on the shipped default config
#   sudo make test   every test, the ones that load BPF programs included
.PHONY: setup setup-test run test bench clean

VENV := .venv
PY   := $(VENV)/bin/python

setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh --test

run: setup
	$(VENV)/bin/cgwatch top

test: setup-test
	$(VENV)/bin/ruff check daemon tests bench
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup-test
	$(PY) bench/bench_probes.py

clean:
	rm -rf $(VENV) build *.egg-info daemon/*.egg-info
