# Two commands do everything on a fresh clone: `make replay` and `make test`.
SHELL := /bin/bash
comma := ,
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PARITY_CACHE_DIR ?= $(CURDIR)/.cache/parity

DEFAULT_CASES := cases/default
TRAIN_CASES := cases/train
VALIDATION_CASES := cases/validation
UNLABELLED_CASES := cases/unlabelled
# The reference model is committed (weights + sidecar): training is not bit-reproducible across CPUs,
# and the committed baseline, the zoo's parent and every README figure are of this one file.
REFERENCE_CKPT := checkpoints/reference.pt
TRAINED_CKPT := checkpoints/trained/reference.pt

CASES ?= $(DEFAULT_CASES)
CKPT ?= $(REFERENCE_CKPT)
RUNNERS ?= auto
PIPELINE ?= vehicle,training
OUT ?=
PYTEST_ARGS ?=

.PHONY: venv replay test test-all cases train-cases validation-cases unlabelled-cases train zoo rank claims gate bench sweep clean-cache help

help:
	@echo "make replay [CASES=...] [CKPT=...] [RUNNERS=...] [PIPELINE=...] [OUT=...]"
	@echo "make sweep [PERTURB=deploy|corruptions|all|name,...] [SEVERITIES=1..5] [SWEEP_WINDOW_S=3]"
	@echo "make test | make test-all | make bench [BENCH=name,...] | make cases | make train | make zoo | make rank [RANK_PERTURB=deploy] [RANK_SEVERITIES=1,3,5] | make claims"
	@echo "make train: retrains the reference into $(TRAINED_CKPT) (differs by machine; the committed $(REFERENCE_CKPT) is what replay, gate, sweep and rank use)"
	@echo "make gate [BASELINE=reports/baselines/reference.json] [OUT=reports/gate]"

# The venv is rebuilt whenever pyproject.toml, setup.py or a compiled module's C source is newer than the last install.
# torch==2.13.0 first: it is the CPU build on this machine's disk; a range would pull a CUDA build.
$(STAMP): pyproject.toml setup.py $(wildcard parity/*.c parity/*/*.c)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@# pip compiles what it copies, and an editable install copies nothing: where PYTHONDONTWRITEBYTECODE is set
	@# (this machine and CI images), every command would compile parity's modules again (~0.07 s of each).
	$(PY) -m compileall -q parity > /dev/null
	@touch $(STAMP)

venv: $(STAMP)

cases: $(STAMP)
	$(PY) -m parity cases generate --suite default --out $(DEFAULT_CASES)

train-cases: $(STAMP)
	$(PY) -m parity cases generate --suite train --out $(TRAIN_CASES)

# Where recipes make their choices (wise-ft's alpha, soup-greedy's ingredients): disjoint from train and default.
validation-cases: $(STAMP)
	$(PY) -m parity cases generate --suite validation --out $(VALIDATION_CASES)

# What UAT learns from: twice the training suite's cases, written without GT.
unlabelled-cases: $(STAMP)
	$(PY) -m parity cases generate --suite unlabelled --out $(UNLABELLED_CASES)

$(REFERENCE_CKPT):
	@echo "$(REFERENCE_CKPT) is committed with the repository and missing here: git checkout -- $(REFERENCE_CKPT) $(REFERENCE_CKPT:.pt=.json)" >&2; exit 2

# Retrains the reference from scratch (about 4 minutes on 2 cores) beside the committed one, never over
# it: training is deterministic on one machine but not across CPUs, so the result differs by machine
# and the committed baseline does not describe it (make a baseline of your own: docs/ci.md).
train: train-cases cases
	$(PY) -m parity train --cases $(TRAIN_CASES) --eval-cases $(DEFAULT_CASES) --out $(TRAINED_CKPT)
	@echo "note: $(TRAINED_CKPT) differs by machine (CPU kernels change training's arithmetic); make replay, gate, sweep and rank use the committed $(REFERENCE_CKPT): CKPT=$(TRAINED_CKPT) replays this one"

# Every training recipe fine-tuning the reference: checkpoints/zoo/<method>.pt, reused when up to date.
ZOO ?= checkpoints/zoo
# Three seeds per recipe: a verdict about a method needs re-training's spread (parity rank's method board).
ZOO_SEEDS ?= 3
ZOO_EPOCHS ?= 4
zoo: train-cases validation-cases unlabelled-cases cases $(REFERENCE_CKPT)
	$(PY) -m parity zoo --cases $(TRAIN_CASES) --eval-cases $(DEFAULT_CASES) --select-cases $(VALIDATION_CASES) --unlabelled-cases $(UNLABELLED_CASES) --from $(REFERENCE_CKPT) --seeds $(ZOO_SEEDS) --epochs $(ZOO_EPOCHS) --out $(ZOO)

