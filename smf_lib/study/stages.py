"""The runner's stages: the drift reference, the retrofit (with its health record and background statistics), the
trajectory probe and a finished run's flags. Each takes what it needs: the data it reads and, for the stages that
load models and write files, a :class:`StageHost` (the few services of the study that runs them)."""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from ..adapter import load_memory, save_memory
from ..files import read_json, write_json
from .. import data
from ..health import MIN_SHARE, check_health, loss_change, memory_health
from ..spread import check_spread, memory_spread, spread_stats, spread_summary
from ..memory import CONFIG_NAME, MemoryConfig, add_memory
from ..selection import BackgroundStats, compute_background_stats
from ..training import TrainConfig, micro_batches, train
from .arms import ARMS
from .evaluation import corpus, drift_spans, evaluate
from .plan import KEPT_CHECKPOINT, _plain
from .records import REPORT, TRAJECTORY, is_report, read_run, training_of, upgrade_identity


@dataclass(frozen=True)
class StageHost:
    """The services a stage uses from the study that runs it (a :class:`~smf_lib.study.runner.Runner` builds one):
    ``log(message)``; ``check(path, stored, current, what)``, which says whether a stored identity matches (and
    refuses or allows a recompute); ``load(seed)``, the base model and tokenizer; ``autocast()``, the evaluation's
    context; ``wait_for(path)``, which holds processes other than 0 until process 0 wrote ``path``; ``main``
    (process 0, the one that writes), ``world`` (the number of processes) and ``progress`` (show bars)."""

    log: Callable[[str], None]
    check: Callable[[Path, dict | None, dict, str], bool]
    load: Callable[[int], tuple]
    autocast: Callable[[], AbstractContextManager]
    wait_for: Callable[[Path], None]
    main: bool = True
    world: int = 1
    progress: bool = True


@dataclass(frozen=True)
class RetrofitPlan:
    """One retrofit: its seed and memory mode, its folder and identity, the memory to add, the training settings,
    and the token length of the task texts (also that of the background statistics and spread meter)."""

    seed: int
    mode: str
    folder: Path
    identity: dict
    memory: MemoryConfig
    config: TrainConfig
    task_max_length: int


def evenly_spaced_steps(n_steps: int, points: int) -> list[int]:
    """``points - 1`` optimizer steps spread evenly over ``n_steps`` (the last one included), for probes."""
    k = max(1, points - 1)
    return sorted({max(1, round(i * n_steps / k)) for i in range(1, k + 1)})


def check_corpora(preset) -> None:
    """Read the retrofit and background corpora of a preset whose grid has a memory, so that a missing, damaged
    or short file is reported before any run starts, not after the base model's evaluation."""
    if any(ARMS[m].memory is not None for m in preset.methods if m in ARMS):
        corpus(preset, preset.retrofit_corpus, preset.retrofit_n)
        corpus(preset, preset.background_corpus, preset.background_n)


def reference_stage(host: StageHost, preset, suite, reference, precision: dict, folder: Path) -> None:
    """Cache the base model's top-k log-probabilities on every drift span of ``suite`` in ``reference`` (once per
    results folder; ``folder`` holds its marker)."""
    if not host.main:
        return
    marker = folder / "complete.json"
    ident = _plain({"model": preset.model, "precision": precision, "topk": preset.topk,
                    "probes": suite.fingerprints(), "dev_subset": preset.dev_subset, "split": preset.evaluate_on})
    if marker.exists() and host.check(marker, read_json(marker), ident, "drift reference"):
        return
    shutil.rmtree(folder, ignore_errors=True)
    host.log("caching the base model's drift reference")
    model, tok = host.load(0)
    for split in {preset.evaluate_on, "dev"}:
        for subset in (None, preset.dev_subset):
            wiki, chat = drift_spans(tok, suite, split, subset)
            for name, spans in (("wikitext", wiki), ("chat", chat)):
                if spans:
                    with host.autocast():
                        reference.get(f"{name}-{split}", model, spans)
    write_json(marker, ident)


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


