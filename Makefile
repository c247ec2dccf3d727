# Set-up and the everyday commands. Every target creates .venv when it is missing.
# torch==2.13.0 is installed first: it is the CPU build on this machine's disk; a bare
# `pip install torch` would pull a multi-GB CUDA build.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: venv demo test test-slow bench bench-full bench-suites bench-peers lint docs notebooks clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The quickstart has no DP, so its privacy report only says it carries no guarantee; the demo
# also runs it under DP-SGD at epsilon 8 (quickstart-dp) to show a report with a budget.
demo: venv
	.venv/bin/privfl run examples/quickstart.toml --overwrite
	.venv/bin/privfl report runs/quickstart > /dev/null
	.venv/bin/privfl run examples/quickstart.toml --overwrite --set name=quickstart-dp \
	  --set defense.dp.mode=sample --set defense.dp.target_epsilon=8
	.venv/bin/privfl bench benchmarks/suites/quick.toml --out runs/suites/quick > /dev/null
	@echo "quick suite:                     $(CURDIR)/runs/suites/quick/index.html"
	@echo "quickstart privacy report:       $(CURDIR)/runs/quickstart/report.html (no DP: no guarantee)"
	@echo "quickstart under DP-SGD (eps 8): $(CURDIR)/runs/quickstart-dp/report.html"

test: venv  # the suite, then the examples in privfl's docstrings
	$(PY) -m pytest -q
	$(PY) -m pytest -q --doctest-modules privfl -p no:cacheprovider

RAY_STAMP := .venv/.installed-ray

$(RAY_STAMP): $(STAMP)  # the Ray engine's slow test needs the `ray` extra (from the registry)
	$(PY) -m pip install -q -e '.[dev,ray]'
	touch $(RAY_STAMP)

test-slow: venv $(RAY_STAMP)
	$(PY) -m pytest -q -m slow

bench: venv  # every benchmark of benchmarks/perf/, short settings; writes benchmarks/RESULTS.md
	$(PY) benchmarks/perf/suite.py --quick

bench-full: venv  # the same with each benchmark's full grid (an hour or more on two cores)
	$(PY) benchmarks/perf/suite.py

bench-suites: venv  # the attack x defense suites (long); `make demo` runs the quick one
	.venv/bin/privfl bench benchmarks/suites/inversion.toml
	.venv/bin/privfl bench benchmarks/suites/robustness.toml
	.venv/bin/privfl bench benchmarks/suites/privacy.toml

# Optional, in its own venv (.venv-peers, not .venv): torch 2.13.0 first (as above), then
# Flower with its Ray extra from the registry, then privfl itself.
FLWR := 1.42.0
PEERS := .venv-peers/bin/python
PEERS_STAMP := .venv-peers/.installed-flwr-$(FLWR)

$(PEERS_STAMP): pyproject.toml
	test -x $(PEERS) || python3 -m venv .venv-peers
	$(PEERS) -m pip install -q --upgrade pip
	$(PEERS) -m pip install -q torch==2.13.0
	$(PEERS) -m pip install -q 'flwr[simulation]==$(FLWR)'
	$(PEERS) -m pip install -q -e .
	touch $(PEERS_STAMP)

bench-peers: $(PEERS_STAMP)  # W1 through Flower's simulation engine beside privfl's engines (ratios)
	$(PEERS) benchmarks/peers/flower_w1.py

# The site (docs/ -> site/): regenerate the generated pages (config reference, combination
# table), then build it; --strict turns every warning (a broken link or anchor) into a failure.
# The paper notebooks: execute notebooks/*.py (jupytext sources) into notebooks/*.ipynb at the
# default scale, outputs included (commit them). Real MNIST: PRIVFL_MNIST_DIR=<folder of IDX files>.
NB ?=
notebooks: venv
	$(PY) tools/notebooks.py execute $(NB)

docs: venv
	$(PY) -c "from privfl.reference import sync_docs; sync_docs()"
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet

lint: venv
	.venv/bin/ruff check privfl attacks defenses tests benchmarks notebooks tools
	.venv/bin/lint-imports  # the import contracts of pyproject.toml

clean:
	rm -rf .venv .venv-peers build *.egg-info runs site
