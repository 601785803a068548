# `make demo` and `make test` do all the set-up on a fresh clone: a .venv with the pinned
# torch build, then this project (editable) with its dev, dali, trackers and mlflow extras (`make test`: and DeepSpeed).
# Re-running skips the installs unless pyproject.toml or constraints.txt changed. `make test` also
# installs, once and before pytest, the Debian packages some tests need (SLURM and munge, chromium):
# launch/system_packages.sh, as root (not root: it says what is missing, and those tests skip).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH_STAMP := $(VENV)/.cg-train-torch-installed
STAMP  := $(VENV)/.cg-train-installed
DS_STAMP := $(VENV)/.cg-train-deepspeed-installed
SYS_STAMP := $(VENV)/.cg-train-system-packages
PIP    := $(PY) -m pip install --disable-pip-version-check -c constraints.txt
# an earlier install's CUDA 12 DALI build goes before the CUDA 13 one comes (both are the nvidia.dali package)
DROP_DALI_CUDA12 := $(PY) -m pip uninstall -y -q nvidia-dali-cuda120
DEMO_DATA := data/demo-mnist
DEMO_OUT  := runs/demo
DEMO_PLOTS := runs/plots

.PHONY: install demo test clean FORCE

$(PY):
	$(PYTHON) -m venv $(VENV)

# The pinned torch build first, alone: nothing installed after it may pull another one.
$(TORCH_STAMP): constraints.txt | $(PY)
	$(PIP) torch==2.14.1 torchvision==0.29.1
	touch $@

$(STAMP): pyproject.toml $(TORCH_STAMP)
	$(DROP_DALI_CUDA12)
	$(PIP) -e '.[dev,dali,trackers,mlflow]'
	touch $(STAMP)

# The tests also cover the optional DeepSpeed backend: a pure-Python build (DS_BUILD_OPS=0, no CUDA kernels),
# installed with the demo's extras in one pip run (what `make install` has, too, so the stamp of that is set).
# On a CPU-only machine DeepSpeed compiles its shared-memory collective on first use (~40 s); do it here, once.
$(DS_STAMP): pyproject.toml $(TORCH_STAMP)
	$(DROP_DALI_CUDA12)
	DS_BUILD_OPS=0 $(PIP) -e '.[dev,dali,trackers,mlflow,deepspeed]'
	$(PY) -c "from deepspeed.accelerator import get_accelerator as a; b = a().create_op_builder('ShareMemCommBuilder'); b and b.load()"
	touch $(DS_STAMP) $(STAMP)

# Debian packages for the tests, never installed from a test worker. Runs again when the script (where the
# package sets are listed) changed or one of its packages is missing; the stamp only once all are installed.
SYS_MISSING := $(shell launch/system_packages.sh --missing 2>/dev/null)
$(SYS_STAMP): launch/system_packages.sh $(if $(SYS_MISSING),FORCE) | $(PY)
	launch/system_packages.sh
	@if [ -z "$$(launch/system_packages.sh --missing)" ]; then touch $@; fi

install: $(STAMP)

demo: install
	$(VENV)/bin/cg-train prepare-demo $(DEMO_DATA)
	$(VENV)/bin/cg-train --config configs/demo.yaml $(DEMO_DATA) --output-dir $(DEMO_OUT) --resume
	$(VENV)/bin/cg-analyze $(dir $(DEMO_OUT)) --output $(DEMO_PLOTS)
	@echo "demo results: $(DEMO_OUT)/{train,pristine,corrupt,train_sample,test}.csv; learning paths: $(DEMO_OUT)/paths/; plots: $(DEMO_PLOTS)/"

# The Debian packages and the pip installs are independent: apt-get runs beside pip (-j2), not before it.
test:
	@$(MAKE) --no-print-directory -j2 $(SYS_STAMP) $(DS_STAMP)
	$(PY) -m pytest -n 2 tests

clean:
	rm -rf $(VENV) runs data .pytest_cache
