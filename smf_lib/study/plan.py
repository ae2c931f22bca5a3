"""The run plan: a preset's runs (arm, seed, swept rate) and where they stand in a results folder."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..files import read_json
from .arms import get_method

if TYPE_CHECKING:  # presets sit above the plan; only their type is named here
    from .presets import Preset


@dataclass(frozen=True)
class RunSpec:
    """One run of a grid: a method, a seed, and a swept rate (``None``: the preset's rate)."""

    method: str
    seed: int
    lr: float | None = None
    sweep_evaluation: str = "cheap"

    @property
    def name(self) -> str:
        if self.method == "base":
            return "base"
        return f"{self.method}{'' if self.lr is None else f'-lr{self.lr:g}'}-s{self.seed}"

    @property
    def evaluation(self) -> str:
        """``full`` (every probe) or ``cheap`` (a swept rate scored only on the dev subset along its trajectory)."""
        return self.sweep_evaluation if self.lr is not None else "full"


def plan(p: Preset, methods=None, seeds=None) -> list[RunSpec]:
    """The runs of a preset: every method at the first seed, ``multi_seed`` methods at every seed, and the swept
    rates of ``sweep`` at the first seed; base first."""
    methods = list(methods or p.methods)
    seeds = list(seeds if seeds is not None else p.seeds)
    specs = []
    for i, seed in enumerate(seeds):
        for m in methods:
            get_method(m)
            if m == "base" and i > 0 or (i > 0 and m not in p.multi_seed):
                continue
            specs.append(RunSpec(m, seed))
    for m, rates in p.sweep.items():
        if m in methods:
            specs += [RunSpec(m, seeds[0], float(r), p.sweep_evaluation) for r in rates]
    return specs


def study_status(p: Preset, out: str | Path, methods=None, seeds=None):
    """Where a preset's grid stands in ``out``, read from its files alone (nothing is loaded or computed).

    Returns a pandas DataFrame with one row per planned run: its evaluation (``full`` or ``cheap``), its state
    (``finished``: ``runs/NAME.json`` exists; ``failed``: ``failed/NAME.json``; ``started``: it has a folder under
    ``artifacts/``, so a rerun of the same command resumes it from its last checkpoint; ``other settings``: a record
    whose training settings differ from the preset's, which ``run --fresh`` replaces; ``to do``), and for finished
    runs the measured minutes from start to written record (training and evaluation, on whatever machine ran it).
    Only the training settings are compared here; ``run`` checks the whole identity (data, precision, probes) too.
    """
    import pandas as pd

    out = Path(out)
    rows = []
    for spec in plan(p, methods, seeds):
        record, state, minutes = out / "runs" / f"{spec.name}.json", "to do", None
        if record.exists():
            stored = read_json(record)
            state, minutes = "finished", stored.get("wall_seconds", 0) / 60
            if not _same_training(stored.get("identity"), p, spec):
                state, minutes = "other settings", None
        elif (out / "failed" / f"{spec.name}.json").exists():
            state = "failed"
        elif (out / "artifacts" / spec.name).exists():
            state = "started"
        rows.append({"run": spec.name, "method": spec.method, "seed": spec.seed,
                     "lr": spec.lr, "evaluation": spec.evaluation, "state": state, "minutes": minutes})
    return pd.DataFrame(rows)


def status_line(table, width: int = 100) -> str:
    """A :func:`study_status` table in words, wrapped at ``width``: how many runs are finished, what their
    records add up to, and which runs are still to come."""
    import textwrap

    done = table["state"] == "finished"
    text = (f"{int(done.sum())} of {len(table)} runs finished; their records add up to "
            f"{table.loc[done, 'minutes'].sum():.0f} minutes.")
    if not done.all():
        text += " Not finished yet: " + ", ".join(f"{r} ({s})" for r, s in zip(table.loc[~done, "run"],
                                                                               table.loc[~done, "state"])) + "."
    return textwrap.fill(text, width)


def _same_training(identity: dict | None, p: Preset, spec: RunSpec) -> bool:
    """Whether a stored run identity has the preset's training settings for ``spec`` (autocast aside)."""
    if not identity or identity.get("method") != spec.method or identity.get("model") != p.model:
        return False
    if get_method(spec.method).train is None:
        return True
    current = _plain(dataclasses.asdict(p.train_config(spec.method, spec.seed, spec.lr)))
    stored = dict(identity.get("train_config") or {})
    stored.pop("autocast", None), current.pop("autocast", None)
    return stored == current


def _plain(obj):
    """``obj`` as it reads back from JSON (tuples become lists), so stored and current identities compare."""
    return json.loads(json.dumps(obj, default=str))
