"""Presets, the run grid, result files and the command line (``python -m smf_lib run --preset NAME``).

Every run writes one JSON under ``OUT/runs/`` atomically (write to a temporary file, then rename), so an
interrupted grid never damages finished results; finished runs are skipped and training resumes from its
last checkpoint under ``OUT/artifacts/``. ``OUT/summary.csv`` has one row per method and seed with the
metrics, their deltas to base and paired-bootstrap 95% confidence intervals.

Several processes (``accelerate launch --multi_gpu -m smf_lib run ...`` or torchrun): every process trains
(each takes an equal share of every micro-batch; see :func:`smf_lib.training.train`). Process 0 alone
evaluates, computes background statistics and writes files; the others wait for its files before going on.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import os
import platform
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import data as D
from .memory import MemoryConfig, add_memory, load_memory, memory_layers, save_memory
from .models import DEFAULT_MODEL, PAPER_MODEL, load_model, load_tokenizer, tiny_model
from .probes import medmcqa_accuracy, perplexity, triviaqa_accuracy
from .selection import BackgroundStats, batch_counts, compute_background_stats
from .training import TrainConfig, distributed, train

FIXTURES = Path(__file__).parent / "fixtures"


@dataclass
class Preset:
    """One experiment setting, as data.

    Args:
        name: preset name.
        model: model name for :func:`~smf_lib.models.load_model`, or ``"tiny"`` (random tiny Llama + the
            default tokenizer).
        data: local data folder (``None``: ``$SMF_DATA_DIR`` or the Hub; ``"fixtures"``: the packaged fixtures).
        memory: :class:`~smf_lib.memory.MemoryConfig` fields.
        seeds: seeds of the grid.
        methods: the grid's method names (keys of ``METHODS``).
        train_n, medmcqa_n, triviaqa_n, wikitext_lines: data sizes.
        retrofit_corpus: ``"oasst1-validation"`` | ``"oasst1-train"`` | ``"oasst1-both"``; ``retrofit_n`` texts.
        background_n: background documents for the statistics; ``background_corpus`` like retrofit_corpus or
            ``"wikipedia"``.
        train: :class:`~smf_lib.training.TrainConfig` fields shared by all task runs.
        retrofit: :class:`~smf_lib.training.TrainConfig` fields of the retrofit stage.
        lr: per-method learning rates (keys as in ``DEFAULT_LR``).
        notes: departures from the paper this preset makes.
    """

    name: str
    model: str
    data: str | None = None
    memory: dict = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    methods: tuple[str, ...] = ()
    train_n: int | None = None
    medmcqa_n: int = 1000
    triviaqa_n: int = 1000
    wikitext_lines: int = 1000
    retrofit_corpus: str = "oasst1-both"
    retrofit_n: int | None = None
    background_corpus: str = "oasst1-train"
    background_n: int = 2000
    train: dict = field(default_factory=dict)
    retrofit: dict = field(default_factory=dict)
    lr: dict = field(default_factory=dict)
    eval_batch: int = 16
    notes: str = ""


# method name -> (TrainConfig method, overrides, memory mode). "base" and "retrofit" only evaluate.
METHODS = {
    "base": (None, {}, None),
    "retrofit": (None, {}, "additive"),
    "smf-kl": ("smf", {"selector": "kl"}, "additive"),
    "smf-tfidf": ("smf", {"selector": "tfidf"}, "additive"),
}
# The seed's own update: gradient mask + AdamW, padded positions counted, selection per micro-batch.
SEED_UPDATE = {"update": "seed", "count_padding": True, "select_per_microbatch": True}
for _sel in ("kl", "tfidf"):
    METHODS[f"smf-{_sel}-seedmode"] = ("smf", {"selector": _sel, **SEED_UPDATE}, "additive")
    METHODS[f"smf-{_sel}-alpha"] = ("smf", {"selector": _sel, **SEED_UPDATE, "train_alpha": True}, "additive")
    METHODS[f"smf-{_sel}-replacement"] = ("smf", {"selector": _sel, **SEED_UPDATE}, "replacement")
METHODS.update({
    "smf-tf": ("smf", {"selector": "tf"}, "additive"),
    "smf-random": ("smf", {"selector": "random"}, "additive"),
    "lora": ("lora", {}, None),
    "full": ("full", {}, None),
})
GRID = ("base", "retrofit", "smf-kl", "smf-tfidf", "smf-kl-seedmode", "lora", "full")
PAPER_GRID = ("base", "smf-kl-replacement", "smf-tfidf-replacement", "smf-kl-seedmode", "smf-tfidf-seedmode",
              "smf-kl-alpha", "smf-tfidf-alpha", "lora", "full")

PRESETS = {
    "smoke": Preset(
        name="smoke", model="tiny", data="fixtures", methods=GRID, seeds=(0,),
        memory=dict(layers=(1, 2), n_keys=8, heads=2, knn=4, k_dim=16),
        train_n=24, medmcqa_n=6, triviaqa_n=4, wikitext_lines=8, retrofit_n=20, background_n=8,
        train=dict(micro_batch=4, grad_accum=2, max_length=128, warmup_steps=1, epochs=1, top_t=8,
                   checkpoint_every=1),
        retrofit=dict(micro_batch=4, grad_accum=1, max_length=64, warmup_steps=1, epochs=1),
        lr={"smf-sgd": 1.0, "smf-adam": 1e-2, "lora": 1e-3, "full": 1e-3, "retrofit": 1e-3},
        background_corpus="wikipedia", eval_batch=4,
        notes="tiny random Llama and synthetic fixtures: checks the pipeline, not the method"),
    "cpu": Preset(
        name="cpu", model=DEFAULT_MODEL, methods=GRID, seeds=(0,),
        memory=dict(layers=(7, 15, 22), n_keys=64, heads=4, knn=16, k_dim=256),
        train_n=1200, medmcqa_n=300, triviaqa_n=200, wikitext_lines=120, retrofit_n=800,
        retrofit_corpus="oasst1-both", background_corpus="wikipedia", background_n=500,
        train=dict(micro_batch=8, grad_accum=2, max_length=256, warmup_steps=10, epochs=1, top_t=128,
                   checkpoint_every=20),
        retrofit=dict(micro_batch=8, grad_accum=2, max_length=256, warmup_steps=10, epochs=1,
                      checkpoint_every=20),
        # smf-sgd: best held-out loss of 1e3..1e6 in benchmarks/calibrate_smf_lr.py (benchmarks/results/
        # smf_lr_cpu.json); the value gradient of a mean-token loss is tiny, so plain SGD needs a large rate.
        # The others are the seed's rates.
        lr={"smf-sgd": 1e6, "smf-adam": 5e-4, "lora": 2e-4, "full": 5e-5, "retrofit": 5e-4},
        notes=("offline default SmolLM2-135M-Instruct on 2 CPU cores: 1 seed; MedMCQA train has only 2,650 "
               "questions offline (seed: 60k sample), of which the first 1,200 are used for 1 epoch (CPU time); "
               "no single-choice filter possible on train; "
               "max length 256; retrofit on 800 OASST1 replies (validation + inferred train) for 1 epoch "
               "(seed: 50k, 2 epochs); background statistics on 500 Wikipedia leads; top-t 128 of 4,096 "
               "slots (~3%); eval subsets: MedMCQA 300, TriviaQA 200 (unfiltered validation), WikiText 120 lines; "
               "strict SGD lr 1e6 picked on held-out train questions; seed-mode AdamW keeps the seed's 5e-4")),
    "paper": Preset(
        name="paper", model=PAPER_MODEL, methods=PAPER_GRID + ("retrofit", "smf-kl", "smf-tfidf"),
        seeds=(0, 1, 2),
        memory=dict(layers=(6, 12, 18), n_keys=128, heads=4, knn=16, k_dim=256, init="seed", mode="additive"),
        train_n=60000, medmcqa_n=1000, triviaqa_n=1000, wikitext_lines=1000, retrofit_n=50000,
        retrofit_corpus="oasst1-both", background_corpus="oasst1-train", background_n=2000,
        train=dict(micro_batch=4, grad_accum=4, max_length=1024, warmup_steps=100, epochs=3, top_t=512,
                   checkpoint_every=200),
        retrofit=dict(micro_batch=4, grad_accum=4, max_length=1024, warmup_steps=100, epochs=2,
                      checkpoint_every=200),
        # smf-sgd (strict mode, not the seed's) was calibrated on SmolLM2 only: rerun calibrate_smf_lr.py
        lr={"smf-sgd": 1e6, "smf-adam": 5e-4, "lora": 2e-4, "full": 5e-5, "retrofit": 5e-4},
        notes="the seed's protocol on Qwen2.5-0.5B-Instruct; needs a GPU and the Hub (e.g. Colab)"),
}


def results_dir(name: str = "cpu", start: str | Path | None = None) -> Path:
    """``results/NAME`` of the checkout that contains ``start`` (default: the working directory)."""
    here = Path(start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "results" / name).is_dir():
            return p / "results" / name
    raise FileNotFoundError(f"no results/{name} above {here}: run the notebook from a clone of the repository, "
                            f"or make the results with `python -m smf_lib run --preset {name}`")


def load_results(name: str = "cpu", compute: bool = True, progress: bool = False):
    """The summary table and run records of ``results/NAME``; runs the preset into ``results/NAME`` when no
    committed results are found (the book's "load if present, else compute").

    Returns:
        ``(folder, summary DataFrame, list of run dicts)``.
    """
    from .stats import load_runs, summary_table

    try:
        out = results_dir(name)
    except FileNotFoundError:
        if not compute:
            raise
        out = Path.cwd() / "results" / name
        Runner(get_preset(name), out, progress=progress).run()
    runs = load_runs(out)
    return out, summary_table(runs), runs


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def _data_root(p: Preset):
    return FIXTURES if p.data == "fixtures" else p.data


def _corpus(p: Preset, which: str, n: int | None) -> list[str]:
    root = _data_root(p)
    if which == "wikipedia":
        return D.load_background(n, root)
    parts = {"oasst1-validation": ["validation"], "oasst1-train": ["train"],
             "oasst1-both": ["validation", "train"]}.get(which)
    if parts is None:
        raise ValueError(f"unknown corpus {which!r}; allowed: wikipedia, oasst1-validation, oasst1-train, oasst1-both")
    texts = [t for s in parts for t in D.load_oasst1_replies(s, root=root)]
    return texts[:n] if n is not None else texts


def _device() -> torch.device:
    """This process's device: its own GPU under accelerate launch / torchrun (LOCAL_RANK), else cuda:0 or CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _load(p: Preset, seed: int = 0):
    if p.model == "tiny":
        return tiny_model("llama", vocab=49152, hidden=64, layers=4, seed=seed), load_tokenizer()
    return load_model(p.model, device=_device())


def _versions() -> dict:
    import peft
    import transformers

    import smf_lib

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "smf_lib": smf_lib.__version__}


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (temporary file + rename): a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def evaluate(model, tokenizer, p: Preset, progress: bool = True) -> dict:
    """Run the three probes at the preset's sizes; per-item results kept for paired statistics."""
    root = _data_root(p)
    torch.manual_seed(0)
    med = medmcqa_accuracy(model, tokenizer, D.load_medmcqa("validation", p.medmcqa_n, root=root), progress)
    ppl = perplexity(model, tokenizer, D.wikitext_text(p.wikitext_lines, root), progress=progress)
    tqa = triviaqa_accuracy(model, tokenizer, D.load_triviaqa(p.triviaqa_n, root), batch_size=p.eval_batch,
                            progress=progress)
    return {"metrics": {"medmcqa_acc": med["acc"], "medmcqa_letter_acc": med["letter_acc"],
                        "medmcqa_majority_acc": med["majority_acc"], "medmcqa_always_a_acc": med["always_a_acc"],
                        "medmcqa_gold_loglik": med["gold_loglik"], "wikitext_ppl": ppl["ppl"],
                        "wikitext_tokens": ppl["tokens"], "triviaqa_acc": tqa["acc"], "triviaqa_em": tqa["em"],
                        "triviaqa_alias_loglik": tqa["alias_loglik"]},
            "items": {"medmcqa_correct": [i["correct"] for i in med["items"]],
                      "medmcqa_pred": [i["pred"] for i in med["items"]],
                      "medmcqa_gold_loglik": [round(i["gold_loglik"], 6) for i in med["items"]],
                      "wikitext_window_nll": [round(w["nll"], 4) for w in ppl["windows"]],
                      "wikitext_window_tokens": [w["tokens"] for w in ppl["windows"]],
                      "triviaqa_correct": [i["correct"] for i in tqa["items"]],
                      "triviaqa_em": [i["em"] for i in tqa["items"]],
                      "triviaqa_alias_loglik": [round(i["alias_loglik"], 6) for i in tqa["items"]],
                      "triviaqa_outputs": [i["output"] for i in tqa["items"]]},
            "timings": {"medmcqa_s": med["seconds"], "wikitext_s": ppl["seconds"], "triviaqa_s": tqa["seconds"]}}


