# genserve: the two commands a newcomer needs are `make demo` and `make test`.
# Everything is installed into .venv from PyPI; only Python 3.10+ is assumed.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch first and pinned: 2.13.0's CPU wheel lies on our machines' disks; letting pip choose
# another version would download a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
# cpu: onnxruntime; gpu: onnxruntime-gpu (CUDA execution provider).
RUNTIME ?= cpu
REPO   ?= model_repository
PORT   ?= 0

.PHONY: install demo test models bench bench-peers soak proto tritonclient compose-check clean

install: $(VENV)/.installed-$(RUNTIME)

$(VENV)/.installed-$(RUNTIME): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[$(RUNTIME),train,dev]"
	rm -f $(VENV)/.installed-*
	touch $@

## demo: install, build the VAE if the repository lacks it, start the service on its embedded
## default, generate a grid of 64 digits through gRPC into digits.png, stop.
demo: install
	GENSERVE_MODEL_REPOSITORY=$(REPO) scripts/demo.sh

## test: install and run the whole test suite (starts redis-server when nothing answers).
test: install
	scripts/test.sh

## models: build the default model zoo into $(REPO) (skips models that already exist).
models: install
	GENSERVE_MODEL_REPOSITORY=$(REPO) scripts/models.sh

## soak: mixed RPCs and a batch job while workers are SIGKILLed and a private Redis restarts
## (not part of `make test`); SOAK_ARGS="--requests 20000 --concurrency 32" for a long run.
soak: install models
	$(BIN)/python scripts/soak.py --repository $(REPO) $(SOAK_ARGS)

## bench: start Redis + gateway + workers as separate processes and print the tables.
bench: install models
	GENSERVE_MODEL_REPOSITORY=$(REPO) $(BIN)/python -m bench
	GENSERVE_MODEL_REPOSITORY=$(REPO) $(BIN)/python -m bench.text
	GENSERVE_MODEL_REPOSITORY=$(REPO) $(BIN)/python -m bench.textclf
	$(BIN)/python -m bench.worker_drain --repository $(REPO)

## bench-peers: genserve through Redis and embedded beside KServe 0.21's ModelServer on the same
## VAE graph, one load client, rounds interleaved in one run; bench_results/peers.{md,json}.
## KServe gets a virtualenv of its own (pinned kserve, the same onnxruntime as ours).
KSERVE_VENV ?= .venv-kserve
PEERS_ARGS  ?=
bench-peers: install $(KSERVE_VENV)/.installed
	test -d $(REPO)/vae || $(BIN)/genserve export vae --repository $(REPO)
	$(BIN)/python -m bench.peers --repository $(REPO) $(PEERS_ARGS)

$(KSERVE_VENV)/.installed:
	test -x $(KSERVE_VENV)/bin/python || $(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/python -m pip install -q "kserve==0.21.0" \
		"onnxruntime==$$($(BIN)/python -c 'import onnxruntime; print(onnxruntime.__version__)')"
	touch $@

proto: install
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. protos/genserve/v1/*.proto protos/genserve/oip/*.proto
	$(BIN)/python scripts/api_docs.py

## tritonclient: a virtualenv of its own with NVIDIA's stock client (it pins protobuf and grpcio
## apart from ours), for tests/services/test_tritonclient.py, which runs it in a subprocess.
TRITON_VENV ?= .venv-tritonclient
tritonclient: $(TRITON_VENV)/.installed

$(TRITON_VENV)/.installed:
	test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install -q "tritonclient[grpc]==2.73.0"
	touch $@

compose-check:
	docker-compose -f docker-compose.yml config --quiet && echo "docker-compose.yml is valid"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
