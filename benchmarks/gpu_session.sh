#!/usr/bin/env bash
# Every GPU measurement of the project in one script, for your own GPU machine (no network needed):
#   bash benchmarks/gpu_session.sh [OUTPUT_FOLDER]
# It runs the GPU target of the step benchmark (a Qwen2.5-0.5B-shaped random model in bfloat16: speed does not
# depend on the weights) and row-sparse Adam's step cost over 1,000 steps at the paper's shapes, with the python3
# on PATH (torch, transformers, peft and pandas installed; smf_lib from this checkout). It writes to OUTPUT_FOLDER
# (default benchmarks/results/gpu-run): gpu_steps.csv, gpu_slots.csv (both written after every row), gpu_meta.json,
# row_adam.txt, env.txt and log.txt. Copy the csv and json files into benchmarks/results/ to show them in the book.
# Set BENCH_LIMIT_S to stop the step benchmark after that many seconds (the rows written so far are kept).
# A dry run on a CPU: BENCH_QUICK=1 python benchmarks/bench_steps.py --target gpu --device cpu --quick --out /tmp/x
set -uo pipefail
OUT=${1:-benchmarks/results/gpu-run}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TQDM_DISABLE=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'transformers', transformers.__version__, 'peft', peft.__version__)"; } > "$OUT/env.txt" 2>&1
python3 benchmarks/bench_row_adam.py --steps 1000 --rows 16384 --dim 896 --top-t 512 > "$OUT/row_adam.txt" 2>&1
if [ -n "${BENCH_LIMIT_S:-}" ]; then LIMIT=(timeout "$BENCH_LIMIT_S"); else LIMIT=(); fi
"${LIMIT[@]}" python3 benchmarks/bench_steps.py --target gpu --out "$OUT" > "$OUT/log.txt" 2>&1
echo "bench exit $?" >> "$OUT/log.txt"
cat "$OUT/row_adam.txt"
tail -n 40 "$OUT/log.txt"
