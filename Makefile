# Two commands on a fresh machine: `make run` serves the demo, `make test` runs every check.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3
# WeasyPrint's run-time libraries (Pango, HarfBuzz subsetting), the label fonts (DejaVu; Noto CJK
# for Japanese addresses).
DEBIAN_PACKAGES := libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core fonts-noto-cjk
# Tests count rate limits in a real Redis, as production does.
TEST_DEBIAN_PACKAGES := $(DEBIAN_PACKAGES) chromium postgresql poppler-utils redis-server
DEMO_ENV := KEYS_ENV=development KEYS_DEMO_MODE=1

.PHONY: install run test lint bench system-packages test-system-packages

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/.installed

system-packages:
	scripts/ensure-debian-packages.sh $(DEBIAN_PACKAGES)

test-system-packages:
	scripts/ensure-debian-packages.sh $(TEST_DEBIAN_PACKAGES)

run: install system-packages
	$(DEMO_ENV) $(BIN)/flask --app app db upgrade
	$(DEMO_ENV) $(BIN)/flask --app app seed
	@echo
	@echo "  Security Key Giveaway demo: http://localhost:5000"
	@echo "  Maintainer: sign in with ada@example.org (eligible, Germany); the link arrives in"
	@echo "              the development outbox at http://localhost:5000/dev/outbox"
	@echo "  Staff:      http://localhost:5000/staff/sign-in as admin@example.org (or shipping@,"
	@echo "              programme@, viewer@example.org), password demo-password-only"
	@echo
	@echo "  A task consumer runs beside the server (label runs, mail, hourly and daily jobs);"
	@echo "  Ctrl-C stops both."
	@echo
	$(DEMO_ENV) BIN=$(BIN) scripts/run-demo.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install test-system-packages lint
	scripts/run-tests.sh

bench: install test-system-packages
	@ls bench/*.py >/dev/null 2>&1 || { echo "No benchmarks yet."; exit 0; }; \
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done
