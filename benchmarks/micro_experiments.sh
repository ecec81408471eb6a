#!/usr/bin/env bash
# The experiments behind docs/results.md for the micro models (2 CPU cores, ~1 hour).
# Expects runs/data-stdlib, runs/micro-sparse and runs/micro-dense; after `make demo`, link them:
#   ln -s demo/data runs/data-stdlib; ln -s demo/sparse runs/micro-sparse; ln -s demo/dense runs/micro-dense
# Part `circuits` (tasks, pruning, budget) and part `tokens` (a longer dense run) are
# independent: run them side by side with one thread each, e.g.
#   OMP_NUM_THREADS=1 bash benchmarks/micro_experiments.sh circuits &
#   OMP_NUM_THREADS=1 bash benchmarks/micro_experiments.sh tokens
set -euo pipefail
cd "$(dirname "$0")/.."
SC=".venv/bin/sparse-circuits"
R=benchmarks/results
mkdir -p "$R"

part=${1:-all}
if [ "$part" = circuits ] || [ "$part" = all ]; then
# Issue 3: every task on the test split, both models.
for m in micro-sparse micro-dense; do
  $SC tasks eval --model runs/$m --json $R/tasks-$m.json > $R/tasks-$m.txt
done

# Issue 4: prune every task each model does, validate, geometric mean of edges.
for m in micro-sparse micro-dense; do
  $SC prune-all --model runs/$m > $R/prune-all-$m.txt
done

# Issue 4: circuit size against the search budget.
.venv/bin/python benchmarks/bench_pruning.py --model runs/micro-sparse \
  --tasks while_return_true,single_double_quote --runs 8 > $R/pruning-budget.txt

fi

if [ "$part" = tokens ] || [ "$part" = all ]; then
# Issue 3: tokens seen. The dense micro model trained twice as long, tasks at each checkpoint.
echo '{"train": {"checkpoint_every": 1000, "keep_checkpoints": 0}}' > /tmp/long.json
$SC train --data runs/data-stdlib --preset micro --dense --steps 4000 --out runs/micro-dense-4k \
  --config /tmp/long.json --resume-if-exists > /dev/null
for step in 1000 2000 3000 4000; do
  $SC tasks eval --model runs/micro-dense-4k --step $step --json $R/tasks-micro-dense-4k-$step.json \
    > $R/tasks-micro-dense-4k-$step.txt
done
fi

if [ "$part" = matched ] || [ "$part" = all ]; then
# Issue 4: a dense model at the sparse model's pretraining loss. The 4000-step dense run's
# checkpoint at step 1000 has validation loss 3.756 (sparse: 3.793); prune it as a run of its own.
D=runs/micro-dense-4k-step1000
mkdir -p $D
cp runs/micro-dense-4k/config.json runs/micro-dense-4k/tokenizer.json $D/
cp runs/micro-dense-4k/checkpoints/step_00001000/model.safetensors $D/
$SC tasks eval --model $D --json $R/tasks-micro-dense-4k-step1000.json > $R/tasks-micro-dense-4k-step1000.txt
$SC prune-all --model $D > $R/prune-all-micro-dense-4k-step1000.txt
fi
