"""The paper's protocol as settings, and where a preset departs from it: ``python -m smf_lib protocol --preset NAME``
prints the table, and ``--update-doc docs/METHOD.md`` rewrites the copy there (a test keeps them equal)."""

from __future__ import annotations

from ..models import PAPER_MODEL
from .preset_spec import Preset
from .tables import count, markdown_table, with_separators


#: What the paper's code does (METHOD.md sections 3-6), in the terms of :func:`protocol_settings`.
PAPER_PROTOCOL = {
    "model": PAPER_MODEL,
    "model dtype": "bfloat16",
    "memory dtype": "float32",
    "evaluation dtype": "bfloat16",
    "full finetuning precision": "bfloat16 weights and AdamW state",
    "memory layers": (6, 12, 18),
    "memory slots per layer": 16384,
    "memory heads x knn x k_dim": "4 x 16 x 256",
    "memory init": "paper",
    "retrofit corpus": "oasst1-train",
    "retrofit texts": 50000,
    "retrofit epochs": 2,
    "retrofit rate": 5e-4,
    "retrofit addressing": "train",
    "retrofit value gradients": "dense",
    "baselines start from": "the base model",
    "background statistics": "oasst1-train, 2000",
    "MedMCQA training questions": 60000,
    "MedMCQA training sample": "shuffle",
    "task epochs": 3,
    "batch (micro x accumulation)": "4 x 4",
    "max length": 1024,
    "warm-up steps": 100,
    "warm-up schedule": "paper",
    "loss average": "step-tokens",
    "top-t": 512,
    "SMF update of the paper's variants": "paper",
    "reads counted at padding": True,
    "selection per micro-batch": True,
    "deterministic ties": False,
    "SMF rate (paper's update)": 5e-4,
    "update and rate of SMF-KL / SMF-TF-IDF": "paper, 0.0005",
    "LoRA r / alpha / dropout": "16 / 32 / 0.05",
    "LoRA rate": 2e-4,
    "full finetuning rate": 5e-5,
    "MedMCQA items": 1000,
    "TriviaQA items": 1000,
    "WikiText lines": 1000,
    "WikiText text": "wikitext-103-v1 (non-raw)",
    "first perplexity window": "paper",
    "data source": "Hugging Face Hub",
}


def _grid_smf(p: Preset) -> str:
    """The update rule and rate of the preset's SMF-KL and SMF-TF-IDF arms (one value when they agree). The paper's
    value when the grid runs neither, or runs the paper's own variants of both selectors (``paper``): its SMF is
    then those variants (the rows above), and the project's arms are extras beside them."""
    arms = [a for a in ("smf-kl", "smf-tfidf") if a in p.methods]
    if not arms or {"smf-kl-paper", "smf-tfidf-paper"} <= set(p.methods):
        return PAPER_PROTOCOL["update and rate of SMF-KL / SMF-TF-IDF"]
    values = [f"{p.train_config(a, 0).update}, {r if isinstance(r, str) else f'{r:g}'}"
              for a, r in ((a, _rate(p, a)) for a in arms)]
    return values[0] if len(set(values)) == 1 else " / ".join(values)


def _baselines_start(p: Preset) -> str:
    """Where the preset's LoRA and full finetuning start: the base model (the paper's), the retrofitted model with
    its memory frozen in place (``lora-mem``, ``full-mem``), or both."""
    same = any(m in p.methods for m in ("lora-mem", "full-mem"))
    base = any(m in p.methods for m in ("lora", "full"))
    if same and base:
        return "the retrofitted model (memory frozen), and the base model"
    return "the retrofitted model (memory frozen)" if same else "the base model"


def _rate(p: Preset, arm: str) -> str | float:
    """An arm's grid rate, or what says it is still to be chosen."""
    return "chosen on dev items" if p.rate_to_choose(arm, 0) else p.train_config(arm, 0).lr


