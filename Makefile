# Two commands do everything: `make demo` and `make test`. Both create .venv when missing and
# reinstall only when pyproject.toml changed (stamp files), so a second run is quick.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
HASH   := $(shell sha1sum pyproject.toml | cut -c1-12)
OUT    ?= out

.PHONY: demo test install install-test browser lint clean docs mutation

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.stamp-run-$(HASH): | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.stamp-test-$(HASH): | $(PY)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.stamp-run-$(HASH)
install-test: $(VENV)/.stamp-test-$(HASH)

demo: install
	$(VENV)/bin/convlens tour --quick --out $(OUT)/report; rc=$$?; \
	echo "report: file://$(abspath $(OUT))/report/index.html (summary: $(OUT)/report/summary.json)"; exit $$rc

test: install-test browser lint
	$(PY) -m pytest -q

# Habits checked on every run: lint and format (configured in pyproject.toml), and the layer contracts of
# docs/architecture.md ([tool.importlinter] in pyproject.toml; a violation names the offending import chain).
lint: install-test
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/ruff format --check src tests benchmarks tools
	PYTHONPATH=src $(VENV)/bin/lint-imports

# Numbers in the docs: re-render every generated region from benchmarks/results/*.json and the recorded command
# runs in docs/generated/ (tests/test_docs.py fails when they drift). RUN=all (or a name) re-runs the commands first.
docs: install
	$(PY) tools/docs_numbers.py $(if $(RUN),--run $(RUN))

# Mutation testing of the core numerical modules (mutmut; hours on 2 cores, so NOT part of `make test`).
# Run it after changing a formula (CONTRIBUTING.md); MODULES=pyramid limits it. Scores: docs/testing.md.
mutation: install-test
	$(PY) tools/mutation.py $(MODULES)

# The browser test needs Debian's chromium (no browser download); CI runs as root with apt access.
browser:
	@test -x /usr/bin/chromium || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

clean:
	rm -rf $(OUT) .pytest_cache
