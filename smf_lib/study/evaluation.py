"""The probe suite of a preset: which items each probe scores, the cached base side of the drift probe, and one
call that scores a model on every item (a report) or on the dev subset used along training trajectories.

Items are split so that nothing is chosen on reported items: every probe has reported items and, after them, a
disjoint dev split. The held-out chat replies are the last OASST1 validation replies; the retrofit corpus and
the background statistics never see them.
"""

from __future__ import annotations

import pkgutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .. import data
from ..files import verify_checked, write_checked
from ..probes import (PROBES, chat_items, drift, medmcqa_accuracy, perplexity, reference_topk, text_windows,
                      triviaqa_accuracy)
from ..fingerprints import items_fingerprint, texts_fingerprint
from .records import TRAJECTORY, evaluation_kind


def data_root(p):
    """The preset's data folder argument for :mod:`smf_lib.data` (the packaged fixtures resolved)."""
    if p.data == "fixtures":
        return Path(__file__).parent.parent / "fixtures"
    return p.data


def heldout_chat_count(p) -> int:
    """How many OASST1 validation replies (the last ones) are held out for the chat probes."""
    return p.chat_n + p.chat_dev_n


def corpus(p, which: str, n: int | None) -> list[str]:
    """Retrofit or background texts (``wikipedia`` or OASST1 replies), never the held-out chat replies."""
    root = data_root(p)
    if which == "wikipedia":
        return data.load_background(n, root)
    parts = {"oasst1-validation": ["validation"], "oasst1-train": ["train"],
             "oasst1-both": ["validation", "train"]}.get(which)
    if parts is None:
        raise ValueError(f"unknown corpus {which!r}; allowed: wikipedia, oasst1-validation, oasst1-train, oasst1-both")
    texts = []
    for s in parts:
        part = data.load_oasst1_replies(s, root=root)
        if s == "validation" and heldout_chat_count(p):
            part = part[: len(part) - heldout_chat_count(p)]
        texts += part
    return data.take(texts, n, f"the {which} corpus (held-out chat replies excluded)")


@dataclass
class Suite:
    """The items of every probe, for the reported split (``report``) and the dev split (``dev``)."""

    medmcqa: dict
    triviaqa: dict
    wikitext: dict
    chat: dict
    acquisition: list[dict]

    def fingerprints(self) -> dict:
        """Hashes of every probe's items, recorded with each run and compared before runs are paired."""
        out = {}
        for name in ("medmcqa", "triviaqa", "wikitext", "chat"):
            for split, items in getattr(self, name).items():
                out[f"{name}_{split}"] = items_fingerprint(items)
        out["acquisition"] = items_fingerprint(self.acquisition)
        for name, probe in PROBES.items():  # a probe with items of its own: their fingerprint, per split
            if probe.items is not None:
                out.update({f"{name}_{split}": items_fingerprint(probe.items(split)) for split in ("report", "dev")})
        return out


def build_suite(p, task_questions: list[dict]) -> Suite:
    """Load the preset's probe items (reported first, dev after them)."""
    root = data_root(p)
    val = data.load_medmcqa("validation", p.medmcqa_n + p.medmcqa_dev_n, root=root)
    tqa = data.load_triviaqa(p.triviaqa_n + p.triviaqa_dev_n, root)
    lines = data.load_wikitext_lines(p.wikitext_lines + p.wikitext_dev_lines, root, raw=p.wikitext_raw)
    pairs = data.load_oasst1_pairs(root=root, pool=p.chat_pool)
    held = pairs[len(pairs) - heldout_chat_count(p):] if heldout_chat_count(p) else []
    for name, got, want in (("MedMCQA validation", len(val), p.medmcqa_n + p.medmcqa_dev_n),
                            ("TriviaQA", len(tqa), p.triviaqa_n + p.triviaqa_dev_n),
                            ("WikiText", len(lines), p.wikitext_lines + p.wikitext_dev_lines),
                            ("OASST1 chat", len(held), heldout_chat_count(p)),
                            ("MedMCQA train (acquisition)", len(task_questions), p.acquisition_n)):
        if got < want:
            raise ValueError(f"preset {p.name!r} asks for {want} {name} items but the data has {got}; lower the "
                             "preset's sizes or point SMF_DATA_DIR at the complete data")
    return Suite(
        medmcqa={"report": val[: p.medmcqa_n], "dev": val[p.medmcqa_n:]},
        triviaqa={"report": tqa[: p.triviaqa_n], "dev": tqa[p.triviaqa_n:]},
        wikitext={"report": ["\n\n".join(lines[: p.wikitext_lines])],
                  "dev": ["\n\n".join(lines[p.wikitext_lines:])] if p.wikitext_dev_lines else []},
        chat={"report": held[p.chat_dev_n:], "dev": held[: p.chat_dev_n]},
        acquisition=task_questions[: p.acquisition_n])


