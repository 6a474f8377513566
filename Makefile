# The two commands of the README. Both create .venv (Python 3.11) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
QUESTION ?= 拉萨召开的妇女儿童工作会议由谁主持？

.PHONY: demo test setup setup-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

setup: $(BIN)/python
	$(BIN)/pip install -q -e .

setup-test: $(BIN)/python
	$(BIN)/pip install -q -e '.[st,test]'

# Main job on the sample corpus: build index/ and search it.
demo: setup
	$(BIN)/rag ingest data/sample
	$(BIN)/rag search "$(QUESTION)" -k 3

test: setup-test
	$(BIN)/python -m pytest
