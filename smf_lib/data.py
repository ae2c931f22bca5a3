"""MedMCQA, WikiText, TriviaQA, OASST1 and background text: loaders and the paper's text formats.

Two sources behind one call: a local folder (``SMF_DATA_DIR`` or the ``data_dir`` argument) in the layout that
``python -m smf_lib data --to DIR`` writes (:data:`smf_lib.fetch.LAYOUT`), else the Hugging Face Hub through
``datasets``. The project's offline copies depart from the paper in places (2,650 MedMCQA train rows; TriviaQA
unfiltered validation): every result that uses them says so.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path

LETTERS = "ABCD"
MEDMCQA_FIELDS = ("question", "opa", "opb", "opc", "opd", "cop")
HUB = {"medmcqa": "openlifescienceai/medmcqa", "wikitext": ("Salesforce/wikitext", "wikitext-103-raw-v1"),
       "wikitext-nonraw": ("Salesforce/wikitext", "wikitext-103-v1"),
       "triviaqa": ("mandarjoshi/trivia_qa", "rc.nocontext"), "oasst1": "OpenAssistant/oasst1"}


def data_dir(path: str | Path | None = None) -> Path | None:
    """The local data folder: ``path``, else ``$SMF_DATA_DIR``, else ``None`` (use the Hub). ``path="hub"``
    always means the Hub, whatever ``$SMF_DATA_DIR`` says."""
    if path == "hub":
        return None
    path = path or os.environ.get("SMF_DATA_DIR")
    if not path:
        return None
    p = Path(path)
    if p.is_file():
        raise NotADirectoryError(f"the data folder {p} is a file, not a folder: point SMF_DATA_DIR (or data=) at the "
                                 "folder that holds medmcqa/, oasst1/, ... (`python -m smf_lib data --to DIR` writes "
                                 "one)")
    if not p.is_dir():
        raise FileNotFoundError(f"data folder {p} does not exist: `python -m smf_lib data --to {p}` fetches the data "
                                "sets there, or unset SMF_DATA_DIR to load from the Hugging Face Hub")
    return p


def _local_file(root: Path, rel: str) -> Path:
    f = root / rel
    if not f.exists():
        raise FileNotFoundError(f"no {rel} in {root}: `python -m smf_lib data --to {root}` fetches it, or point "
                                "SMF_DATA_DIR elsewhere, or unset SMF_DATA_DIR to load from the Hub")
    return f


def read_text(path: Path) -> str:
    """A UTF-8 text file; other bytes raise an error naming the file and line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text ({err.reason}); re-encode the file as UTF-8") from err


def read_jsonl(path: Path, required: tuple[str, ...] = (), limit: int | None = None, check=None) -> list[dict]:
    """Rows of a .jsonl or .jsonl.gz file; a malformed row or a damaged compressed file raises naming the file,
    line and remedy."""
    try:
        return _read_jsonl(path, required, limit, check)
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise ValueError(f"{path}: the compressed file is damaged or cut short ({err}); fetch it again "
                         f"(`python -m smf_lib data --to {path.parent.parent}`)") from err


def _read_jsonl(path: Path, required: tuple[str, ...], limit: int | None, check) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}:{n}: not UTF-8 text ({err.reason} at byte {err.start} of the line); "
                                 "re-encode the file as UTF-8") from err
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not valid JSON ({err.msg}); fix or remove that line") from err
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: each line must be a JSON object, got {type(row).__name__}")
            missing = [k for k in required if row.get(k) is None]
            if missing:
                raise ValueError(f"{path}:{n}: missing field(s) {missing}; each row needs {list(required)}")
            problem = check(row) if check is not None else None
            if problem:
                raise ValueError(f"{path}:{n}: {problem}")
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    return rows


def _hub(name: str, split: str):
    try:
        from datasets import load_dataset

        spec = HUB[name]
        args = spec if isinstance(spec, tuple) else (spec,)
        return load_dataset(*args, split=split)
    except Exception as err:  # network, missing dataset, ...
        raise RuntimeError(f"could not load {name} ({split}) from the Hugging Face Hub ({err}): go online, or set "
                           "SMF_DATA_DIR to a local copy (`python -m smf_lib data --to DIR` writes one)") from err


