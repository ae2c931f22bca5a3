"""The run plan: a preset's runs (arm, seed, swept rate) and where they stand in a results folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..files import plain as _plain, read_json
from ..health import MIN_SHARE
from .arms import get_arm
from .records import REPORT, TRAJECTORY, evaluation_kind, read_run

if TYPE_CHECKING:  # presets sit above the plan; only their type is named here
    from .preset_spec import Preset


@dataclass(frozen=True)
class RunSpec:
    """One run of a grid: a method, a seed, and a swept rate (``None``: the preset's rate)."""

    method: str
    seed: int
    lr: float | None = None
    sweep_evaluation: str = TRAJECTORY

    @property
    def name(self) -> str:
        if self.method == "base":
            return "base"
        return f"{self.method}{'' if self.lr is None else f'-lr{self.lr:g}'}-s{self.seed}"

    @property
    def evaluation(self) -> str:
        """``report`` (every probe) or ``trajectory`` (a swept rate scored only on the dev subset along its
        trajectory)."""
        return evaluation_kind(self.sweep_evaluation) if self.lr is not None else REPORT


def plan(p: Preset, methods=None, seeds=None) -> list[RunSpec]:
    """The runs of a preset: every method at the first seed, ``multi_seed`` methods at every seed, and the swept
    rates of ``sweep`` at the first seed (or at each of ``sweep_seeds``, one seed after the other); base first.
    With ``sweep_first`` the swept rates run right after the stages that train nothing (base, retrofit), so their
    dev results can choose the grid's rates."""
    methods = list(methods or p.methods)
    seeds = list(seeds if seeds is not None else p.seeds)
    specs = []
    for i, seed in enumerate(seeds):
        for m in methods:
            get_arm(m)
            if m == "base" and i > 0 or (i > 0 and m not in p.multi_seed):
                continue
            specs.append(RunSpec(m, seed))
    sweep_seeds = [s for s in (p.sweep_seeds or seeds[:1]) if s in seeds]
    swept = [RunSpec(m, seed, float(r), p.sweep_evaluation)
             for seed in sweep_seeds for m, rates in p.sweep.items() if m in methods for r in rates]
    if p.sweep_first:  # the stages first (base, retrofit), then the swept rates, then the grid's runs
        stages = [s for s in specs if get_arm(s.method).train is None]
        return stages + swept + [s for s in specs if s not in stages]
    return specs + swept


def study_status(p: Preset, out: str | Path, methods=None, seeds=None):
    """Where a preset's grid stands in ``out``, read from its files alone (nothing is loaded or computed).

    Returns a pandas DataFrame with one row per planned run: its evaluation (``report`` or ``trajectory``), its state
    (``finished``: ``runs/NAME.json`` exists; ``failed``: ``failed/NAME.json``; ``started``: it has a folder under
    ``artifacts/``, so a rerun of the same command resumes it from its last checkpoint; ``rate to choose``: a grid run
    whose rate key is in the preset's ``rates_to_choose``; ``other settings``: a record
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
            stored = read_run(record)
            state, minutes = "finished", stored.get("wall_seconds", 0) / 60
            if not _same_training(stored.get("identity"), p, spec):
                state, minutes = "other settings", None
        elif (out / "failed" / f"{spec.name}.json").exists():
            state = "failed"
        elif (out / "artifacts" / spec.name).exists():
            state = "started"
        elif p.rate_to_choose(spec.method, spec.seed, spec.lr):
            state = "rate to choose"
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
        text += _pace(table, done)
    return textwrap.fill(text, width)


def _pace(table, done) -> str:
    """The time the runs left would take at the finished runs' pace, by evaluation kind (trained runs only; the
    pace of reported runs that only evaluated a swept run's training is lower than a run that trains)."""
    left = table[~done & (table["state"] != "failed")]
    trained = table["method"].map(lambda m: get_arm(m).train is not None)
    parts, untimed, total = [], [], 0.0
    for kind, g in left[trained[left.index]].groupby("evaluation"):
        pace = table.loc[done & trained & (table["evaluation"] == kind), "minutes"].dropna()
        if not len(pace):
            untimed.append(f"{len(g)} {kind} run(s)")
            continue
        parts.append(f"{len(g)} {kind} run(s) at {pace.median():.0f} minutes each")
        total += len(g) * float(pace.median())
    if not parts:
        return ""
    return (f" At the finished runs' pace: {'; '.join(parts)}, about {total / 60:.1f} hours"
            + (f", besides {', '.join(untimed)} not timed yet." if untimed else "."))


def _same_training(identity: dict | None, p: Preset, spec: RunSpec) -> bool:
    """Whether a stored run identity has the preset's training settings for ``spec`` (autocast aside)."""
    if not identity or identity.get("method") != spec.method or identity.get("model") != p.model:
        return False
    if get_arm(spec.method).train is None:
        return True
    current = _plain(p.train_config(spec.method, spec.seed, spec.lr).record())
    stored = dict(identity.get("train_config") or {})
    stored.pop("autocast", None), current.pop("autocast", None)
    return stored == current


def spread_words(spread: dict, before: dict | None = None) -> str:
    """A memory's spread in words: effective rows and top-5% share of general reads per layer (against random
    addressing's when ``before`` is given), a question's footprint and its overlap with general text."""
    parts = []
    for k, row in spread["layers"].items():
        ref = (before or {}).get("layers", {}).get(k)
        eff = f"{row['general_effective_rows']:,.0f}" + (f" of {ref['general_effective_rows']:,.0f}" if ref else "")
        text = f"layer {k}: {eff} effective rows, top 5% take {row['general_top5_share']:.0%}"
        if "footprint" in row:
            text += f", a question reads {row['footprint']:.1%} and shares {row['overlap']:.0%} with general text"
        parts.append(text)
    return "spread: " + "; ".join(parts)


def dirty_lines(out: str | Path) -> list[str]:
    """One line naming the finished runs whose code had uncommitted changes when they started (or none)."""
    dirty = []
    for path in sorted((Path(out) / "runs").glob("*.json")):
        record = read_json(path)
        versions = record.get("versions", {}) if isinstance(record, dict) else {}
        if versions.get("git_clean") is False:
            dirty.append(path.stem)
    if not dirty:
        return []
    return [f"made from a tree with uncommitted changes (their commit does not name all the code that ran): "
            f"{', '.join(dirty)}"]


#: A swept LoRA or full-finetuning run's last checkpoint, kept (in ``artifacts/RUN/trained``) for its reported run.
KEPT_CHECKPOINT = "trained"


def damaged_files(out: str | Path) -> list[Path]:
    """The files under ``out`` whose bytes no longer match the checksum written with them: stage files with a
    ``.NAME.sha256`` beside them (background statistics, checkpoints, the drift reference) and saved memories
    (``memory.safetensors`` against the ``weights_sha256`` in its ``memory_config.json``). Kept checkpoints
    (``KEPT_CHECKPOINT``) are left to the run that resumes from them, which checks them."""
    import json

    from ..files import file_sha256

    out, bad = Path(out), []
    for side in sorted(out.rglob(".*.sha256")):
        if side.parent.name == KEPT_CHECKPOINT:  # large; checked when a reported run resumes from it
            continue
        target = side.with_name(side.name[1:-len(".sha256")])
        if target.exists() and file_sha256(target) != side.read_text().strip():
            bad.append(target)
    for config in sorted(out.rglob("memory_config.json")):
        try:
            want = json.loads(config.read_text()).get("weights_sha256")
        except (OSError, ValueError):
            bad.append(config)
            continue
        weights = config.with_name("memory.safetensors")
        if want and weights.exists() and file_sha256(weights) != want:
            bad.append(weights)
    return bad


def damage_lines(out: str | Path) -> list[str]:
    """One line naming the damaged files (:func:`damaged_files`) and what to do, or none."""
    bad = damaged_files(out)
    if not bad:
        return []
    return [f"damaged (bytes differ from the checksum written with them): {', '.join(map(str, bad))}; delete them "
            "(or the run's artifacts folder) and rerun, or `run --fresh`, to make them again"]


def health_lines(out: str | Path) -> list[str]:
    """The memory's health after each finished retrofit in ``out``, one line each: its share of the MLP's output
    (mean, and per layer) and the held-out chat loss change with its paired 95% interval."""
    lines = []
    for path in sorted((Path(out) / "runs").glob("*.json")):
        record = read_json(path)
        health = ((record.get("retrofit") or {}).get("heldout_oasst1") or {}) if isinstance(record, dict) else {}
        after = health.get("after")
        if not after or record.get("method") != "retrofit":
            continue
        layers = after.get("share_by_layer")
        per = f" (layers: {', '.join(f'{k} {v:.1%}' for k, v in layers.items())})" if layers else ""
        line = f"{path.stem}: memory share of the MLP output {after['memory_to_mlp_norm']:.1%}{per}"
        ch = health.get("loss_change")
        if ch:
            line += f"; held-out loss {ch['delta']:+.3f} [{ch['lo']:+.3f}, {ch['hi']:+.3f}] nats"
        elif health.get("before"):
            line += f"; held-out loss {health['before']['loss']:.4f} -> {after['loss']:.4f}"
        spread = ((record.get("retrofit") or {}).get("spread") or {}).get("after")
        if spread:
            line += "; " + spread_words(spread, ((record.get("retrofit") or {}).get("spread") or {}).get("before"))
        else:
            line += "; spread not measured (a retrofit made before the spread meter)"
        lowest = min(layers.values()) if layers else after["memory_to_mlp_norm"]
        if lowest < health.get("min_share_required", MIN_SHARE):
            line += f"; below the {MIN_SHARE:.0%} a living memory carries: SMF on it will learn little"
        lines.append(line)
    return lines
