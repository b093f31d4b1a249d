# Two commands for a fresh machine: `make up` (the whole system) and `make test`.
# Both create .venv and install the package with the pinned versions in constraints.txt;
# `make test` first installs what the suite needs from the system (scripts/deps: as root
# it installs what is missing; otherwise it names the one command to run, `sudo make deps`).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: deps install js up test test-long down status bench lock clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The JavaScript SDKs the suite drives (browser SDKs in Chromium, Segment's Node SDK), at
# the versions of js/package-lock.json.
JS_STAMP := js/node_modules/.installed
$(JS_STAMP): js/package.json js/package-lock.json
	cd js && npm ci --no-audit --no-fund
	touch $(JS_STAMP)

js: $(JS_STAMP)

# System packages only (no .venv): safe to run as root with sudo.
deps:
	@PYTHON=$(PYTHON) scripts/deps

up: install
	$(BIN)/streams up

test: deps install js
	$(BIN)/ruff check streams tests
	$(BIN)/python -m pytest

# Before a release: the property tests against the independent reference with many more
# examples, larger logs and up to three workers (tests/long_profile.py; README, "What the
# reference proves", gives its duration).
test-long: deps install
	STREAMS_TEST_LONG=1 $(BIN)/python -m pytest -p no:cacheprovider --timeout=3600 \
		--hypothesis-show-statistics tests/unit/profiles \
		tests/integration/test_profile_store.py tests/integration/test_pipeline_oracle.py

down:
	$(BIN)/streams infra down

status:
	$(BIN)/streams infra status

bench: install
	$(BIN)/streams bench

# Re-pin constraints.txt after changing dependencies in pyproject.toml.
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install -q '.[test]'
	.lockenv/bin/pip freeze --exclude-editable | grep -v '^streams' > constraints.txt
	rm -rf .lockenv

clean:
	rm -rf $(VENV) build *.egg-info