# The zoo ranked on the default suite, with a greedy soup chosen by the deployment score on the
# deployed runner beside the zoo's accuracy-greedy one (same ingredients). Units are cached: adding
# a checkpoint evaluates only that checkpoint.
RANK_RUNNERS ?= torch,ort-fp16
RANK_PERTURB ?= deploy
RANK_SEVERITIES ?= 1,3,5
SOUPS := checkpoints/soups
$(SOUPS)/soup-deployed.pt: $(ZOO)/zoo.json
	$(PY) -m parity soup --ingredients $(ZOO)/erm.pt '$(ZOO)/soup-greedy.ingredients/*.pt' --criterion deployment-score --cases $(VALIDATION_CASES) --out $@
rank: zoo
	$(MAKE) --no-print-directory $(SOUPS)/soup-deployed.pt
	$(PY) -m parity rank --checkpoints $(REFERENCE_CKPT) '$(ZOO)/*.pt' $(SOUPS)/soup-deployed.pt --cases $(DEFAULT_CASES) --runners $(RANK_RUNNERS) --perturb $(RANK_PERTURB) --severities $(RANK_SEVERITIES) --out $(or $(OUT),reports/rank) --overwrite

# The source documents' claims tested on the ranked zoo (docs/ranking.md#the-claims-table-parity-claims).
claims: rank
	$(PY) -m parity claims --rank $(or $(OUT),reports/rank)

# Default cases are rendered on first use, then reused; the reference checkpoint is the committed one. The run folder is
# fixed, so `make replay` again continues a killed run (and reuses a finished one: same inputs, same
# code); other inputs replace it (--overwrite deletes only the files its manifest lists).
replay: $(STAMP) $(if $(filter $(DEFAULT_CASES)% default,$(CASES)),cases) $(if $(filter $(REFERENCE_CKPT),$(CKPT)),$(REFERENCE_CKPT))
	$(PY) -m parity replay --cases $(CASES) --checkpoint $(CKPT) --runners $(RUNNERS) --pipeline $(PIPELINE) --out $(or $(OUT),reports/replay) --overwrite

# The reference model on the default suite against the committed baseline (docs/ci.md): the
# baseline's runners and pipelines, exit 0 pass, 1 regression, 3 cannot compare.
BASELINE ?= reports/baselines/reference.json
gate: $(STAMP) cases $(REFERENCE_CKPT)
	$(PY) -m parity gate --baseline $(BASELINE) --out $(or $(OUT),reports/gate) --overwrite

test: $(STAMP)
	$(PY) -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

clean-cache:
	rm -rf .cache

# Speed and memory targets live here, never in unit tests. Results: reports/bench/, collected in
# reports/bench/summary.md. The rank benchmarks rank the zoo, so bench builds it first; Polygraphy
# comes from the bench extra. BENCH=name,... runs only those (the summary is always rewritten).
BENCH ?=
BENCH_ALL := cross_machine scale ufld_cost drive_log polygraphy_compare perturb_cost full_sweep rank_time rank_memory replay_memory metrics_speed
bench: zoo
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	@for b in $(if $(BENCH),$(subst $(comma), ,$(BENCH)),$(BENCH_ALL)); do echo "== benchmarks/$$b.py"; $(PY) benchmarks/$$b.py || exit 1; done
	$(PY) benchmarks/summary.py

# Perturbation sweep of the reference model: every deployment mismatch at severities 1..5.
PERTURB ?= deploy
SEVERITIES ?= 1..5
SWEEP_WINDOW_S ?= 3
sweep: $(STAMP) $(if $(filter $(DEFAULT_CASES)% default,$(CASES)),cases) $(if $(filter $(REFERENCE_CKPT),$(CKPT)),$(REFERENCE_CKPT))
	$(PY) -m parity sweep --cases $(CASES) --checkpoint $(CKPT) --runners $(if $(filter auto,$(RUNNERS)),torch,$(RUNNERS)) --pipeline vehicle --perturb $(PERTURB) --severities $(SEVERITIES) --window-s $(SWEEP_WINDOW_S) --out $(or $(OUT),reports/sweep) --overwrite