def retrofit_stage(host: StageHost, preset, suite, plan: RetrofitPlan
                   ) -> tuple[torch.nn.Module, object, BackgroundStats, Path]:
    """The retrofit adapter (trained once per seed and memory mode), its health record and its background
    statistics; returns the retrofitted model, its tokenizer, the statistics and the stage's folder."""
    folder, ident = plan.folder, plan.identity
    marker = folder / "complete.json"
    done = marker.exists() and host.check(marker, read_json(marker), ident, "retrofit stage")
    if not done:  # every process trains (DDP); process 0 alone writes
        started = folder / "identity.json"
        if host.main:
            if started.exists() and not host.check(started, read_json(started), ident, "retrofit stage"):
                shutil.rmtree(folder)
            write_json(started, ident)
        _retrofit(host, preset, suite, plan)
        if host.main:
            check_regenerated(folder, ident)
            write_json(marker, ident)
            shutil.rmtree(folder / "ckpt", ignore_errors=True)
    host.wait_for(marker)
    model, tok = host.load(plan.seed)
    load_memory(model, folder / "adapter")
    return model, tok, BackgroundStats.load(folder / "background.safetensors", model), folder


#: How far (nats, at any step) a remade retrofit's loss may lie from the recorded one when its bytes differ.
REMAKE_TOLERANCE = 1e-4


def loss_gap(recorded: list[float], made: list[float]) -> float | None:
    """The largest difference, step by step, between a recorded training loss and the loss of the same training
    made again; None when they differ in length (not the same training)."""
    if len(recorded) != len(made):
        return None
    return max((abs(a - b) for a, b in zip(recorded, made)), default=0.0)


def check_regenerated(folder: Path, ident: dict) -> None:
    """Where finished runs of the results folder (``folder``'s grandparent) were made on this retrofit and its
    memory is made again (its artifacts folder was deleted, or the results came from another checkout), check that
    the new memory is the one those runs started from: the same bytes (``retrofit.weights_sha256`` in their
    records), or, since CPU kernels need not repeat a sum bit for bit, a retrofit loss within ``REMAKE_TOLERANCE``
    nats of the recorded one at every step; the later runs' records then say so (``retrofit.made_again``). A
    retrofit that trained otherwise would start the study's later runs from another model: it is set aside and
    refused."""
    log = read_json(folder / "train_log.json")
    for path in sorted((folder.parent.parent / "runs").glob("*.json")):
        rec = read_run(path, ("identity",))
        earlier = rec.get("retrofit") or {}
        if (earlier.get("weights_sha256") is None
                or upgrade_identity((rec.get("identity") or {}).get("retrofit")) != upgrade_identity(ident)):
            continue
        if earlier["weights_sha256"] == log.get("weights_sha256"):
            return
        was, now = [e["loss"] for e in earlier.get("log", [])], [e["loss"] for e in log["log"]]
        gap = loss_gap(was, now)
        if gap is not None and gap <= REMAKE_TOLERANCE:
            write_json(folder / "train_log.json", {**log, "made_again": {
                "max_loss_difference": gap, "tolerance": REMAKE_TOLERANCE, "recorded_sha256": earlier["weights_sha256"],
                "recorded_in": path.name}})
            return
        aside = folder.with_name(folder.name + ".differs")
        shutil.rmtree(aside, ignore_errors=True)
        folder.replace(aside)
        raise RuntimeError(
            f"the retrofit made again in {folder} differs from the one {path.name} started from (its loss differs "
            f"{'in length' if gap is None else f'by up to {gap:.2g} nats'} along the retrofit, more than "
            f"{REMAKE_TOLERANCE:g}): the same settings trained otherwise here (another torch version, thread count or "
            f"machine). It was moved to {aside}. Rerun with the code and torch version the records name, or start "
            "the study in a new --out")


