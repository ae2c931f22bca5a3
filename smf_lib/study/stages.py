"""The runner's stages: the drift reference, the retrofit (with its health record and background statistics), the
trajectory probe and a finished run's flags. Each takes the :class:`~smf_lib.study.runner.Runner` it serves."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..adapter import load_memory, save_memory
from ..files import read_json, write_json
from .. import data
from ..health import MIN_SHARE, check_health, loss_change, memory_health
from ..spread import check_spread, memory_spread, spread_stats, spread_summary
from ..memory import CONFIG_NAME, add_memory
from ..selection import BackgroundStats, compute_background_stats
from ..training import micro_batches, train
from .arms import ARMS
from .evaluation import corpus, drift_spans, evaluate
from .plan import _plain
from .records import TRAJECTORY, is_report, read_run, training_of, upgrade_identity

if TYPE_CHECKING:
    from .runner import Runner


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


def reference_stage(runner: Runner) -> None:
    """Cache the base model's top-k log-probabilities on every drift span (once per ``OUT``)."""
    if not runner.main:
        return
    preset = runner.preset
    folder = runner.artifacts / "reference"
    marker = folder / "complete.json"
    ident = _plain({"model": preset.model, "precision": runner.precision, "topk": preset.topk,
                    "probes": runner.suite.fingerprints(), "dev_subset": preset.dev_subset,
                    "split": preset.evaluate_on})
    if marker.exists() and runner.check(marker, read_json(marker), ident, "drift reference"):
        return
    shutil.rmtree(folder, ignore_errors=True)
    runner.log("caching the base model's drift reference")
    model, tok = runner.load(0)
    for split in {preset.evaluate_on, "dev"}:
        for subset in (None, preset.dev_subset):
            wiki, chat = drift_spans(tok, runner.suite, split, subset)
            for name, spans in (("wikitext", wiki), ("chat", chat)):
                if spans:
                    with runner.autocast():
                        runner.reference.get(f"{name}-{split}", model, spans)
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


def retrofit_stage(runner: Runner, seed: int, mode: str) -> tuple[torch.nn.Module, object, BackgroundStats, Path]:
    """The retrofit adapter (trained once per seed and memory mode), its health record and its background
    statistics; returns the retrofitted model, its tokenizer, the statistics and the stage's folder."""
    folder = runner.artifacts / f"retrofit-{mode}-s{seed}"
    marker = folder / "complete.json"
    ident = runner.retrofit_identity(seed, mode)
    done = marker.exists() and runner.check(marker, read_json(marker), ident, "retrofit stage")
    if not done:  # every process trains (DDP); process 0 alone writes
        started = folder / "identity.json"
        if runner.main:
            if started.exists() and not runner.check(started, read_json(started), ident, "retrofit stage"):
                shutil.rmtree(folder)
            write_json(started, ident)
        _retrofit(runner, seed, mode, folder)
        if runner.main:
            write_json(marker, ident)
            shutil.rmtree(folder / "ckpt", ignore_errors=True)
    runner.wait_for(marker)
    model, tok = runner.load(seed)
    load_memory(model, folder / "adapter")
    return model, tok, BackgroundStats.load(folder / "background.safetensors", model), folder


def _retrofit(runner: Runner, seed: int, mode: str, folder: Path) -> None:
    preset = runner.preset
    model, tok = runner.load(seed)
    torch.manual_seed(seed)
    add_memory(model, runner.memory_config(mode))
    heldout = [reply for _, reply in runner.suite.chat["dev"] or runner.suite.chat["report"]]
    cfg = runner.retrofit_config(seed)
    max_length = cfg.max_length
    before = memory_health(model, tok, heldout, max_length) if heldout and runner.main else None
    general, task = spread_texts(runner.preset, runner.suite)
    top_t = preset.train.top_t
    spread_before = memory_spread(model, tok, general, task, runner.task_max_length, top_t) if runner.main else None
    texts = corpus(preset, preset.retrofit_corpus, preset.retrofit_n)
    runner.log(f"retrofit ({mode}, seed {seed}) on {len(texts)} texts")
    along, along_general = heldout[:32], general[:SPREAD_ALONG]

    def probe(m, step):  # the memory's share and spread along the retrofit, on a few held-out texts
        h = memory_health(m, tok, along, max_length)
        spread = spread_summary(memory_spread(m, tok, along_general, None, runner.task_max_length))
        return {**{k: h[k] for k in ("loss", "share", "min_share", "share_by_layer")}, "spread": spread}

    steps = len(micro_batches(len(texts), cfg))
    res = train(model, tok, texts, cfg, checkpoint_dir=folder / "ckpt", progress=runner.progress,
                probe=probe if along and runner.main else None,
                probe_steps=evenly_spaced_steps(steps, max(2, preset.trajectory_points)))
    if not runner.main:
        return
    save_memory(res.model, folder / "adapter")
    after = memory_health(res.model, tok, heldout, max_length) if heldout else None
    health = retrofit_health(before, after, res.trajectory)
    spread_after = memory_spread(res.model, tok, general, task, runner.task_max_length, top_t)
    if not check_spread(spread_after, spread_before, where=f"the retrofit ({mode}, seed {seed})"):
        runner.log(f"WARNING: the retrofit ({mode}, seed {seed}) collapsed the memory's reads onto a few rows "
                   f"({spread_summary(spread_after)}); retrofit with frozen addressing (the spread pilot)")
    if after is not None and not check_health(after, where=f"the retrofit ({mode}, seed {seed})"):
        runner.log(f"WARNING: the retrofit ({mode}, seed {seed}) left a memory below {MIN_SHARE:.0%} of the MLP's "
                   f"output at some layer ({health['after']['share_by_layer']}); SMF on it will learn little. "
                   "`python -m smf_lib retrofit-pilot` compares recipes")
    write_json(folder / "train_log.json", {"log": res.log, "seconds": res.seconds, "n_texts": len(texts),
                                           "processes": runner.world, "heldout_oasst1": health,
                                           "spread": {"before": spread_before, "after": spread_after}})
    t0 = time.perf_counter()
    background = corpus(preset, preset.background_corpus, preset.background_n)
    runner.log(f"background statistics on {len(background)} documents")
    with runner.autocast():
        stats = compute_background_stats(res.model, tok, background, max_length=runner.task_max_length,
                                         progress=runner.progress)
    stats.save(folder / "background.safetensors")
    layers = [str(k) for k in runner.preset.memory.get("layers", range(stats.totals.shape[0]))]
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


def trained_memory(out: Path, reusable: list[tuple[Path, dict]], ident: dict) -> tuple[Path, dict, Path] | None:
    """A finished swept (trajectory) run of this run's training whose trained memory was kept, in the results folder
    ``out`` or among ``reusable`` records: ``(record path, record, adapter folder)``, or None. A reported run
    of a memory arm loads that memory and is only evaluated, instead of training the same run again; LoRA and full
    finetuning keep no trained weights, so their reported runs train anew."""
    want = training_of({"identity": ident})
    own = [(p, read_run(p, ("identity",))) for p in sorted((Path(out) / "runs").glob("*.json"))]
    for path, rec in [*own, *reusable]:
        if is_report(rec) or not rec.get("train_log") or training_of(rec) != want:
            continue
        adapter = path.parent.parent / "artifacts" / path.stem / "adapter"
        started = adapter.parent / "identity.json"  # the run that wrote this memory
        if ((adapter / CONFIG_NAME).exists()  # written last: the folder is complete
                and started.exists() and upgrade_identity(read_json(started)) == upgrade_identity(rec["identity"])):
            return path, rec, adapter
    return None


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
