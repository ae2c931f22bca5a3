"""Fetch the data sets from the Hugging Face Hub into the local layout the loaders read offline
(``python -m smf_lib data --to DIR``, then ``SMF_DATA_DIR=DIR``)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from .data import _hub
from .files import atomic_write

#: The local layout, file by file (what :func:`fetch_data` writes and the loaders read).
LAYOUT = {
    "medmcqa/train.jsonl": "MedMCQA train questions (HF schema)",
    "medmcqa/validation.jsonl": "MedMCQA validation questions (HF schema)",
    "wikitext/wiki.test.raw": "WikiText-103 raw test text",
    "triviaqa/validation.jsonl": "TriviaQA rc.nocontext validation: {question, answer: {aliases, ...}}",
    "oasst1/validation_assistant.jsonl": "OASST1 English assistant replies, rank 0/1, >= 50 characters",
    "oasst1/validation_messages.jsonl": "OASST1 English validation messages (the replies' prompts)",
    "oasst1/train_assistant_inferred.jsonl.gz": "OASST1 English assistant replies of the train split, rank 0/1",
    "background/wikipedia_vital_leads.txt": "general text, one paragraph per line (from the Hub: OASST1 train "
                                            "replies, the paper's background corpus, one per line)",
}


def fetch_data(to: str | Path, progress: bool = True) -> Path:
    """Fetch the data sets from the Hugging Face Hub into the local layout (:data:`LAYOUT`), so later runs work
    offline with ``SMF_DATA_DIR=to``. Files already there are kept; each file is written atomically.

    Returns:
        The folder.
    """
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)

    def jsonl(rows) -> bytes:
        return "".join(json.dumps(dict(r), ensure_ascii=False, default=str) + "\n" for r in rows).encode()

    def write(rel: str, make):
        path = to / rel
        if path.exists():
            return
        if progress:
            print(f"{rel}: {LAYOUT[rel]}")
        data = make()
        atomic_write(path, gzip.compress(data) if rel.endswith(".gz") else data)

    write("medmcqa/train.jsonl", lambda: jsonl(_hub("medmcqa", "train")))
    write("medmcqa/validation.jsonl", lambda: jsonl(_hub("medmcqa", "validation")))
    write("wikitext/wiki.test.raw", lambda: "".join(r["text"] for r in _hub("wikitext", "test")).encode())
    write("triviaqa/validation.jsonl", lambda: jsonl({"question": r["question"], "answer": dict(r["answer"])}
                                                     for r in _hub("triviaqa", "validation")))
    english = [dict(r) for r in _hub("oasst1", "validation") if r["lang"] == "en"]
    write("oasst1/validation_messages.jsonl", lambda: jsonl(english))
    write("oasst1/validation_assistant.jsonl", lambda: jsonl(
        r for r in english if r["role"] == "assistant" and r["rank"] in (0, 1) and len(r["text"]) >= 50))
    train = [{"text": r["text"]} for r in _hub("oasst1", "train")
             if r["role"] == "assistant" and r["lang"] == "en" and r["rank"] in (0, 1)]
    write("oasst1/train_assistant_inferred.jsonl.gz", lambda: jsonl(train))
    write("background/wikipedia_vital_leads.txt",
          lambda: "".join(" ".join(r["text"].split()) + "\n" for r in train if len(r["text"]) >= 50).encode())
    return to
