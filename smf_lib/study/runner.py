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

from ..adapter import save_memory
from ..data import data_dir, load_medmcqa, medmcqa_training_text, sample_rows
from ..files import check_clean, git_state, FolderLock, read_json, write_json
from ..fingerprints import items_fingerprint, object_hash
from ..memory import MemoryConfig
from ..models import load_model, load_tokenizer, tiny_model
from ..training import TrainConfig, TrainingDiverged, TrainResult, distributed, micro_batches, train
from .arms import get_arm
from .frontier import apply_choice, choose_and_apply
from .evaluation import Reference, build_suite, data_root, evaluate
from .plan import RunSpec, _plain, plan, status_line, study_status  # noqa: F401 (the last two: their old home)
from .preset_spec import Preset
from .records import REPORT, read_run, upgrade_identity
from .stages import (RetrofitPlan, StageHost, check_corpora, evenly_spaced_steps, load_swept_memory, reference_stage,
                     resume_swept_training, retrofit_stage, reusable_records, reuse_record, run_flags,
                     settle_checkpoint, trained_memory, trajectory_probe)


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


def data_identity(preset: Preset, task_texts: list[str], suite) -> dict:
    """The data a run saw: its training texts, their sampling and the probes' items (fingerprints)."""
    return {"medmcqa_train": items_fingerprint(task_texts), "n_train": len(task_texts),
            "train_sample": preset.train_sample, "wikitext_raw": preset.wikitext_raw,
            "ppl_first_window": preset.ppl_first_window, "probes": suite.fingerprints(),
            "source": "fixtures" if preset.data == "fixtures"
            else ("local" if data_dir(data_root(preset)) else "huggingface-hub")}


def retrofit_identity(preset: Preset, precision: dict, seed: int, mode: str) -> dict:
    """What a retrofit stage was made from: the model, the memory, the retrofit's settings and corpora."""
    return _plain({"model": preset.model, "precision": precision, "memory": {**preset.memory, "mode": mode},
                   "seed": seed, "retrofit": preset.retrofit, "lr": preset.lr.get("retrofit"),
                   "corpus": [preset.retrofit_corpus, preset.retrofit_n],
                   "background": [preset.background_corpus, preset.background_n],
                   "heldout_chat": preset.chat_n + preset.chat_dev_n})


def run_identity(preset: Preset, precision: dict, spec: RunSpec, data: dict, retrofit: dict | None,
                 train_config: dict | None) -> dict:
    """A run's identity: its arm, seed, model, precision, evaluation and data, its retrofit's identity (arms with a
    memory) and its training config (arms that train)."""
    ident = {"method": spec.method, "seed": spec.seed, "model": preset.model,
             "precision": {**precision, "eval": preset.eval_dtype}, "evaluation": spec.evaluation,
             "split": preset.evaluate_on, "dev_subset": preset.dev_subset,
             "trajectory_points": preset.trajectory_points, "topk": preset.topk, "data": data}
    if retrofit is not None:
        ident["retrofit"] = retrofit
    if train_config is not None:
        ident["train_config"] = train_config
    return _plain(ident)


def task_questions(preset: Preset) -> list[dict]:
    """The MedMCQA training questions the preset's data holds; refused when fewer than its ``train_n``."""
    root = data_root(preset)
    rows = load_medmcqa("train", single_choice=True, root=root)
    if preset.train_n is not None and len(rows) < preset.train_n:
        where = data_dir(root)
        where = "the Hugging Face Hub" if where is None else where / "medmcqa" / "train.jsonl"
        raise ValueError(f"preset {preset.name!r} trains on {preset.train_n} MedMCQA questions but {where} has "
                         f"{len(rows)}: lower train_n (python -m smf_lib run --set train_n=N) or point SMF_DATA_DIR "
                         "(--data) at the complete data")
    return rows


def load_base(model: str, dtype: str, seed: int = 0):
    """A preset's base model in ``dtype`` on this process's device, and its tokenizer (``"tiny"`` or
    ``"tiny-qwen2"``: random weights of that architecture, the default tokenizer)."""
    if model.startswith("tiny"):
        arch = model.partition("-")[2] or "llama"
        return (tiny_model(arch, vocab=49152, hidden=64, layers=4, seed=seed).to(_device(), getattr(torch, dtype)),
                load_tokenizer())
    return load_model(model, device=_device(), dtype=getattr(torch, dtype))