def take(rows: list, n: int | None, source: str) -> list:
    """The first ``n`` rows of ``source`` (all with ``n=None``). An empty source, or one with fewer rows than
    asked, raises naming it and both counts, so a cut-short file is never used silently."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ValueError(f"n must be a whole number >= 0 or None, got {n!r}")
    if not rows:
        raise ValueError(f"{source} holds no usable rows: fetch the data again (`python -m smf_lib data --to DIR`, "
                         "then SMF_DATA_DIR=DIR)")
    if n is not None and len(rows) < n:
        raise ValueError(f"{source} has {len(rows)} usable rows but {n} were asked: ask for fewer, or fetch the "
                         "complete data (`python -m smf_lib data --to DIR`, then SMF_DATA_DIR=DIR)")
    return rows[:n] if n is not None else list(rows)


def _source(local: Path | None, rel: str, hub: str) -> str:
    return str(local / rel) if local is not None else f"the Hub's {hub}"


def sample_rows(rows: list, n: int | None, how: str = "first", seed: int = 0) -> list:
    """``n`` rows: the first ones in file order (``"first"``), or, as the paper's code takes its training set,
    ``shuffle(seed).select(range(n))`` (``"shuffle"``: numpy's ``default_rng(seed).permutation``, as
    ``datasets.Dataset.shuffle`` draws it), a different sample for each seed."""
    if how == "first":
        return rows[:n] if n is not None else list(rows)
    if how != "shuffle":
        raise ValueError(f"unknown sampling {how!r}; allowed: first, shuffle")
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(rows))
    return [rows[i] for i in order[: n if n is not None else len(rows)]]


def load_medmcqa(split: str = "validation", n: int | None = None, single_choice: bool = True,
                 root: str | Path | None = None) -> list[dict]:
    """MedMCQA rows (HF schema) in file order.

    Args:
        split: ``"train"`` or ``"validation"``.
        n: keep the first n rows (after filtering).
        single_choice: keep only ``choice_type == "single"`` rows where the field is present (the local
            copies have no choice_type, so nothing can be filtered there).
        root: local data folder (default ``$SMF_DATA_DIR``; ``None`` and no variable: the Hub).
    """
    if split not in ("train", "validation"):
        raise ValueError(f"unknown MedMCQA split {split!r}; allowed: train, validation")
    local = data_dir(root)
    if local is not None:
        rows = read_jsonl(_local_file(local, f"medmcqa/{split}.jsonl"), MEDMCQA_FIELDS, check=_check_cop)
    else:
        rows = [dict(r) for r in _hub("medmcqa", split)]
        for i, r in enumerate(rows):
            if _check_cop(r):
                raise ValueError(f"MedMCQA {split} (Hub) row {i}: {_check_cop(r)}")
    if single_choice:
        rows = [r for r in rows if r.get("choice_type") in (None, "single")]
    return take(rows, n, _source(local, f"medmcqa/{split}.jsonl", f"MedMCQA {split}"))


def _check_cop(row: dict) -> str | None:
    cop = row["cop"]
    if isinstance(cop, bool) or not isinstance(cop, int) or cop not in range(4):
        return f"cop must be an integer 0-3 (the gold option), got {cop!r}"
    return None


def medmcqa_prompt(row: dict) -> str:
    """The paper's prompt (no chat template)."""
    return (f"Medical exam question:\nQuestion: {row['question']}\nA. {row['opa']}\nB. {row['opb']}\n"
            f"C. {row['opc']}\nD. {row['opd']}\nAnswer:")


def medmcqa_options(row: dict) -> list[str]:
    """The four scored continuations `` {L}. {option text}``."""
    return [f" {L}. {row['op' + L.lower()]}" for L in LETTERS]


def medmcqa_training_text(row: dict) -> str:
    """Prompt + gold continuation, plus ``\\nExplanation: {exp}`` when present; the loss covers all of it."""
    text = medmcqa_prompt(row) + medmcqa_options(row)[int(row["cop"])]
    exp = (row.get("exp") or "").strip()
    if exp:
        text += f"\nExplanation: {exp}"
    return text


def load_wikitext_lines(n: int | None = None, root: str | Path | None = None, raw: bool = True) -> list[str]:
    """The first n non-empty lines of the WikiText-103 (= WikiText-2) test text, stripped.

    Args:
        raw: the raw text (``wikitext-103-raw-v1``), or the non-raw ``wikitext-103-v1`` the paper evaluates on,
            where rare words are ``<unk>`` (only from the Hub: the local copy is the raw text).
    """
    local = data_dir(root)
    if local is not None:
        if not raw:
            raise ValueError(f"the non-raw WikiText (wikitext-103-v1) is not in {local}, which holds the raw text; "
                             "load it from the Hub (unset SMF_DATA_DIR) or use the raw text")
        lines = read_text(_local_file(local, "wikitext/wiki.test.raw")).split("\n")
    else:
        lines = _hub("wikitext" if raw else "wikitext-nonraw", "test")["text"]
    lines = [s.strip() for s in lines if s.strip()]
    return take(lines, n, _source(local, "wikitext/wiki.test.raw", "WikiText-103 test"))


def wikitext_text(n: int | None = None, root: str | Path | None = None, raw: bool = True) -> str:
    """The perplexity probe's text: the lines joined with blank lines."""
    return "\n\n".join(load_wikitext_lines(n, root, raw))


