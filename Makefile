# Set-up and the everyday commands. Every target creates .venv when it is missing.
# torch==2.13.0 is installed first: it is the CPU build on this machine's disk; a bare
# `pip install torch` would pull a multi-GB CUDA build.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: venv demo test test-slow bench bench-full lint docs clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: venv
	.venv/bin/privfl run examples/quickstart.toml --overwrite

test: venv
	$(PY) -m pytest -q

test-slow: venv
	$(PY) -m pytest -q -m slow

bench: venv  # every benchmark of benchmarks/perf/, short settings; writes benchmarks/RESULTS.md
	$(PY) benchmarks/perf/suite.py --quick

bench-full: venv  # the same with each benchmark's full grid (an hour or more on two cores)
	$(PY) benchmarks/perf/suite.py

docs: venv  # regenerate README's config reference from the config models
	$(PY) -c "from privfl.reference import sync_readme; sync_readme()"

lint: venv
	.venv/bin/ruff check privfl attacks defenses tests benchmarks

clean:
	rm -rf .venv build *.egg-info runs
