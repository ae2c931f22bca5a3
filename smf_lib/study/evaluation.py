"""The probe suite of a preset: which items each probe scores, the cached base side of the drift probe, and one
call that scores a model on the full suite or on the cheap dev subset used along training trajectories.

Items are split so that nothing is chosen on reported items: every probe has reported items and, after them, a
disjoint dev split. The held-out chat replies are the last OASST1 validation replies; the retrofit corpus and
the background statistics never see them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .. import data as D
from ..files import verify_checked, write_checked
from ..probes import chat_items, drift, medmcqa_accuracy, perplexity, reference_topk, text_windows, triviaqa_accuracy
from ..fingerprints import items_fingerprint, texts_fingerprint


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
        return D.load_background(n, root)
    parts = {"oasst1-validation": ["validation"], "oasst1-train": ["train"],
             "oasst1-both": ["validation", "train"]}.get(which)
    if parts is None:
        raise ValueError(f"unknown corpus {which!r}; allowed: wikipedia, oasst1-validation, oasst1-train, oasst1-both")
    texts = []
    for s in parts:
        part = D.load_oasst1_replies(s, root=root)
        if s == "validation" and heldout_chat_count(p):
            part = part[: len(part) - heldout_chat_count(p)]
        texts += part
    return D.take(texts, n, f"the {which} corpus (held-out chat replies excluded)")


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
        return out


def build_suite(p, task_questions: list[dict]) -> Suite:
    """Load the preset's probe items (reported first, dev after them)."""
    root = data_root(p)
    val = D.load_medmcqa("validation", p.medmcqa_n + p.medmcqa_dev_n, root=root)
    tqa = D.load_triviaqa(p.triviaqa_n + p.triviaqa_dev_n, root)
    lines = D.load_wikitext_lines(p.wikitext_lines + p.wikitext_dev_lines, root, raw=p.wikitext_raw)
    pairs = D.load_oasst1_pairs(root=root, pool=p.chat_pool)
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


def drift_spans(tok, suite: Suite, split: str, cheap: dict | None):
    """The drift probe's scored spans: WikiText windows and chat replies of a split (the cheap subset's sizes
    when ``cheap`` is given)."""
    wiki = [w for text in suite.wikitext[split] for w in text_windows(tok, text)]
    chat = chat_items(tok, suite.chat[split]) if suite.chat[split] else []
    if cheap is not None:
        wiki, chat = wiki[: cheap.get("wikitext_windows", 4)], chat[: cheap.get("chat", 32)]
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


