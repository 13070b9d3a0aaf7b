# The README quick start: `make demo` and `make test` (each sets everything up first).
.PHONY: setup setup-test demo test lint bench

setup:
	scripts/setup.sh

setup-test:
	scripts/setup.sh --test

demo: setup
	.venv/bin/kubepci scan examples/payments-platform --report-dir reports --fail-on none

lint:
	.venv/bin/ruff check src tests bench
	.venv/bin/mypy

test: setup-test lint
	.venv/bin/pytest -n 2 -q

bench: setup
	.venv/bin/python bench/run.py
