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
import os
import platform
import shutil
import time
from pathlib import Path

import torch

from ..adapter import load_memory, save_memory
from ..data import data_dir, load_medmcqa, medmcqa_training_text, sample_rows
from ..files import check_clean, git_state, FolderLock, read_json, write_json
from ..fingerprints import items_fingerprint, object_hash
from ..memory import MemoryConfig
from ..models import load_model, load_tokenizer, tiny_model
from ..training import TrainConfig, TrainingDiverged, TrainResult, distributed, micro_batches, train
from .arms import get_arm
from .evaluation import Reference, build_suite, data_root, evaluate
from .plan import RunSpec, _plain, _same_training, plan, status_line, study_status  # noqa: F401 (re-exported)
from .preset_spec import Preset
from .records import REPORT, read_run, upgrade_identity
from .stages import (check_corpora, evenly_spaced_steps, reference_stage, retrofit_health, retrofit_stage,  # noqa: F401
                     reusable_records, reuse_record, run_flags, trained_memory, trajectory_probe)


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


def auto_precision(preset: Preset, device: torch.device) -> dict:
    """The preset's precision on this device: model dtype, memory dtype and training/evaluation autocast.

    ``dtype="auto"``: a bfloat16 model with float32 memory where the GPU supports bfloat16; float32 master weights
    with float16 autocast (and loss scaling) on a GPU without it (e.g. a T4); float32 on a CPU.
    """
    if preset.dtype != "auto":
        return {"model": preset.dtype, "memory": preset.memory_dtype, "autocast": preset.task_settings().autocast}
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return {"model": "bfloat16", "memory": preset.memory_dtype or "float32", "autocast": None}
    if device.type == "cuda":
        return {"model": "float32", "memory": None, "autocast": "float16"}
    return {"model": "float32", "memory": None, "autocast": None}


class Mismatch(ValueError):
    """A result on disk was made with other settings or data than the current ones."""


