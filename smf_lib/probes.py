"""The evaluation protocols (METHOD.md section 6), with per-item results for paired statistics.

- MedMCQA: mean per-token log-likelihood of each `` {L}. {option}`` after the prompt (answer-norm
  accuracy), plus the lm-eval style letter score; the prompt runs once and its cache is shared by the
  four options.
- WikiText: sliding-window perplexity (window 1024, stride 512), scoring each window's new tokens.
- TriviaQA: greedy 32 new tokens, alias containment after normalisation, plus exact match; and a
  retention score (mean log-likelihood of the first alias) that moves before accuracy does.
"""

from __future__ import annotations

import inspect
import math
import re
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import LETTERS, medmcqa_options, medmcqa_prompt, triviaqa_prompt


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


@torch.no_grad()
def continuation_logprobs(model, contexts: list[list[int]], continuations: list[list[int]],
                          batch_size: int = 8) -> list[torch.Tensor]:
    """Per-token log-probabilities of each continuation after its context (right-padded batches).

    Only the scored positions go through the output head, so memory stays small with large vocabularies.
    """
    dev, out = _device(model), []
    for s in range(0, len(contexts), batch_size):
        ctx, cont = contexts[s:s + batch_size], continuations[s:s + batch_size]
        ids, mask = _pad_right([a + b for a, b in zip(ctx, cont)])
        hidden = model.model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).last_hidden_state
        for i, (a, b) in enumerate(zip(ctx, cont)):
            pos = torch.arange(len(a) - 1, len(a) + len(b) - 1, device=dev)
            logp = F.log_softmax(model.lm_head(hidden[i, pos]).float(), dim=-1)
            out.append(logp.gather(1, torch.tensor(b, device=dev).unsqueeze(1)).squeeze(1).cpu())
    return out


@torch.no_grad()
def _option_scores(model, prompt: list[int], options: list[list[int]], letter_ids: list[int],
                   cache_arg: str | None = None):
    """Mean log-likelihood of each option and the letter log-probs, running the prompt once (its KV cache,
    passed as ``cache_arg``, found once per probe by :func:`_cache_argument`, is shared by the options)."""
    dev, cache_arg = _device(model), cache_arg or _cache_argument(model)
    first = model(input_ids=torch.tensor([prompt], device=dev), use_cache=True, logits_to_keep=1)
    last = F.log_softmax(first.logits[0, -1].float(), dim=-1)
    cache = first["cache"] if "cache" in first else first.past_key_values
    cache.batch_repeat_interleave(len(options))
    ids, opt_mask = _pad_right(options)
    mask = torch.cat([torch.ones(len(options), len(prompt), dtype=torch.long), opt_mask], dim=1)
    logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), **{cache_arg: cache}).logits.float()
    logp = F.log_softmax(logits, dim=-1)
    means = []
    for i, o in enumerate(options):
        lp = [last[o[0]]] + [logp[i, j - 1, o[j]] for j in range(1, len(o))]
        means.append(float(torch.stack(lp).mean()))
    return means, [float(last[t]) for t in letter_ids]


def medmcqa_accuracy(model, tokenizer, rows: list[dict], progress: bool = True) -> dict:
    """MedMCQA answer-norm accuracy (argmax of mean per-token log-likelihood of `` {L}. {option}``).

    Args:
        model: causal LM.
        tokenizer: its tokenizer.
        rows: MedMCQA rows (HF schema).
        progress: show a progress bar.

    Returns:
        ``{"acc", "letter_acc", "majority_acc", "always_a_acc", "gold_loglik", "items": [...], "seconds"}``;
        each item has ``pred``, ``letter_pred``, ``gold``, ``correct``, ``gold_loglik`` (the retention score).
    """
    t0 = time.perf_counter()
    letter_ids = []
    for L in LETTERS:
        ids = _encode(tokenizer, f" {L}")
        if len(ids) != 1:
            raise ValueError(f"letter ' {L}' is {len(ids)} tokens for this tokenizer; letter scoring needs 1")
        letter_ids.append(ids[0])
    items, cache_arg = [], _cache_argument(model)
    for row in tqdm(rows, desc="medmcqa", disable=not progress):
        means, letters = _option_scores(model, _encode(tokenizer, medmcqa_prompt(row)),
                                        [_encode(tokenizer, o) for o in medmcqa_options(row)], letter_ids,
                                        cache_arg)
        gold = int(row["cop"])
        pred = max(range(4), key=lambda i: (means[i], -i))
        lpred = max(range(4), key=lambda i: (letters[i], -i))
        items.append({"pred": pred, "letter_pred": lpred, "gold": gold, "correct": int(pred == gold),
                      "letter_correct": int(lpred == gold), "gold_loglik": means[gold]})
    n = max(len(items), 1)
    golds = [it["gold"] for it in items]
    majority = max(range(4), key=golds.count) if golds else 0
    return {"acc": sum(it["correct"] for it in items) / n,
            "letter_acc": sum(it["letter_correct"] for it in items) / n,
            "majority_acc": golds.count(majority) / n, "always_a_acc": golds.count(0) / n,
            "gold_loglik": sum(it["gold_loglik"] for it in items) / n, "n": len(items), "items": items,
            "seconds": time.perf_counter() - t0}


