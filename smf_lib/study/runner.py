"""The experiment runner: a preset's grid of runs, resumable, locked and crash-safe.

- Every file is written atomically; a run is complete when its record ``OUT/runs/NAME.json`` exists (written
  last). A retrofit stage is complete when its ``complete.json`` marker exists (written last).
- Every record and marker holds the identity of what produced it (preset settings, training config, data
  fingerprints). A finished run whose identity differs from the current one is refused with the remedy
  (``--fresh`` recomputes it; or use another ``--out``); so is a checkpoint from another config.
- A run whose loss stops being finite stops with an error naming the step and writes no metrics; the grid goes
  on and the command exits non-zero, listing such runs (``OUT/failed/``).
- ``OUT`` is locked while a runner uses it.
- Several processes (``accelerate launch --multi_gpu -m smf_lib run ...`` or torchrun): every process trains
  (each takes an equal share of every micro-batch; see :func:`smf_lib.training.train`). Process 0 alone
  evaluates and writes files; the others wait for its files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import shutil
import time
from pathlib import Path

import torch

from .. import data as D
from ..fingerprints import items_fingerprint, object_hash
from ..health import MIN_SHARE, check_health, loss_change, memory_health
from ..files import FolderLock, read_json, write_json
from ..adapter import load_memory, save_memory
from ..memory import MemoryConfig, add_memory, memory_layers
from ..models import load_model, load_tokenizer, tiny_model
from ..selection import BackgroundStats, compute_background_stats, read_counts_of_texts
from ..training import TrainConfig, TrainingDiverged, distributed, micro_batches, train
from .arms import GRID_METHODS, get_method
from .evaluation import Reference, build_suite, corpus, data_root, drift_spans, evaluate
from .plan import RunSpec, _plain, _same_training, plan, status_line, study_status  # noqa: F401 (re-exported)
from .presets import Preset


def _device() -> torch.device:
    """This process's device: its own GPU under accelerate launch / torchrun (LOCAL_RANK), else cuda:0 or CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _versions() -> dict:
    import peft
    import transformers

    import smf_lib

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "smf_lib": smf_lib.__version__, **git_state(Path(smf_lib.__file__).parent)}


