"""Is the memory spread, and is it sparse? How a memory's reads fall on its rows (METHOD.md section 6b).

SMF bets that a task reads rows that general text does not, so updating them leaves general text alone. Two things
can break the bet before any training: the reads collapse onto a few hub rows that every text reads (a retrofit
that trains the addressing freely can do this), or the table is so small that a single question reads a large
share of it. :func:`memory_spread` measures both, per memory layer:

- **spread** on general (and task) text, as XLM's ``eval_memory_usage`` (Lample et al. 2019) does: usage (share of
  rows read at all), the KL of the read distribution from uniform (on counts and on read weights), effective rows
  ``exp(H)``, the share of reads on the top 1% and 5% of rows, the rows that carry 50/90/99% of reads, the Gini
  coefficient;
- **sparsity**: a question's footprint (rows it reads, as a share of the layer) and its overlap with general text
  (of the rows a question reads, the share that a general paragraph cut to the same number of tokens also reads);
- **hubs**: rows that at least half of the general paragraphs read; the share of a task's reads that land on them,
  and the share of a selector's top-t rows that are hubs.

:func:`check_spread` warns (:class:`MemorySpreadWarning`) when a memory has collapsed.
"""

from __future__ import annotations

import math
import warnings

import torch

from .memory import memory_layers, set_recording
from .selection import score_rows, select_rows

#: A memory counts as spread when, at every layer, the top 5% of rows take at most this share of general text's
#: reads ...
MAX_TOP5_SHARE = 0.40
#: ... and its effective rows are at least this share of random addressing's on the same texts (when known).
MIN_EFFECTIVE_RATIO = 0.5
#: A row is a general hub when at least this share of the general paragraphs read it.
HUB_DF = 0.5


class MemorySpreadWarning(UserWarning):
    """The memory's reads have collapsed onto a few rows: a task cannot have rows of its own there."""


def spread_stats(counts: torch.Tensor, weights: torch.Tensor | None = None) -> dict:
    """How evenly one layer's reads fall on its rows.

    Args:
        counts: (N,) reads per row.
        weights: (N,) summed read weights per row (softmax weights), optional.

    Returns:
        ``{"usage", "kl_uniform", "effective_rows", "top1_share", "top5_share", "rows_50", "rows_90", "rows_99",
        "gini"}`` and ``"kl_uniform_weights"`` when ``weights`` is given. KL is in nats; ``effective_rows`` is
        ``exp(H) = N exp(-KL)``.
    """
    c = counts.double().flatten()
    n, total = c.numel(), float(c.sum())
    if total <= 0:
        raise ValueError("no reads to measure: the counts are all zero (were the texts empty?)")
    out = {"usage": float((c > 0).double().mean())}
    out.update(_entropy_stats(c))
    ranked = c.sort(descending=True).values
    cum = ranked.cumsum(0) / total
    out["top1_share"] = float(cum[max(1, math.ceil(0.01 * n)) - 1])
    out["top5_share"] = float(cum[max(1, math.ceil(0.05 * n)) - 1])
    for q in (50, 90, 99):
        out[f"rows_{q}"] = int(torch.searchsorted(cum, torch.tensor(q / 100 - 1e-12, dtype=cum.dtype))) + 1
    asc = ranked.flip(0)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    out["gini"] = float(2 * (i * asc).sum() / (n * total) - (n + 1) / n)
    if weights is not None:
        out["kl_uniform_weights"] = _entropy_stats(weights.double().flatten())["kl_uniform"]
    return out


def _entropy_stats(c: torch.Tensor) -> dict:
    p = c / c.sum()
    nz = p[p > 0]
    h = float(-(nz * nz.log()).sum())
    return {"kl_uniform": math.log(c.numel()) - h, "effective_rows": math.exp(h)}