def protocol_settings(p: Preset) -> dict:
    """A preset's values of the settings in ``PAPER_PROTOCOL``."""
    smf = p.train_config("smf-kl-paper", 0)
    lora = p.train_config("lora", 0)
    retrofit = p.retrofit_config(0).retrofit
    m = p.memory
    full_precision = ("bfloat16 weights and AdamW state" if p.dtype == "bfloat16"
                      else f"{p.dtype} weights and AdamW state")
    data = {"fixtures": "packaged fixtures", "hub": "Hugging Face Hub"}.get(
        p.data, "Hugging Face Hub, or the local copy SMF_DATA_DIR names")
    return {
        "model": p.model,
        "model dtype": p.dtype,
        "memory dtype": p.memory_dtype or p.dtype,
        "evaluation dtype": p.eval_dtype or p.dtype,
        "full finetuning precision": full_precision,
        "memory layers": tuple(m.get("layers", ())),
        "memory slots per layer": m.get("n_keys", 0) ** 2,
        "memory heads x knn x k_dim": f"{m.get('heads')} x {m.get('knn')} x {m.get('k_dim')}",
        "memory init": m.get("init", "zero"),
        "retrofit corpus": p.retrofit_corpus,
        "retrofit texts": p.retrofit_n,
        "retrofit epochs": p.retrofit_config(0).epochs,
        "retrofit rate": p.retrofit_config(0).lr,
        "retrofit addressing": retrofit.addressing,
        "retrofit value gradients": "row-sparse, lazy row-wise Adam" if retrofit.sparse_values else "dense",
        "baselines start from": _baselines_start(p),
        "background statistics": f"{p.background_corpus}, {p.background_n}",
        "MedMCQA training questions": p.train_n,
        "MedMCQA training sample": p.train_sample,
        "task epochs": smf.epochs,
        "batch (micro x accumulation)": f"{smf.micro_batch} x {smf.grad_accum}",
        "max length": smf.max_length,
        "warm-up steps": smf.warmup_steps,
        "warm-up schedule": smf.schedule,
        "loss average": smf.loss_average,
        "top-t": smf.top_t,
        "SMF update of the paper's variants": smf.update,
        "reads counted at padding": smf.count_padding,
        "selection per micro-batch": smf.select_per_microbatch,
        "deterministic ties": smf.deterministic_ties,
        "SMF rate (paper's update)": smf.lr,
        "update and rate of SMF-KL / SMF-TF-IDF": _grid_smf(p),
        "LoRA r / alpha / dropout": f"{lora.lora.r} / {lora.lora.alpha} / {lora.lora.dropout:g}",
        "LoRA rate": _rate(p, "lora"),
        "full finetuning rate": _rate(p, "full"),
        "MedMCQA items": p.medmcqa_n,
        "TriviaQA items": p.triviaqa_n,
        "WikiText lines": p.wikitext_lines,
        "WikiText text": "wikitext-103-raw-v1 (raw)" if p.wikitext_raw else "wikitext-103-v1 (non-raw)",
        "first perplexity window": p.ppl_first_window,
        "data source": data,
    }


def protocol_table(p: Preset):
    """The settings where preset ``p`` departs from the paper's protocol, with the paper's value, the preset's
    and the reason (from ``p.departures``) for each.

    Returns:
        A pandas DataFrame with columns setting, paper, preset, why.
    """
    import pandas as pd

    def shown(v) -> str:  # counts with separators (one formatter for every table)
        return count(v) if isinstance(v, int) and not isinstance(v, bool) else with_separators(str(v))

    ours = protocol_settings(p)
    rows = [{"setting": k, "paper's code": shown(v), "this preset": shown(ours[k]), "why": p.departures.get(k, "")}
            for k, v in PAPER_PROTOCOL.items() if ours[k] != v]
    return pd.DataFrame(rows, columns=["setting", "paper's code", "this preset", "why"])


def protocol_markdown(p: Preset) -> str:
    """The departures table of preset ``p`` as the Markdown that docs/METHOD.md and the book show."""
    table = protocol_table(p)
    if not len(table):
        return f"The `{p.name}` preset follows the paper's protocol in every setting smf_lib records."
    return markdown_table(table)


def replace_block(text: str, name: str, block: str) -> str:
    """``text`` with the lines between ``<!-- protocol:NAME -->`` and ``<!-- /protocol:NAME -->`` replaced."""
    start, end = f"<!-- protocol:{name} -->", f"<!-- /protocol:{name} -->"
    if start not in text or end not in text:
        raise ValueError(f"no {start} ... {end} markers in the file: add them where the table belongs")
    head, rest = text.split(start, 1)
    return head + start + "\n" + block + "\n" + end + rest.split(end, 1)[1]
