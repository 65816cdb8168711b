# Two commands do everything on a fresh machine:
#   make run    set up the environment, then run the whole course headless (HTML reports in build/full/html/)
#   make test   set up the environment, then run ruff, pytest and nbval over the committed notebooks
# The website: make site (build/site/index.html), make site-check (headless Chromium over every page)
# Learn by building (exercises/ is yours: never overwritten, ignored by git):
#   make exercises                 create the exercise notebooks that are missing in exercises/
#   make check                     grade every exercise in exercises/ (each notebook in a fresh process, LIMIT=90 s
#                                  per cell and per check) and print the scoreboard as it goes
#   make check-solutions           grade the reference solutions (solutions/) the same way
#   make reset-exercise EX=02      restore one exercise notebook, or EX=02.sdpa one exercise (yours: exercises/backup/)
#   make solution EX=02.sdpa       print the reference solution of one exercise
# Maintainers: make reproduce NB="06 10"  re-run notebooks and compare every non-timing metric with the committed one
#              make lock                 regenerate constraints.txt (the lock) from pyproject.toml's dependencies
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# A folder holding local copies of the data sets (copied into data/ when it exists; otherwise loaders download).
DATA_MIRROR ?= ../shared/data
ARGS ?=
LIMIT ?= 90

.PHONY: setup lock data run quick test lint lab kernel clean exercises check check-solutions reset-exercise solution site site-check reproduce

# CPU-only PyTorch on Linux (PyPI's Linux wheel also pulls several GB of NVIDIA CUDA libraries):
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

# The course's dependencies are declared in pyproject.toml (extras: test, site); constraints.txt is their lock.
$(STAMP): constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@if [ -n "$(TORCH_INDEX)" ]; then $(PY) -m pip install --quiet torch==2.13.0 --index-url "$(TORCH_INDEX)"; fi
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,site]"
	touch $(STAMP)

# Maintainers: regenerate the lock from pyproject.toml with pip-tools (in its own venv), keeping every pin that still
# fits; torch's "+cpu" label names the Linux CPU wheel only, so the lock keeps the plain version every platform has.
lock:
	$(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/python -m pip install --quiet pip-tools==7.7.0
	CUSTOM_COMPILE_COMMAND="make lock" build/lock-venv/bin/pip-compile --quiet --all-extras --strip-extras --no-emit-index-url --no-emit-find-links \
		--upgrade-package "torch==2.13.0" --output-file constraints.txt pyproject.toml
	sed -i.bak 's/^torch==\(.*\)+cpu$$/torch==\1/' constraints.txt && rm constraints.txt.bak

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
	@if [ "$$(id -u)" = 0 ]; then \
		echo "running as root: starting JupyterLab with --allow-root"; \
		$(VENV)/bin/jupyter lab --allow-root; \
	else \
		$(VENV)/bin/jupyter lab; \
	fi

exercises: setup kernel
	@$(PY) -m grader.workspace create

check: $(STAMP)
	@COURSE_EXERCISE_SECONDS=$(LIMIT) $(PY) -m grader.workspace check

check-solutions: $(STAMP)
	@$(PY) -m grader.workspace check-solutions

reset-exercise: $(STAMP)
	@$(PY) -m grader.workspace reset "$(EX)"

solution: $(STAMP)
	@$(PY) -m grader.workspace solution "$(EX)"

# The kernel the notebooks name, registered inside this clone's .venv (--sys-prefix): two clones keep one each.
kernel: $(STAMP)
	$(PY) -m ipykernel install --sys-prefix --name transformers-course --display-name "Python (transformers-course)"

clean:
	rm -rf build artifacts/quick .pytest_cache

site: $(STAMP)
	@$(PY) website/build_site.py

site-check: $(STAMP)
	@$(PY) website/check_site.py

reproduce: setup
	$(PY) scripts/reproduce.py $(NB)
