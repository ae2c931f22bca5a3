"""Run records across versions: how a run was evaluated, and the names older records used, read as today's.

A run is evaluated in one of two ways (its ``evaluation``):

- ``"report"``: every probe on every item of the preset's split (the grid's runs);
- ``"trajectory"``: only the dev subset along its training trajectory (a swept rate), its last point as its result.

Records written by earlier versions named these ``"full"`` and ``"cheap"``, called the dev subset's sizes ``cheap``
and kept an untrained model's dev-subset scores under ``cheap``/``cheap_metrics``. Every reader here maps those names
to today's, so committed results keep loading and a resumed run still matches its stored identity.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..files import read_record

REPORT, TRAJECTORY = "report", "trajectory"
KINDS = (REPORT, TRAJECTORY)
_OLD_KINDS = {"full": REPORT, "cheap": TRAJECTORY}


def evaluation_kind(kind: str) -> str:
    """An evaluation kind in today's name (an older record's ``"full"``/``"cheap"`` read as report/trajectory)."""
    kind = _OLD_KINDS.get(kind, kind)
    if kind not in KINDS:
        raise ValueError(f"unknown evaluation kind {kind!r}; allowed: {', '.join(KINDS)}")
    return kind


def upgrade_identity(ident):
    """A stored identity or marker with today's names (``evaluation`` kind; ``cheap`` -> ``dev_subset``); anything
    that is not a dict is returned as it is."""
    if not isinstance(ident, dict):
        return ident
    out = {("dev_subset" if k == "cheap" else k): v for k, v in ident.items()}
    if "evaluation" in out:
        out["evaluation"] = _OLD_KINDS.get(out["evaluation"], out["evaluation"])
    return out


def upgrade_record(rec: dict) -> dict:
    """A run record with today's names: its evaluation kind and identity, and an untrained model's dev-subset
    scores under ``dev_items``/``dev_metrics``."""
    renamed = {"cheap": "dev_items", "cheap_metrics": "dev_metrics"}
    out = {renamed.get(k, k): v for k, v in rec.items()}
    if "evaluation" in out:
        out["evaluation"] = _OLD_KINDS.get(out["evaluation"], out["evaluation"])
    if "identity" in out:
        out["identity"] = upgrade_identity(out["identity"])
    return out


def read_run(path: str | Path, required: tuple[str, ...] = ()) -> dict:
    """A run record from ``path`` with today's names (checked like ``smf_lib.files.read_record``: a damaged file
    raises an error naming it)."""
    return upgrade_record(read_record(path, required))


def is_report(rec: dict) -> bool:
    """Whether a run record was evaluated on every item of its split (a grid run), not along its trajectory only.
    A record without an ``evaluation`` field predates sweeps and is a report."""
    kind = rec.get("evaluation", REPORT)
    return _OLD_KINDS.get(kind, kind) == REPORT


def training_of(rec: dict):
    """What a record's training was, as a comparable value: its identity without how it was evaluated (records
    without an identity: their method, seed and rate)."""
    ident = rec.get("identity")
    if not ident:
        return (rec.get("method"), rec.get("seed"), (rec.get("train_config") or {}).get("lr"))
    return json.dumps({k: v for k, v in upgrade_identity(ident).items() if k not in ("evaluation", "split")},
                      sort_keys=True)


def without_repeats(runs: list[dict]) -> list[dict]:
    """The runs, less each swept run (evaluated along its trajectory only) whose training a reported run repeats:
    the same training counts once, as its reported run, in tables that pool runs by method and rate."""
    reported = {training_of(r) for r in runs if is_report(r)}
    return [r for r in runs if is_report(r) or training_of(r) not in reported]
