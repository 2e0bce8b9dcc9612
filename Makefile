# Two commands on a fresh machine:  make demo   (set up + run the sample)   and   make test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO   := $(CURDIR)/demo
export DAGSTER_HOME := $(CURDIR)/.dagster

.PHONY: setup demo test load-test cluster-test services ui lint bench clean dagster-home browser

setup: $(VENV)/.installed

# torch first, from the pinned CPU build; constraints keep torchvision from pulling a CUDA torch
$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -r requirements.txt
	$(BIN)/pip install -q -c constraints.txt --no-deps -e .
	$(BIN)/python -c "import dagster, dagster_webserver, pydicom, SimpleITK, totalsegmentator, torch, radiomics, dicompylercore, pandas, pyarrow, pytest"
	touch $@

dagster-home:
	@mkdir -p $(DAGSTER_HOME)
	@ln -sf ../dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: setup dagster-home
	rm -rf $(DEMO)/drop
	$(BIN)/rtpipeline synth --out $(DEMO)/drop --patients 3 --boost --second-course --mr --pet
	$(BIN)/rtpipeline run --dicom-root $(DEMO)/drop --outdir $(DEMO)/output --radiomics-params rt_resources/radiomics/params/CT_demo.yaml --radiomics-robustness 3 --totalseg-backend standin --totalseg-device cpu
	$(BIN)/rtpipeline report --outdir $(DEMO)/output
	@echo ""
	@echo "Outputs:     $(DEMO)/output/courses/<course_key>/ and $(DEMO)/output/cohort/"
	@echo "The report:  $(DEMO)/output/cohort/report.html"
	@echo "Open the UI: make ui   (then http://127.0.0.1:3000 -> Assets)"

# two pytest-xdist workers: many end-to-end tests wait on daemons, sensors and stand-in inferences,
# so two at once fill the 2 cores (2 cores: 15 min, against 23 min in one process)
test: setup browser
	$(BIN)/python -m pytest -q -m "not load and not cluster" -n 2 --dist worksteal --durations=30

# 20 courses in three batches through dagster dev's sensors (about 10 min on 2 cores)
load-test: setup
	$(BIN)/python -m pytest -q -m load -s

# PostgreSQL + Redis (started by the test on loopback ports, stopped after) and two Celery workers
# running the demo drop through the daemon; RT_REQUIRE_SERVICES=1 turns a missing service into a failure
cluster-test: setup services
	$(BIN)/python -m pytest -q -m cluster -s -p no:cacheprovider

# Debian's postgresql and redis-server for the cluster test: installed when missing (root + apt)
services:
	@{ ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v redis-server >/dev/null 2>&1; } || \
	  { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server >/dev/null; } || \
	  echo "postgresql/redis-server not installed: the cluster test will be skipped"

# Debian's chromium for the UI test (tests/e2e/test_ui_previews.py); skipped where it cannot be installed
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium not installed: the UI test will be skipped"

ui: setup dagster-home
	RT_DROP_ROOT=$(DEMO)/drop RT_DATA_ROOT=$(DEMO)/output $(BIN)/dagster dev -w workspace.yaml

lint: setup
	$(BIN)/ruff check rt_assets rt_resources tests benchmarks
	$(BIN)/ruff format --check rt_assets rt_resources tests benchmarks

bench: setup
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf $(DEMO) $(DAGSTER_HOME)