def drift_spans(tok, suite: Suite, split: str, dev_subset: dict | None, wikitext: bool = True, chat: bool = True):
    """The drift probe's scored spans: WikiText windows and chat replies of a split (the dev subset's sizes
    when ``dev_subset`` is given); ``wikitext``/``chat`` False leaves that kind empty."""
    wiki = [w for text in suite.wikitext[split] for w in text_windows(tok, text)] if wikitext else []
    chat = chat_items(tok, suite.chat[split]) if chat and suite.chat[split] else []
    if dev_subset is not None:
        wiki, chat = wiki[: dev_subset.get("wikitext_windows", 4)], chat[: dev_subset.get("chat", 32)]
    return wiki, chat


class Reference:
    """The base model's top-k log-probabilities on the drift spans, computed once and cached in ``folder``."""

    def __init__(self, folder: Path, topk: int, progress: bool = False):
        self.folder, self.topk, self.cache, self.progress = Path(folder), topk, {}, progress

    def get(self, name: str, base_model, items) -> list[dict]:
        key = f"{name}-{texts_fingerprint([str(i) for i in items])}"
        if key in self.cache:
            return self.cache[key]
        path = self.folder / f"reference-{key}.safetensors"
        if path.exists():
            verify_checked(path, "delete it so the base model's reference is computed again")
            try:
                t = load_file(str(path))
            except Exception as err:  # safetensors raises its own error types for damaged files
                raise ValueError(f"{path} is damaged ({err}); delete it so the base model's reference is computed "
                                 "again") from err
            ref = [{"idx": t[f"{i}.idx"], "logp": t[f"{i}.logp"], "nll": float(t[f"{i}.nll"]),
                    "tokens": int(t[f"{i}.idx"].shape[0])} for i in range(len(items))]
        else:
            if base_model is None:
                raise RuntimeError(f"the base model's reference for {name} is not cached in {self.folder}: run the "
                                   "base model first")
            on_gpu = next(base_model.parameters()).device.type == "cuda"
            ref = reference_topk(base_model, items, self.topk, batch_size=4 if on_gpu else 1, progress=self.progress)
            tensors = {}
            for i, r in enumerate(ref):
                tensors[f"{i}.idx"], tensors[f"{i}.logp"] = r["idx"].contiguous(), r["logp"].contiguous()
                tensors[f"{i}.nll"] = torch.tensor(r["nll"], dtype=torch.float64)
            write_checked(path, lambda tmp: save_file(tensors, str(tmp)))
        self.cache[key] = ref
        return ref


def option_items(name: str, items: list[dict]) -> dict:
    """A MedMCQA scorer's per-item arrays as a run record keeps them: all four option scores, and the gold option's
    log-likelihood, margin over the best distractor and renormalised probability."""
    return {f"{name}_gold_loglik": [round(i["gold_loglik"], 6) for i in items],
            f"{name}_gold_margin": [round(i["gold_margin"], 6) for i in items],
            f"{name}_gold_prob": [round(i["gold_prob"], 6) for i in items],
            f"{name}_option_loglik": [[round(x, 5) for x in i["option_loglik"]] for i in items]}


