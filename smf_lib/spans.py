"""Scored spans: a model's log-likelihood and its drift from a reference over token spans (held-out chat replies
in the chat template, sliding windows of text), and the batched scoring helpers every probe shares. Re-exported by
:mod:`smf_lib.probes`, which runs them as probes.
"""

from __future__ import annotations

import inspect
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


def _device(model):
    return next(model.parameters()).device


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def _pad_right(seqs) -> tuple[torch.Tensor, torch.Tensor]:
    """Token sequences (lists or 1-d tensors) as a right-padded id matrix (pad 0) and its attention mask."""
    ids = torch.zeros(len(seqs), max(map(len, seqs)), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, q in enumerate(seqs):
        ids[i, :len(q)] = torch.as_tensor(q)
        mask[i, :len(q)] = 1
    return ids, mask


def _cache_argument(model) -> str:
    """transformers >= 5.2x names the forward's KV-cache argument ``cache``; older releases ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def logits_at(model, ids: torch.Tensor, mask: torch.Tensor, positions: list[torch.Tensor]):
    """Per sequence ``i`` of a right-padded batch, the float32 logits at ``positions[i]`` (yielded in order). The
    decoder runs once on the batch; only the scored positions go through the output head, so memory stays small
    with large vocabularies."""
    hidden = model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    head = model.get_output_embeddings()
    for i, pos in enumerate(positions):
        yield head(hidden[i, pos]).float()


@torch.no_grad()
def continuation_logprobs(model, contexts: list[list[int]], continuations: list[list[int]],
                          batch_size: int = 8) -> list[torch.Tensor]:
    """Per-token log-probabilities of each continuation after its context (right-padded batches, scored with
    :func:`logits_at`)."""
    dev, out = _device(model), []
    for s in range(0, len(contexts), batch_size):
        ctx, cont = contexts[s:s + batch_size], continuations[s:s + batch_size]
        ids, mask = _pad_right([a + b for a, b in zip(ctx, cont)])
        positions = [torch.arange(len(a) - 1, len(a) + len(b) - 1, device=dev) for a, b in zip(ctx, cont)]
        for b, logits in zip(cont, logits_at(model, ids.to(dev), mask.to(dev), positions)):
            logp = F.log_softmax(logits, dim=-1)
            out.append(logp.gather(1, torch.tensor(b, device=dev).unsqueeze(1)).squeeze(1).cpu())
    return out


def window_spans(n: int, max_length: int = 1024, stride: int = 512) -> list[tuple[int, int, int]]:
    """The sliding windows over ``n`` tokens as ``(begin, end, first)``: window tokens [begin, end), scored
    positions [first, end), each token scored once (the first token of the text never)."""
    spans, prev_end = [], 0
    for begin in range(0, n, stride):
        end = min(begin + max_length, n)
        spans.append((begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == n:
            break
    return spans


# ----------------------------------------------------------------------------------------------------------------
# Drift and chat retention

def chat_items(tokenizer, pairs: list[tuple[str, str]], prompt_chars: int = 800,
               reply_chars: int = 1200) -> list[tuple[list[int], int, int]]:
    """(prompt, reply) pairs in the tokenizer's chat template as scored spans ``(ids, first, end)``: the reply's
    tokens (through its end-of-turn token) are scored, the prompt and template tokens are context.

    Long texts are cut by characters (the prompt's last ``prompt_chars``, the reply's first ``reply_chars``), so
    every item costs about the same whatever the tokenizer.
    """
    if tokenizer.chat_template is None:
        raise ValueError("the tokenizer has no chat template: chat retention needs an instruct model's tokenizer")
    out = []
    for prompt, reply in pairs:
        prompt, reply = prompt[-prompt_chars:], reply[:reply_chars]
        head = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        full = tokenizer.apply_chat_template([{"role": "user", "content": prompt},
                                              {"role": "assistant", "content": reply}], tokenize=False)
        if not full.startswith(head):
            raise ValueError("the chat template renders the reply's prompt differently with and without the reply; "
                             "chat retention cannot locate the reply")
        a, b = _encode(tokenizer, head), _encode(tokenizer, full[len(head):].rstrip("\n"))
        out.append((a + b, len(a), len(a) + len(b)))
    return out


def text_windows(tokenizer, text: str, max_length: int = 1024, stride: int = 512) -> list[tuple[list[int], int, int]]:
    """The perplexity probe's sliding windows as scored spans ``(ids, first, end)`` (positions in ``ids``)."""
    ids = _encode(tokenizer, text)
    return [(ids[b:e], f - b, e - b) for b, e, f in window_spans(len(ids), max_length, stride)]


def _span_logprobs(model, items, batch_size: int):
    """Yield, per item, the log-softmax rows (float32) predicting its scored tokens, and those tokens."""
    dev = _device(model)
    for s in range(0, len(items), batch_size):
        chunk = items[s:s + batch_size]
        batch, mask = _pad_right([ids for ids, _, _ in chunk])
        positions = [torch.arange(first - 1, end - 1, device=dev) for _, first, end in chunk]
        for (ids, first, end), logits in zip(chunk, logits_at(model, batch.to(dev), mask.to(dev), positions)):
            yield F.log_softmax(logits, dim=-1), torch.tensor(ids[first:end], device=dev)


@torch.no_grad()
def span_logliks(model, items, batch_size: int = 1) -> list[float]:
    """Each scored span's mean token log-likelihood (e.g. chat replies from :func:`chat_items`)."""
    return [float(logp.gather(1, target.unsqueeze(1)).mean()) for logp, target in _span_logprobs(model, items,
                                                                                                 batch_size)]


@torch.no_grad()
def reference_topk(model, items, k: int = 32, batch_size: int = 4, progress: bool = True) -> list[dict]:
    """The base side of the drift probe, stored compactly: per scored position the top-k log-probabilities and
    their token ids (the rest of the distribution is kept only as its total mass), and each item's NLL.

    Args:
        model: the reference (base) model.
        items: scored spans ``(ids, first, end)`` from :func:`chat_items` or :func:`text_windows`.
        k: tokens kept per position.

    Returns:
        Per item ``{"idx": int32 (T, k), "logp": float32 (T, k), "nll": float, "tokens": int}``.
    """
    if not items:
        raise ValueError("no items to score: pass at least one span")
    out = []
    for logp, target in tqdm(_span_logprobs(model, items, batch_size), total=len(items), desc="reference",
                             disable=not progress):
        top = logp.topk(k, dim=-1)
        out.append({"idx": top.indices.int().cpu(), "logp": top.values.cpu(),
                    "nll": float(-logp.gather(1, target.unsqueeze(1)).sum()), "tokens": len(target)})
    return out


def _topk_kl(ref_idx, ref_logp, logq) -> torch.Tensor:
    """Per position KL(p || q) between p and q coarsened to p's top-k tokens plus one bucket for the rest."""
    p = ref_logp.exp()
    q_top = logq.gather(1, ref_idx.long())
    p_rest = (1 - p.sum(1)).clamp_min(0)
    q_rest = (1 - q_top.exp().sum(1)).clamp_min(1e-12)
    kl = (p * (ref_logp - q_top)).sum(1)
    return kl + torch.where(p_rest > 0, p_rest * (p_rest.clamp_min(1e-12).log() - q_rest.log()), 0.0)


@torch.no_grad()
def drift(model, items, reference: list[dict], batch_size: int = 4, exact_reference=None,
          progress: bool = True) -> dict:
    """Mean per-token KL(base || tuned) per item, from the cached base top-k (:func:`reference_topk`), and the
    tuned model's mean log-likelihood per item (chat retention when the items are chat replies).

    The top-k + rest coarsening can only lower the KL (the data-processing inequality); pass the base model as
    ``exact_reference`` to also compute the exact KL and measure that gap.

    Returns:
        ``{"kl", "loglik", "items": [{"kl", "loglik", "tokens"(, "kl_exact")}], "seconds"}``.
    """
    if len(items) != len(reference):
        raise ValueError(f"{len(items)} items but {len(reference)} cached reference items: recompute the reference "
                         "on these items")
    t0 = time.perf_counter()
    exact = _span_logprobs(exact_reference, items, batch_size) if exact_reference is not None else None
    out = []
    for (logq, target), ref in tqdm(zip(_span_logprobs(model, items, batch_size), reference), total=len(items),
                                    desc="drift", disable=not progress):
        if ref["idx"].shape[0] != len(target):
            raise ValueError("the cached reference does not match these items (token counts differ); recompute it")
        kl = _topk_kl(ref["idx"].to(logq.device), ref["logp"].to(logq.device), logq)
        item = {"kl": float(kl.mean()), "loglik": float(logq.gather(1, target.unsqueeze(1)).mean()),
                "tokens": len(target)}
        if exact is not None:
            logp, _ = next(exact)
            item["kl_exact"] = float((logp.exp() * (logp - logq)).sum(1).mean())
        out.append(item)
    n = len(out)
    return {"kl": sum(i["kl"] for i in out) / n, "loglik": sum(i["loglik"] for i in out) / n, "items": out,
            "seconds": time.perf_counter() - t0}
