# Two commands on a fresh clone:  `make run` (main job on the embedded sample) and `make test`.
# Each creates the virtual environment first when it is missing or out of date.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: run test test-extended test-petastorm venv venv-petastorm ingest ingest-raw windows train train-key train-value detect evaluate visualize finetune generate full-pipeline \
        bench clean-tables clean-models

$(VENV)/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# drain3 pins old versions (cachetools 4): installed alone, its dependencies in requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: $(VENV)/.installed

## The Petastorm set (requirements-petastorm.txt: pyarrow<=14, numpy<2) in its own venv, for the
## design card's Petastorm feed; petastorm pins setuptools<70, which clashes with torch: --no-deps
VENV_PETASTORM ?= .venv-petastorm
PYP            := $(VENV_PETASTORM)/bin/python
PETASTORM      := petastorm==0.13.1
# what the Petastorm set runs: training (both feeds, the same weights) and detection
PETASTORM_TESTS ?= tests/test_training.py tests/test_detection.py tests/test_detect_equivalence.py tests/test_dependencies.py

$(VENV_PETASTORM)/.installed: requirements-petastorm.txt requirements-nodeps.txt pyproject.toml
	test -x $(PYP) || $(PYTHON) -m venv $(VENV_PETASTORM)
	$(PYP) -m pip install -q --upgrade pip
	$(PYP) -m pip install -q -r requirements-petastorm.txt
	$(PYP) -m pip install -q --no-deps $(PETASTORM) -r requirements-nodeps.txt
	$(PYP) -m pip install -q --no-deps -e .
	touch $@

venv-petastorm: $(VENV_PETASTORM)/.installed

## test-petastorm: training and detection in the Petastorm set (.ci/run runs it after `make test`)
test-petastorm: $(VENV_PETASTORM)/.installed
	PYTHON=$(abspath $(PYP)) $(PYP) -m pytest -q -m "not extended or petastorm" $(PETASTORM_TESTS) $(PYTEST_ARGS)

## test: the test suite (what .ci/run runs)
test: $(VENV)/.installed
	$(PY) -m pytest -q tests $(PYTEST_ARGS)

## test-extended: the tests that start JVMs to kill or break them, or several at once (crash and resume,
## failures at the last line of defence, local-cluster and standalone clusters), ~10 min; CI runs them after `make test`
test-extended: $(VENV)/.installed
	$(PY) -m pytest -q -m extended tests $(PYTEST_ARGS)

## Tasks of the task CLI (`./spark-submit.sh --help`); extra flags go in ARGS, e.g.
##   make train-key ARGS="--epochs 30 --lr 0.001 --batch_size 256"
##   make detect ARGS="--model RUN_ID --k_sigma 2.5"
ingest: $(VENV)/.installed
	./spark-submit.sh --task ingest $(ARGS)
ingest-raw: $(VENV)/.installed
	./spark-submit.sh --task ingest-raw $(ARGS)
windows: $(VENV)/.installed
	./spark-submit.sh --task windows $(ARGS)
train: $(VENV)/.installed
	./spark-submit.sh --task both $(ARGS)
train-key: $(VENV)/.installed
	./spark-submit.sh --task key $(ARGS)
train-value: $(VENV)/.installed
	./spark-submit.sh --task value $(ARGS)
detect: $(VENV)/.installed
	./spark-submit.sh --task detect $(ARGS)
evaluate: $(VENV)/.installed
	./spark-submit.sh --task eval $(ARGS)
visualize: $(VENV)/.installed
	./spark-submit.sh --task visual $(ARGS)
finetune: $(VENV)/.installed
	./spark-submit.sh --task online $(ARGS)
generate: $(VENV)/.installed
	./spark-submit.sh --task generate $(ARGS)
full-pipeline: $(VENV)/.installed
	./spark-submit.sh --task full-pipeline $(ARGS)

## bench: the full-size pipeline benchmark (not part of the tests; see bench/results/README.md), e.g.
##   make bench ARGS="--blocks 575061 --name 575k"
bench: $(VENV)/.installed
	$(PY) bench/pipeline.py $(ARGS)

## clean-models: remove model runs, online logs and the Petastorm cache (artifacts/), never the Delta tables
clean-models:
	rm -rf artifacts

## clean-tables: remove the Delta tables written by the jobs (warehouse/)
clean-tables:
	rm -rf warehouse spark-warehouse
