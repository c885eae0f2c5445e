# bertflow: the two commands of the README.
#   make demo   set up everything, build, run pipelines/demo.yaml on the bundled sample
#   make test   set up everything, run the whole test suite
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/bertflow/target
CARGO ?= cargo

.PHONY: wheel setup build demo stream-demo vector-demo hybrid-demo gpu-check kafka postgres s3 test fmt lint clean reference refenv bench config-docs image-check

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release --locked

# The Python package (one abi3 manylinux wheel, maturin) into target-wheels/; docs/python.md.
wheel: setup
	bash scripts/python_env.sh wheel

demo: build
	@mkdir -p out
	$(CARGO_TARGET_DIR)/release/bertflow run pipelines/demo.yaml

# Streaming: a local Kafka broker and the feedback pipeline, Kafka -> Kafka.
stream-demo: build
	bash scripts/stream_demo.sh

# Vector store: a local Postgres with pgvector, the sample embedded into it, a nearest-neighbour query.
vector-demo: build
	bash scripts/vector_demo.sh

# Hybrid search: the sample with dense and sparse (SPLADE) vectors in pgvector; for one review, the
# dense, sparse and reciprocal-rank-fused top 5.
hybrid-demo: build refenv
	bash scripts/hybrid_demo.sh

# A local PostgreSQL + pgvector server on 127.0.0.1:55432 (scripts/postgres.sh stop to end it).
postgres:
	bash scripts/postgres.sh start

# A local S3 server (SeaweedFS) on 127.0.0.1:39000 with a bucket `bertflow`
# (scripts/s3.sh stop to end it; `eval "$$(bash scripts/s3.sh env)"` for its credentials).
s3:
	bash scripts/s3.sh start

# A local single-node Kafka broker on 127.0.0.1:9092 (scripts/kafka.sh stop to end it).
kafka:
	bash scripts/kafka.sh start

test: setup refenv
	bash scripts/test.sh

# Build docker/Dockerfile (and Dockerfile.cuda) with podman and check the images as a user runs
# them (scripts/images.sh). Not part of `make test`: it compiles bertflow inside the image.
image-check: setup
	bash scripts/images.sh

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

clean:
	rm -rf out

# The GPU check (bench/gpu_check.sh): on a machine with an NVIDIA GPU and the onnxruntime-gpu
# libraries packed by `bench/gpu_check.sh pack`, the full check; elsewhere its CPU dry run.
gpu-check: build
	bash bench/gpu_check.sh $$(command -v nvidia-smi >/dev/null 2>&1 && echo run || echo dry-run) .bench/gpu-check

# Regenerate the reference part of docs/configuration.md from the configuration types.
config-docs:
	BERTFLOW_WRITE_DOCS=1 $(CARGO) test --lib config::reference

# Python environment with torch, sentence-transformers and transformers 4.53, used only to
# regenerate test fixtures and to run the Python baselines of the benchmark (needs PyPI).
REFENV ?= $(HOME)/.cache/bertflow/refenv
refenv:
	@[ -x $(REFENV)/bin/python ] || python3 -m venv $(REFENV)
	$(REFENV)/bin/pip install -q torch "sentence-transformers==5.*" "transformers==4.53.*" "tokenizers==0.21.*" onnxruntime==1.31.1 pyarrow onnx

# Regenerate the committed reference outputs under tests/fixtures/.
reference: setup refenv
	$(REFENV)/bin/python scripts/make_reference.py
	$(REFENV)/bin/python scripts/make_task_fixtures.py
	$(REFENV)/bin/python scripts/make_pair_fixtures.py
	$(REFENV)/bin/python scripts/make_sparse_fixtures.py
	$(REFENV)/bin/python scripts/make_prompt_fixtures.py
	$(REFENV)/bin/python scripts/make_export_fixtures.py

# Benchmark against the Python stack and raw ONNX Runtime; writes docs/benchmarks.md.
bench: build refenv
	REFENV=$(REFENV) bash bench/run.sh