def load_triviaqa(n: int | None = None, root: str | Path | None = None) -> list[dict]:
    """TriviaQA validation questions as ``{"question", "aliases"}`` in file order.

    Locally the unfiltered validation set (a superset of rc.nocontext validation); online rc.nocontext.
    """
    local = data_dir(root)
    if local is not None:
        rows = read_jsonl(_local_file(local, "triviaqa/validation.jsonl"), ("question", "answer"), limit=n)
    else:
        ds = _hub("triviaqa", "validation")
        rows = [ds[i] for i in range(min(n or len(ds), len(ds)))]
    out = []
    for i, r in enumerate(rows):
        aliases = r["answer"].get("aliases") or ([r["answer"]["value"]] if r["answer"].get("value") else [])
        if not aliases:
            raise ValueError(f"TriviaQA validation row {i}: no answer aliases; each row needs answer.aliases")
        out.append({"question": r["question"], "aliases": list(aliases)})
    return take(out, n, _source(local, "triviaqa/validation.jsonl", "TriviaQA validation"))


def triviaqa_prompt(row: dict) -> str:
    """The paper's prompt."""
    return f"Question: {row['question']}\nAnswer:"


def load_oasst1_replies(which: str = "validation", n: int | None = None, root: str | Path | None = None) -> list[str]:
    """English OASST1 assistant replies of rank 0/1 with >= 50 characters (the paper's retrofit corpus).

    Args:
        which: ``"validation"`` (808 replies, the paper's exact filter) or ``"train"`` (locally: replies whose role
            was inferred, ~98% precision; online: the exact filter on the train split).
    """
    if which not in ("validation", "train"):
        raise ValueError(f"unknown OASST1 split {which!r}; allowed: validation, train")
    local = data_dir(root)
    if local is not None:
        rel = {"validation": "oasst1/validation_assistant.jsonl",
               "train": "oasst1/train_assistant_inferred.jsonl.gz"}[which]
        texts = [r["text"] for r in read_jsonl(_local_file(local, rel), ("text",))]
    else:
        texts = [r["text"] for r in _hub("oasst1", which)
                 if r["role"] == "assistant" and r["lang"] == "en" and r["rank"] in (0, 1)]
    texts = [t for t in texts if len(t) >= 50]
    rel = {"validation": "oasst1/validation_assistant.jsonl", "train": "oasst1/train_assistant_inferred.jsonl.gz"}
    return take(texts, n, _source(local, rel[which], f"OASST1 {which}"))


def load_oasst1_pairs(n: int | None = None, root: str | Path | None = None,
                      pool: str = "paper") -> list[tuple[str, str]]:
    """(prompt, reply) pairs of OASST1 English validation replies, each with the prompter message it answers, for
    scoring replies in a chat template.

    Args:
        pool: ``"paper"`` (the replies of :func:`load_oasst1_replies`, rank 0/1, in the same order: 808 offline) or
            ``"all"`` (every English assistant reply of >= 50 characters that answers a prompter message, any rank:
            1,174 offline), for a chat probe with the power to resolve small changes.
    """
    if pool not in ("paper", "all"):
        raise ValueError(f"unknown OASST1 pool {pool!r}; allowed: paper, all")
    local = data_dir(root)
    if local is not None:
        msgs = read_jsonl(_local_file(local, "oasst1/validation_messages.jsonl"), ("message_id", "text"))
        replies = (read_jsonl(_local_file(local, "oasst1/validation_assistant.jsonl"), ("text", "parent_id"))
                   if pool == "paper" else None)
    else:
        msgs = [dict(r) for r in _hub("oasst1", "validation")]
        replies = [r for r in msgs if r["role"] == "assistant" and r["lang"] == "en" and r["rank"] in (0, 1)] \
            if pool == "paper" else None
    if replies is None:
        role = {m["message_id"]: m.get("role") for m in msgs}
        replies = [m for m in msgs if m.get("role") == "assistant" and m.get("lang", "en") == "en"
                   and role.get(m.get("parent_id")) == "prompter"]
    text = {m["message_id"]: m["text"] for m in msgs}
    pairs = [(text[r["parent_id"]], r["text"]) for r in replies if len(r["text"]) >= 50 and r["parent_id"] in text]
    return take(pairs, n, _source(local, "oasst1/validation_messages.jsonl", "OASST1 validation"))


def load_background(n: int | None = None, root: str | Path | None = None,
                    drop_wikitext_overlap: bool = True) -> list[str]:
    """General text for background statistics: Wikipedia lead paragraphs (locally), one per line.

    ``drop_wikitext_overlap`` drops the four articles that also occur in the WikiText test set.
    Online (no local folder) the paper's choice, OASST1 train replies, is used instead.
    """
    local = data_dir(root)
    if local is None:
        return load_oasst1_replies("train", n)
    lines = [s for s in read_text(_local_file(local, "background/wikipedia_vital_leads.txt")).split("\n")
             if s.strip()]
    if drop_wikitext_overlap:
        overlap = ("Du Fu", "Olmec colossal heads", "Nero", "Manila")
        lines = [s for s in lines if not any(s.startswith(t + " ") or s.startswith(t + ",") for t in overlap)]
    return take(lines, n, _source(local, "background/wikipedia_vital_leads.txt", "background"))
