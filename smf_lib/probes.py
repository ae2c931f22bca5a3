"""The evaluation protocols (METHOD.md section 6), with per-item results for paired statistics.

- MedMCQA: mean per-token log-likelihood of each `` {L}. {option}`` after the prompt (answer-norm
  accuracy), plus the lm-eval style letter score. Several questions share one forward; each prompt runs
  once and its cache is shared by its four options.
- WikiText: sliding-window perplexity (window 1024, stride 512), scoring each window's new tokens.
- TriviaQA: greedy answers of at most 32 new tokens, stopping at the tokenizer's EOS; alias containment after
  normalisation, plus exact match; and a retention score (mean log-likelihood of the first alias).
- Drift and chat retention (for an instruct model): per item, the mean per-token KL(base || tuned) of the
  next-token distributions over a scored span, from a compact cache of the base model's top-k
  log-probabilities (:func:`~smf_lib.spans.reference_topk`); and the mean log-likelihood of held-out assistant
  replies in the model's chat template (:func:`~smf_lib.spans.chat_items`).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .batches import padding_side
from .data import LETTERS, medmcqa_options, medmcqa_prompt, triviaqa_prompt
from .spans import (_cache_argument, _device, _encode, _pad_right, chat_items, continuation_logprobs,  # noqa: F401
                    drift, logits_at, reference_topk, span_logliks, text_windows, window_spans)


def _letter_ids(tokenizer) -> list[int]:
    out = []
    for L in LETTERS:
        ids = _encode(tokenizer, f" {L}")
        if len(ids) != 1:
            raise ValueError(f"letter ' {L}' is {len(ids)} tokens for this tokenizer; letter scoring needs 1")
        out.append(ids[0])
    return out


def _option_rows(prompts: list[list[int]], options: list[list[list[int]]], pmask: torch.Tensor):
    """One row per question: its options one after another, each at the positions right after its prompt and
    attending only to the prompt and to its own earlier tokens (a block-diagonal causal mask over the options).
    Returns the ids, positions, the allowed (row, key) pairs over prompt + options, and per option
    ``(question, row offset, option tokens)``."""
    B, P = len(prompts), pmask.shape[1]
    S = max(sum(map(len, opts)) for opts in options)
    oids = torch.zeros(B, S, dtype=torch.long)
    opos = torch.zeros(B, S, dtype=torch.long)
    allow = torch.zeros(B, S, P + S, dtype=torch.bool)
    allow[:, :, :P] = pmask.bool().unsqueeze(1)  # padding rows attend to the prompt too: finite, never read
    spans = []
    for b, opts in enumerate(options):
        off = 0
        for o in opts:
            n = len(o)
            oids[b, off:off + n] = torch.as_tensor(o)
            opos[b, off:off + n] = len(prompts[b]) + torch.arange(n)
            allow[b, off:off + n, P + off:P + off + n] = torch.ones(n, n, dtype=torch.bool).tril()
            spans.append((b, off, o))
            off += n
    return oids, opos, allow, spans


@torch.no_grad()
def _option_scores_batch(model, prompts: list[list[int]], options: list[list[list[int]]], letter_ids: list[int]):
    """Mean log-likelihood of every option and the letter log-probs of several questions.

    The prompts are left-padded (positions from the mask) and run once; then each question's options run in one
    row after its own prompt's cache, separated by the attention mask (no copies of the cache).
    """
    dev, B, K = _device(model), len(prompts), len(options[0])
    P = max(map(len, prompts))
    ids = torch.zeros(B, P, dtype=torch.long)
    pmask = torch.zeros_like(ids)
    for i, q in enumerate(prompts):
        ids[i, P - len(q):] = torch.as_tensor(q)
        pmask[i, P - len(q):] = 1
    pos = (pmask.cumsum(1) - 1).clamp_min(0)
    first = model(input_ids=ids.to(dev), attention_mask=pmask.to(dev), position_ids=pos.to(dev), use_cache=True,
                  logits_to_keep=1)
    last = F.log_softmax(first.logits[:, -1].float(), dim=-1)  # (B, vocab)
    cache = first["cache"] if "cache" in first else first.past_key_values
    oids, opos, allow, spans = _option_rows(prompts, options, pmask)
    inner = model.get_decoder()  # the decoder stack: only the scored positions go through the output head
    mask = allow.unsqueeze(1)
    if model.config._attn_implementation != "sdpa":  # eager attention adds the mask: 0 or a large negative
        dtype = torch.get_autocast_dtype(dev.type) if torch.is_autocast_enabled(dev.type) else model.dtype
        mask = torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)
    hidden = inner(input_ids=oids.to(dev), attention_mask=mask.to(dev), position_ids=opos.to(dev),
                   **{_cache_argument(inner): cache}).last_hidden_state
    # option token j >= 1 is predicted at its option's position j - 1 (its first token at the prompt's last one)
    pairs = [(b, off + j) for b, off, o in spans for j in range(len(o) - 1)]
    later = [torch.zeros(0)] * len(spans)
    if pairs:
        r_idx, c_idx = torch.tensor(pairs, device=dev).T
        targets = torch.tensor([t for _, _, o in spans for t in o[1:]], device=dev)
        logits = model.get_output_embeddings()(hidden[r_idx, c_idx]).float()
        lp = F.log_softmax(logits, dim=-1).gather(1, targets.unsqueeze(1)).squeeze(1).cpu()
        later = list(torch.split(lp, [len(o) - 1 for _, _, o in spans]))
    flat = [o for _, _, o in spans]
    out = []
    for b in range(B):
        means = []
        for k in range(K):
            r = b * K + k
            lp = torch.cat([last[b, flat[r][0]].reshape(1).cpu(), later[r]])
            means.append(float(lp.mean()))
        out.append((means, [float(last[b, t]) for t in letter_ids]))
    return out


def _option_scores(model, prompt: list[int], options: list[list[int]], letter_ids: list[int]):
    """One question's option means and letter log-probs (see :func:`_option_scores_batch`)."""
    return _option_scores_batch(model, [prompt], [options], letter_ids)[0]