@torch.no_grad()
def rows_read(model, ids: list[list[int]], batch_size: int = 8) -> dict:
    """Which rows each token sequence reads, per memory layer (eval mode, padding never counted).

    Args:
        model: a causal LM with memory layers.
        ids: token id lists (one per text; none empty).

    Returns:
        A dict with ``rows`` (per layer, per text, a tensor of the distinct rows the text reads), ``counts`` (per
        layer, an (N,) int64 tensor of reads) and ``weights`` (per layer, an (N,) float64 tensor of summed read
        weights).
    """
    if not ids or any(len(x) == 0 for x in ids):
        raise ValueError("rows_read needs non-empty texts: a blank text reads no rows; drop it first")
    mems = memory_layers(model)
    if not mems:
        raise ValueError("the model has no memory layers: call smf_lib.add_memory first")
    n = mems[0].config.n_slots
    out = {"rows": [[] for _ in mems], "counts": [torch.zeros(n, dtype=torch.long) for _ in mems],
           "weights": [torch.zeros(n, dtype=torch.float64) for _ in mems]}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    set_recording(model, True)
    try:
        for b in range(0, len(ids), batch_size):
            chunk = ids[b:b + batch_size]
            width = max(len(x) for x in chunk)
            inp = torch.zeros(len(chunk), width, dtype=torch.long)
            mask = torch.zeros_like(inp)
            for r, x in enumerate(chunk):
                inp[r, :len(x)], mask[r, :len(x)] = torch.tensor(x), 1
            model(input_ids=inp.to(device), attention_mask=mask.to(device))
            for j, m in enumerate(mems):
                idx, w = m.last_indices.cpu(), m.last_weights.cpu()
                keep = mask.bool()
                out["counts"][j] += torch.bincount(idx[keep].reshape(-1).long(), minlength=n)
                out["weights"][j] += torch.bincount(idx[keep].reshape(-1).long(), weights=w[keep].reshape(-1).double(),
                                                    minlength=n)
                out["rows"][j] += [idx[r][keep[r]].unique() for r in range(len(chunk))]
    finally:
        set_recording(model, False)
        model.train(was_training)
    return out


