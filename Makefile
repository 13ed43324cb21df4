# Two commands on a fresh clone:  `make run` (main job on the embedded sample) and `make test`.
# Each creates the virtual environment first when it is missing or out of date.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: run test venv train train-key train-value detect evaluate full-pipeline clean-tables clean-models

$(VENV)/.installed: requirements.txt requirements-petastorm.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# petastorm pins setuptools<70 (clashes with torch): install it alone, its deps are in requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-petastorm.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: $(VENV)/.installed

## run: the main pipeline on the embedded sample, through spark-submit
run: $(VENV)/.installed
	./spark-submit.sh pipeline $(ARGS)

## test: the test suite (what .ci/run runs)
test: $(VENV)/.installed
	$(PY) -m pytest -q tests $(PYTEST_ARGS)

## train / train-key / train-value: train on the windows table (after `make run` or the windows job)
train: $(VENV)/.installed
	./spark-submit.sh train --task both $(ARGS)
train-key: $(VENV)/.installed
	./spark-submit.sh train --task key $(ARGS)
train-value: $(VENV)/.installed
	./spark-submit.sh train --task value $(ARGS)

## detect / evaluate: score the windows with the latest run, then its metrics (ARGS="--model RUN_ID --top_g 5")
detect: $(VENV)/.installed
	./spark-submit.sh detect $(ARGS)
evaluate: $(VENV)/.installed
	./spark-submit.sh evaluate $(ARGS)

## full-pipeline: ingest -> windows -> train -> detect -> evaluate (the same job as `make run`)
full-pipeline: run

## clean-models: remove model runs and the Petastorm cache (artifacts/), never the Delta tables
clean-models:
	rm -rf artifacts

## clean-tables: remove the Delta tables written by `make run` (warehouse/)
clean-tables:
	rm -rf warehouse spark-warehouse
