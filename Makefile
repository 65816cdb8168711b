# Two commands do everything on a fresh machine:
#   make run    set up the environment, then run the whole course headless (HTML reports in build/full/html/)
#   make test   set up the environment, then run ruff, pytest and nbval over the committed notebooks
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# A folder holding local copies of the data sets (copied into data/ when it exists; otherwise loaders download).
DATA_MIRROR ?= ../shared/data
ARGS ?=

.PHONY: setup data run quick test lint lab kernel clean

$(STAMP): requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP) data

data:
	@mkdir -p data
	@if [ -d "$(DATA_MIRROR)" ]; then \
		for f in "$(DATA_MIRROR)"/*.txt "$(DATA_MIRROR)"/*.tsv; do \
			[ -e "$$f" ] && [ ! -e "data/$$(basename "$$f")" ] && cp "$$f" data/ && echo "copied $$(basename "$$f") into data/"; \
		done; true; \
	fi

run: setup
	$(PY) run_all.py $(ARGS)

quick: setup
	$(PY) run_all.py --quick $(ARGS)

test: setup lint
	COURSE_MODE=quick $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env \
		--nbval-sanitize-with nbval_sanitize.cfg -p no:cacheprovider $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

lab: setup kernel
	$(VENV)/bin/jupyter lab notebooks/

kernel: $(STAMP)
	$(PY) -m ipykernel install --user --name transformers-course --display-name "Python (transformers-course)"

clean:
	rm -rf build artifacts/quick .pytest_cache
