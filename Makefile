# The two commands of the README: `make demo` (the main job, end to end) and `make test`.
# Both set up the virtual environment first; nothing needs to be installed by hand.
PYTHON ?= python3
# torch's CPU build from PyTorch's own index (PyPI's Linux wheel is the multi-GB CUDA build).
# For a CUDA build: make setup TORCH_INDEX=https://download.pytorch.org/whl/cu126
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo

.PHONY: setup demo notebooks test lint bench-prepare bench-train bench-retrieval accuracy docker-image stack clean

# Reinstalled when the packaging or the C sources change: the install compiles the kernels.
$(BIN)/.installed: pyproject.toml setup.py $(wildcard gru4rec/network/csrc/*)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, from TORCH_INDEX (its build, e.g. 2.13.0+cpu, outranks PyPI's 2.13.0;
	# one retry: where that index cannot be reached, pip goes on with the others at once);
	# the project's torch range then accepts it.
	$(BIN)/pip install --quiet --retries 1 --extra-index-url $(TORCH_INDEX) torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,ray]'
	touch $@

setup: $(BIN)/.installed

demo: setup
	mkdir -p $(DEMO)
	$(BIN)/gru4rec generate --out $(DEMO)/clicks.tsv.gz --sessions 20000 --items 1000
	$(BIN)/gru4rec prepare $(DEMO)/clicks.tsv.gz --out $(DEMO)/data --overwrite
	cd $(DEMO) && ../$(BIN)/gru4rec train data --out model --preset rsc15 --set n_epochs=3 \
		--valid-split valid --register demo --json train-metrics.json
	$(BIN)/gru4rec evaluate $(DEMO)/model $(DEMO)/data --cutoffs 1,5,10,20 \
		--ties conservative --json $(DEMO)/metrics.json
	cd $(DEMO) && ../$(BIN)/gru4rec index model --kind flat
	$(BIN)/gru4rec recommend $(DEMO)/model --input $(DEMO)/data/test.parquet \
		--out $(DEMO)/recommendations.parquet -k 20

# The notebooks are kept with their outputs, made from the demo's data and runs.
notebooks: demo
	$(BIN)/python notebooks/execute.py

# mypy finds modules by folder, not through setup.py's mapping of pipelines/ to
# gru4rec.pipelines: it reads the package laid out as installed, in links under build/.
lint: setup
	$(BIN)/ruff check gru4rec pipelines tests benchmarks notebooks
	$(BIN)/ruff format --check gru4rec pipelines tests benchmarks notebooks
	rm -rf build/typecheck && mkdir -p build/typecheck/gru4rec
	for entry in gru4rec/* pipelines; do \
		ln -s "$$PWD/$$entry" build/typecheck/gru4rec/$$(basename $$entry); done
	$(BIN)/mypy

# Two workers (pytest-xdist), each taking whole test files, so that a file's shared
# fixtures (a trained model, a running server) are made once.
test: lint
	$(BIN)/pytest -n 2 --dist loadfile

bench-prepare: setup
	$(BIN)/python -m benchmarks.prepare_bench --events 30000000 --repeats 3

bench-train: setup
	$(BIN)/python -m benchmarks.train_bench --repeats 5

# MODEL=path/to/a/trained/model (e.g. the diginetica preset's), DATA=its prepared data.
bench-retrieval: setup
	@test -n "$(MODEL)" -a -n "$(DATA)" || { echo "usage: make bench-retrieval MODEL=path/to/model DATA=path/to/prepared/data" >&2; exit 2; }
	$(BIN)/python -m benchmarks.retrieval_bench --model $(MODEL) --data $(DATA) --catalogue 1000000 --dim 64

accuracy: setup
	$(BIN)/pytest -m slow -s

docker-image:
	docker build -f docker/Dockerfile -t gru4rec:latest .

stack:
	docker compose -f docker/compose.yaml up -d --build mlflow

clean:
	rm -rf $(DEMO) mlruns mlflow.db