def git_state(folder: Path) -> dict:
    """The git commit the code ran from and whether its tracked files had uncommitted changes (``{}`` outside a
    git checkout, e.g. an installed wheel)."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {}
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return {"git_commit": head.stdout.strip(), "git_clean": dirty.returncode == 0 and not dirty.stdout.strip()}
    except (OSError, subprocess.SubprocessError):
        return {}


def auto_precision(p: Preset, device: torch.device) -> dict:
    """The preset's precision on this device: model dtype, memory dtype and training/evaluation autocast.

    ``dtype="auto"``: a bfloat16 model with float32 memory where the GPU supports bfloat16; float32 master weights
    with float16 autocast (and loss scaling) on a GPU without it (e.g. a T4); float32 on a CPU.
    """
    if p.dtype != "auto":
        return {"model": p.dtype, "memory": p.memory_dtype, "autocast": p.train.get("autocast")}
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return {"model": "bfloat16", "memory": p.memory_dtype or "float32", "autocast": None}
    if device.type == "cuda":
        return {"model": "float32", "memory": None, "autocast": "float16"}
    return {"model": "float32", "memory": None, "autocast": None}


def retrofit_health(before: dict | None, after: dict | None, along: list[dict]) -> dict:
    """A retrofit's health record: the memory's share of the MLP's output (mean, minimum and per layer) and the
    held-out loss before and after, the loss change with its paired 95% interval, and the share along the way.
    ``memory_to_mlp_norm`` repeats the mean share under the name earlier records used."""
    def short(h):
        return None if h is None else {"loss": h["loss"], "memory_to_mlp_norm": h["share"], "share": h["share"],
                                       "min_share": h["min_share"], "share_by_layer": h["share_by_layer"],
                                       "texts": h["texts"]}

    out = {"before": short(before), "after": short(after), "along": along, "min_share_required": MIN_SHARE}
    if before is not None and after is not None:
        out["loss_change"] = loss_change(before, after)
        out["healthy"] = bool(after["min_share"] >= MIN_SHARE)
    return out


class Mismatch(ValueError):
    """A result on disk was made with other settings or data than the current ones."""


class Runner:
    """Runs a preset's grid into ``out``; everything finished is kept and skipped on the next call.

    Args:
        preset: the preset.
        out: the results folder.
        progress: show progress bars.
        fresh: recompute results made with other settings or data (otherwise they are refused).
    """

    def __init__(self, preset: Preset, out: str | Path, progress: bool = True, fresh: bool = False):
        self.rank, self.world = distributed()
        self.main = self.rank == 0
        self.p, self.out, self.progress, self.fresh = preset, Path(out), progress and self.main, fresh
        self.art = self.out / "artifacts"
        root = data_root(preset)
        self.all_task_rows = D.load_medmcqa("train", single_choice=True, root=root)
        if not self.all_task_rows or (preset.train_n is not None and len(self.all_task_rows) < preset.train_n):
            where = D.data_dir(root)
            where = "the Hugging Face Hub" if where is None else where / "medmcqa" / "train.jsonl"
            raise ValueError(f"preset {preset.name!r} trains on {preset.train_n} MedMCQA questions but {where} has "
                             f"{len(self.all_task_rows)}: lower train_n (python -m smf_lib run --set train_n=N) or "
                             "point SMF_DATA_DIR (--data) at the complete data")
        self.task_rows = self.task_rows_for(preset.seeds[0])
        self.task_texts = [D.medmcqa_training_text(r) for r in self.task_rows]
        self.suite = build_suite(preset, self.task_rows)
        self.reference = Reference(self.art / "reference", preset.topk, progress and self.main)
        self.precision = auto_precision(preset, _device())
        self.failures: list[str] = []

    def task_rows_for(self, seed: int) -> list[dict]:
        """The training questions of a seed (the same for every seed unless the preset samples per seed)."""
        return D.sample_rows(self.all_task_rows, self.p.train_n, self.p.train_sample, seed)

    def task_texts_for(self, seed: int) -> list[str]:
        if self.p.train_sample == "first":
            return self.task_texts
        return [D.medmcqa_training_text(r) for r in self.task_rows_for(seed)]

    # -- identities -------------------------------------------------------------------------------------------
    def data_identity(self) -> dict:
        return {"medmcqa_train": items_fingerprint(self.task_texts), "n_train": len(self.task_texts),
                "train_sample": self.p.train_sample, "wikitext_raw": self.p.wikitext_raw,
                "ppl_first_window": self.p.ppl_first_window,
                "probes": self.suite.fingerprints(), "source": "fixtures" if self.p.data == "fixtures"
                else ("local" if D.data_dir(data_root(self.p)) else "huggingface-hub")}

    def retrofit_identity(self, seed: int, mode: str) -> dict:
        p = self.p
        return _plain({"model": p.model, "precision": self.precision, "memory": {**p.memory, "mode": mode},
                       "seed": seed, "retrofit": p.retrofit,
                       "lr": p.lr.get("retrofit"), "corpus": [p.retrofit_corpus, p.retrofit_n],
                       "background": [p.background_corpus, p.background_n],
                       "heldout_chat": p.chat_n + p.chat_dev_n})

    def identity(self, spec: RunSpec) -> dict:
        p, gm = self.p, get_method(spec.method)
        ident = {"method": spec.method, "seed": spec.seed, "model": p.model,
                 "precision": {**self.precision, "eval": p.eval_dtype},
                 "evaluation": spec.evaluation,
                 "split": p.evaluate_on, "cheap": p.cheap, "trajectory_points": p.trajectory_points,
                 "topk": p.topk, "data": self.data_identity()}
        if gm.memory is not None:
            ident["retrofit"] = self.retrofit_identity(spec.seed, gm.memory)
        if gm.train is not None:
            ident["train_config"] = dataclasses.asdict(self.train_config(spec))
        return _plain(ident)

    def train_config(self, spec: RunSpec) -> TrainConfig:
        cfg = self.p.train_config(spec.method, spec.seed, spec.lr)
        return dataclasses.replace(cfg, autocast=self.precision["autocast"])

    def autocast(self):
        """The evaluation's autocast context (a no-op unless the precision asks for one)."""
        a = self.precision["autocast"]
        return torch.autocast(_device().type, dtype=getattr(torch, a)) if a else contextlib.nullcontext()

    def _check(self, path: Path, stored: dict | None, current: dict, what: str) -> bool:
        """True when ``stored`` matches; on a mismatch refuse, or (``fresh``) return False so it is redone."""
        current = _plain(current)
        if stored == current:
            return True
        if self.fresh:
            return False
        diff = sorted(k for k in set(current) | set(stored or {}) if (stored or {}).get(k) != current.get(k))
        raise Mismatch(f"{path} ({what}) was made with other settings or data (differs in {diff}); rerun with "
                       "--fresh to recompute it, or pass another --out")

    # -- helpers ----------------------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        if self.main:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def wait_for(self, path: Path) -> None:
        """Processes other than 0 wait until process 0 has written ``path`` (a file, not a collective barrier:
        evaluation can outlast NCCL's timeout, and the launcher stops every process if process 0 fails)."""
        while not self.main and not path.exists():
            time.sleep(0.5)

    def load(self, seed: int = 0):
        """The base model (in the preset's dtype) and its tokenizer."""
        p = self.p
        dtype = getattr(torch, self.precision["model"])
        if p.model.startswith("tiny"):  # "tiny" (Llama) or "tiny-qwen2": random weights, the default tokenizer
            arch = p.model.partition("-")[2] or "llama"
            return tiny_model(arch, vocab=49152, hidden=64, layers=4, seed=seed).to(_device(), dtype), load_tokenizer()
        return load_model(p.model, device=_device(), dtype=dtype)

    def memory_config(self, mode: str) -> MemoryConfig:
        return MemoryConfig(**{**self.p.memory, "mode": mode, "dtype": self.precision["memory"]})

    def run_path(self, spec: RunSpec) -> Path:
        return self.out / "runs" / f"{spec.name}.json"

    # -- stages -----------------------------------------------------------------------------------------------
    def prepare_references(self) -> None:
        """Cache the base model's top-k log-probabilities on every drift span (once per ``OUT``)."""
        if not self.main:
            return
        marker = self.art / "reference" / "complete.json"
        ident = _plain({"model": self.p.model, "precision": self.precision, "topk": self.p.topk,
                        "probes": self.suite.fingerprints(),
                        "cheap": self.p.cheap, "split": self.p.evaluate_on})
        if marker.exists() and self._check(marker, read_json(marker), ident, "drift reference"):
            return
        shutil.rmtree(self.art / "reference", ignore_errors=True)
        self.log("caching the base model's drift reference")
        model, tok = self.load(0)
        for split in {self.p.evaluate_on, "dev"}:
            for cheap in (None, self.p.cheap):
                wiki, chat = drift_spans(tok, self.suite, split, cheap)
                for name, spans in (("wikitext", wiki), ("chat", chat)):
                    if spans:
                        with self.autocast():
                            self.reference.get(f"{name}-{split}", model, spans)
        write_json(marker, ident)

    def retrofit(self, seed: int, mode: str):
        """The retrofit adapter (trained once per seed and memory mode) and its background statistics."""
        p = self.p
        folder = self.art / f"retrofit-{mode}-s{seed}"
        marker = folder / "complete.json"
        ident = self.retrofit_identity(seed, mode)
        done = marker.exists() and self._check(marker, read_json(marker), ident, "retrofit stage")
        if not done:  # every process trains (DDP); process 0 alone writes
            started = folder / "identity.json"
            if self.main:
                if started.exists() and not self._check(started, read_json(started), ident, "retrofit stage"):
                    shutil.rmtree(folder)
                write_json(started, ident)
            model, tok = self.load(seed)
            torch.manual_seed(seed)
            add_memory(model, self.memory_config(mode))
            heldout = [reply for _, reply in self.suite.chat["dev"] or self.suite.chat["report"]]
            maxlen = p.retrofit.get("max_length", 256)
            before = memory_health(model, tok, heldout, maxlen) if heldout and self.main else None
            texts = corpus(p, p.retrofit_corpus, p.retrofit_n)
            cfg = TrainConfig(method="retrofit", seed=seed, lr=p.lr.get("retrofit"),
                              **{**p.retrofit, "autocast": self.precision["autocast"]})
            self.log(f"retrofit ({mode}, seed {seed}) on {len(texts)} texts")
            along = heldout[:32]

            def probe(m, step):  # the memory's share along the retrofit, on a few held-out replies
                h = memory_health(m, tok, along, maxlen)
                return {k: h[k] for k in ("loss", "share", "min_share", "share_by_layer")}

            steps = len(micro_batches(len(texts), cfg))
            k = max(2, p.trajectory_points)
            res = train(model, tok, texts, cfg, checkpoint_dir=folder / "ckpt", progress=self.progress,
                        probe=probe if along and self.main else None,
                        probe_steps=sorted({max(1, round(i * steps / (k - 1))) for i in range(1, k)}))
            if self.main:
                save_memory(res.model, folder / "adapter")
                after = memory_health(res.model, tok, heldout, maxlen) if heldout else None
                health = retrofit_health(before, after, res.trajectory)
                if after is not None and not check_health(after, where=f"the retrofit ({mode}, seed {seed})"):
                    self.log(f"WARNING: the retrofit ({mode}, seed {seed}) left a memory below "
                             f"{MIN_SHARE:.0%} of the MLP's output at some layer ({health['after']['share_by_layer']})"
                             "; SMF on it will learn little. `python -m smf_lib retrofit-pilot` compares recipes")
                write_json(folder / "train_log.json", {"log": res.log, "seconds": res.seconds, "n_texts": len(texts),
                                                       "processes": self.world, "heldout_oasst1": health})
                t0 = time.perf_counter()
                bg = corpus(p, p.background_corpus, p.background_n)
                self.log(f"background statistics on {len(bg)} documents")
                with self.autocast():
                    stats = compute_background_stats(res.model, tok, bg, max_length=p.train.get("max_length", 1024),
                                                     progress=self.progress)
                stats.save(folder / "background.safetensors")
                write_json(folder / "background_meta.json", {"seconds": time.perf_counter() - t0, "n_docs": len(bg),
                                                              "corpus": p.background_corpus})
                write_json(marker, ident)
                shutil.rmtree(folder / "ckpt", ignore_errors=True)
        self.wait_for(marker)
        model, tok = self.load(seed)
        load_memory(model, folder / "adapter")
        return model, tok, BackgroundStats.load(folder / "background.safetensors", model), folder

    def _probe(self, tok, start: str):
        """The trajectory probe: the cheap dev subset; step 0 of a start model is computed once and reused."""
        cache = self.art / f"step0-{start}.json"

        def probe(model, step):
            if step == 0 and cache.exists():
                return read_json(cache)
            with self.autocast():
                res = evaluate(model, tok, self.p, self.suite, self.reference, "cheap", progress=False)
            out = {"metrics": res["metrics"], "items": res["items"]}
            if step == 0 and self.main:
                write_json(cache, out)
            return out

        return probe

    def _probe_steps(self, cfg: TrainConfig) -> list[int]:
        n = len(micro_batches(len(self.task_texts), cfg))
        k = self.p.trajectory_points - 1
        return sorted({max(1, round(i * n / k)) for i in range(1, k + 1)})

    def _flags(self, res, tok, result) -> list[str]:
        flags = []
        losses = [e["loss"] for e in (res.log if res is not None else [])]
        if losses:
            tail = losses[-max(1, len(losses) // 10):]
            end = sum(tail) / len(tail)
            if end >= 0.9 * math.log(len(tok)) and end > losses[0]:  # worse than at the start, near uniform
                flags.append("diverged")
        preds = result["items"].get("medmcqa_pred", [])
        if len(preds) > 4 and len(set(preds)) == 1:
            flags.append("constant-answers")
        return flags

    def run_one(self, spec: RunSpec) -> None:
        gm = get_method(spec.method)
        path = self.run_path(spec)
        ident = self.identity(spec)
        if path.exists():
            if self._check(path, read_json(path).get("identity"), ident, "finished run"):
                self.log(f"{spec.name}: done already, skipped")
                return
            if self.main:
                path.unlink()
        failed = self.out / "failed" / f"{spec.name}.json"
        if failed.exists():
            if read_json(failed).get("identity") == ident and not self.fresh:
                self.log(f"{spec.name}: failed earlier ({failed}); --fresh retries it")
                self.failures.append(f"{spec.name}: {read_json(failed)['error']}")
                return
            if self.main:
                failed.unlink()
        folder = self.art / spec.name
        started = folder / "identity.json"
        if self.main:
            if started.exists() and not self._check(started, read_json(started), ident, "unfinished run"):
                shutil.rmtree(folder)
            write_json(started, ident)
        if spec.method == "base" and not self.main:
            self.wait_for(path)
            return
        t0 = time.perf_counter()
        extra, res, start = {}, None, "base"
        if gm.memory is not None:
            model, tok, stats, ref = self.retrofit(spec.seed, gm.memory)
            start = ref.name
            extra["retrofit"] = read_json(ref / "train_log.json")
            extra["background"] = read_json(ref / "background_meta.json")
        else:
            model, tok, stats = *self.load(spec.seed), None
        if gm.train is not None:
            cfg = self.train_config(spec)
            texts = self.task_texts_for(spec.seed)
            self.log(f"{spec.name}: {len(texts)} texts, lr {cfg.lr:g}")
            try:
                res = train(model, tok, texts, cfg, background=stats, checkpoint_dir=folder / "ckpt",
                            progress=self.progress, probe=self._probe(tok, start), probe_steps=self._probe_steps(cfg))
            except TrainingDiverged as err:
                self.log(f"{spec.name}: FAILED: {err}")
                if self.main:
                    write_json(failed, {"identity": ident, "error": str(err)})
                self.failures.append(f"{spec.name}: {err}")
                return
            model = res.model
            if self.main and gm.memory is not None:
                save_memory(model, folder / "adapter", reference=ref / "adapter")
            extra.update(train_config=dataclasses.asdict(cfg), train_log=res.log, train_seconds=res.seconds,
                         trajectory=res.trajectory)
        if not self.main:
            del model
            self.wait_for(path)
            return
        if self.p.eval_dtype:
            model = model.to(getattr(torch, self.p.eval_dtype))
        if spec.evaluation == "full":
            self.log(f"{spec.name}: evaluating")
            exact = self.load(0)[0] if gm.train is not None or gm.memory is not None else None
            with self.autocast():
                result = evaluate(model, tok, self.p, self.suite, self.reference, "full", progress=self.progress,
                                  exact_model=exact)
            del exact
            if gm.train is None:  # the cheap scores of an untrained model: the reference point of trajectories
                cheap = self._probe(tok, start)(model, 0)
                result["cheap"] = cheap["items"]
                result["cheap_metrics"] = cheap["metrics"]
        else:
            last = res.trajectory[-1]
            result = {"metrics": last["metrics"], "items": last["items"], "timings": {}}
        result["flags"] = self._flags(res, tok, result)
        rec = {"method": spec.method, "seed": spec.seed, "preset": self.p.name, "model": self.p.model,
               "notes": self.p.notes, "memory": self.p.memory, "versions": _versions(), "processes": self.world,
               "evaluation": spec.evaluation, "split": self.p.evaluate_on if spec.evaluation == "full" else "dev",
               "identity": ident, "identity_hash": object_hash(ident), "data": ident["data"],
               **result, **extra, "wall_seconds": time.perf_counter() - t0,
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json(path, rec)
        shutil.rmtree(folder / "ckpt", ignore_errors=True)  # the result is safe now
        shown = {k: round(v, 4) for k, v in result["metrics"].items() if isinstance(v, float)}
        self.log(f"{spec.name}: {shown}{' FLAGS ' + ','.join(result['flags']) if result['flags'] else ''}")

    def selection_snapshot(self, seed: int = 0, n_batches: int = 4) -> Path:
        """Read counts of a few task batches and the background statistics, for the KL vs TF-IDF chapter."""
        path = self.out / "selection_counts.json"
        ident = self.retrofit_identity(seed, "additive")
        if path.exists() and self._check(path, read_json(path).get("identity"), ident, "selection snapshot"):
            return path
        if not self.main:
            self.wait_for(path)
            return path
        model, tok, stats, _ = self.retrofit(seed, "additive")
        size = self.p.train.get("micro_batch", 4) * self.p.train.get("grad_accum", 1)
        texts = self.task_texts[: size * n_batches]
        counts = read_counts_of_texts(model, tok, texts, self.p.train.get("max_length", 1024), batch_size=size)
        layers = [m.layer_idx for m in memory_layers(model)]
        write_json(path, {"identity": ident, "layers": layers, "n_slots": int(stats.df.shape[1]),
                          "n_docs": stats.n_docs, "batch_texts": len(texts),
                          "batch_counts": [c.tolist() for c in counts], "df": stats.df.tolist(),
                          "totals": stats.totals.tolist()})
        return path

    def run(self, methods=None, seeds=None) -> Path:
        """Run the grid (skipping what is finished) and write the summary; returns its path."""
        from .results import write_summary

        specs = plan(self.p, methods, seeds)
        lock = FolderLock(self.out).acquire() if self.main else None
        try:
            if self.main:  # temporary files of a writer that was killed: never complete, safe to drop under the lock
                for stale in self.out.rglob(".*.tmp"):
                    stale.unlink()
            t0 = time.perf_counter()
            self.prepare_references()
            snapshot = any(GRID_METHODS[s.method].memory == "additive" for s in specs)
            for spec in specs:
                self.run_one(spec)
                if snapshot and GRID_METHODS[spec.method].memory == "additive":
                    self.selection_snapshot(specs[0].seed)  # as soon as the retrofit exists, not at the grid's end
                    snapshot = False
            path = self.out / "summary.csv"
            if self.main:
                write_summary(self.out)
            self.log(f"grid done in {time.perf_counter() - t0:.0f} s; summary at {path}")
        finally:
            if lock is not None:
                lock.release()
        if self.failures:
            raise TrainingDiverged(f"{len(self.failures)} run(s) stopped with a non-finite loss and have no "
                                   f"metrics (see {self.out / 'failed'}):\n  " + "\n  ".join(self.failures))
        return path