def _retrofit(host: StageHost, preset, suite, plan: RetrofitPlan) -> None:
    seed, mode, folder, cfg, length = plan.seed, plan.mode, plan.folder, plan.config, plan.task_max_length
    where = f"the retrofit ({mode}, seed {seed})"
    model, tok = host.load(seed)
    torch.manual_seed(seed)
    add_memory(model, plan.memory)
    heldout = [reply for _, reply in suite.chat["dev"] or suite.chat["report"]]
    before = memory_health(model, tok, heldout, cfg.max_length) if heldout and host.main else None
    general, task = spread_texts(preset, suite)
    top_t = preset.train.top_t
    spread_before = memory_spread(model, tok, general, task, length, top_t) if host.main else None
    texts = corpus(preset, preset.retrofit_corpus, preset.retrofit_n)
    host.log(f"retrofit ({mode}, seed {seed}) on {len(texts)} texts")
    along, along_general = heldout[:32], general[:SPREAD_ALONG]

    def probe(m, step):  # the memory's share and spread along the retrofit, on a few held-out texts
        h = memory_health(m, tok, along, cfg.max_length)
        spread = spread_summary(memory_spread(m, tok, along_general, None, length))
        return {**{k: h[k] for k in ("loss", "share", "min_share", "share_by_layer")}, "spread": spread}

    steps = len(micro_batches(len(texts), cfg))
    res = train(model, tok, texts, cfg, checkpoint_dir=folder / "ckpt", progress=host.progress,
                probe=probe if along and host.main else None,
                probe_steps=evenly_spaced_steps(steps, max(2, preset.trajectory_points)))
    if not host.main:
        return
    save_memory(res.model, folder / "adapter")
    after = memory_health(res.model, tok, heldout, cfg.max_length) if heldout else None
    health = retrofit_health(before, after, res.trajectory)
    spread_after = memory_spread(res.model, tok, general, task, length, top_t)
    if not check_spread(spread_after, spread_before, where=where):
        host.log(f"WARNING: {where} collapsed the memory's reads onto a few rows "
                 f"({spread_summary(spread_after)}); retrofit with frozen addressing (the spread pilot)")
    if after is not None and not check_health(after, where=where):
        host.log(f"WARNING: {where} left a memory below {MIN_SHARE:.0%} of the MLP's output at some layer "
                 f"({health['after']['share_by_layer']}); SMF on it will learn little. "
                 "`python -m smf_lib retrofit-pilot` compares recipes")
    write_json(folder / "train_log.json", {"log": res.log, "seconds": res.seconds, "n_texts": len(texts),
                                           "weights_sha256": read_json(folder / "adapter" / CONFIG_NAME)
                                           .get("weights_sha256"),
                                           "processes": host.world, "heldout_oasst1": health,
                                           "spread": {"before": spread_before, "after": spread_after}})
    _background(host, preset, res.model, tok, folder, length)


def _background(host: StageHost, preset, model, tok, folder: Path, max_length: int) -> None:
    """The retrofitted model's background statistics and how their reads spread, written into ``folder``."""
    t0 = time.perf_counter()
    background = corpus(preset, preset.background_corpus, preset.background_n)
    host.log(f"background statistics on {len(background)} documents")
    with host.autocast():
        stats = compute_background_stats(model, tok, background, max_length=max_length, progress=host.progress)
    stats.save(folder / "background.safetensors")
    layers = [str(k) for k in preset.memory.get("layers", range(stats.totals.shape[0]))]
    spread = {k: spread_stats(stats.totals[j]) for j, k in enumerate(layers)}  # how the background reads spread
    write_json(folder / "background_meta.json", {"seconds": time.perf_counter() - t0, "n_docs": len(background),
                                                  "corpus": preset.background_corpus, "spread": spread})


#: General paragraphs and task prompts on which a retrofit's spread is measured before and after it; along it, the
#: first ``SPREAD_ALONG`` general paragraphs.
SPREAD_TEXTS, SPREAD_ALONG = 100, 20


def spread_texts(preset, suite) -> tuple[list[str], list[str]]:
    """Dev texts for the spread meter: the background corpus's last paragraphs (its first ones make the background
    statistics) and the MedMCQA dev prompts of the suite (the reported ones when the preset has no dev items)."""
    pool = corpus(preset, preset.background_corpus, None)
    spare = pool[preset.background_n:] or pool
    rows = suite.medmcqa["dev"] or suite.medmcqa["report"]
    return spare[-SPREAD_TEXTS:], [data.medmcqa_prompt(r) for r in rows[:SPREAD_TEXTS]]


