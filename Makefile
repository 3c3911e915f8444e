PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test test-slow test-gpu demo clean

install: $(BIN)/guidelab-train

$(BIN)/guidelab-train: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -e '.[dev]'
	touch $@

test: install
	$(BIN)/pytest -q

test-slow: install
	$(BIN)/pytest -q -m 'slow and not gpu' || [ $$? -eq 5 ]  # 5: no slow tests selected

test-gpu: install
	$(BIN)/pytest -q -m gpu  # the CUDA tests (tests/test_gpu.py); needs a GPU

demo: install
	$(BIN)/guidelab-demo

clean:
	rm -rf outputs multirun wandb lightning_logs .pytest_cache dist build
