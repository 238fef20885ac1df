# The two commands a newcomer needs: `make run` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint unit integration fuzz bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: pip takes the CPU build that lies on this disk instead of a CUDA download
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/sift up

lint: $(STAMP)
	$(BIN)/ruff check services worker tests bench migrations
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

test: $(STAMP) lint
	$(BIN)/pytest tests

# The schema fuzz of `make test` with many more examples per operation, on a new seed each run
# (a failure prints its seed: SIFT_FUZZ_SEED=<seed> replays it).
FUZZ_EXAMPLES ?= 500
fuzz: $(STAMP)
	SIFT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) SIFT_FUZZ_SEED=$${SIFT_FUZZ_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')} \
		$(BIN)/pytest tests/integration/test_fuzz.py -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python bench/ingest.py ../shared/data/banking77/train.csv

clean:
	rm -rf $(VENV) .sift .pytest_cache .mypy_cache .ruff_cache
