"""How much of the new-facts study has run and how long the rest takes (``python -m smf_lib status --preset
facts``), from its records and :mod:`smf_lib.study.facts_frontier`'s plan."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..files import read_json
from .facts_frontier import (bracket_rates, bracket_rates_so_far, dev_run_names, dev_runs_left, failed_runs,
                             report_plan, run_names)


def status_lines(preset, folder: str | Path) -> list[str]:
    """How much of the study has run: the dev runs against the preset's plan, then, once they are all in, the
    reported runs :func:`~smf_lib.study.facts_frontier.report_plan` chose (each arm at the dev rates around the
    level, every seed), in order, and the runs :func:`~smf_lib.study.facts_frontier.bracket_rates` adds once those
    are in."""
    folder = Path(folder)
    planned = len(dev_run_names(preset))
    todo = dev_runs_left(preset, folder)
    failed = failed_runs(folder)
    lines = [f"dev facts (rates are chosen here): {planned - len(todo)} of {planned} runs finished"]
    dev_failed = sorted(n for n in failed if n.endswith("-dev"))
    lines += [f"diverged (no metrics): {', '.join(dev_failed)}"] if dev_failed else []
    if todo:
        return lines + [f"dev runs to do, in order: {', '.join(todo)}",
                        f"reported facts: chosen once the dev runs are in (at most {2 * len(preset.rates)} rates x "
                        f"{len(preset.seeds)} seeds)"]
    try:
        plan = report_plan(preset, folder)
    except (ValueError, FileNotFoundError) as err:
        return lines + [f"reported facts: no rates can be chosen ({err})"]
    added = bracket_rates(preset, folder, plan)
    names = run_names(plan["rates"], preset.seeds) + run_names(added or {}, preset.seeds)
    left = [n for n in names if not (folder / "runs" / f"{n}.json").exists() and n not in failed]
    lines.append(f"reported facts, read at the dev level {plan['level']:+.2f}: {len(names) - len(left)} of "
                 f"{len(names)} runs finished")
    diverged = [n for n in names if n in failed]
    lines += [f"diverged (no metrics): {', '.join(diverged)}"] if diverged else []
    if added is None:
        sure = bracket_rates_so_far(preset, folder, plan)
        lines.append("then, for an arm whose lowest planned rate learned more than the level at some seed (or its "
                     "highest less), the next rate of its dev sweep, every seed (decided once the planned runs are "
                     "in" + ("; already certain from the finished runs: " + ", ".join(
                         f"{arm} at {lr:g}" for arm, rates in sure.items() for lr in rates)
                         + f", {sum(map(len, sure.values())) * len(preset.seeds)} runs" if sure else "") + ")")
    elif added:
        lines.append("added, one step along the dev sweep: " + ", ".join(
            f"{arm} at {lr:g} ({'below' if lr < min(plan['rates'][arm]) else 'above'} its planned rates)"
            for arm, rates in added.items() for lr in rates))
    else:
        lines.append("no rate added: every arm's planned runs straddle the level at every seed, or its dev sweep "
                     "has no rate beyond them")
    return lines + ([f"reported runs to do, in order: {', '.join(left)}", _pace(folder, left)] if left else [])


def _pace(folder: Path, left: list[str]) -> str:
    """The time the reported runs left take at the pace of the finished reported runs of the same arm (an arm with
    none yet: the slowest finished arm's pace, said so)."""
    done: dict[str, list[float]] = {}
    for path in (folder / "runs").glob("*-report.json"):
        rec = read_json(path)
        if "arm" in rec and rec.get("seconds"):
            done.setdefault(rec["arm"], []).append(rec["seconds"] / 60)
    if not done:
        return "time left: unknown until a reported run has finished"
    pace = {arm: float(np.median(v)) for arm, v in done.items()}
    slowest = max(pace.values())
    arms = [n.rsplit("-lr", 1)[0] for n in left]
    total = sum(pace.get(a, slowest) for a in arms)
    guessed = sorted({a for a in arms if a not in pace})
    return (f"time left: about {total / 60:.1f} hours at the finished reported runs' pace (per arm: "
            + ", ".join(f"{a} {m:.0f} min" for a, m in sorted(pace.items())) + ")"
            + (f"; {', '.join(guessed)} not timed yet, counted at the slowest arm's pace" if guessed else ""))