def _ids(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    blank = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if blank:
        raise ValueError(f"text {blank[0]} (of {len(texts)}) is blank: a blank text reads no rows; drop it first")
    return [tokenizer(t, truncation=True, max_length=max_length, add_special_tokens=False).input_ids or [0]
            for t in texts]


def memory_spread(model, tokenizer, general_texts: list[str], task_texts: list[str] | None = None,
                  max_length: int = 256, top_t: int | None = None, selectors: tuple[str, ...] = ("kl", "tfidf"),
                  batch_size: int = 8) -> dict:
    """Spread, footprint, overlap and hubs of every memory layer.

    Args:
        model: a causal LM with memory layers.
        tokenizer: its tokenizer.
        general_texts: held-out general paragraphs (they also define the hubs).
        task_texts: task texts (e.g. MedMCQA prompts); each is paired with a general paragraph (cycled) cut to the
            same number of tokens for the overlap. ``None``: general spread only.
        max_length: truncation length in tokens.
        top_t: rows a selector takes; with task texts, the share of each selector's top-t rows (all task texts as
            one batch, scored against the general paragraphs' reads) that are hubs.
        selectors: the selectors scored for the hub share.

    Returns:
        ``{"n_slots", "general_texts", "task_texts", "layers": {decoder index: {metric: value}}}``, with metrics
        ``general_*`` and ``task_*`` (:func:`spread_stats`), ``footprint``, ``overlap``, ``hub_rows``,
        ``hub_reads`` (the share of task reads on hubs) and ``hub_share_{selector}``.
    """
    if not general_texts:
        raise ValueError("memory_spread needs general texts (held-out paragraphs, e.g. smf_lib.data.load_background)")
    mems = memory_layers(model)
    n = mems[0].config.n_slots if mems else 0
    gen_ids = _ids(tokenizer, general_texts, max_length)
    gen = rows_read(model, gen_ids, batch_size)
    layers = {}
    # per layer: how many general paragraphs read each row, and the hubs (rows at least HUB_DF of them read)
    dfs = [torch.bincount(torch.cat(rows).long(), minlength=n) for rows in gen["rows"]]
    hubs_of = [df >= HUB_DF * len(general_texts) for df in dfs]
    for j, m in enumerate(mems):
        row = {f"general_{k}": v for k, v in spread_stats(gen["counts"][j], gen["weights"][j]).items()}
        row["hub_rows"] = int(hubs_of[j].sum())
        layers[str(m.layer_idx)] = row
    out = {"n_slots": n, "general_texts": len(general_texts), "task_texts": len(task_texts or []), "layers": layers}
    if not task_texts:
        return out
    task_ids = _ids(tokenizer, task_texts, max_length)
    task = rows_read(model, task_ids, batch_size)
    paired = [gen_ids[i % len(gen_ids)][:len(x)] for i, x in enumerate(task_ids)]
    pair = rows_read(model, paired, batch_size)
    for j, m in enumerate(mems):
        row = layers[str(m.layer_idx)]
        row.update({f"task_{k}": v for k, v in spread_stats(task["counts"][j], task["weights"][j]).items()})
        mine = task["rows"][j]
        row["footprint"] = sum(len(r) for r in mine) / (len(mine) * n)
        row["overlap"] = sum(_shared(a, b) / max(len(a), 1) for a, b in zip(mine, pair["rows"][j])) / len(mine)
        df, hubs = dfs[j], hubs_of[j]
        counts = task["counts"][j]
        row["hub_reads"] = float(counts[hubs].sum() / counts.sum())
        if top_t:
            for name in selectors:
                scores = score_rows(counts, name, df=df, totals=gen["counts"][j], n_docs=len(general_texts),
                                    generator=torch.Generator().manual_seed(0))
                chosen = select_rows(counts, scores, top_t)
                row[f"hub_share_{name}"] = float(hubs[chosen].double().mean()) if len(chosen) else 0.0
    return out


def _shared(a: torch.Tensor, b: torch.Tensor) -> int:
    return int(torch.isin(a, b).sum())


def spread_summary(spread: dict) -> dict:
    """The worst layer of each headline measure: the least effective rows, the largest top-5% share, the largest
    footprint and overlap (``None`` where not measured)."""
    rows = list(spread["layers"].values())

    def worst(key, fn):
        vals = [r[key] for r in rows if key in r]
        return fn(vals) if vals else None

    return {"min_effective_rows": worst("general_effective_rows", min),
            "max_top5_share": worst("general_top5_share", max),
            "max_footprint": worst("footprint", max), "max_overlap": worst("overlap", max),
            "max_hub_reads": worst("hub_reads", max)}


def check_spread(spread: dict, reference: dict | None = None, max_top5: float = MAX_TOP5_SHARE,
                 min_ratio: float = MIN_EFFECTIVE_RATIO, where: str = "the retrofitted memory") -> bool:
    """Warn (:class:`MemorySpreadWarning`) when any layer's reads have collapsed: the top 5% of rows take more than
    ``max_top5`` of general text's reads, or (given ``reference``, the same measure on random addressing) its
    effective rows fall below ``min_ratio`` of the reference's. Returns whether the memory is spread."""
    bad = []
    for k, row in spread["layers"].items():
        if row["general_top5_share"] > max_top5:
            bad.append(f"layer {k}: top 5% of rows take {row['general_top5_share']:.0%} of reads")
        ref = (reference or {}).get("layers", {}).get(k)
        if ref and row["general_effective_rows"] < min_ratio * ref["general_effective_rows"]:
            bad.append(f"layer {k}: {row['general_effective_rows']:,.0f} effective rows against "
                       f"{ref['general_effective_rows']:,.0f} under random addressing")
    if not bad:
        return True
    warnings.warn(
        f"{where} has collapsed onto a few rows ({'; '.join(bad)}). SMF's premise, that a task reads rows general "
        "text does not, cannot hold there. Retrofit with frozen addressing (TrainConfig(retrofit={'addressing': "
        "'frozen'})), a normalised query (MemoryConfig(query_norm='half')) or a usage-balancing term "
        "(retrofit={'balance': ...}); `python -m smf_lib spread-pilot` compares them", MemorySpreadWarning,
        stacklevel=2)
    return False