@torch.no_grad()
def perplexity(model, tokenizer, text: str, max_length: int = 1024, stride: int = 512, batch_size: int = 4,
               progress: bool = True) -> dict:
    """Sliding-window perplexity (the Hugging Face fixed-length recipe), scoring each window's new tokens.

    The text is tokenised without special tokens; window k starts at k*stride and scores the tokens not
    scored by earlier windows (the first token of the text has no context and is not scored).

    Returns:
        ``{"ppl", "nll", "tokens", "windows": [{"nll", "tokens"}...], "seconds"}``.
    """
    t0 = time.perf_counter()
    ids = torch.as_tensor(_encode(tokenizer, text), dtype=torch.long)
    n, dev = len(ids), _device(model)
    spans, prev_end = [], 0
    for begin in range(0, n, stride):
        end = min(begin + max_length, n)
        spans.append((begin, end, max(prev_end, begin + 1)))  # score positions [first, end)
        prev_end = end
        if end == n:
            break
    windows = []
    for s in tqdm(range(0, len(spans), batch_size), desc="wikitext", disable=not progress):
        chunk = spans[s:s + batch_size]
        batch, mask = _pad_right([ids[b:e] for b, e, _ in chunk])
        hidden = model.model(input_ids=batch.to(dev), attention_mask=mask.to(dev)).last_hidden_state
        for i, (b, e, first) in enumerate(chunk):
            pos = torch.arange(first - b - 1, e - b - 1, device=dev)
            logits = model.lm_head(hidden[i, pos]).float()
            nll = F.cross_entropy(logits, ids[first:e].to(dev), reduction="sum")
            windows.append({"nll": float(nll), "tokens": e - first})
    nll = sum(w["nll"] for w in windows)
    tokens = sum(w["tokens"] for w in windows)
    return {"ppl": math.exp(nll / max(tokens, 1)), "nll": nll, "tokens": tokens, "windows": windows,
            "seconds": time.perf_counter() - t0}


def normalize_answer(s: str) -> str:
    """Lower-case, drop a/an/the, characters outside [a-z0-9 .-] to spaces, squeeze spaces."""
    s = s.lower()
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    s = re.sub(r"[^a-z0-9 .\-]", " ", s)
    return " ".join(s.split())


def _first_answer(s: str) -> str:
    """The output up to the first newline, period or comma (lm-eval's exact-match cut)."""
    return re.split(r"[\n.,]", s.strip(), maxsplit=1)[0]


@torch.no_grad()
def triviaqa_accuracy(model, tokenizer, rows: list[dict], max_new_tokens: int = 32, batch_size: int = 16,
                      progress: bool = True) -> dict:
    """TriviaQA: greedy answers, alias containment (and exact match), plus the first-alias retention score.

    Returns:
        ``{"acc", "em", "alias_loglik", "items": [...], "seconds"}``; each item has ``output``, ``correct``,
        ``em`` and ``alias_loglik``.
    """
    t0 = time.perf_counter()
    dev = _device(model)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    outputs = []
    try:
        for s in tqdm(range(0, len(rows), batch_size), desc="triviaqa", disable=not progress):
            prompts = [triviaqa_prompt(r) for r in rows[s:s + batch_size]]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(dev)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=None, temperature=None,
                                 top_p=None, top_k=None)
            outputs += tokenizer.batch_decode(gen[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    ctx = [_encode(tokenizer, triviaqa_prompt(r)) for r in rows]
    cont = [_encode(tokenizer, " " + r["aliases"][0]) for r in rows]
    ll = [float(lp.mean()) for lp in continuation_logprobs(model, ctx, cont)]
    items = []
    for r, out, l in zip(rows, outputs, ll):
        aliases = [a for a in (normalize_answer(a) for a in r["aliases"]) if a]
        norm_out, short = normalize_answer(out), normalize_answer(_first_answer(out))
        items.append({"output": out, "correct": int(any(a in norm_out for a in aliases)),
                      "em": int(short in aliases), "alias_loglik": l})
    n = max(len(items), 1)
    return {"acc": sum(it["correct"] for it in items) / n, "em": sum(it["em"] for it in items) / n,
            "alias_loglik": sum(it["alias_loglik"] for it in items) / n, "n": len(items), "items": items,
            "seconds": time.perf_counter() - t0}
