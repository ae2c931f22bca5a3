"""Is the memory alive? Its share of the MLP's output per layer, and the held-out loss per text.

A memory that adds 0.3% to the MLP's output cannot show what sparse updates of its rows do: the task signal has
nowhere to go. :func:`memory_health` measures the share (``||alpha * memory(x)|| / ||mlp(x)||`` averaged over real
tokens, per memory layer) and each text's mean token loss, so a retrofit can be judged before anything is trained
on top of it; :func:`check_health` warns when a layer's share is below :data:`MIN_SHARE`.
"""

from __future__ import annotations

import math
import warnings

import torch

from .batches import collate_batch
from .memory import MemoryMLP

#: The smallest share of the MLP's output, at every memory layer, at which a retrofitted memory counts as alive.
#: Chosen from the retrofit pilot (``python -m smf_lib retrofit-pilot``): recipes that end below it leave SMF
#: almost nothing to move.
MIN_SHARE = 0.10


class MemoryHealthWarning(UserWarning):
    """A retrofitted memory carries too small a share of the MLP's output to learn a task through its rows."""


def _batches(tokenizer, texts, max_length, batch_size, device):
    for i in range(0, len(texts), batch_size):
        yield collate_batch(tokenizer, texts[i:i + batch_size], max_length, device)


@torch.no_grad()
def memory_health(model, tokenizer, texts: list[str], max_length: int = 256, batch_size: int = 8) -> dict:
    """What the memory does on ``texts``.

    Args:
        model: a causal LM with memory layers (additive mode; in replacement mode the share is against the
            bypassed MLP).
        tokenizer: its tokenizer.
        texts: held-out texts (never trained on).
        max_length: truncation length in tokens.
        batch_size: texts per forward.

    Returns:
        ``{"loss", "text_losses", "share", "share_by_layer", "min_share", "texts"}``: the token-weighted mean loss,
        each text's mean token loss (for paired intervals), the share averaged over layers, per layer (keyed by the
        decoder index as a string) and its minimum.
    """
    was_training = model.training
    model.eval()
    mods = [m for m in model.modules() if isinstance(m, MemoryMLP)]
    sums = {m.memory.layer_idx: 0.0 for m in mods}
    current: dict[int, torch.Tensor] = {}

    def hook(mod, args, out):
        x = args[0]
        mem, mlp = mod.alpha * mod.memory(x).float(), mod.mlp(x).float()
        current[mod.memory.layer_idx] = mem.norm(dim=-1) / mlp.norm(dim=-1).clamp_min(1e-12)

    hooks = [m.register_forward_hook(hook) for m in mods]
    device = next(model.parameters()).device
    text_losses, total, count, tokens = [], 0.0, 0, 0
    try:
        for batch in _batches(tokenizer, texts, max_length, batch_size, device):
            current.clear()
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
            labels = batch["labels"][:, 1:]
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels.clamp_min(0),
                                                    reduction="none") * (labels != -100)
            n = (labels != -100).sum(dim=1)
            text_losses += (nll.sum(dim=1) / n.clamp_min(1)).tolist()
            total, count = total + float(nll.sum()), count + int(n.sum())
            mask = batch["attention_mask"].bool()
            for i, r in current.items():
                sums[i] += float(r[mask].sum())
            tokens += int(mask.sum())
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    by_layer = {str(i): s / max(tokens, 1) for i, s in sums.items()}
    return {"loss": total / max(count, 1), "text_losses": text_losses,
            "share": sum(by_layer.values()) / len(by_layer) if by_layer else 0.0,
            "share_by_layer": by_layer, "min_share": min(by_layer.values()) if by_layer else 0.0,
            "texts": len(texts)}


def loss_change(before: dict, after: dict, n_boot: int = 2000, seed: int = 0) -> dict:
    """Held-out loss change ``after - before`` (mean over texts) with a paired-bootstrap 95% interval.

    Args:
        before, after: :func:`memory_health` results on the same texts.

    Returns:
        ``{"delta", "lo", "hi"}`` in nats per token (negative: the memory helps).
    """
    import numpy as np

    a, b = np.asarray(before["text_losses"]), np.asarray(after["text_losses"])
    if a.shape != b.shape or not len(a):
        raise ValueError("loss_change needs two memory_health results on the same (non-empty) texts")
    d = b - a
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    boot = d[idx].mean(axis=1)
    return {"delta": float(d.mean()), "lo": float(np.percentile(boot, 2.5)), "hi": float(np.percentile(boot, 97.5))}


def check_health(health: dict, min_share: float = MIN_SHARE, where: str = "the retrofitted memory") -> bool:
    """Warn (:class:`MemoryHealthWarning`) when any memory layer's share of the MLP's output is below
    ``min_share``; returns whether the memory is healthy."""
    low = {k: v for k, v in health.get("share_by_layer", {}).items() if not v >= min_share or math.isnan(v)}
    if not low:
        return True
    layers = ", ".join(f"layer {k}: {v:.1%}" for k, v in low.items())
    warnings.warn(
        f"{where} carries less than {min_share:.0%} of the MLP's output ({layers}). Sparse updates of its rows "
        "can then barely change the model, so SMF will learn little whatever its rate. Retrofit longer or at a "
        "higher rate (the retrofit pilot: 5e-3 for 30-50 steps of 16 replies on SmolLM2); "
        "`python -m smf_lib retrofit-pilot` compares recipes", MemoryHealthWarning, stacklevel=2)
    return False
