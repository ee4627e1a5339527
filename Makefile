# polydiff developer entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install -q -c constraints.txt
PLUGINS := $(wildcard modalities/*/pyproject.toml) examples/third_party_plugin/pyproject.toml

.PHONY: setup demo test lint bench examples clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt $(PLUGINS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev,plot]"
	for p in $(dir $(PLUGINS)); do extra=$$(grep -q '^dev *=' $$p/pyproject.toml && echo '[dev]'); $(PIP) -e "$$p$$extra" || exit 1; done
	touch $@

# Train the toy model on its embedded Gaussian mixture, sample, evaluate and plot (CPU, < 1 min).
demo: setup
	$(BIN)/polydiff train configs/toy/gmm.yaml --out runs/demo --fresh
	$(BIN)/polydiff sample runs/demo/checkpoints/last.ckpt --num 2000 --out runs/demo/samples --overwrite --plot
	$(BIN)/polydiff evaluate runs/demo/samples --json runs/demo/metrics.json

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check core modalities tests bench examples

# Run every examples/<name>_quickstart.py (not part of `make test`: about 15 min on 2 CPU cores).
examples: setup
	@for f in examples/*_quickstart.py; do n=$$(basename $$f _quickstart.py); echo "== $$n"; \
		$(BIN)/python $$f --out runs/examples/$$n --quiet || exit 1; done

bench: setup
	$(BIN)/python bench/samplers.py

clean:
	rm -rf runs .pytest_cache