def run_record(preset: Preset, spec: RunSpec, ident: dict, content: dict, versions: dict, processes: int,
               wall_seconds: float) -> dict:
    """A run's record: what ran (preset, identity, the code's versions), its results and timings."""
    return {"method": spec.method, "seed": spec.seed, "preset": preset.name, "model": preset.model,
            "notes": preset.notes, "memory": preset.memory, "versions": versions, "processes": processes,
            "evaluation": spec.evaluation, "split": preset.evaluate_on if spec.evaluation == REPORT else "dev",
            "identity": ident, "identity_hash": object_hash(ident), "data": ident["data"], **content,
            "wall_seconds": wall_seconds, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}


def check_identity(path: Path, stored: dict | None, current: dict, what: str, fresh: bool) -> bool:
    """True when ``stored`` matches ``current``; on a mismatch refuse (:class:`Mismatch`), or with ``fresh`` return
    False so the result is made again."""
    current, stored = _plain(current), upgrade_identity(stored)
    if stored == current:
        return True
    if fresh:
        return False
    diff = sorted(k for k in set(current) | set(stored or {}) if (stored or {}).get(k) != current.get(k))
    raise Mismatch(f"{path} ({what}) was made with other settings or data (differs in {diff}); rerun with "
                   "--fresh to recompute it, or pass another --out")