@dataclass
class Scoring:
    """What one call of :func:`evaluate` scores with, handed to every probe's ``evaluate`` function: the model and
    tokenizer, the preset ``p``, the suite, the drift reference, the split (``"report"`` or ``"dev"``), and
    ``dev_subset`` (the dev subset's sizes along a trajectory, or None for every item)."""

    model: object
    tok: object
    p: object
    suite: Suite
    reference: Reference
    split: str
    dev_subset: dict | None
    progress: bool = True
    base_model: object = None
    exact_model: object = None
    exact_n: int = 8

    @property
    def report(self) -> bool:
        """Every item of every probe (not the dev subset along a trajectory)."""
        return self.dev_subset is None


def _choice_step(name: str, prefix: str, with_letters: bool):
    """A MedMCQA-style probe's step: accuracy (with the letter baselines), the gold option's scores, per item."""
    def step(s: Scoring) -> dict | None:
        rows = s.suite.medmcqa[s.split] if name == "medmcqa" else s.suite.acquisition
        if not rows:
            return None
        if s.dev_subset:
            rows = rows[: s.dev_subset[name]]
        r = medmcqa_accuracy(s.model, s.tok, rows, s.progress, batch_size=s.p.eval_batch)
        metrics = {f"{prefix}_acc": r["acc"]}
        if with_letters:
            metrics.update({f"{prefix}_letter_acc": r["letter_acc"], f"{prefix}_majority_acc": r["majority_acc"],
                            f"{prefix}_always_a_acc": r["always_a_acc"]})
        metrics.update({f"{prefix}_gold_loglik": r["gold_loglik"], f"{prefix}_gold_margin": r["gold_margin"],
                        f"{prefix}_gold_prob": r["gold_prob"]})
        items = {f"{prefix}_correct": [i["correct"] for i in r["items"]]}
        if with_letters:
            metrics[f"{prefix}_n"] = r["n"]
            items[f"{prefix}_pred"] = [i["pred"] for i in r["items"]]
        items.update(option_items(prefix, r["items"]))
        timings = {f"{prefix}_s": r["seconds"], **({f"{prefix}_tokens": r["tokens"]} if with_letters else {})}
        return {"metrics": metrics, "items": items, "timings": timings}
    return step


