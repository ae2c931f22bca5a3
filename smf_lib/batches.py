"""Tokenised batches: one padding-side switch, and the right-padded training batch with labels on real tokens."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def padding_side(tokenizer, side: str):
    """Pad on ``side`` inside the block, whatever the tokenizer's own setting, and restore it afterwards
    (tokenizers without the attribute pad on the right and are left alone)."""
    old = getattr(tokenizer, "padding_side", None)
    if old is not None:
        tokenizer.padding_side = side
    try:
        yield tokenizer
    finally:
        if old is not None:
            tokenizer.padding_side = old


def collate_batch(tokenizer, texts, max_length, device):
    """Right-padded batch (whatever the tokenizer's padding side) with labels on real tokens only."""
    with padding_side(tokenizer, "right"):
        enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
    return {"input_ids": enc.input_ids.to(device), "attention_mask": enc.attention_mask.to(device),
            "labels": labels.to(device)}
