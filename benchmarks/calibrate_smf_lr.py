"""Pick the SMF strict-SGD learning rate for the cpu preset on the retrofitted model.

The value-table gradient of a mean-token loss is tiny (alpha * softmax weight * ..., averaged over every token
of the batch), so plain SGD needs a large learning rate. This script trains a few steps on MedMCQA train
texts at several rates from the retrofit adapter of results/cpu and reports the held-out loss on the last
48 MedMCQA train questions (never used by the cpu preset, which trains on the first 1,200, and disjoint from
the validation items it evaluates on). Usage (after the cpu retrofit exists):

    python benchmarks/calibrate_smf_lr.py --results results/cpu --out benchmarks/results/smf_lr_cpu.json
"""

import argparse
import copy
from pathlib import Path

import torch

import smf_lib as S
from smf_lib import data as D
from smf_lib.experiments import write_json
from smf_lib.training import _collate


def heldout_loss(model, tok, texts):
    with torch.no_grad():
        chunks = [texts[i:i + 16] for i in range(0, len(texts), 16)]
        return sum(float(model(**_collate(tok, c, 256, "cpu")).loss) for c in chunks) / len(chunks)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default="results/cpu")
    ap.add_argument("--out", default="benchmarks/results/smf_lr_cpu.json")
    ap.add_argument("--lrs", nargs="+", type=float, default=[1e3, 1e4, 1e5, 1e6])
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    ref = Path(args.results) / "artifacts" / "retrofit-additive-s0"
    base, tok = S.load_model()
    S.load_memory(base, ref / "adapter")
    stats = S.BackgroundStats.load(ref / "background.safetensors", base)
    rows = D.load_medmcqa("train")
    train = [D.medmcqa_training_text(r) for r in rows[:16 * args.steps]]
    held = [D.medmcqa_training_text(r) for r in rows[-48:]]
    out = {"before": heldout_loss(base, tok, held), "runs": []}
    for lr in args.lrs:
        m = copy.deepcopy(base)
        cfg = S.TrainConfig(method="smf", selector="kl", lr=lr, micro_batch=8, grad_accum=2, max_length=256,
                            warmup_steps=1, top_t=128, max_steps=args.steps)
        res = S.train(m, tok, train, cfg, stats=stats, progress=False)
        out["runs"].append({"lr": lr, "train_loss": [round(x["loss"], 4) for x in res.log],
                            "heldout_loss": heldout_loss(res.model, tok, held),
                            "seconds_per_step": res.seconds / len(res.log)})
        print(out["runs"][-1], flush=True)
    out["best_lr"] = min(out["runs"], key=lambda r: r["heldout_loss"])["lr"]
    print("best lr:", out["best_lr"], "held-out loss before:", out["before"])
    write_json(Path(args.out), out)


if __name__ == "__main__":
    main()
