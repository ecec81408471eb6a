#!/usr/bin/env bash
# GPU readiness (issue 29): on a CUDA machine, train the `small` preset (8 x 512, 1/64 of the
# weights nonzero, context 256, batch 64) in bf16 for a few minutes, then prune one task and print
# the training throughput and the circuit. CI never runs this; the project never needs a GPU.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR] [STEPS]     (defaults: runs/gpu-check, 1500 steps)
#
# DATA=DIR uses an existing data directory; DEVICE=cpu PRESET=tiny checks the script's plumbing
# on a machine without a GPU (that is how it was checked before any GPU ran it).
#
# Needs nothing from the network: the corpus is this Python's standard library plus generated
# programs (`data`'s defaults). Pruning runs on the CPU, as everywhere in this project.
# Writes OUT_DIR/{data,run,circuit} and OUT_DIR/gpu_check.json (what it printed, as numbers).
set -euo pipefail

OUT=${1:-runs/gpu-check}
STEPS=${2:-1500}
SC=${SC:-sparse-circuits}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-small}
DATA=${DATA:-$OUT/data}
TASK=single_double_quote

python - "$DEVICE" <<'EOF'
import sys, torch
if sys.argv[1] == "cpu":
    print("gpu_check: DEVICE=cpu, checking the script only")
    sys.exit(0)
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device (torch.cuda.is_available() is False); run it on a GPU machine")
print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, bf16 {torch.cuda.is_bf16_supported()}")
EOF

mkdir -p "$OUT"
start=$(date +%s)
if [ ! -f "$DATA/meta.json" ]; then
  $SC data --out "$DATA"
fi
data_s=$(( $(date +%s) - start ))

start=$(date +%s)
$SC train --data "$DATA" --preset "$PRESET" --precision bf16 --device "$DEVICE" --steps "$STEPS" \
  --out "$OUT/run" --resume-if-exists
train_s=$(( $(date +%s) - start ))
$SC info "$OUT/run"

start=$(date +%s)
$SC tasks eval --model "$OUT/run" --json "$OUT/tasks.json"
# The quote task if the model does it, else the learned task with the lowest loss (>= 0.9 accuracy).
TASK=$(python - "$OUT/tasks.json" "$TASK" <<'EOF'
import json, sys
scores = [s for s in json.load(open(sys.argv[1]))["scores"] if s["error"] is None and s["accuracy"] >= 0.9
          and not s["task"].startswith("nonsense")]
names = [s["task"] for s in sorted(scores, key=lambda s: s["loss"])]
print(sys.argv[2] if sys.argv[2] in names else (names[0] if names else ""))
EOF
)
if [ -z "$TASK" ]; then
  echo "gpu_check: the model learned no task (accuracy >= 0.9) in $STEPS steps: nothing to prune; train longer" >&2
  exit 1
fi
echo "gpu_check: pruning $TASK"
$SC prune --model "$OUT/run" --task "$TASK" --out "$OUT/circuit" --budget 1
$SC validate "$OUT/circuit" --model "$OUT/run"
prune_s=$(( $(date +%s) - start ))

python - "$OUT" "$data_s" "$train_s" "$prune_s" "$TASK" <<'EOF'
import json, statistics, sys
from pathlib import Path
out, data_s, train_s, prune_s, task = Path(sys.argv[1]), *map(int, sys.argv[2:5]), sys.argv[5]
records = [json.loads(l) for l in (out / "run" / "metrics.jsonl").read_text().splitlines() if l.strip()]
tps = [r["tokens_per_s"] for r in records if "tokens_per_s" in r]
val = [r["val_loss"] for r in records if "val_loss" in r]
circuit = json.loads((out / "circuit" / "circuit.json").read_text())
result = {"tokens_per_s_median": statistics.median(tps) if tps else None, "final_val_loss": val[-1] if val else None,
          "steps": records[-1]["step"] if records else None, "data_s": data_s, "train_s": train_s, "prune_s": prune_s,
          "task": task, "circuit": {k: circuit[k] for k in ("num_nodes", "num_edges", "loss", "target_loss")}}
validation = out / "circuit" / "validation.json"
if validation.is_file():
    result["validation"] = json.loads(validation.read_text())
(out / "gpu_check.json").write_text(json.dumps(result, indent=1) + "\n")
print(json.dumps(result, indent=1))
EOF
