"""Row-sparse Adam's step cost over many steps: flat in the number of rows touched so far (a step costs O(t)).

    python benchmarks/bench_row_adam.py --steps 1000 --rows 16384 --dim 896 --top-t 512

Each step updates ``top_t`` rows drawn at random, so the set of rows touched so far grows towards the whole table;
the script prints the median step time of each tenth of the run. A cost that grows with the rows touched so far
would show in the later tenths.
"""

import argparse
import statistics
import time

import torch

from smf_lib.training import RowSparseAdam


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=16384)
    ap.add_argument("--dim", type=int, default=896)
    ap.add_argument("--top-t", type=int, default=512)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    table = torch.zeros(args.rows, args.dim, device=args.device)
    rule = RowSparseAdam(table)
    times = []
    for _ in range(args.steps):
        rows = torch.randperm(args.rows, generator=g)[: args.top_t].sort().values.to(args.device)
        grads = torch.randn(args.top_t, args.dim, generator=g).to(args.device)
        if args.device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        rule.step(rows, grads, 1e-3)
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    tenth = max(1, args.steps // 10)
    meds = [statistics.median(times[i:i + tenth]) * 1e3 for i in range(0, args.steps, tenth)]
    print(f"rows touched at the end: {rule.used} of {args.rows}")
    print("median step (ms) per tenth of the run: " + ", ".join(f"{m:.2f}" for m in meds))
    print(f"last tenth / first tenth: {meds[-1] / meds[0]:.2f}")


if __name__ == "__main__":
    main()