def evaluate_run(preset: Preset, suite, reference, spec: RunSpec, model, tok, res, autocast, dev_probe, exact,
                 progress: bool) -> dict:
    """A run's metrics and per-item arrays: a reported run scores every probe of ``suite`` (under ``autocast``;
    ``exact``: the base model for the drift's exact check), and an untrained one also its dev subset
    (``dev_probe``), the reference point of trajectories; a swept run keeps its last trajectory point."""
    if preset.eval_dtype:
        model = model.to(getattr(torch, preset.eval_dtype))
    if spec.evaluation == REPORT:
        with autocast:
            result = evaluate(model, tok, preset, suite, reference, REPORT, progress=progress, exact_model=exact)
        if get_arm(spec.method).train is None:
            dev = dev_probe(model, 0)
            result["dev_items"], result["dev_metrics"] = dev["items"], dev["metrics"]
    else:
        last = res.trajectory[-1]
        result = {"metrics": last["metrics"], "items": last["items"], "timings": {}}
    result["flags"] = run_flags(res, tok, result)
    return result


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
        # the code that runs, read when the runner starts (a real model's study refuses uncommitted changes)
        self.versions = _versions() if preset.model.startswith("tiny") else check_clean(_versions(), allow_dirty,
                                                                                f"preset {preset.name!r}")
        self.rank, self.world = distributed()
        self.main = self.rank == 0
        self.preset, self.out, self.fresh = apply_choice(preset, out), Path(out), fresh
        self.progress = progress and self.main
        self.artifacts, self.reusable = self.out / "artifacts", reusable_records(reuse)
        self.all_task_questions = task_questions(preset)
        self.task_questions = self.task_questions_for(preset.seeds[0])
        self.task_texts = [medmcqa_training_text(r) for r in self.task_questions]
        self.suite = build_suite(preset, self.task_questions)
        check_corpora(preset)
        self.reference = Reference(self.artifacts / "reference", preset.topk, progress and self.main)
        self.precision = auto_precision(preset, _device())
        self.failures: dict[str, str] = {}  # run -> error, once however often it is met
        self.waiting: list[str] = []  # grid runs skipped until the preset chooses their rate
        self.host = StageHost(self.log, self.check, self.load, self.autocast, self.wait_for, self.main, self.world,
                              self.progress)

    def task_questions_for(self, seed: int) -> list[dict]:
        """The training questions of a seed (the same for every seed unless the preset samples per seed)."""
        return sample_rows(self.all_task_questions, self.preset.train_n, self.preset.train_sample, seed)

    def task_texts_for(self, seed: int) -> list[str]:
        first = self.preset.train_sample == "first"
        return self.task_texts if first else [medmcqa_training_text(r) for r in self.task_questions_for(seed)]

    def retrofit_identity(self, seed: int, mode: str) -> dict:
        return retrofit_identity(self.preset, self.precision, seed, mode)

    def identity(self, spec: RunSpec) -> dict:
        arm = get_arm(spec.method)
        return run_identity(self.preset, self.precision, spec, data_identity(self.preset, self.task_texts, self.suite),
                            self.retrofit_identity(spec.seed, arm.memory) if arm.memory is not None else None,
                            self.train_config(spec).record() if arm.train is not None else None)

    def train_config(self, spec: RunSpec) -> TrainConfig:
        cfg = self.preset.train_config(spec.method, spec.seed, spec.lr)
        return dataclasses.replace(cfg, autocast=self.precision["autocast"])

    def retrofit(self, seed: int, mode: str) -> tuple[torch.nn.Module, object, object, Path]:
        """The retrofit of ``seed`` and memory ``mode`` (trained once): model, tokenizer, statistics, folder."""
        p = self.preset
        plan = RetrofitPlan(seed, mode, self.artifacts / f"retrofit-{mode}-s{seed}", self.retrofit_identity(seed, mode),
                            MemoryConfig(**{**p.memory, "mode": mode, "dtype": self.precision["memory"]}),
                            dataclasses.replace(p.retrofit_config(seed), autocast=self.precision["autocast"]),
                            p.task_settings().max_length)
        return retrofit_stage(self.host, p, self.suite, plan)

    def autocast(self):
        """The evaluation's autocast context (a no-op unless the precision asks for one)."""
        a = self.precision["autocast"]
        return torch.autocast(_device().type, dtype=getattr(torch, a)) if a else contextlib.nullcontext()

    def _probe(self, tok, start: str):  # the dev-subset probe, its step 0 kept per start model
        return trajectory_probe(self.preset, self.suite, self.reference, tok, self.artifacts / f"step0-{start}.json",
                                self.autocast, self.main)

    def check(self, path: Path, stored: dict | None, current: dict, what: str) -> bool:  # with this ``fresh``
        return check_identity(path, stored, current, what, self.fresh)

    def log(self, msg: str) -> None:
        if self.main:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def wait_for(self, path: Path) -> None:
        """Processes other than 0 wait for process 0's ``path`` (not a barrier: evaluation can outlast NCCL's)."""
        while not self.main and not path.exists():
            time.sleep(0.5)

    def load(self, seed: int = 0):
        """The base model (in the preset's dtype) and its tokenizer."""
        return load_base(self.preset.model, self.precision["model"], seed)

    def run_path(self, spec: RunSpec) -> Path:
        return self.out / "runs" / f"{spec.name}.json"

    def run_one(self, spec: RunSpec) -> None:
        """One run of the grid: skip it if finished (or failed with the same identity), else start from the base
        or retrofitted model, train, evaluate and write its record last. A memory arm's reported run whose
        training a finished swept run already did loads that run's memory
        (:func:`~smf_lib.study.stages.trained_memory`), a LoRA or full-finetuning one resumes after that run's last
        checkpoint (:func:`~smf_lib.study.stages.resume_swept_training`), instead of training it again."""
        arm, path = get_arm(spec.method), self.run_path(spec)
        key = self.preset.rate_to_choose(spec.method, spec.seed, spec.lr)
        if key is not None:
            self.log(f"{spec.name}: waits: the {key!r} rate is chosen from the sweep's dev results once they are "
                     f"all in (smf_lib.study.frontier; or set it: --lr {key}=RATE)")
            self.waiting.append(spec.name)
            return
        ident = self.identity(spec)
        target = path if self.main else None  # process 0 alone writes
        if self._finished(spec, ident) or reuse_record(self.reusable, spec, ident, target, self.log):
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
        extra, res, start, stats, retrofitted = {}, None, "base", None, None
        if arm.memory is not None:
            model, tok, stats, retrofitted = self.retrofit(spec.seed, arm.memory)
            start = retrofitted.name
            extra.update(retrofit=read_json(retrofitted / "train_log.json"),
                         background=read_json(retrofitted / "background_meta.json"))
        else:
            model, tok = self.load(spec.seed)
        trained = (trained_memory(self.out, self.reusable, ident) if arm.memory is not None and arm.train == "smf"
                   and spec.evaluation == REPORT else None)
        if trained is not None:  # a swept run trained exactly this: load its memory and only evaluate
            del model
            model, res = load_swept_memory(self.host, spec, trained, folder, retrofitted, extra)
        elif arm.train is not None:
            res = self._train(spec, ident, model, tok, stats, start, folder, retrofitted, extra)
            if res is None:
                return
            model = res.model
        if not self.main:
            del model
            self.wait_for(path)
            return
        result = self._evaluate(spec, model, tok, res, start)
        self._write_record(spec, ident, result, extra, res, t0)

    def _train(self, spec: RunSpec, ident: dict, model, tok, stats, start: str, folder: Path,
               retrofitted: Path | None, extra: dict) -> TrainResult | None:
        """Train the run (resuming its checkpoint), probing the dev subset along the way; None if it diverged (a
        failure record is written and the grid goes on)."""
        cfg, texts = self.train_config(spec), self.task_texts_for(spec.seed)
        if by := resume_swept_training(self.host, self.out, self.reusable, spec, ident, folder / "ckpt"):
            extra["trained_by"] = by
        self.log(f"{spec.name}: {len(texts)} texts, lr {cfg.lr:g}")
        try:
            res = train(model, tok, texts, cfg, background=stats, checkpoint_dir=folder / "ckpt",
                        progress=self.progress, probe=self._probe(tok, start),
                        probe_steps=evenly_spaced_steps(len(micro_batches(len(texts), cfg)),
                                                        self.preset.trajectory_points))
        except TrainingDiverged as err:
            self.log(f"{spec.name}: FAILED: {err}")
            if self.main:
                write_json(self.out / "failed" / f"{spec.name}.json", {"identity": ident, "error": str(err)})
            self.failures[spec.name] = f"{spec.name}: {err}"
            return None
        if self.main and retrofitted is not None:
            save_memory(res.model, folder / "adapter", reference=retrofitted / "adapter")
        extra.update(train_config=cfg.record(), train_log=res.log, train_seconds=res.seconds,
                     trajectory=res.trajectory)
        return res

    def _write_record(self, spec: RunSpec, ident: dict, result: dict, extra: dict, res, t0: float) -> None:
        """The run's record, written last (its existence means the run is complete); the checkpoint goes."""
        # a resumed run counts the earlier processes' time up to its checkpoint, not the work they lost after it
        # (a run trained by a swept run counts its evaluation only, as one that loads a trained memory)
        earlier = res.resumed["earlier_seconds"] if res is not None and res.resumed and "trained_by" not in extra else 0
        if earlier:
            extra["resumed"] = res.resumed
        rec = run_record(self.preset, spec, ident, {**result, **extra}, self.versions, self.world,
                         time.perf_counter() - t0 + earlier)
        write_json(self.run_path(spec), rec)
        settle_checkpoint(spec, self.artifacts / spec.name / "ckpt")  # the result is safe now
        shown = {k: round(v, 4) for k, v in result["metrics"].items() if isinstance(v, float)}
        self.log(f"{spec.name}: {shown}{' FLAGS ' + ','.join(result['flags']) if result['flags'] else ''}")

    def _finished(self, spec: RunSpec, ident: dict) -> bool:
        """True when the run's record exists with this identity, or it failed earlier with it (unless ``fresh``);
        a record or failure with another identity is refused (:class:`Mismatch`) or, with ``fresh``, dropped."""
        path, failed = self.run_path(spec), self.out / "failed" / f"{spec.name}.json"
        if path.exists():
            if self.check(path, read_run(path).get("identity"), ident, "finished run"):
                self.log(f"{spec.name}: done already, skipped")
                if self.main:  # a crash right after the record was written leaves its checkpoint to settle
                    settle_checkpoint(spec, self.artifacts / spec.name / "ckpt")
                return True
            if self.main:
                path.unlink()
        if failed.exists():
            earlier = read_json(failed)
            if upgrade_identity(earlier.get("identity")) == ident and not self.fresh:
                self.log(f"{spec.name}: failed earlier ({failed}); --fresh retries it")
                self.failures[spec.name] = f"{spec.name}: {earlier['error']}"
                return True
            if self.main:
                failed.unlink()
        return False

    def _choose(self) -> bool:  # rates for the runs waiting for one (smf_lib.study.frontier); True: preset changed
        before, self.preset = self.preset, choose_and_apply(self.preset, self.out, self.versions, self.world, self.log)
        return self.preset != before

    def _evaluate(self, spec: RunSpec, model, tok, res, start: str) -> dict:
        """The run's metrics and per-item arrays (:func:`evaluate_run`)."""
        arm, report = get_arm(spec.method), spec.evaluation == REPORT
        if report:
            self.log(f"{spec.name}: evaluating")
        exact = self.load(0)[0] if report and (arm.train is not None or arm.memory is not None) else None
        return evaluate_run(self.preset, self.suite, self.reference, spec, model, tok, res, self.autocast(),
                            self._probe(tok, start), exact, self.progress)

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
            reference_stage(self.host, self.preset, self.suite, self.reference, self.precision,
                            self.artifacts / "reference")
            while True:  # a round of runs; then the rates chosen on the sweep's dev results, if runs wait for them
                for spec in specs:
                    self.run_one(spec)
                if not self.waiting or not self._choose():
                    break
                specs, self.waiting = plan(self.preset, methods, seeds), []
            path = write_summary(self.out) if self.main else self.out / "summary.csv"
            self.log(f"grid done in {time.perf_counter() - t0:.0f} s; summary at {path}")
            if self.waiting:
                self.log(f"{len(self.waiting)} run(s) wait for a rate to be chosen: {', '.join(self.waiting)}")
        finally:
            if lock is not None:
                lock.release()
        if self.failures:
            raise TrainingDiverged(f"{len(self.failures)} run(s) stopped with a non-finite loss and have no "
                                   f"metrics (see {self.out / 'failed'}):\n  " + "\n  ".join(self.failures.values()))
        return path

