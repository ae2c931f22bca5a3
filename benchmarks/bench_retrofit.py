"""Retrofit step cost as the memory grows: dense AdamW on the value tables against row-sparse values (lazy row Adam),
side by side, in one run. Each (slots, mode) pair runs in a fresh subprocess, on the same random batch.

    python benchmarks/bench_retrofit.py --out benchmarks/results          # SmolLM2-135M shape (random), this CPU
    python benchmarks/bench_retrofit.py --quick --out /tmp/b              # a seconds-long check of the script

Writes ``{target}_retrofit.csv``: slots, mode, seconds per retrofit step (median of the timed steps), peak resident
memory. The retrofit trains values, W1, W2 and alpha with the query and keys frozen (the spread pilot's recipe).
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import smf_lib as S

TARGETS = {
    "tiny": dict(hidden=64, layers=4, heads=4, kv=2, inter=128, vocab=256, mem_layers=(1, 2), batch=4, seq=16,
                 accum=1, steps=2, warmup=1, n_keys=(8, 32)),
    "cpu": dict(hidden=576, layers=30, heads=9, kv=3, inter=1536, vocab=49152, mem_layers=(7, 15, 22), batch=8,
                seq=128, accum=2, steps=4, warmup=1, n_keys=(64, 128, 256, 512)),
}


def one(target: str, n_keys: int, sparse: bool) -> dict:
    """Time retrofit steps of one memory size and mode (run in its own process)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    t = TARGETS[target]
    S.tune_cpu_allocator()
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=t["hidden"], num_hidden_layers=t["layers"], num_attention_heads=t["heads"],
                      num_key_value_heads=t["kv"], intermediate_size=t["inter"], vocab_size=t["vocab"])
    model = LlamaForCausalLM(cfg)
    S.add_memory(model, S.MemoryConfig(layers=t["mem_layers"], n_keys=n_keys, knn=min(16, n_keys)))
    tc = S.TrainConfig(method="retrofit", lr=5e-3, warmup_steps=0, micro_batch=t["batch"], grad_accum=t["accum"],
                       retrofit={"addressing": "frozen", "sparse_values": sparse})
    model = S.training.prepare_model(model, tc)
    smf = S.SparseMemory(model, select=False) if sparse else None
    dense = [p for n, p in model.named_parameters() if p.requires_grad and not (sparse and n.endswith("values.weight"))]
    opt = torch.optim.AdamW(dense, lr=5e-3)
    ids = torch.randint(0, t["vocab"], (t["batch"], t["seq"]))
    times = []
    for step in range(t["warmup"] + t["steps"]):
        t0 = time.perf_counter()
        for _ in range(t["accum"]):
            model(input_ids=ids, labels=ids).loss.backward()
            if smf:
                smf.record()
        if smf:
            smf.select()
            smf.step(5e-3)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= t["warmup"]:
            times.append(time.perf_counter() - t0)
    return {"slots": n_keys**2, "mode": "row-sparse values" if sparse else "dense AdamW", "threads":
            torch.get_num_threads(), "seconds_per_step": statistics.median(times),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="cpu", choices=sorted(TARGETS))
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--quick", action="store_true", help="the tiny target (checks the script)")
    ap.add_argument("--one", nargs=2, metavar=("N_KEYS", "SPARSE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    target = "tiny" if args.quick else args.target
    if args.one:
        print(json.dumps(one(target, int(args.one[0]), args.one[1] == "1")))
        return 0
    rows = []
    for n in TARGETS[target]["n_keys"]:
        for sparse in (False, True):
            res = subprocess.run([sys.executable, __file__, "--target", target, "--one", str(n), str(int(sparse))],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{target}_retrofit.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
