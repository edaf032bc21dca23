# Two-command set-up: `make demo` and `make test` each create .venv when missing and
# (re)install only when requirements.txt or pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python cli.py demo

# Every test under TensorFlow; under JAX only those marked `backend` (the rest do
# not depend on the Keras backend). --durations keeps the slow ones visible.
test: $(STAMP)
	$(BIN)/ruff check .
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -q --durations=15
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q --durations=15 -m backend

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
