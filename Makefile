# Every target creates what it needs; on a fresh machine `make serve` and `make test` are all there is to do.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
MODELS ?= ./models
PORT ?= 8080

.PHONY: help venv serve test test-unit lint format demo-model tools protos bench bench-quick clean

help:
	@echo "make serve   - virtualenv + demo model 'iris' in $(MODELS) + server on :$(PORT)"
	@echo "make test    - virtualenv + lint + every test"
	@echo "make test-unit - the fast tests only (tests/unit: no server process, no tools; about a minute)"
	@echo "make lint    - ruff and mypy --strict"
	@echo "make format  - ruff format"
	@echo "make tools   - helm, kubectl, hadolint, checkov into .tools/ (the chart tests use them)"
	@echo "make bench  - the load benchmark against KServe, MLServer, the seed and the floors (~30 min with the gRPC lanes, docs/benchmarks.md)"
	@echo "make bench-quick - a smoke run of the benchmark (c=32 only, results in bench/results/)"

$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "rtserve needs Python 3.11, found " + sys.version' 
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# A venv made before the switch to `tensorflow` holds tensorflow-cpu, which installs the same files: remove it
	# first, or both distributions would own one tensorflow/ folder (a no-op on a new venv).
	$(PY) -m pip uninstall --quiet --yes tensorflow-cpu
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

$(MODELS)/iris/1/saved_model.pb: | $(STAMP)
	$(VENV)/bin/rtserve demo-model $(MODELS)/iris

demo-model: $(MODELS)/iris/1/saved_model.pb

serve: $(STAMP) $(MODELS)/iris/1/saved_model.pb
	$(VENV)/bin/rtserve serve --repository $(MODELS) --port $(PORT)

lint: $(STAMP)
	$(VENV)/bin/ruff check service tests bench scripts
	$(VENV)/bin/ruff format --check service tests bench scripts
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format service tests bench scripts
	$(VENV)/bin/ruff check --fix service tests bench scripts

tools: $(STAMP)
	$(PY) scripts/install_tools.py

test: $(STAMP) lint tools
	$(PY) -m pytest -p no:cacheprovider

# No lint, no tools, no server processes: the loop to run while editing (-rs prints why anything skipped).
test-unit: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider -rs tests/unit

# The Open Inference Protocol's gRPC descriptor set and TF Serving's config messages, checked in (a unit test proves it matches the .proto).
PROTOS := service/codecs/protos
protos: $(STAMP)
	cd $(PROTOS) && $(abspath $(PY)) -m grpc_tools.protoc -I. --include_imports --descriptor_set_out=open_inference.binpb open_inference.proto
	cd service/compat/protos && $(abspath $(PY)) -m grpc_tools.protoc -I. --include_imports --descriptor_set_out=tfserving_config.binpb tfserving_config.proto

bench: $(STAMP)
	$(PY) -m bench.run

bench-quick: $(STAMP)
	$(PY) -m bench.run --quick

clean:
	rm -rf $(VENV) .rtserve-cache .pytest_cache .mypy_cache .ruff_cache
