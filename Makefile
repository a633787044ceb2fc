# Two commands on a fresh machine: `make demo` (set up + main job) and `make test` (set up + tests).
# TORCH_SPEC picks the torch build: the default is the CPU wheel; GPU users: make demo TORCH_SPEC='torch>=2.11'
PYTHON ?= python3.11
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) train.py experiment=quickstart
	$(PY) sample.py ckpt=$$(ls -td outputs/quickstart/*/*/checkpoints/last.ckpt | head -1) n_samples=100 strain_molecules=100 chain=4

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) outputs multirun