def evaluate(model, tok, p, suite: Suite, reference: Reference, kind: str = "full", base_model=None,
             progress: bool = True, exact_model=None, exact_n: int = 8) -> dict:
    """Score ``model`` on the suite.

    Args:
        kind: ``"full"`` (every probe on the preset's ``evaluate_on`` split) or ``"cheap"`` (the dev subset of
            ``p.cheap``: MedMCQA dev, acquisition, drift and chat retention; for trajectories and sweeps).
        base_model: the base model, needed only while the drift reference is not cached yet (pass ``model``
            itself when scoring the base).
        exact_model: the base model; when given, the exact KL is also computed on the first ``exact_n`` drift
            items of each kind, to measure what the top-k cache leaves out (``*_drift_kl_topk_vs_exact``).

    Returns:
        ``{"metrics": {...}, "items": {...}, "timings": {...}}``; every item list is in a fixed order, so two
        runs' lists pair item by item.
    """
    split = "dev" if kind == "cheap" else p.evaluate_on
    cheap = p.cheap if kind == "cheap" else None
    metrics, items, timings = {}, {}, {}
    torch.manual_seed(0)
    med_rows = suite.medmcqa[split][: cheap["medmcqa"]] if cheap else suite.medmcqa[split]
    med = medmcqa_accuracy(model, tok, med_rows, progress, batch_size=p.eval_batch)
    metrics.update(medmcqa_acc=med["acc"], medmcqa_letter_acc=med["letter_acc"],
                   medmcqa_majority_acc=med["majority_acc"], medmcqa_always_a_acc=med["always_a_acc"],
                   medmcqa_gold_loglik=med["gold_loglik"], medmcqa_gold_margin=med["gold_margin"],
                   medmcqa_gold_prob=med["gold_prob"], medmcqa_n=med["n"])
    items.update(medmcqa_correct=[i["correct"] for i in med["items"]], medmcqa_pred=[i["pred"] for i in med["items"]],
                 **option_items("medmcqa", med["items"]))
    timings["medmcqa_s"], timings["medmcqa_tokens"] = med["seconds"], med["tokens"]
    if suite.acquisition:
        acq_rows = suite.acquisition[: cheap["acquisition"]] if cheap else suite.acquisition
        acq = medmcqa_accuracy(model, tok, acq_rows, progress, batch_size=p.eval_batch)
        metrics.update(acquisition_acc=acq["acc"], acquisition_gold_loglik=acq["gold_loglik"],
                       acquisition_gold_margin=acq["gold_margin"], acquisition_gold_prob=acq["gold_prob"])
        items.update(acquisition_correct=[i["correct"] for i in acq["items"]],
                     **option_items("acquisition", acq["items"]))
        timings["acquisition_s"] = acq["seconds"]
    wiki, chat = drift_spans(tok, suite, split, cheap)
    for name, spans in (("wikitext", wiki), ("chat", chat)):
        if not spans:
            continue
        ref = reference.get(f"{name}-{split}", base_model, spans)
        t0 = time.perf_counter()
        on_gpu = next(model.parameters()).device.type == "cuda"  # CPU: one item per forward, no padding
        d = drift(model, spans, ref, batch_size=max(1, p.eval_batch // 4) if on_gpu else 1, progress=progress)
        metrics[f"{name}_drift_kl"] = d["kl"]
        items[f"{name}_drift_kl"] = [round(i["kl"], 7) for i in d["items"]]
        if name == "chat":
            metrics["chat_loglik"] = d["loglik"]
            items["chat_loglik"] = [round(i["loglik"], 6) for i in d["items"]]
        timings[f"{name}_drift_s"] = time.perf_counter() - t0
        if exact_model is not None and exact_n:
            e = drift(model, spans[:exact_n], ref[:exact_n], batch_size=1, exact_reference=exact_model,
                      progress=False)
            approx, exact = sum(i["kl"] for i in e["items"]), sum(i["kl_exact"] for i in e["items"])
            metrics[f"{name}_drift_kl_topk_vs_exact"] = approx / exact if exact > 0 else 1.0
    if kind == "full":
        text = suite.wikitext[split][0] if suite.wikitext[split] else None
        if text:
            ppl = perplexity(model, tok, text, progress=progress, first_window=p.ppl_first_window)
            metrics.update(wikitext_ppl=ppl["ppl"], wikitext_tokens=ppl["tokens"])
            items.update(wikitext_window_nll=[round(w["nll"], 4) for w in ppl["windows"]],
                         wikitext_window_tokens=[w["tokens"] for w in ppl["windows"]])
            timings["wikitext_s"] = ppl["seconds"]
        if suite.triviaqa[split]:
            tqa = triviaqa_accuracy(model, tok, suite.triviaqa[split], batch_size=p.eval_batch, progress=progress)
            metrics.update(triviaqa_acc=tqa["acc"], triviaqa_em=tqa["em"], triviaqa_alias_loglik=tqa["alias_loglik"])
            items.update(triviaqa_correct=[i["correct"] for i in tqa["items"]],
                         triviaqa_em=[i["em"] for i in tqa["items"]],
                         triviaqa_alias_loglik=[round(i["alias_loglik"], 6) for i in tqa["items"]],
                         triviaqa_outputs=[i["output"] for i in tqa["items"]])
            timings["triviaqa_s"] = tqa["seconds"]
    return {"metrics": metrics, "items": items, "timings": timings}
