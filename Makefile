# bertflow: the two commands of the README.
#   make demo   set up everything, build, run pipelines/demo.yaml on the bundled sample
#   make test   set up everything, run the whole test suite
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/bertflow/target
CARGO ?= cargo

.PHONY: setup build demo test fmt lint clean reference

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release --locked

demo: build
	@mkdir -p out
	$(CARGO_TARGET_DIR)/release/bertflow run pipelines/demo.yaml

test: setup
	$(CARGO) test --locked -- --test-threads=2

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

clean:
	rm -rf out

# Regenerate the committed reference outputs under tests/fixtures/ (needs PyPI; pulls torch).
REFENV ?= $(HOME)/.cache/bertflow/refenv
reference: setup
	@[ -x $(REFENV)/bin/python ] || python3 -m venv $(REFENV)
	$(REFENV)/bin/pip install -q torch sentence-transformers "transformers==4.53.*" onnxruntime==1.31.1 pyarrow onnx
	$(REFENV)/bin/python scripts/make_reference.py
