# Two commands for a fresh machine:  `make demo`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the builds on this machine's disk (pip takes them without a download).
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test test-fast lint bench system-tools

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The optional extras that have tests: ray (`cv --executor ray`, tested on a local Ray instance), the
# experiment loggers (`train --logger tensorboard|mlflow`) and openvino (OpenVINO runtime, ~180 MB installed,
# + NNCF, 8 MB; its tests skip without it), highdicom + dicomweb-client (`predict --dicom-out`, DICOMweb
# sources), cleanlab (`audit --label-issues`), FastAPI + uvicorn (`review`) and selenium (its browser tests).
# `make demo` goes without them.
$(VENV)/.installed-extras: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev,ray,tensorboard,mlflow,openvino,dicom,labels,review,browser]'
	touch $@

# The Debian tools the tests use: Orthanc and its DICOMweb plugin (a real PACS, started by tests/test_pacs.py on
# 127.0.0.1), dciodvfy (dicom3tools) and dcmtk for the DICOM tests; chromium + chromium-driver for the review
# page's browser tests. Installed where make runs as root; elsewhere those tests skip with the reason.
SYSTEM_TOOLS := orthanc orthanc-dicomweb dicom3tools dcmtk chromium chromium-driver
system-tools:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  dpkg -s $(SYSTEM_TOOLS) >/dev/null 2>&1 || { apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSTEM_TOOLS); }; \
	else echo "not root: $(SYSTEM_TOOLS) not installed; the tests that need them skip"; fi

demo: setup
	$(VENV)/bin/fracturekit demo --out runs/demo

lint: $(VENV)/.installed-extras
	$(PY) -m ruff check fracturekit tests bench
	$(PY) -m ruff format --check fracturekit tests bench

# Everything, real-data tests included (they skip when ../shared/data is absent): 929 tests in 9 min 8 s on 2 cores (11 min 1 s from a clean clone, venv included).
test: lint $(VENV)/.installed-extras system-tools
	$(PY) -m pytest -q

# Without the slow real-data tests, for quick iterations.
test-fast: lint $(VENV)/.installed-extras system-tools
	$(PY) -m pytest -q -m "not slow"

bench: setup
	$(PY) bench/prepare_bench.py
	$(PY) bench/train_overhead.py
	$(PY) bench/predict_bench.py
	$(PY) bench/train_speed.py
