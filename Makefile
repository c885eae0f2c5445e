# bertflow: the two commands of the README.
#   make demo   set up everything, build, run pipelines/demo.yaml on the bundled sample
#   make test   set up everything, run the whole test suite
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/bertflow/target
CARGO ?= cargo

.PHONY: setup build demo test fmt lint clean

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