def medmcqa_accuracy(model, tokenizer, rows: list[dict], progress: bool = True, batch_size: int = 8) -> dict:
    """MedMCQA answer-norm accuracy (argmax of mean per-token log-likelihood of `` {L}. {option}``).

    Args:
        model: causal LM.
        tokenizer: its tokenizer.
        rows: MedMCQA rows (HF schema); at least one.
        progress: show a progress bar.
        batch_size: questions per forward (sorted by prompt length to keep padding small).

    Returns:
        A dict with ``acc``, ``letter_acc``, ``majority_acc``, ``always_a_acc``, ``gold_loglik``, ``gold_margin``,
        ``gold_prob``, ``n``, ``seconds``, ``tokens`` and ``items``, one dict per question with ``pred``,
        ``letter_pred``, ``gold``, ``correct``, ``letter_correct``, ``gold_loglik``, ``option_loglik`` (all four
        scores), ``gold_margin`` (the gold option's score minus the best distractor's: above 0 when correct) and
        ``gold_prob`` (the gold option's probability renormalised over the four, a softmax of the scores). The
        margin and the renormalised probability measure learning without the answer format's and the letters'
        prior, which the gold option's log-likelihood alone carries.
    """
    if not rows:
        raise ValueError("no MedMCQA rows to score: pass at least one question")
    t0 = time.perf_counter()
    letter_ids = _letter_ids(tokenizer)
    prompts = [_encode(tokenizer, medmcqa_prompt(r)) for r in rows]
    options = [[_encode(tokenizer, o) for o in medmcqa_options(r)] for r in rows]
    order = sorted(range(len(rows)), key=lambda i: len(prompts[i]))
    scores = [None] * len(rows)
    for s in tqdm(range(0, len(rows), batch_size), desc="medmcqa", disable=not progress):
        idx = order[s:s + batch_size]
        for i, sc in zip(idx, _option_scores_batch(model, [prompts[i] for i in idx], [options[i] for i in idx],
                                                   letter_ids)):
            scores[i] = sc
    items = []
    for row, (means, letters) in zip(rows, scores):
        gold = int(row["cop"])
        pred = max(range(4), key=lambda i: (means[i], -i))
        lpred = max(range(4), key=lambda i: (letters[i], -i))
        best_other = max(means[i] for i in range(4) if i != gold)
        top = max(means)
        z = sum(math.exp(m - top) for m in means)
        items.append({"pred": pred, "letter_pred": lpred, "gold": gold, "correct": int(pred == gold),
                      "letter_correct": int(lpred == gold), "gold_loglik": means[gold],
                      "option_loglik": [float(m) for m in means], "gold_margin": means[gold] - best_other,
                      "gold_prob": math.exp(means[gold] - top) / z})
    n = len(items)
    golds = [it["gold"] for it in items]
    majority = max(range(4), key=golds.count)
    tokens = sum(len(p) for p in prompts) + sum(len(o) for opts in options for o in opts)
    return {"acc": sum(it["correct"] for it in items) / n,
            "letter_acc": sum(it["letter_correct"] for it in items) / n,
            "majority_acc": golds.count(majority) / n, "always_a_acc": golds.count(0) / n,
            "gold_loglik": sum(it["gold_loglik"] for it in items) / n,
            "gold_margin": sum(it["gold_margin"] for it in items) / n,
            "gold_prob": sum(it["gold_prob"] for it in items) / n, "n": n, "items": items,
            "seconds": time.perf_counter() - t0, "tokens": tokens}


