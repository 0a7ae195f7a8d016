PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test format bench notebook clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) experiments/train.py --config skipjump/configs/digits.yaml

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

notebook: $(STAMP)  # JupyterLab is an optional extra: installed here, not by make test
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,notebook]"
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/skip_behaviour.ipynb

bench: $(STAMP)
	$(PY) experiments/bench_speed.py
	$(PY) experiments/bench_agent.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
