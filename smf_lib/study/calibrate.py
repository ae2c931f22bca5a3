"""Calibrate an SMF update rule's learning rate for a model, on held-out training questions only.

``python -m smf_lib calibrate --model NAME`` trains a few SMF steps at several rates from one memory (a
retrofit adapter, or a freshly added zero-init memory) on the first MedMCQA training questions, and scores
the loss on the last training questions, which the presets never train on and which are disjoint from every
validation item. The rate with the lowest held-out loss is printed and written as JSON.
"""

from __future__ import annotations

import copy

import torch

from .. import data
from ..adapter import load_memory
from ..memory import MemoryConfig, add_memory
from ..selection import compute_background_stats
from ..batches import collate_batch
from ..training import TrainConfig, train


@torch.no_grad()
def heldout_loss(model, tok, texts: list[str], max_length: int = 256, batch_size: int = 16) -> float:
    """Mean token loss of ``texts`` (batches of ``batch_size``)."""
    device = next(model.parameters()).device
    chunks = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
    return sum(float(model(**collate_batch(tok, c, max_length, device)).loss) for c in chunks) / len(chunks)


def calibrate(model, tok, rates, update: str = "sgd", steps: int = 8, heldout: int = 48, adapter=None,
              memory: dict | None = None, selector: str = "kl", background_n: int = 200, root=None,
              train_kw: dict | None = None, progress: bool = False) -> dict:
    """Held-out loss after ``steps`` SMF steps at each rate.

    Args:
        model: the base model (without memory).
        tok: its tokenizer.
        rates: peak learning rates to try.
        update: the SMF update rule (``sgd``, ``adam`` or ``paper``).
        steps: optimizer steps per rate.
        heldout: the last ``heldout`` MedMCQA training questions are scored (never trained on).
        adapter: a saved memory to start from (e.g. a retrofit); otherwise ``memory`` fields add a fresh one.
        selector: row selector (background statistics on ``background_n`` Wikipedia leads when it needs them).
        train_kw: other TrainConfig fields (micro_batch, grad_accum, max_length, top_t, ...).

    Returns:
        ``{"before", "runs": [{"lr", "train_loss", "heldout_loss"}], "best_lr"}``.
    """
    if adapter is not None:
        load_memory(model, adapter)
    else:
        add_memory(model, MemoryConfig(**(memory or {})))
    rows = data.load_medmcqa("train", root=root)
    kw = {"micro_batch": 8, "grad_accum": 2, "max_length": 256, "warmup_steps": 1, "top_t": 128, **(train_kw or {})}
    n_train = kw["micro_batch"] * kw["grad_accum"] * steps
    if n_train + heldout > len(rows):
        raise ValueError(f"{steps} steps need {n_train} training questions plus {heldout} held out, but the data has "
                         f"{len(rows)}; lower --steps or --heldout")
    texts = [data.medmcqa_training_text(r) for r in rows[:n_train]]
    held = [data.medmcqa_training_text(r) for r in rows[-heldout:]]
    from ..selection import SELECTORS

    stats = None
    if SELECTORS[selector].needs_background:
        stats = compute_background_stats(model, tok, data.load_background(background_n, root), kw["max_length"],
                                         progress=progress)
    out = {"update": update, "steps": steps, "heldout": heldout, "before": heldout_loss(model, tok, held,
                                                                                       kw["max_length"]), "runs": []}
    for lr in rates:
        m = copy.deepcopy(model)
        cfg = TrainConfig(method="smf", selector=selector, update=update, lr=float(lr), max_steps=steps, **kw)
        res = train(m, tok, texts, cfg, background=stats, progress=progress)
        out["runs"].append({"lr": float(lr), "train_loss": [round(x["loss"], 4) for x in res.log],
                            "heldout_loss": heldout_loss(res.model, tok, held, kw["max_length"])})
    finite = [r for r in out["runs"] if r["heldout_loss"] == r["heldout_loss"]]
    out["best_lr"] = min(finite, key=lambda r: r["heldout_loss"])["lr"] if finite else None
    return out
