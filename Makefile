# The two commands a newcomer needs: `make run` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint unit integration fuzz bench soak chaos peer console-shots clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: pip takes the CPU build that lies on this disk instead of a CUDA download
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# One machine: webhooks may go to a receiver on it (`sift webhooks listen`); a server started otherwise refuses them.
run: $(STAMP)
	SIFT_WEBHOOK_ALLOW_PRIVATE=$${SIFT_WEBHOOK_ALLOW_PRIVATE:-true} $(BIN)/sift up

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

# The console's screenshots in docs/console/, taken by its browser test against a real `sift up`
# (needs Debian's chromium and chromium-driver, as .ci/run installs them).
console-shots: $(STAMP)
	SIFT_CONSOLE_SHOTS=docs/console $(BIN)/pytest tests/integration/test_console.py -p no:cacheprovider

# The schema fuzz of `make test` with many more examples per operation, on a new seed each run
# (a failure prints its seed: SIFT_FUZZ_SEED=<seed> replays it).
FUZZ_EXAMPLES ?= 500
fuzz: $(STAMP)
	SIFT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) SIFT_FUZZ_SEED=$${SIFT_FUZZ_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')} \
		$(BIN)/pytest tests/integration/test_fuzz.py -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python bench/ingest.py ../shared/data/banking77/train.csv

# 10 minutes at 80% of the capacity measured first, on a fresh embedded `sift up`; exits 1 when a bar
# fails (lost events, 5xx, RSS growth >= 10% between minute 2 and minute 10).
soak: $(STAMP)  # constant data volume: any memory growth is not the data's (docs/decisions/soak-constant-volume.md)
	$(BIN)/python bench/soak.py ../shared/data/banking77/train.csv --minutes 10 --id-space 20000

# 10 minutes of ingest on a PostgreSQL and a Redis of its own with a fault every 30-60 s (worker and pool
# child SIGKILL, Redis and PostgreSQL restarts, vector store down); exits 1 when an event is lost or
# duplicated, an alert is not delivered, or a recovery passes its bound (bench/chaos.py says how).
chaos: $(STAMP)
	$(BIN)/python bench/chaos.py --minutes 10

# The peer of `bench/ingest.py --peer infinity`: infinity-emb in a virtual environment of its own,
# since its pins (sentence-transformers<4, numpy<2, typer<0.13, uvicorn<0.33) clash with Sift's stack.
# torch pinned in the same command, so pip keeps the CPU build that lies on this disk.
PEER_VENV  := .venv-infinity
PEER_STAMP := $(PEER_VENV)/.installed
INFINITY_VERSION ?= 0.0.78

$(PEER_STAMP): Makefile
	test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install --quiet --upgrade pip
	$(PEER_VENV)/bin/pip install --quiet torch==2.13.0 'infinity-emb[server,torch]==$(INFINITY_VERSION)'
	touch $(PEER_STAMP)

peer: $(PEER_STAMP)

clean:
	rm -rf $(VENV) .sift .pytest_cache .mypy_cache .ruff_cache
