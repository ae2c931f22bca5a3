"""The selection snapshot that chapter 4 explores: read counts of a few task batches and the background statistics
of a study's retrofitted memory, written to ``OUT/selection_counts.json``.

``python -m smf_lib snapshot --preset cpu-v2 --out results/cpu-v2`` writes it (from the retrofit stage the study left in
``OUT/artifacts``, or retrofitting again if that stage is gone);
:func:`smf_lib.views.selection_tables.load_snapshot` reads it.
"""

from __future__ import annotations

from pathlib import Path

from ..data import medmcqa_training_text
from ..files import read_json, write_json
from ..memory import memory_layers
from ..selection import read_counts_of_texts
from .notebook import RUNNING_EXAMPLE


def selection_snapshot(runner, seed: int = 0, n_batches: int = 4, example: int | None = RUNNING_EXAMPLE) -> Path:
    """Write (or keep, when its identity matches) ``OUT/selection_counts.json`` for a
    :class:`~smf_lib.study.runner.Runner`: per-layer read counts of the first ``n_batches`` optimizer batches of
    task texts, the retrofit's background statistics and, under ``example``, the read counts of the book's running
    example (reported MedMCQA item ``example`` as a training text). A stored snapshot without the example gets it
    added. Returns its path."""
    path = runner.out / "selection_counts.json"
    ident = runner.retrofit_identity(seed, "additive")
    cfg = runner.preset.train_config("smf-kl", seed)
    stored = None
    if path.exists() and runner.check(path, read_json(path).get("identity"), ident, "selection snapshot"):
        stored = read_json(path)
        if example is None or (stored.get("example") or {}).get("item") == example:
            return path
    model, tok, stats, _ = runner.retrofit(seed, "additive")
    if stored is None:
        size = cfg.micro_batch * cfg.grad_accum
        texts = runner.task_texts[: size * n_batches]
        counts = read_counts_of_texts(model, tok, texts, cfg.max_length, batch_size=size)
        stored = {"identity": ident, "layers": [m.layer_idx for m in memory_layers(model)],
                  "n_slots": int(stats.df.shape[1]), "n_docs": stats.n_docs, "batch_texts": len(texts),
                  "batch_counts": [c.tolist() for c in counts], "df": stats.df.tolist(),
                  "totals": stats.totals.tolist()}
    if example is not None:
        row = runner.suite.medmcqa["report"][example]
        reads = read_counts_of_texts(model, tok, [medmcqa_training_text(row)], cfg.max_length)
        stored["example"] = {"item": example, "counts": [c.tolist() for c in reads]}
    write_json(path, stored)
    return path


def _arguments(parser) -> None:
    from ..study.presets import PRESETS

    parser.add_argument("--preset", required=True, choices=sorted(PRESETS))
    parser.add_argument("--out", help="results folder (default results/PRESET)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="rewrite a snapshot made with other settings")
    parser.add_argument("--no-progress", action="store_true")


def _command(args) -> int:
    from ..files import FolderLock
    from ..study.presets import get_preset
    from ..study.runner import Runner

    runner = Runner(get_preset(args.preset), args.out or f"results/{args.preset}", progress=not args.no_progress,
                    fresh=args.fresh, allow_dirty=True)  # it reads the study's runs, records none of its own
    lock = FolderLock(runner.out).acquire()
    try:
        print(selection_snapshot(runner, args.seed))
    finally:
        lock.release()
    return 0


#: ``python -m smf_lib snapshot``: (name, help, add arguments, run).
SNAPSHOT_COMMAND = ("snapshot", "write OUT/selection_counts.json, the read counts chapter 4 explores",
                    _arguments, _command)
