"""What spread and size do to SMF: the same SMF training on different memories, on dev items only.

``python -m smf_lib memory-effect --out results/spread-pilot`` takes retrofitted memories saved by the spread pilot
(``artifacts/<recipe>/final``: the collapsed one of the trained-addressing recipe, the spread 4,096 one, larger
ones) and trains SMF-KL and SMF-TF-IDF on each for the same number of steps at two or more rates. Per run it
records, with paired 95% intervals over items: learning (MedMCQA dev items: the gold option's margin over the best
distractor) and the chat change (the mean token log-likelihood of held-out OASST1 chat replies, the study's chat
probe items after its reported ones). One JSON per run under ``out/effect/``, written atomically; finished runs are
read back, so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from .. import data
from ..adapter import load_memory
from ..files import git_state, plain as _plain, read_json, write_json
from ..models import load_named as load
from ..probes import chat_items, medmcqa_accuracy, span_logliks
from ..selection import BackgroundStats, compute_background_stats
from ..training import TrainConfig, train
from .paired_stats import paired_bootstrap


@dataclasses.dataclass
class EffectSettings:
    """The SMF runs every memory gets (the cpu study's task batches; dev items only).

    Args:
        model: the model the memories were retrofitted on.
        steps: SMF optimizer steps; texts_per_step, micro_batch, max_length: its batches of MedMCQA training texts.
        top_t: rows per layer per step.
        dev_offset, dev_n: MedMCQA validation rows scored (after the reported ones).
        chat_offset, chat_n: held-out chat pairs scored (``chat_offset`` skips the reported replies).
        background_n: Wikipedia lead paragraphs for the background statistics.
        data: data folder.
    """

    model: str = "smollm2-135m-instruct"
    steps: int = 20
    texts_per_step: int = 16
    micro_batch: int = 8
    max_length: int = 256
    top_t: int = 128
    dev_offset: int = 1000
    dev_n: int = 150
    chat_offset: int = 1000
    chat_n: int = 174
    background_n: int = 500
    data: str | None = None


#: (selector, rates) every memory is trained with.
RUNS = (("kl", (1e-2, 3e-2)), ("tfidf", (3e-2, 1e-1)))


def _scores(model, tok, dev, chat) -> dict:
    med = medmcqa_accuracy(model, tok, dev, progress=False)
    return {"medmcqa_gold_margin": [i["gold_margin"] for i in med["items"]],
            "medmcqa_correct": [i["correct"] for i in med["items"]], "chat_loglik": span_logliks(model, chat)}


def _start(memory: str, out: Path, s: EffectSettings, model, tok, dev, chat, progress: bool):
    """The memory's background statistics and its scores before training: computed once per memory and settings,
    kept under ``out/effect/start/`` (each run of that memory starts from the same saved memory)."""
    folder = out / "effect" / "start"
    identity = _plain({"memory": memory, "settings": dataclasses.asdict(s)})
    scores_path, stats_path = folder / f"{memory}-before.json", folder / f"{memory}-background.safetensors"
    if scores_path.exists() and stats_path.exists() and read_json(scores_path).get("identity") == identity:
        return BackgroundStats.load(stats_path, model), read_json(scores_path)["scores"]
    stats = compute_background_stats(model, tok, data.load_background(s.background_n, s.data),
                                     max_length=s.max_length, progress=progress)
    before = _scores(model, tok, dev, chat)
    stats.save(stats_path)
    write_json(scores_path, {"identity": identity, "scores": before})
    return stats, before


def run_effect(memory: str, selector: str, lr: float, out: str | Path, s: EffectSettings | None = None,
               progress: bool = True) -> dict:
    """SMF with ``selector`` at ``lr`` on the memory saved as ``out/artifacts/<memory>/final``.

    Returns:
        The run's record: learning (``gold_margin``) and chat change (``chat_loglik``), each a paired interval.
    """
    s = s or EffectSettings()
    out = Path(out)
    path = out / "effect" / f"{memory}-{selector}-lr{lr:g}.json"
    identity = _plain({"memory": memory, "selector": selector, "lr": lr, "settings": dataclasses.asdict(s)})
    if path.exists():
        rec = read_json(path)
        if rec.get("identity") == identity:
            return rec
        raise ValueError(f"{path} was made with other settings; delete it to rerun")
    adapter = out / "artifacts" / memory / "final"
    if not adapter.exists():
        raise FileNotFoundError(f"no saved memory at {adapter}: run `python -m smf_lib spread-pilot` for recipe "
                                f"{memory!r} first (it saves the memory there)")
    code, t0 = git_state(Path(__file__).parent), time.perf_counter()
    model, tok = load(s.model)
    load_memory(model, adapter)
    dev = data.load_medmcqa("validation", s.dev_offset + s.dev_n, root=s.data)[s.dev_offset:]
    pairs = data.load_oasst1_pairs(root=s.data, pool="all")[s.chat_offset:s.chat_offset + s.chat_n]
    chat = chat_items(tok, pairs)
    task = [data.medmcqa_training_text(r) for r in data.load_medmcqa("train", s.steps * s.texts_per_step,
                                                                      root=s.data)]
    stats, before = _start(memory, out, s, model, tok, dev, chat, progress)
    cfg = TrainConfig(method="smf", selector=selector, lr=lr, max_steps=s.steps, micro_batch=s.micro_batch,
                      grad_accum=max(1, s.texts_per_step // s.micro_batch), max_length=s.max_length,
                      warmup_steps=min(5, s.steps), top_t=s.top_t)
    res = train(model, tok, task, cfg, background=stats, progress=progress)
    after = _scores(res.model, tok, dev, chat)
    rec = {"identity": identity, "memory": memory, "selector": selector, "lr": lr, "code": code,
           "n_slots": model.smf_memory_config.n_slots,
           "learning": paired_bootstrap(before, after, "medmcqa_gold_margin"),
           "chat_change": paired_bootstrap(before, after, "chat_loglik"),
           "accuracy_change": paired_bootstrap(before, after, "medmcqa_acc"),
           "rows_per_step": sum(r["rows"] for r in res.log) / max(len(res.log), 1),
           "smf_seconds": res.seconds, "seconds": time.perf_counter() - t0,
           "dev_items": len(dev), "chat_items": len(chat)}
    write_json(path, rec)
    return rec


def effect_table(out: str | Path):
    """One row per finished run: memory, slots, selector, rate, learning and chat change with their intervals.

    Returns:
        A pandas DataFrame.
    """
    import pandas as pd

    rows = []
    for path in sorted((Path(out) / "effect").glob("*.json")):  # start/ holds the shared starts
        r = read_json(path)
        rows.append({"memory": r["memory"], "slots": r["n_slots"], "selector": r["selector"], "lr": r["lr"],
                     **{f"{k}{suffix}": r[k][v] for k in ("learning", "chat_change")
                        for suffix, v in (("", "delta"), ("_lo", "lo"), ("_hi", "hi"))}})
    return pd.DataFrame(rows)


def effect_lines(table) -> list[str]:
    """Per selector, at its highest rate, each memory's learning and chat change with their 95% intervals, smallest
    table first. Each run is paired with its own memory's start, not with another memory's, so two memories are
    told apart only where their intervals do not overlap."""
    from .tables import interval_cell

    lines = []
    for selector, g in table.groupby("selector", sort=False):
        top = g[g["lr"] == g["lr"].max()].sort_values(["slots", "memory"])
        name = {"kl": "SMF-KL", "tfidf": "SMF-TF-IDF"}.get(selector, selector)
        lines.append(f"{name} at {top['lr'].iloc[0]:g}: " + "; ".join(
            f"{r.memory} ({r.slots:,} slots) learned {interval_cell(r.learning, r.learning_lo, r.learning_hi, 3)} "
            f"nats, chat {interval_cell(r.chat_change, r.chat_change_lo, r.chat_change_hi, 3)}"
            for r in top.itertuples()) + ".")
    return lines


def _add_arguments(p) -> None:
    p.add_argument("--out", default="results/spread-pilot")
    p.add_argument("--memories", nargs="+", required=True, metavar="RECIPE",
                   help="spread-pilot recipes whose saved memory to train on, e.g. trained frozen frozen-n256")
    p.add_argument("--no-progress", action="store_true")


def _run_command(args) -> int:
    for memory in args.memories:
        for selector, rates in RUNS:
            for lr in rates:
                run_effect(memory, selector, lr, args.out, progress=not args.no_progress)
    print(effect_table(args.out).round(4).to_string(index=False))
    return 0


#: ``(name, help, add_arguments, run)`` for :func:`smf_lib.study.cli.main`.
COMMAND = ("memory-effect", "SMF-KL and SMF-TF-IDF on the spread pilot's memories: learning and chat change on dev "
           "items (resumable)", _add_arguments, _run_command)
