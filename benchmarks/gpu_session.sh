#!/usr/bin/env bash
# One prepared command for a GPU machine without network access:
#   bash benchmarks/gpu_session.sh
# It runs the GPU target of the benchmark (Qwen2.5-0.5B-shaped random model, bf16) on the image's python3
# (torch, transformers, peft, pandas are there; smf_lib comes from this checkout) and writes to $OUT:
# results/gpu_steps.csv, gpu_slots.csv (both written after every row), gpu_meta.json, env.txt, log.txt.
# Copy results/* into benchmarks/results/ afterwards. Checked beforehand on a CPU with
#   BENCH_QUICK=1 python benchmarks/bench_steps.py --target gpu --device cpu --quick --out /tmp/gpu-dry
set -uo pipefail
OUT=${OUT:-/tmp/smf-gpu-out}
mkdir -p "$OUT/results"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TQDM_DISABLE=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'transformers', transformers.__version__, 'peft', peft.__version__)"; } > "$OUT/env.txt" 2>&1
timeout "${BENCH_LIMIT_S:-500}" python3 benchmarks/bench_steps.py --target gpu --out "$OUT/results" \
  > "$OUT/log.txt" 2>&1
echo "bench exit $?" >> "$OUT/log.txt"
tail -n 40 "$OUT/log.txt"
