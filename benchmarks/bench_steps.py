"""Side-by-side training-step benchmark: base forward, SMF (strict KL / TF-IDF, the paper's update), the SMF floor,
LoRA r16 and full finetuning, all on the same batch and in one run. Each method runs in a fresh subprocess
so that its peak memory is its own.

    python benchmarks/bench_steps.py --target cpu --out benchmarks/results    # SmolLM2-135M, this CPU
    python benchmarks/bench_steps.py --target gpu --out benchmarks/results    # Qwen2.5-0.5B shape, random, CUDA

Every process first calls ``smf_lib.tune_cpu_allocator()`` (reuse freed CPU memory; ``--no-tune-allocator``
turns it off). Writes ``{target}_steps.csv`` (one row per method), ``{target}_slots.csv`` (strict SMF step time
as slots grow, with glibc's default allocator and with the tuned one) and ``{target}_meta.json`` (set-up,
product-key vs brute-force lookup, probe throughput, adapter sizes). ``--parts`` rewrites only some of them;
``--quick`` is a dry run of a target's code path (e.g. the GPU target on a CPU) whose numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import smf_lib as S

TARGETS = {
    # a seconds-long check of this script itself (tests)
    "tiny": dict(model="tiny", layers=(1, 2), n_keys=8, batch=2, seq=16, top_t=4, steps=2, warmup=1,
                 dtype="float32", slots=(8, 16)),
    # the offline default: SmolLM2-135M, memory at (7, 15, 22), a batch of 8 x 128 tokens
    "cpu": dict(model="smollm2", layers=(7, 15, 22), n_keys=64, batch=8, seq=128, top_t=128, steps=6, warmup=2,
                dtype="float32", slots=(64, 256, 1024)),
    # the paper's shapes on this CPU (float32, a smaller batch): the memory layers' forward overhead there
    "cpu-paper": dict(model="qwen2.5-0.5b-shape", layers=(6, 12, 18), n_keys=128, batch=4, seq=256, top_t=512,
                      steps=5, warmup=1, dtype="float32", slots=(128,)),
    # the paper's shapes: Qwen2.5-0.5B (random weights), memory at (6, 12, 18) with 16,384 slots, top-t 512
    "gpu": dict(model="qwen2.5-0.5b-shape", layers=(6, 12, 18), n_keys=128, batch=16, seq=1024, top_t=512,
                steps=10, warmup=3, dtype="bfloat16", slots=(64, 128, 512, 1024)),
}
METHODS = ("base-forward", "memory-forward", "smf-floor", "smf-kl", "smf-tfidf", "smf-kl-adam", "smf-kl-paper",
           "lora", "full")


class ScaledMLP(nn.Module):
    """The SMF floor: the frozen MLP times one trainable scalar (= 1), so backward must reach this layer."""

    def __init__(self, mlp):
        super().__init__()
        self.mlp, self.scale = mlp, nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.mlp(x) * self.scale


def build(target: dict, device: str):
    dtype = getattr(torch, target["dtype"])
    if target["model"] == "tiny":
        return S.tiny_model("llama").to(device), None
    if target["model"] == "smollm2":
        model, tok = S.load_model(device=device, dtype=dtype)
    else:
        from transformers import AutoModelForCausalLM, Qwen2Config

        cfg = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                          num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                          tie_word_embeddings=True)
        with torch.device(device):  # initialise the random weights where they will run
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()
        tok = None
    return model, tok


def batch_ids(target, vocab, device):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, vocab - 100, (target["batch"], target["seq"]), generator=g)
    return ids.to(device)


class IdsTokenizer:
    """Hands the trainer a fixed batch of token ids (the same batch for every method)."""

    pad_token_id = 0

    def __init__(self, ids):
        self.ids = ids

    def __call__(self, texts, **kw):
        rows = self.ids[[int(t) for t in texts]].cpu()
        return _Enc(input_ids=rows, attention_mask=torch.ones_like(rows))


class _Enc(dict):
    __getattr__ = dict.__getitem__


QUICK = dict(batch=1, seq=32, steps=1, warmup=1)  # --quick: a dry run of a target's code path, not a measurement


def target_of(name: str, quick: bool) -> dict:
    t = dict(TARGETS[name])
    if quick:
        t.update(QUICK, slots=t["slots"][:2])
    return t


def device_of(name: str) -> str:
    return os.environ.get("BENCH_DEVICE") or ("cuda" if name == "gpu" else "cpu")


def one_method(target_name: str, method: str, n_keys: int | None = None, layers=None) -> dict:
    """Time one method in this process; returns its row."""
    target = target_of(target_name, bool(os.environ.get("BENCH_QUICK")))
    device = device_of(target_name)
    if n_keys is not None:
        target["n_keys"] = n_keys
    if layers is not None:
        target["layers"] = tuple(layers)
    model, _ = build(target, device)
    ids = batch_ids(target, model.config.vocab_size, device)
    tok = IdsTokenizer(ids)
    # a control: an unused tensor as large as a table of BENCH_BALLAST_SLOTS slots, held through the run
    ballast = torch.zeros(int(os.environ.get("BENCH_BALLAST_SLOTS", 0)), model.config.hidden_size, device=device,
                          dtype=getattr(torch, target["dtype"]))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    n = target["steps"] + target["warmup"]
    texts = [str(i % target["batch"]) for i in range(target["batch"] * n)]
    opt_bytes = 0
    if method in ("base-forward", "memory-forward"):
        if method == "memory-forward":  # the forward overhead of the memory layers (paper init: real reads)
            S.add_memory(model, S.MemoryConfig(layers=target["layers"], n_keys=target["n_keys"],
                                               knn=min(16, target["n_keys"]), init="paper"))
            model.to(getattr(torch, target["dtype"]))
        times = []
        with torch.no_grad():
            for _ in range(n):
                sync(device)
                t0 = time.perf_counter()
                model(input_ids=ids)
                sync(device)
                times.append(time.perf_counter() - t0)
        times = times[target["warmup"]:]
    else:
        stats = None
        kw = dict(micro_batch=target["batch"], grad_accum=1, max_length=target["seq"], warmup_steps=1, max_steps=n,
                  top_t=target["top_t"], clip=1.0)
        if method == "smf-floor":
            layers_ = model.model.layers
            floor = layers_[min(target["layers"])].mlp = ScaledMLP(layers_[min(target["layers"])].mlp)
            model.requires_grad_(False)
            floor.scale.requires_grad_(True)
            times = []
            for _ in range(n):
                sync(device)
                t0 = time.perf_counter()
                model(input_ids=ids, labels=ids).loss.backward()
                with torch.no_grad():
                    floor.scale -= 0.0 * floor.scale.grad
                floor.scale.grad = None
                sync(device)
                times.append(time.perf_counter() - t0)
            res = None
        elif method.startswith("smf"):
            S.add_memory(model, S.MemoryConfig(layers=target["layers"], n_keys=target["n_keys"],
                                               knn=min(16, target["n_keys"])))
            stats = S.BackgroundStats(torch.zeros(len(target["layers"]), target["n_keys"] ** 2, dtype=torch.long),
                                      torch.zeros(len(target["layers"]), target["n_keys"] ** 2, dtype=torch.long),
                                      1, S.selection.memory_fingerprint(model))
            selector = "tfidf" if "tfidf" in method else "kl"
            # smf-kl / smf-tfidf: strict SGD; -adam: row-sparse Adam; -paper: gradient mask + dense AdamW
            update = {"smf-kl-adam": "adam", "smf-kl-paper": "paper"}.get(method, "sgd")
            lr = {"sgd": 1.0, "adam": 1e-3, "paper": 1e-3}[update]
            cfg = S.TrainConfig(method="smf", selector=selector, **{**kw, "lr": lr, "update": update})
            res = S.train(model, tok, texts, cfg, background=stats, progress=False)
        else:
            res = S.train(model, tok, texts, S.TrainConfig(method=method, **kw), progress=False)
        if res is not None:
            cum = [0.0] + [r["seconds"] for r in res.log]
            times = [b - a for a, b in zip(cum, cum[1:])]
            opt_bytes = res.optimizer_bytes
        times = times[target["warmup"]:]
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    med = statistics.median(times)
    return {"method": method, "median_step_s": med, "tokens_per_s": target["batch"] * target["seq"] / med,
            "peak_mem_mb": peak, "mem_after_load_mb": rss0 if device == "cpu" else None,
            "extra_mem_mb": peak - rss0 if device == "cpu" else None,
            "optimizer_state_mb": opt_bytes / 2**20, "n_slots": target["n_keys"] ** 2, "steps_timed": len(times),
            # minor page faults from after loading to the end, over all steps (warm-up included)
            "page_faults_per_step": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / n,
            "unused_tensor_mb": ballast.numel() * ballast.element_size() / 2**20}


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def run_sub(args: list[str], tune: bool = True, ballast_slots: int = 0) -> dict:
    flag = [] if tune else ["--no-tune-allocator"]
    out = subprocess.run([sys.executable, __file__, *flag, "--one", *args], capture_output=True, text=True,
                         env={**os.environ, "TQDM_DISABLE": "1", "BENCH_BALLAST_SLOTS": str(ballast_slots)})
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def lookup_and_probes(target_name: str, lookup: bool = True) -> dict:
    """Product-key lookup vs brute force at growing N (``lookup``); probe throughput (tokens/s)."""
    from smf_lib.memory import ProductKeyMemory

    target = target_of(target_name, bool(os.environ.get("BENCH_QUICK")))
    device = device_of(target_name)
    d = {"cpu": 576, "gpu": 896, "cpu-paper": 896, "tiny": 64}[target_name]
    x = torch.randn(target["batch"], target["seq"], d, device=device)
    rows = []
    for n_keys in target["slots"] if lookup else ():
        mem = ProductKeyMemory(d, S.MemoryConfig(layers=(0,), n_keys=n_keys, knn=min(16, n_keys)), 0).to(device)
        r = {"n_slots": n_keys**2}
        for name, fn in (("product_keys_ms", mem.lookup), ("brute_force_ms", mem.lookup_brute_force)):
            if name == "brute_force_ms" and n_keys**2 * x.shape[0] * x.shape[1] > 2**31:
                r[name] = None  # the brute-force score matrix would not fit
                continue
            with torch.no_grad():
                fn(x)
                sync(device)
                t0 = time.perf_counter()
                for _ in range(3):
                    fn(x)
                sync(device)
            r[name] = (time.perf_counter() - t0) / 3 * 1e3
        rows.append(r)
    probes = []
    if target_name == "cpu" and not os.environ.get("BENCH_QUICK"):
        from smf_lib import data as D
        from smf_lib import probes as P

        model, tok = S.load_model()
        t0 = time.perf_counter()
        res = P.perplexity(model, tok, D.wikitext_text(40), progress=False)
        probes.append({"probe": "wikitext perplexity", "tokens_per_s": res["tokens"] / (time.perf_counter() - t0)})
        # MedMCQA scoring against the base forward on the same machine, in the same process: the base forward
        # runs 8 x 128-token windows of WikiText with full logits, as a training forward would.
        ids = tok(D.wikitext_text(200), add_special_tokens=False).input_ids
        batch = torch.tensor(ids[: 8 * 128]).view(8, 128)
        @torch.no_grad()
        def base_forward_tps(reps=5):
            model(batch)
            t0 = time.perf_counter()
            for _ in range(reps):
                model(batch)
            return reps * batch.numel() / (time.perf_counter() - t0)

        rows_m = D.load_medmcqa("validation", 96)
        speeds = {}
        for bs in (1, 16):  # the base forward timed just before each, so load changes hit both alike
            base_tps = base_forward_tps()
            t0 = time.perf_counter()
            res = P.medmcqa_accuracy(model, tok, rows_m, progress=False, batch_size=bs)
            speeds[bs] = (res["tokens"] / (time.perf_counter() - t0), base_tps)
        probes.append({"probe": "base forward (8 x 128, full logits)",
                       "tokens_per_s": sum(b for _, b in speeds.values()) / len(speeds)})
        for bs, (tps, base_tps) in speeds.items():
            probes.append({"probe": f"medmcqa, {bs} question(s) per forward (prompt once + 4 options)",
                           "tokens_per_s": tps, "vs_base_forward": tps / base_tps})
        rows_t = D.load_triviaqa(32)
        t0 = time.perf_counter()
        P.triviaqa_accuracy(model, tok, rows_t, progress=False)
        probes.append({"probe": "triviaqa (32 greedy tokens, batch 16)",
                       "tokens_per_s": 32 * len(rows_t) / (time.perf_counter() - t0)})
    return {"lookup": rows, "probes": probes}


def adapter_sizes() -> list[dict]:
    """Bytes on disk: an SMF adapter (changed rows only, after a few steps) vs a LoRA r16 adapter (SmolLM2)."""
    from peft import LoraConfig, get_peft_model

    from smf_lib.training import LORA_TARGETS

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        model, _ = S.load_model()
        S.add_memory(model, S.MemoryConfig(layers=(7, 15, 22), n_keys=64))
        S.save_memory(model, f"{tmp}/ref")
        with torch.no_grad():  # as after training: 3 layers x 128 rows x 10 steps changed at most
            for m in S.memory_layers(model):
                m.values.weight[torch.randperm(4096)[:1280]] += 0.01
        S.save_memory(model, f"{tmp}/smf", reference=f"{tmp}/ref")
        size = lambda p: sum(f.stat().st_size for f in Path(p).iterdir())  # noqa: E731
        out.append({"adapter": "SMF full memory (3 x 4,096 slots)", "mb": size(f"{tmp}/ref") / 2**20})
        out.append({"adapter": "SMF changed rows only (3 x 1,280 rows)", "mb": size(f"{tmp}/smf") / 2**20})
        base, _ = S.load_model()
        lora = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules=list(LORA_TARGETS)))
        lora.save_pretrained(f"{tmp}/lora")
        out.append({"adapter": "LoRA r16, 7 projections", "mb": size(f"{tmp}/lora") / 2**20})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", choices=sorted(TARGETS), default="cpu")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--one", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--parts", nargs="+", choices=("steps", "slots", "meta", "probes"),
                    default=["steps", "slots", "meta"],
                    help="which tables to (re)write; the others are left as they are (probes: only the probe "
                         "speeds of {target}_meta.json)")
    ap.add_argument("--no-tune-allocator", action="store_true", help="keep glibc's default malloc settings")
    ap.add_argument("--device", help="run a target on another device (default: cuda for gpu, else cpu)")
    ap.add_argument("--quick", action="store_true",
                    help="dry run: batch 1 x 32 tokens, 1 timed step, 2 slot sizes (checks the code path, e.g. the "
                         "gpu target's model on a CPU before a GPU run); its numbers mean nothing")
    args = ap.parse_args()
    if args.device:
        os.environ["BENCH_DEVICE"] = args.device
    if args.quick:
        os.environ["BENCH_QUICK"] = "1"
    tuned = False if args.no_tune_allocator else S.tune_cpu_allocator()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    if args.one:
        t, m, *rest = args.one
        n_keys = int(rest[0]) if rest else None
        layers = [int(v) for v in rest[1].split(",")] if len(rest) > 1 else None
        print(json.dumps(one_method(t, m, n_keys, layers)))
        return
    import pandas as pd

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t = target_of(args.target, args.quick)
    device = device_of(args.target)

    def write(df, name):  # after every row, atomically: a run cut short keeps what it measured
        df.to_csv(out / f"{name}.tmp", index=False, float_format="%.4g")
        (out / f"{name}.tmp").replace(out / name)

    rows = []
    for m in args.methods if "steps" in args.parts else ():
        rows.append(run_sub([args.target, m]))
        print(rows[-1], flush=True)
        write(pd.DataFrame(rows), f"{args.target}_steps.csv")
    slots = []
    mid = t["layers"][len(t["layers"]) // 2]
    for tune in ((False, True) if device == "cpu" else (True,)) if "slots" in args.parts else ():
        # glibc's malloc matters on CPU only
        # the smallest table again, beside an unused tensor as large as the largest table (a control: does the
        # step slow down with the table's size or with the process's?)
        control = [(t["slots"][0], t["slots"][-1] ** 2)] if device == "cpu" else []
        for n_keys, ballast in [(k, 0) for k in t["slots"]] + control:
            r = run_sub([args.target, "smf-kl", str(n_keys), str(mid)], tune=tune, ballast_slots=ballast)
            slots.append({"n_slots": n_keys**2, "allocator": "tuned" if tune else "glibc default",
                          "unused_tensor_mb": r["unused_tensor_mb"], "median_step_s": r["median_step_s"],
                          "page_faults_per_step": round(r["page_faults_per_step"]), "peak_mem_mb": r["peak_mem_mb"]})
            print(slots[-1], flush=True)
            write(pd.DataFrame(slots), f"{args.target}_slots.csv")
    if "probes" in args.parts and "meta" not in args.parts:
        path = out / f"{args.target}_meta.json"
        meta = json.loads(path.read_text()) if path.exists() else {}
        meta.update(probes=lookup_and_probes(args.target, lookup=False)["probes"],
                    probes_date=time.strftime("%Y-%m-%d"), probes_threads=torch.get_num_threads())
        path.write_text(json.dumps(meta, indent=1))
        print(json.dumps(meta["probes"], indent=1))
    if "meta" not in args.parts:
        return
    meta = {"setup": (f"{args.target}{' (quick dry run)' if args.quick else ''} on {device}: {t['model']}, "
                      f"memory at {t['layers']} with {t['n_keys'] ** 2:,} slots, batch "
                      f"{t['batch']} x {t['seq']} tokens, top-t {t['top_t']}, {t['dtype']}, median of {t['steps']} "
                      f"steps after {t['warmup']} warm-up, torch {torch.__version__}, "
                      f"{torch.get_num_threads()} CPU threads, allocator "
                      f"{'tuned (smf_lib.tune_cpu_allocator)' if tuned else 'default'}"),
            "date": time.strftime("%Y-%m-%d"), **lookup_and_probes(args.target)}
    if args.target == "cpu" and not args.quick:  # adapter sizes do not depend on the device
        meta["adapters"] = adapter_sizes()
    (out / f"{args.target}_meta.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