def _train_config(p: Preset, method: str, seed: int) -> TrainConfig:
    kind, over, _ = METHODS[method]
    cfg = TrainConfig(method=kind, seed=seed, **{**p.train, **over})
    return dataclasses.replace(cfg, lr=p.lr.get(cfg.lr_key, cfg.lr))


class Runner:
    """Runs a preset's grid into ``out``; everything finished is kept and skipped on the next call."""

    def __init__(self, preset: Preset, out: str | Path, progress: bool = True):
        self.rank, self.world = distributed()
        self.main = self.rank == 0
        self.p, self.out, self.progress = preset, Path(out), progress and self.main
        self.art = self.out / "artifacts"
        root = _data_root(preset)
        self.task_rows = D.load_medmcqa("train", preset.train_n, single_choice=True, root=root)
        self.task_texts = [D.medmcqa_training_text(r) for r in self.task_rows]

    @functools.cached_property
    def eval_fingerprints(self) -> dict:
        """Hashes of the probe items, so runs compared pairwise are known to share them (read once)."""
        p, root = self.p, _data_root(self.p)
        return {"medmcqa_validation": D.fingerprint(D.load_medmcqa("validation", p.medmcqa_n, root=root)),
                "triviaqa": D.fingerprint(D.load_triviaqa(p.triviaqa_n, root)),
                "wikitext": D.fingerprint([D.wikitext_text(p.wikitext_lines, root)])}

    def log(self, msg: str) -> None:
        if self.main:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def wait_for(self, path: Path) -> None:
        """Processes other than 0 wait until process 0 has written ``path``. A file, not a collective barrier:
        evaluation can outlast NCCL's timeout, and the launcher stops every process if process 0 fails."""
        while not self.main and not path.exists():
            time.sleep(0.5)

    def run_path(self, method: str, seed: int) -> Path:
        return self.out / "runs" / (f"{method}.json" if method == "base" else f"{method}-s{seed}.json")

    def _record(self, method, seed, result, extra) -> None:
        p = self.p
        obj = {"method": method, "seed": seed, "preset": p.name, "model": p.model, "notes": p.notes,
               "memory": p.memory, "versions": _versions(), "processes": self.world,
               "data": {"medmcqa_train": D.fingerprint(self.task_texts), "n_train": len(self.task_texts),
                        "eval_fingerprints": self.eval_fingerprints,
                        "medmcqa_n": p.medmcqa_n, "triviaqa_n": p.triviaqa_n, "wikitext_lines": p.wikitext_lines,
                        "source": str(D.data_dir(_data_root(p)) or "huggingface-hub")},
               **result, **extra, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json(self.run_path(method, seed), obj)

    def retrofit(self, seed: int, mode: str):
        """The retrofit adapter (trained once per seed and memory mode) and its background statistics."""
        p = self.p
        folder = self.art / f"retrofit-{mode}-s{seed}"
        stats_path = folder / "background.safetensors"
        if not (folder / "adapter" / "memory_config.json").exists():
            model, tok = _load(p, seed)
            torch.manual_seed(seed)
            add_memory(model, MemoryConfig(**{**p.memory, "mode": mode}))
            texts = _corpus(p, p.retrofit_corpus, p.retrofit_n)
            cfg = TrainConfig(method="retrofit", seed=seed, lr=p.lr.get("retrofit"), **p.retrofit)
            self.log(f"retrofit ({mode}, seed {seed}) on {len(texts)} texts")
            res = train(model, tok, texts, cfg, checkpoint_dir=folder / "ckpt", progress=self.progress)
            if self.main:
                save_memory(res.model, folder / "adapter")
                write_json(folder / "train_log.json", {"log": res.log, "seconds": res.seconds,
                                                       "n_texts": len(texts), "processes": self.world})
        self.wait_for(folder / "train_log.json")
        model, tok = _load(p, seed)
        load_memory(model, folder / "adapter")
        if self.main and not stats_path.exists():
            t0 = time.perf_counter()
            texts = _corpus(p, p.background_corpus, p.background_n)
            self.log(f"background statistics on {len(texts)} documents")
            stats = compute_background_stats(model, tok, texts, max_length=p.train.get("max_length", 1024),
                                             progress=self.progress)
            stats.save(stats_path)
            write_json(folder / "background_meta.json", {"seconds": time.perf_counter() - t0, "n_docs": len(texts),
                                                          "corpus": p.background_corpus})
        self.wait_for(folder / "background_meta.json")
        return model, tok, BackgroundStats.load(stats_path, model), folder

    def run_one(self, method: str, seed: int) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
        if self.run_path(method, seed).exists():
            self.log(f"{method} seed {seed}: done already, skipped")
            return
        kind, _, mode = METHODS[method]
        if method == "base" and not self.main:  # nothing to train: process 0 evaluates the base alone
            self.wait_for(self.run_path(method, seed))
            return
        t0 = time.perf_counter()
        extra = {}
        if method == "base":
            model, tok = _load(self.p, seed)
        elif mode is not None:
            model, tok, stats, ref = self.retrofit(seed, mode)
            extra["retrofit"] = json.loads((ref / "train_log.json").read_text())
            extra["background"] = json.loads((ref / "background_meta.json").read_text())
            if kind == "smf":
                cfg = _train_config(self.p, method, seed)
                self.log(f"{method} seed {seed}: {len(self.task_texts)} texts")
                res = train(model, tok, self.task_texts, cfg, stats=stats,
                            checkpoint_dir=self.art / f"{method}-s{seed}" / "ckpt", progress=self.progress)
                model = res.model
                if self.main:
                    save_memory(model, self.art / f"{method}-s{seed}" / "adapter", reference=ref / "adapter")
                extra.update(train_config=dataclasses.asdict(cfg), train_log=res.log, train_seconds=res.seconds)
        else:
            model, tok = _load(self.p, seed)
            cfg = _train_config(self.p, method, seed)
            self.log(f"{method} seed {seed}: {len(self.task_texts)} texts")
            res = train(model, tok, self.task_texts, cfg, checkpoint_dir=self.art / f"{method}-s{seed}" / "ckpt",
                        progress=self.progress)
            model = res.model
            extra.update(train_config=dataclasses.asdict(cfg), train_log=res.log, train_seconds=res.seconds)
        if not self.main:  # process 0 evaluates and writes the run file
            del model
            self.wait_for(self.run_path(method, seed))
            return
        self.log(f"{method} seed {seed}: evaluating")
        result = evaluate(model, tok, self.p, self.progress)
        extra["wall_seconds"] = time.perf_counter() - t0
        self._record(method, seed, result, extra)
        shutil.rmtree(self.art / f"{method}-s{seed}" / "ckpt", ignore_errors=True)  # the result is safe now
        self.log(f"{method} seed {seed}: {result['metrics']}")

    def selection_snapshot(self, seed: int = 0, n_batches: int = 4) -> Path:
        """Read counts of a few task batches and the background statistics, for the KL vs TF-IDF chapter."""
        path = self.out / "selection_counts.json"
        if path.exists() or not self.main:
            self.wait_for(path)
            return path
        model, tok, stats, _ = self.retrofit(seed, "additive")
        from .memory import set_recording
        from .training import _collate

        set_recording(model, True)
        size = self.p.train.get("micro_batch", 4) * self.p.train.get("grad_accum", 1)
        counts = None
        with torch.no_grad():
            texts = self.task_texts[: size * n_batches]
            for b in range(0, len(texts), size):
                batch = _collate(tok, texts[b:b + size], self.p.train.get("max_length", 1024),
                                 next(model.parameters()).device)
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                c = batch_counts(model, batch["attention_mask"])
                counts = c if counts is None else [a + x for a, x in zip(counts, c)]
        set_recording(model, False)
        layers = [m.layer_idx for m in memory_layers(model)]
        write_json(path, {"layers": layers, "n_slots": int(stats.df.shape[1]), "n_docs": stats.n_docs,
                          "batch_texts": len(texts), "batch_counts": [c.tolist() for c in counts],
                          "df": stats.df.tolist(), "totals": stats.totals.tolist()})
        return path

    def run(self, methods=None, seeds=None) -> Path:
        methods = list(methods or self.p.methods)
        seeds = list(seeds if seeds is not None else self.p.seeds)
        t0 = time.perf_counter()
        for seed in seeds:
            for method in methods:
                if method == "base" and seed != seeds[0]:
                    continue
                random.seed(seed)
                self.run_one(method, seed)
        if any(METHODS[m][2] == "additive" for m in methods):
            self.selection_snapshot(seeds[0])
        from .stats import write_summary

        path = self.out / "summary.csv"
        if self.main:
            write_summary(self.out)
        self.log(f"grid done in {time.perf_counter() - t0:.0f} s; summary at {path}")
        return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m smf_lib", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a preset's grid (resumable)")
    r.add_argument("--preset", required=True, choices=sorted(PRESETS))
    r.add_argument("--methods", nargs="+", choices=sorted(METHODS), help="default: the preset's grid")
    r.add_argument("--seeds", nargs="+", type=int, help="default: the preset's seeds")
    r.add_argument("--out", help="results folder (default results/PRESET)")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--no-tune-allocator", action="store_true",
                   help="leave glibc's malloc as it is (default: reuse freed CPU memory; see tune_cpu_allocator)")
    s = sub.add_parser("summarize", help="rewrite OUT/summary.csv from OUT/runs/*.json")
    s.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "summarize":
        from .stats import write_summary

        print(write_summary(Path(args.out)))
        return 0
    preset = get_preset(args.preset)
    if not args.no_tune_allocator:
        from .models import tune_cpu_allocator

        tune_cpu_allocator()
    Runner(preset, args.out or f"results/{preset.name}", progress=not args.no_progress).run(args.methods, args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