def reuse_record(reusable: list[tuple[Path, dict]], spec, ident: dict, target: Path | None, log=print) -> bool:
    """Copy a finished record with exactly this identity from ``reusable``
    (``reusable_records``) to ``target`` (noting where it came from; None: another process
    writes it), instead of training and evaluating the same run again. True when one was found."""
    for path, rec in reusable:  # every process looks, so all of them skip the run; process 0 alone writes
        if rec["identity"] == ident:
            found = {**rec, "reused_from": str(path)}
        elif spec.evaluation == TRAJECTORY and _same_training_run(rec, ident):
            found = _from_trajectory(rec, ident, str(path))
        else:
            continue
        if target is not None:
            write_json(target, found)
        log(f"{spec.name}: the same run is finished in {path}; reused, not repeated")
        return True
    return False


def _swept_training(out: Path, reusable: list[tuple[Path, dict]], ident: dict, kept: str,
                    complete: str) -> tuple[Path, dict, Path] | None:
    """A finished swept (trajectory) run of this run's training, in the results folder ``out`` or among
    ``reusable`` records, whose artifacts folder kept ``kept`` (complete once ``kept/complete`` exists) and was
    written by that run: ``(record path, record, kept folder)``, or None."""
    want = training_of({"identity": ident})
    own = [(p, read_run(p, ("identity",))) for p in sorted((Path(out) / "runs").glob("*.json"))]
    for path, rec in [*own, *reusable]:
        if is_report(rec) or not rec.get("train_log") or training_of(rec) != want:
            continue
        folder = path.parent.parent / "artifacts" / path.stem
        started = folder / "identity.json"  # the run that wrote the folder
        if ((folder / kept / complete).exists()
                and started.exists() and upgrade_identity(read_json(started)) == upgrade_identity(rec["identity"])):
            return path, rec, folder / kept
    return None


def trained_memory(out: Path, reusable: list[tuple[Path, dict]], ident: dict) -> tuple[Path, dict, Path] | None:
    """The trained memory a finished swept run of this run's training kept: ``(record path, record, adapter
    folder)``, or None. A reported run of a memory arm loads that memory and is only evaluated, instead of training
    the same run again."""
    return _swept_training(out, reusable, ident, "adapter", CONFIG_NAME)


def load_swept_memory(host: StageHost, spec, trained, folder: Path, retrofitted: Path, extra: dict):
    """The memory a swept run of the same training left (``trained``, from :func:`trained_memory`), loaded onto
    the base model, and its training log as a :class:`~smf_lib.steps.TrainResult`; ``extra`` gets the record's
    training fields and ``trained_by``."""
    from ..steps import TrainResult

    source, swept, adapter = trained
    model, _ = host.load(spec.seed)
    load_memory(model, adapter)
    host.log(f"{spec.name}: trained already by {source.stem} ({source}); its memory is loaded, not trained again")
    res = TrainResult(model, log=swept["train_log"], seconds=swept.get("train_seconds", 0.0),
                      trajectory=swept.get("trajectory") or [])
    if host.main:
        save_memory(model, folder / "adapter", reference=retrofitted / "adapter")
    extra.update(train_config=swept["train_config"], train_log=res.log, train_seconds=res.seconds,
                 trajectory=res.trajectory, trained_by=str(source))
    return model, res


def _keeps_checkpoint(spec) -> bool:
    return ARMS[spec.method].train in ("lora", "full")


def settle_checkpoint(spec, ckpt: Path) -> None:
    """After a run's record is written: a swept LoRA or full-finetuning run keeps its last checkpoint (moved to
    ``KEPT_CHECKPOINT`` beside ``ckpt``), since its trained weights exist nowhere else and its reported run resumes
    from it (:func:`resume_swept_training`); every other run's checkpoint goes (an SMF run keeps its memory
    adapter). Kept checkpoints can be deleted once a study's reported runs are done."""
    if spec.evaluation == TRAJECTORY and _keeps_checkpoint(spec) and (ckpt / "checkpoint.pt").exists():
        kept = ckpt.with_name(KEPT_CHECKPOINT)
        shutil.rmtree(kept, ignore_errors=True)
        ckpt.replace(kept)
    shutil.rmtree(ckpt, ignore_errors=True)