@torch.no_grad()
def perplexity(model, tokenizer, text: str, max_length: int = 1024, stride: int = 512, batch_size: int = 4,
               progress: bool = True, first_window: str = "exact") -> dict:
    """Sliding-window perplexity (the Hugging Face fixed-length recipe), scoring each window's new tokens.

    The text is tokenised without special tokens; window k starts at k*stride and scores the tokens not
    scored by earlier windows (the first token of the text has no context and is not scored).
    ``first_window="paper"`` counts the first window as the paper's code does: its mean loss over the scored
    tokens is weighted by the window's length, one token more than it scored.

    Returns:
        ``{"ppl", "nll", "tokens", "windows": [{"nll", "tokens"}...], "seconds"}``.
    """
    if first_window not in ("exact", "paper"):
        raise ValueError(f"first_window must be 'exact' or 'paper', got {first_window!r}")
    t0 = time.perf_counter()
    ids = torch.as_tensor(_encode(tokenizer, text), dtype=torch.long)
    if len(ids) < 2:
        raise ValueError("the perplexity text has fewer than 2 tokens: pass a longer text")
    dev = _device(model)
    spans = window_spans(len(ids), max_length, stride)
    windows = []
    for s in tqdm(range(0, len(spans), batch_size), desc="wikitext", disable=not progress):
        chunk = spans[s:s + batch_size]
        batch, mask = _pad_right([ids[b:e] for b, e, _ in chunk])
        positions = [torch.arange(first - b - 1, e - b - 1, device=dev) for b, e, first in chunk]
        for (b, e, first), logits in zip(chunk, logits_at(model, batch.to(dev), mask.to(dev), positions)):
            nll = F.cross_entropy(logits, ids[first:e].to(dev), reduction="sum")
            if first_window == "paper" and b == 0:  # mean over e - 1 scored tokens, weighted by e
                nll, scored = nll / (e - first) * e, e
            else:
                scored = e - first
            windows.append({"nll": float(nll), "tokens": scored})
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

    Generation stops at the tokenizer's EOS (for an instruct model its end-of-turn token); text after it is not
    part of the answer.

    Returns:
        ``{"acc", "em", "alias_loglik", "items": [...], "seconds"}``; each item has ``output``, ``correct``,
        ``em`` and ``alias_loglik``.
    """
    if not rows:
        raise ValueError("no TriviaQA rows to score: pass at least one question")
    t0 = time.perf_counter()
    dev = _device(model)
    eos = tokenizer.eos_token_id
    outputs = []
    with padding_side(tokenizer, "left"):
        for s in tqdm(range(0, len(rows), batch_size), desc="triviaqa", disable=not progress):
            prompts = [triviaqa_prompt(r) for r in rows[s:s + batch_size]]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(dev)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=eos, temperature=None,
                                 top_p=None, top_k=None)
            new = [row.tolist() for row in gen[:, enc.input_ids.shape[1]:]]
            new = [row[: row.index(eos)] if eos in row else row for row in new]  # cut at the first EOS
            outputs += tokenizer.batch_decode(new, skip_special_tokens=True)
    ctx = [_encode(tokenizer, triviaqa_prompt(r)) for r in rows]
    cont = [_encode(tokenizer, " " + r["aliases"][0]) for r in rows]
    ll = [float(lp.mean()) for lp in continuation_logprobs(model, ctx, cont)]
    items = []
    for r, out, l in zip(rows, outputs, ll):
        aliases = [a for a in (normalize_answer(a) for a in r["aliases"]) if a]
        norm_out, short = normalize_answer(out), normalize_answer(_first_answer(out))
        items.append({"output": out, "correct": int(any(a in norm_out for a in aliases)),
                      "em": int(short in aliases), "alias_loglik": l})
    n = len(items)
    return {"acc": sum(it["correct"] for it in items) / n, "em": sum(it["em"] for it in items) / n,
            "alias_loglik": sum(it["alias_loglik"] for it in items) / n, "n": len(items), "items": items,
            "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------------------------------------------
# The probe registry: what each probe measures, from which per-item arrays, which way is better, and its cost

def _mean(arrays):
    return arrays[0].mean(axis=-1)


def _ppl(arrays):
    import numpy as np

    return np.exp(arrays[0].sum(axis=-1) / arrays[1].sum(axis=-1))


@dataclass(frozen=True)
class Metric:
    """One number a probe reports, computed from per-item arrays so two runs pair item by item.

    Args:
        items: the per-item arrays (keys of a run record's ``items``) it is computed from.
        compute: ``arrays -> value`` (vectorised over a leading axis of bootstrap resamples).
        better: +1 when higher is better, -1 when lower is.
        kind: ``"learning"`` (the task) or ``"retention"`` (what the model knew).
        label: its name in figures and tables.
        scale: the factor tables show it with (100: a fraction shown in points).
        unit: its unit as tables show it.
    """

    items: tuple[str, ...]
    compute: Callable
    better: int
    kind: str
    label: str
    scale: float = 1.0
    unit: str = ""


@dataclass(frozen=True)
class Probe:
    """One probe, the one place it is declared: how it is scored, its metrics, its cost and its size.

    Args:
        evaluate: how the study scores it: a function ``evaluate(s) -> {"metrics": {...}, "items": {...}}`` (or
            None when it has nothing to score this time), or the ``"module:function"`` path of one (the built-in
            probes', which live with the study's item suite). ``s`` is the study's
            :class:`~smf_lib.study.evaluation.Scoring`: ``s.model``, ``s.tok``, ``s.split`` (``"report"`` or
            ``"dev"``), ``s.dev_subset`` (the dev subset's sizes along a trajectory, or None for every item) and
            ``s.progress``. The item arrays it returns are the ones its metrics name.
        metrics: its :class:`Metric` entries, by name.
        cost: tokens scored per item, in units of one training text's tokens (for the runtime estimate).
        size: the items a report scores: a number, or the name of the study preset's field that holds it (such as
            ``"medmcqa_n"``), for the runtime estimate.
        items: for a probe with items of its own, ``items(split) -> list`` of them; their fingerprint joins every
            run's identity, so a run scored on other items is never paired with this one. (The built-in probes'
            items are the study's suite, fingerprinted with it.)
    """

    evaluate: Callable | str
    metrics: dict
    cost: float
    size: int | str = 0
    items: Callable | None = None


def _accuracy(prefix: str, what: str, kind: str) -> dict:
    return {
        f"{prefix}_acc": Metric((f"{prefix}_correct",), _mean, 1, kind, f"{what}: accuracy", 100, "points"),
        f"{prefix}_gold_loglik": Metric((f"{prefix}_gold_loglik",), _mean, 1, kind, f"{what}: gold-option log-lik",
                                        unit="nats"),
        f"{prefix}_gold_margin": Metric((f"{prefix}_gold_margin",), _mean, 1, kind,
                                        f"{what}: gold margin over the best distractor", unit="nats"),
        f"{prefix}_gold_prob": Metric((f"{prefix}_gold_prob",), _mean, 1, kind,
                                      f"{what}: gold probability among the four", 100, "points"),
    }


#: The probes by name, read by the study's evaluation, the run identity, the paired statistics, the findings, the
#: figures' labels and the runtime estimate. A new probe is a function and one entry here (CONTRIBUTING.md).
_STUDY = "smf_lib.study.evaluation:"
PROBES: dict[str, Probe] = {
    "medmcqa": Probe(_STUDY + "medmcqa_step", _accuracy("medmcqa", "MedMCQA", "learning"), cost=1.2,
                     size="medmcqa_n"),
    "acquisition": Probe(_STUDY + "acquisition_step", _accuracy("acquisition", "trained questions", "learning"),
                         cost=1.0, size="acquisition_n"),
    "wikitext": Probe(_STUDY + "wikitext_step", {
        "wikitext_ppl": Metric(("wikitext_window_nll", "wikitext_window_tokens"), _ppl, -1, "retention",
                               "WikiText perplexity"),
        "wikitext_drift_kl": Metric(("wikitext_drift_kl",), _mean, -1, "retention", "drift on WikiText (KL)",
                                    unit="nats")}, cost=0.6, size="wikitext_lines"),
    "chat": Probe(_STUDY + "chat_step", {
        "chat_drift_kl": Metric(("chat_drift_kl",), _mean, -1, "retention", "drift on chat (KL)", unit="nats"),
        "chat_loglik": Metric(("chat_loglik",), _mean, 1, "retention", "held-out chat log-lik", unit="nats")},
        cost=1.7, size="chat_n"),
    "triviaqa": Probe(_STUDY + "triviaqa_step", {
        "triviaqa_acc": Metric(("triviaqa_correct",), _mean, 1, "retention", "TriviaQA accuracy", 100, "points"),
        "triviaqa_alias_loglik": Metric(("triviaqa_alias_loglik",), _mean, 1, "retention", "TriviaQA alias log-lik",
                                        unit="nats")}, cost=0.3, size="triviaqa_n"),
}


def metrics() -> dict[str, Metric]:
    """Every registered probe's metrics, by name."""
    return {name: m for probe in PROBES.values() for name, m in probe.metrics.items()}
