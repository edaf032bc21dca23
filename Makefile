# Two-command set-up: `make demo` and `make test` each create .venv when missing and
# (re)install only when requirements.txt or pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo app docs test test-tf test-jax lint install install-cuda clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# uv installs the pinned wheels in parallel: ≈ 25 s for the whole set on a clean
# 2-core machine without a cache, against ≈ 5 min for pip (measured side by side).
# --compile-bytecode writes every module's .pyc at install (≈ 30 s more, in parallel):
# uv leaves them out by default, and where PYTHONDONTWRITEBYTECODE is set (as in this
# machine's environment) Python never writes them either, so every process, each test's child
# included, compiled TensorFlow, Keras and JAX from source again: importing them took
# 26 s instead of 10 s (measured side by side in two fresh environments).
UV_VERSION := 0.13.9
UV_INSTALL := $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python
$(STAMP): requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(UV_INSTALL) -r requirements.txt
	$(UV_INSTALL) --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# NVIDIA GPUs: the same set plus the CUDA 12 wheels of the pinned JAX and TensorFlow
# (requirements-cuda.txt). Check: .venv/bin/python -c "import jax; print(jax.devices())"
CUDA_STAMP := $(VENV)/.installed-cuda
$(CUDA_STAMP): requirements-cuda.txt $(STAMP)
	$(UV_INSTALL) -r requirements-cuda.txt
	touch $(CUDA_STAMP)

install-cuda: $(CUDA_STAMP)

demo: $(STAMP)
	$(BIN)/python cli.py demo

# The web app on the demo's model (and its converted data, to browse); http://127.0.0.1:8501
app: $(STAMP)
	@test -f demo_output/run/model.keras || { echo "no demo model in demo_output/run: run \`make demo\` first" >&2; exit 2; }
	$(BIN)/python cli.py app --model demo_output/run --data demo_output/tfrecords

# Two pytest-xdist workers (the CI machine has 2 cores; most of a tiny test's time is
# single-threaded Python: tracing, compiling, starting processes). `loadfile` keeps
# each test module on one worker so its module fixtures are built once; the modules
# go out longest first (tests/conftest.py), which `--no-loadscope-reorder` keeps.
PYTEST_PARALLEL ?= -n 2 --dist loadfile --no-loadscope-reorder

# Every test under TensorFlow; under JAX only those marked `backend` (the rest do
# not depend on the Keras backend). One pass after the other: run at the same
# time they were no faster on 2 cores (22.5 min against 22.8 on a clean clone) and the overload
# exposed a start-up race in a two-process JAX test. --durations keeps the slow ones visible.
# `make test-tf` / `make test-jax` run one pass.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check --quiet .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy
	$(MKDOCS) build --strict --quiet --site-dir $(SITE_CHECK)
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -q $(PYTEST_PARALLEL) --durations=15
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q $(PYTEST_PARALLEL) --durations=15 -m backend

test-tf: $(STAMP)
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -q $(PYTEST_PARALLEL) --durations=15

test-jax: $(STAMP)
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q $(PYTEST_PARALLEL) --durations=15 -m backend

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check --quiet .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

# The documentation site (MkDocs + Material): site/index.html. `make test` builds it with
# --strict (a broken link or a missing page fails) into a scratch folder.
MKDOCS := NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs
SITE_CHECK := .pytest_cache/site
docs: $(STAMP)
	$(MKDOCS) build --strict --site-dir site

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache site build dist