def resume_swept_training(host: StageHost, out: Path, reusable: list[tuple[Path, dict]], spec, ident: dict,
                          ckpt: Path):
    """For a reported LoRA or full-finetuning run: link the last checkpoint that a finished swept run of the same
    training kept into this run's checkpoint folder ``ckpt``, so that training resumes after its last step (trains
    nothing) and the run is only evaluated. Process 0 links; the others wait for the link. Returns the swept
    record's path as text, or None (train as usual)."""
    if spec.evaluation != REPORT or not _keeps_checkpoint(spec):
        return None
    found = _swept_training(out, reusable, ident, KEPT_CHECKPOINT, "checkpoint.pt")
    if found is None:
        return None
    source, _, kept = found
    if host.main:
        ckpt.mkdir(parents=True, exist_ok=True)
        for f in sorted(kept.iterdir()):  # the checksum first, then the checkpoint (which the others wait for)
            dest = ckpt / f.name
            dest.unlink(missing_ok=True)
            try:
                os.link(f, dest)  # no copy of the weights: the resumed run writes no checkpoint of its own
            except OSError:
                shutil.copy2(f, dest)
        host.log(f"{spec.name}: trained already by {source.stem} ({source}); its last checkpoint is resumed, not "
                 "trained again")
    host.wait_for(ckpt / "checkpoint.pt")
    return str(source)


def reusable_records(folders) -> list[tuple[Path, dict]]:
    """The finished run records of other results folders (read once per runner), for :func:`reuse_record`."""
    return [(path, read_run(path, ("identity",))) for folder in folders
            for path in sorted((Path(folder) / "runs").glob("*.json"))]


def _same_training_run(rec: dict, ident: dict) -> bool:
    """Whether ``rec`` is a fully evaluated run whose training is the one ``ident`` describes: its identity differs
    only in how it was evaluated, and it kept its trajectory (the dev-subset scores along training)."""
    return is_report(rec) and bool(rec.get("trajectory")) and training_of(rec) == training_of({"identity": ident})


def _from_trajectory(rec: dict, ident: dict, source: str) -> dict:
    """The record a trajectory (sweep) run would write, from a reported run of the same training: its metrics and
    items are the trajectory's last point, which the sweep run computes the same way."""
    from ..fingerprints import object_hash

    last = rec["trajectory"][-1]
    flags = [f for f in rec.get("flags", []) if f != "constant-answers"]
    if _constant_answers(last["items"]):
        flags.append("constant-answers")
    drop = ("wall_seconds", "finished", "dev_items", "dev_metrics")
    return {**{k: v for k, v in rec.items() if k not in drop}, "evaluation": TRAJECTORY, "split": "dev",
            "identity": ident, "identity_hash": object_hash(ident), "metrics": last["metrics"],
            "items": last["items"], "timings": {}, "flags": flags, "reused_from": source,
            "wall_seconds": rec.get("wall_seconds"), "finished": rec.get("finished")}


def trajectory_probe(preset, suite, reference, tok, cache: Path, autocast, write: bool = True):
    """The trajectory probe: the dev subset of ``suite``; step 0 of a start model is computed once, kept in ``cache``
    (written only where ``write``: process 0) and reused. ``autocast``: the evaluation's autocast context factory."""

    def probe(model, step):
        if step == 0 and cache.exists():
            return read_json(cache)
        with autocast():
            res = evaluate(model, tok, preset, suite, reference, TRAJECTORY, progress=False)
        out = {"metrics": res["metrics"], "items": res["items"]}
        if step == 0 and write:
            write_json(cache, out)
        return out

    return probe


def run_flags(res, tok, result: dict) -> list[str]:
    """Warnings kept with a finished run: ``diverged`` (its loss ended near uniform and above where it began) and
    ``constant-answers`` (one MedMCQA letter for every item)."""
    flags = []
    losses = [e["loss"] for e in (res.log if res is not None else [])]
    if losses:
        tail = losses[-max(1, len(losses) // 10):]
        end = sum(tail) / len(tail)
        if end >= 0.9 * math.log(len(tok)) and end > losses[0]:
            flags.append("diverged")
    if _constant_answers(result["items"]):
        flags.append("constant-answers")
    return flags


def _constant_answers(items: dict) -> bool:
    preds = items.get("medmcqa_pred", [])
    return len(preds) > 4 and len(set(preds)) == 1
