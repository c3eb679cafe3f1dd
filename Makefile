# The two commands of the quickstart; each builds .venv (pinned dependencies) on first use.
#   make run    reproduce the pipeline on params.yaml (default: the embedded mnist-5k dataset), then
#               regenerate docs/results.md from the results
#   make test   run the test suite
#   make offline-plots   `dvc plots show` / `diff` pages that load Vega from local copies, not a CDN
#   make deps   rewrite dvc.yaml's per-stage .py dependencies from the imports (after moving code)
PYTHON ?= python3
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: run test offline-plots deps
run: $(VENV)/.installed
	python -m pipeline.config  # params.yaml checked first: one line, where dvc.yaml's templating would fail obscurely
	dvc repro
	python -m tools.results_page  # docs/results.md from the results just made

test: $(VENV)/.installed
	python -m pytest

offline-plots: $(VENV)/.installed
	python -m tools.offline_plots

deps: $(VENV)/.installed
	python -m tools.dvc_deps

$(VENV)/.installed: requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit("error: Python >= 3.10 is needed, this is " + sys.version.split()[0]) if sys.version_info < (3, 10) else None'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@