class Runner:
    """Runs a preset's grid into ``out``; everything finished is kept and skipped on the next call.

    Args:
        preset: the preset.
        out: the results folder.
        progress: show progress bars.
        fresh: recompute results made with other settings or data (otherwise they are refused).
        reuse: other results folders; a run finished there with the same identity is copied, not repeated.
        allow_dirty: start even when the checkout has uncommitted changes (the records then say
            ``allow_dirty``); otherwise a preset of a real model refuses to start from such a tree.
    """

    def __init__(self, preset: Preset, out: str | Path, progress: bool = True, fresh: bool = False, reuse=(),
                 allow_dirty: bool = False):
        # the code that runs: read when the runner starts, not when a record is written; a study of a real model
        # refuses a checkout with uncommitted changes unless allowed (the tiny random model is for tests)
        self.versions = _versions()
        if preset.model != "tiny":
            self.versions = check_clean(self.versions, allow_dirty, f"preset {preset.name!r}")
        self.rank, self.world = distributed()
        self.main = self.rank == 0
        self.preset, self.out, self.progress, self.fresh = preset, Path(out), progress and self.main, fresh
        self.artifacts, self.reusable = self.out / "artifacts", reusable_records(reuse)
        root = data_root(preset)
        self.all_task_questions = load_medmcqa("train", single_choice=True, root=root)
        have = len(self.all_task_questions)
        if preset.train_n is not None and have < preset.train_n:
            where = data_dir(root)
            where = "the Hugging Face Hub" if where is None else where / "medmcqa" / "train.jsonl"
            raise ValueError(f"preset {preset.name!r} trains on {preset.train_n} MedMCQA questions but {where} has "
                             f"{have}: lower train_n (python -m smf_lib run --set train_n=N) or point SMF_DATA_DIR "
                             "(--data) at the complete data")
        self.task_questions = self.task_questions_for(preset.seeds[0])
        self.task_texts = [medmcqa_training_text(r) for r in self.task_questions]
        self.suite = build_suite(preset, self.task_questions)
        check_corpora(preset)
        self.reference = Reference(self.artifacts / "reference", preset.topk, progress and self.main)
        self.precision = auto_precision(preset, _device())
        self.failures: list[str] = []
        self.waiting: list[str] = []  # grid runs skipped until the preset chooses their rate

    def task_questions_for(self, seed: int) -> list[dict]:
        """The training questions of a seed (the same for every seed unless the preset samples per seed)."""
        return sample_rows(self.all_task_questions, self.preset.train_n, self.preset.train_sample, seed)

    def task_texts_for(self, seed: int) -> list[str]:
        if self.preset.train_sample == "first":
            return self.task_texts
        return [medmcqa_training_text(r) for r in self.task_questions_for(seed)]

    # -- identities -------------------------------------------------------------------------------------------
    def data_identity(self) -> dict:
        return {"medmcqa_train": items_fingerprint(self.task_texts), "n_train": len(self.task_texts),
                "train_sample": self.preset.train_sample, "wikitext_raw": self.preset.wikitext_raw,
                "ppl_first_window": self.preset.ppl_first_window,
                "probes": self.suite.fingerprints(), "source": "fixtures" if self.preset.data == "fixtures"
                else ("local" if data_dir(data_root(self.preset)) else "huggingface-hub")}

    def retrofit_identity(self, seed: int, mode: str) -> dict:
        preset = self.preset
        return _plain({"model": preset.model, "precision": self.precision, "memory": {**preset.memory, "mode": mode},
                       "seed": seed, "retrofit": preset.retrofit,
                       "lr": preset.lr.get("retrofit"), "corpus": [preset.retrofit_corpus, preset.retrofit_n],
                       "background": [preset.background_corpus, preset.background_n],
                       "heldout_chat": preset.chat_n + preset.chat_dev_n})

    def identity(self, spec: RunSpec) -> dict:
        preset, arm = self.preset, get_arm(spec.method)
        ident = {"method": spec.method, "seed": spec.seed, "model": preset.model,
                 "precision": {**self.precision, "eval": preset.eval_dtype},
                 "evaluation": spec.evaluation,
                 "split": preset.evaluate_on, "dev_subset": preset.dev_subset,
                 "trajectory_points": preset.trajectory_points,
                 "topk": preset.topk, "data": self.data_identity()}
        if arm.memory is not None:
            ident["retrofit"] = self.retrofit_identity(spec.seed, arm.memory)
        if arm.train is not None:
            ident["train_config"] = self.train_config(spec).record()
        return _plain(ident)

    def train_config(self, spec: RunSpec) -> TrainConfig:
        cfg = self.preset.train_config(spec.method, spec.seed, spec.lr)
        return dataclasses.replace(cfg, autocast=self.precision["autocast"])

    def retrofit_config(self, seed: int) -> TrainConfig:
        return dataclasses.replace(self.preset.retrofit_config(seed), autocast=self.precision["autocast"])

    @property
    def task_max_length(self) -> int:
        """Tokens per text of the task runs (also the background statistics' and snapshots' length)."""
        return self.preset.task_settings().max_length

    def autocast(self):
        """The evaluation's autocast context (a no-op unless the precision asks for one)."""
        a = self.precision["autocast"]
        return torch.autocast(_device().type, dtype=getattr(torch, a)) if a else contextlib.nullcontext()

    def check(self, path: Path, stored: dict | None, current: dict, what: str) -> bool:
        """True when ``stored`` matches; on a mismatch refuse, or (``fresh``) return False so it is redone."""
        current, stored = _plain(current), upgrade_identity(stored)
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
        model = self.preset.model
        dtype = getattr(torch, self.precision["model"])
        if model.startswith("tiny"):  # "tiny" (Llama) or "tiny-qwen2": random weights, the default tokenizer
            arch = model.partition("-")[2] or "llama"
            return tiny_model(arch, vocab=49152, hidden=64, layers=4, seed=seed).to(_device(), dtype), load_tokenizer()
        return load_model(model, device=_device(), dtype=dtype)

    def memory_config(self, mode: str) -> MemoryConfig:
        return MemoryConfig(**{**self.preset.memory, "mode": mode, "dtype": self.precision["memory"]})

    def run_path(self, spec: RunSpec) -> Path:
        return self.out / "runs" / f"{spec.name}.json"

    def run_one(self, spec: RunSpec) -> None:
        """One run of the grid: skip it if finished (or failed with the same identity), else start from the base
        or retrofitted model, train, evaluate and write its record last. A memory arm's reported run whose
        training a finished swept run already did loads that run's memory
        (:func:`~smf_lib.study.stages.trained_memory`) instead of training it again."""
        arm, path = get_arm(spec.method), self.run_path(spec)
        key = self.preset.rate_to_choose(spec.method, spec.seed, spec.lr)
        if key is not None:
            self.log(f"{spec.name}: skipped: the preset's {key!r} rate is still to be chosen from the sweep's dev "
                     f"results; set it in the preset (and drop it from rates_to_choose) or pass --lr {key}=RATE")
            self.waiting.append(spec.name)
            return
        ident = self.identity(spec)
        if self._finished(spec, ident) or reuse_record(self, spec, ident):
            return
        folder = self.artifacts / spec.name
        if self.main:
            started = folder / "identity.json"
            if started.exists() and not self.check(started, read_json(started), ident, "unfinished run"):
                shutil.rmtree(folder)
            write_json(started, ident)
        if spec.method == "base" and not self.main:
            self.wait_for(path)
            return
        t0 = time.perf_counter()
        extra, res, start, stats = {}, None, "base", None
        if arm.memory is not None:
            model, tok, stats, retrofitted = retrofit_stage(self, spec.seed, arm.memory)
            start = retrofitted.name
            extra["retrofit"] = read_json(retrofitted / "train_log.json")
            extra["background"] = read_json(retrofitted / "background_meta.json")
        else:
            model, tok = self.load(spec.seed)
        trained = (trained_memory(self, spec, ident) if arm.memory is not None and arm.train == "smf"
                   and spec.evaluation == REPORT else None)
        if trained is not None:  # a swept run trained exactly this: load its memory and only evaluate
            source, swept, adapter = trained
            del model
            model, tok = self.load(spec.seed)
            load_memory(model, adapter)
            self.log(f"{spec.name}: trained already by {source.stem} ({source}); its memory is loaded, not trained "
                     "again")
            res = TrainResult(model, log=swept["train_log"], seconds=swept.get("train_seconds", 0.0),
                              trajectory=swept.get("trajectory") or [])
            if self.main:
                save_memory(model, folder / "adapter", reference=retrofitted / "adapter")
            extra.update(train_config=swept["train_config"], train_log=res.log, train_seconds=res.seconds,
                         trajectory=res.trajectory, trained_by=str(source))
        elif arm.train is not None:
            cfg, texts = self.train_config(spec), self.task_texts_for(spec.seed)
            self.log(f"{spec.name}: {len(texts)} texts, lr {cfg.lr:g}")
            try:
                res = train(model, tok, texts, cfg, background=stats, checkpoint_dir=folder / "ckpt",
                            progress=self.progress, probe=trajectory_probe(self, tok, start),
                            probe_steps=evenly_spaced_steps(len(micro_batches(len(texts), cfg)),
                                                            self.preset.trajectory_points))
            except TrainingDiverged as err:
                self.log(f"{spec.name}: FAILED: {err}")
                if self.main:
                    write_json(self.out / "failed" / f"{spec.name}.json", {"identity": ident, "error": str(err)})
                self.failures.append(f"{spec.name}: {err}")
                return
            model = res.model
            if self.main and arm.memory is not None:
                save_memory(model, folder / "adapter", reference=retrofitted / "adapter")
            extra.update(train_config=cfg.record(), train_log=res.log, train_seconds=res.seconds,
                         trajectory=res.trajectory)
        if not self.main:
            del model
            self.wait_for(path)
            return
        result = self._evaluate(spec, model, tok, res, start)
        # a resumed run counts the earlier processes' time up to its checkpoint, not the work they lost after it
        earlier = res.resumed["earlier_seconds"] if res is not None and res.resumed else 0.0
        if earlier:
            extra["resumed"] = res.resumed
        rec = {"method": spec.method, "seed": spec.seed, "preset": self.preset.name, "model": self.preset.model,
               "notes": self.preset.notes, "memory": self.preset.memory, "versions": self.versions,
               "processes": self.world, "evaluation": spec.evaluation,
               "split": self.preset.evaluate_on if spec.evaluation == REPORT else "dev",
               "identity": ident, "identity_hash": object_hash(ident), "data": ident["data"],
               **result, **extra, "wall_seconds": time.perf_counter() - t0 + earlier,
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json(path, rec)
        shutil.rmtree(folder / "ckpt", ignore_errors=True)  # the result is safe now
        shown = {k: round(v, 4) for k, v in result["metrics"].items() if isinstance(v, float)}
        self.log(f"{spec.name}: {shown}{' FLAGS ' + ','.join(result['flags']) if result['flags'] else ''}")

    def _finished(self, spec: RunSpec, ident: dict) -> bool:
        """True when the run's record exists with this identity, or it failed earlier with it (unless ``fresh``);
        a record or failure with another identity is refused (:class:`Mismatch`) or, with ``fresh``, dropped."""
        path, failed = self.run_path(spec), self.out / "failed" / f"{spec.name}.json"
        if path.exists():
            if self.check(path, read_run(path).get("identity"), ident, "finished run"):
                self.log(f"{spec.name}: done already, skipped")
                return True
            if self.main:
                path.unlink()
        if failed.exists():
            earlier = read_json(failed)
            if upgrade_identity(earlier.get("identity")) == ident and not self.fresh:
                self.log(f"{spec.name}: failed earlier ({failed}); --fresh retries it")
                self.failures.append(f"{spec.name}: {earlier['error']}")
                return True
            if self.main:
                failed.unlink()
        return False

    def _evaluate(self, spec: RunSpec, model, tok, res, start: str) -> dict:
        """The run's metrics and per-item arrays: the full suite, or (a sweep run) its last trajectory point."""
        arm = get_arm(spec.method)
        if self.preset.eval_dtype:
            model = model.to(getattr(torch, self.preset.eval_dtype))
        if spec.evaluation == REPORT:
            self.log(f"{spec.name}: evaluating")
            exact = self.load(0)[0] if arm.train is not None or arm.memory is not None else None
            with self.autocast():
                result = evaluate(model, tok, self.preset, self.suite, self.reference, REPORT,
                                  progress=self.progress, exact_model=exact)
            del exact
            if arm.train is None:  # an untrained model's dev-subset scores: the reference point of trajectories
                dev = trajectory_probe(self, tok, start)(model, 0)
                result["dev_items"], result["dev_metrics"] = dev["items"], dev["metrics"]
        else:
            last = res.trajectory[-1]
            result = {"metrics": last["metrics"], "items": last["items"], "timings": {}}
        result["flags"] = run_flags(res, tok, result)
        return result

    def run(self, methods=None, seeds=None) -> Path:
        """Run the grid (skipping what is finished) and write the summary; returns its path."""
        from .results import write_summary

        specs = plan(self.preset, methods, seeds)
        lock = FolderLock(self.out).acquire() if self.main else None
        try:
            if self.main:  # temporary files of a writer that was killed: never complete, safe to drop under the lock
                for stale in self.out.rglob(".*.tmp"):
                    stale.unlink()
            t0 = time.perf_counter()
            reference_stage(self)
            for spec in specs:
                self.run_one(spec)
            path = self.out / "summary.csv"
            if self.main:
                write_summary(self.out)
            self.log(f"grid done in {time.perf_counter() - t0:.0f} s; summary at {path}")
            if self.waiting:
                self.log(f"{len(self.waiting)} run(s) wait for a rate to be chosen: {', '.join(self.waiting)}")
        finally:
            if lock is not None:
                lock.release()
        if self.failures:
            raise TrainingDiverged(f"{len(self.failures)} run(s) stopped with a non-finite loss and have no "
                                   f"metrics (see {self.out / 'failed'}):\n  " + "\n  ".join(self.failures))
        return path

