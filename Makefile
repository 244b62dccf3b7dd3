# The two set-up commands (README): `make demo` runs the main job, `make test` the whole suite.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test unit lint typecheck proto check-protos bench clean

setup:
	scripts/setup.sh

demo: setup
	scripts/build_detector_image.sh
	$(VENV)/bin/scorer demo --image scorer-example-detector:latest

test: setup check-protos lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest -q tests/unit tests/component

lint: setup
	$(VENV)/bin/ruff check scorer sandbox tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

proto: setup
	scripts/gen_protos.sh

check-protos: setup
	scripts/check_protos.sh

bench: setup
	$(PY) bench/bench_scoring.py
	$(PY) bench/bench_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