def _drift_step(s: Scoring, name: str, spans: list) -> dict:
    """The drift of ``name``'s spans from the base model (top-k KL), and for chat the replies' log-likelihood;
    with ``exact_model``, also the top-k KL against the exact one on the first spans."""
    if not spans:
        return {"metrics": {}, "items": {}, "timings": {}}
    ref = s.reference.get(f"{name}-{s.split}", s.base_model, spans)
    t0 = time.perf_counter()
    on_gpu = next(s.model.parameters()).device.type == "cuda"  # CPU: one item per forward, no padding
    d = drift(s.model, spans, ref, batch_size=max(1, s.p.eval_batch // 4) if on_gpu else 1, progress=s.progress)
    metrics, items = {f"{name}_drift_kl": d["kl"]}, {f"{name}_drift_kl": [round(i["kl"], 7) for i in d["items"]]}
    if name == "chat":
        metrics["chat_loglik"] = d["loglik"]
        items["chat_loglik"] = [round(i["loglik"], 6) for i in d["items"]]
    timings = {f"{name}_drift_s": time.perf_counter() - t0}
    if s.exact_model is not None and s.exact_n:
        e = drift(s.model, spans[: s.exact_n], ref[: s.exact_n], batch_size=1, exact_reference=s.exact_model,
                  progress=False)
        approx, exact = sum(i["kl"] for i in e["items"]), sum(i["kl_exact"] for i in e["items"])
        metrics[f"{name}_drift_kl_topk_vs_exact"] = approx / exact if exact > 0 else 1.0
    return {"metrics": metrics, "items": items, "timings": timings}


def _wikitext_step(s: Scoring) -> dict:
    """Drift on WikiText windows and, on every item, sliding-window perplexity."""
    wiki, _ = drift_spans(s.tok, s.suite, s.split, s.dev_subset, chat=False)
    out = _drift_step(s, "wikitext", wiki)
    text = s.suite.wikitext[s.split][0] if s.report and s.suite.wikitext[s.split] else None
    if text:
        ppl = perplexity(s.model, s.tok, text, progress=s.progress, first_window=s.p.ppl_first_window)
        out["metrics"].update(wikitext_ppl=ppl["ppl"], wikitext_tokens=ppl["tokens"])
        out["items"].update(wikitext_window_nll=[round(w["nll"], 4) for w in ppl["windows"]],
                            wikitext_window_tokens=[w["tokens"] for w in ppl["windows"]])
        out["timings"]["wikitext_s"] = ppl["seconds"]
    return out


def _chat_step(s: Scoring) -> dict:
    """Drift and log-likelihood on held-out chat replies."""
    _, chat = drift_spans(s.tok, s.suite, s.split, s.dev_subset, wikitext=False)
    return _drift_step(s, "chat", chat)


def _triviaqa_step(s: Scoring) -> dict | None:
    """Greedy TriviaQA answers and the gold alias's log-likelihood (every item only: not along trajectories)."""
    rows = s.suite.triviaqa[s.split]
    if not s.report or not rows:
        return None
    r = triviaqa_accuracy(s.model, s.tok, rows, batch_size=s.p.eval_batch, progress=s.progress)
    return {"metrics": {"triviaqa_acc": r["acc"], "triviaqa_em": r["em"], "triviaqa_alias_loglik": r["alias_loglik"]},
            "items": {"triviaqa_correct": [i["correct"] for i in r["items"]],
                      "triviaqa_em": [i["em"] for i in r["items"]],
                      "triviaqa_alias_loglik": [round(i["alias_loglik"], 6) for i in r["items"]],
                      "triviaqa_outputs": [i["output"] for i in r["items"]]},
            "timings": {"triviaqa_s": r["seconds"]}}


#: The built-in probes' steps (named by :data:`smf_lib.probes.PROBES`).
medmcqa_step = _choice_step("medmcqa", "medmcqa", True)
acquisition_step = _choice_step("acquisition", "acquisition", False)
wikitext_step, chat_step, triviaqa_step = _wikitext_step, _chat_step, _triviaqa_step


def probe_function(name: str, probe) -> Callable:
    """A registered probe's ``evaluate`` function (a ``"module:function"`` path imported)."""
    if callable(probe.evaluate):
        return probe.evaluate
    try:
        return pkgutil.resolve_name(probe.evaluate)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"probe {name!r}: cannot import its evaluate function {probe.evaluate!r} ({e}); register "
                         "it with Probe(evaluate=a function, ...) or a 'module:function' path that imports") from None


def evaluate(model, tok, p, suite: Suite, reference: Reference, kind: str = "report", base_model=None,
             progress: bool = True, exact_model=None, exact_n: int = 8) -> dict:
    """Score ``model`` on the suite: every probe of :data:`smf_lib.probes.PROBES`, in the registry's order.

    Args:
        kind: ``"report"`` (every probe on the preset's ``evaluate_on`` split) or ``"trajectory"`` (the dev subset
            of ``p.dev_subset``: MedMCQA dev, acquisition, drift and chat retention; for trajectories and sweeps).
            The names of older versions, ``"full"`` and ``"cheap"``, are read as these.
        base_model: the base model, needed only while the drift reference is not cached yet (pass ``model``
            itself when scoring the base).
        exact_model: the base model; when given, the exact KL is also computed on the first ``exact_n`` drift
            items of each kind, to measure what the top-k cache leaves out (``*_drift_kl_topk_vs_exact``).

    Each probe is scored by its registered ``evaluate`` function, called with this call's :class:`Scoring` and
    returning ``{"metrics": ..., "items": ...}`` (or None when it has nothing to score on this kind).

    Returns:
        ``{"metrics": {...}, "items": {...}, "timings": {...}}``; every item list is in a fixed order, so two
        runs' lists pair item by item.
    """
    subset = p.dev_subset if evaluation_kind(kind) == TRAJECTORY else None
    s = Scoring(model, tok, p, suite, reference, "dev" if subset else p.evaluate_on, subset, progress, base_model,
                exact_model, exact_n)
    metrics, items, timings = {}, {}, {}
    torch.manual_seed(0)
    for name, probe in PROBES.items():
        out = probe_function(name, probe)(s)
        if out:
            metrics.update(out["metrics"])
            items.update(out["items"])
            timings.update(out.get("timings", {}))
    return {"metrics": metrics, "items": items, "timings": timings}
