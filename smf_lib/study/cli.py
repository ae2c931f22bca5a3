"""The command line: ``python -m smf_lib run | status | summarize | protocol | calibrate | retrofit-pilot |
spread-pilot | data``
(and ``snapshot``, added by ``python -m smf_lib`` from the views)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from .arms import ARMS
from .facts_presets import FACT_PRESETS
from .presets import PRESETS, get_preset
from .protocol import protocol_markdown, protocol_table, replace_block  # noqa: F401 (replace_block: tests)
from .tables import markdown_table


def _frontier_arguments(p) -> None:
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--out", default=None, help="results folder (default: results/PRESET)")


def _frontier(args) -> int:
    from .frontier import frontier_report
    from .results import load_runs

    from .frontier import apply_choice, choice_lines

    out = args.out or f"results/{args.preset}"
    preset = apply_choice(get_preset(args.preset), out)  # with the rates the runner chose, once chosen
    for line in frontier_report(preset, load_runs(out), out) + choice_lines(preset, out):
        print(line)
    return 0


#: ``python -m smf_lib frontier`` (:func:`smf_lib.study.frontier.frontier_report`).
FRONTIER = ("frontier", "each arm's dev learning by rate, the level where all arms meet, the rates to report and SMF "
            "against each baseline at that level", _frontier_arguments, _frontier)


def _merge_field(preset, key: str, value):
    """A dict field's new value: ``value`` merged into the preset's own (so ``train={"top_t": 64}`` changes top_t
    and keeps the preset's batch, length and warm-up); a key the field cannot hold is refused."""
    from ..memory import MemoryConfig
    from .preset_spec import Settings

    current = getattr(preset, key)
    if not isinstance(current, dict) or not isinstance(value, dict):
        return value
    if key == "memory":
        known = {f.name for f in dataclasses.fields(MemoryConfig)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"--set memory: unknown memory setting {unknown[0]!r}; allowed: "
                             f"{', '.join(sorted(known))}")
    if isinstance(current, Settings):
        return Settings({**current, **value}, method=current.method)
    return {**current, **value}


def customise(preset, rates=(), fields=(), data=None):
    """A preset with command-line changes: ``KEY=RATE`` learning rates, ``FIELD=VALUE`` fields (values parsed as
    JSON where they can be; a dict merges into the field's dict) and a data folder; the preset's own checks run on
    the result."""
    import json

    changes = {}
    for item in fields:
        key, sep, value = item.partition("=")
        if not sep or key not in {f.name for f in dataclasses.fields(preset)} or key in ("name", "lr"):
            raise ValueError(f"--set takes FIELD=VALUE with a preset field (not name or lr), got {item!r}")
        try:
            changes[key] = json.loads(value)
        except json.JSONDecodeError:
            changes[key] = value
        if isinstance(changes[key], list):
            changes[key] = tuple(changes[key])
        changes[key] = _merge_field(preset, key, changes[key])
    lr, to_choose = dict(preset.lr), list(changes.get("rates_to_choose", preset.rates_to_choose))
    for item in rates:
        key, sep, value = item.partition("=")
        try:
            lr[key] = float(value)
        except ValueError:
            raise ValueError(f"--lr takes KEY=RATE such as smf-adam=1e-2, got {item!r}") from None
        if not sep or not lr[key] > 0:
            raise ValueError(f"--lr takes KEY=RATE with a rate > 0, got {item!r}")
        if key in to_choose:
            to_choose.remove(key)
    changes["rates_to_choose"] = tuple(to_choose)
    if data is not None:
        changes["data"] = data
    return dataclasses.replace(preset, lr=lr, **changes)


def show_settings(preset) -> str:
    """The settings a preset will run with, one ``field: value`` line each (prose fields left out)."""
    import json

    lines = []
    for f in dataclasses.fields(preset):
        if f.name in ("departures", "notes"):
            continue
        value = getattr(preset, f.name)
        lines.append(f"{f.name}: {json.dumps(value, default=str) if isinstance(value, (dict, list, tuple)) else value}")
    return "\n".join(lines)


def main(argv=None, commands=()) -> int:
    """Run the command line on ``argv``. An expected refusal (bad input, a missing or damaged file, data that cannot
    be reached) prints one ``error:`` message and returns 1; ``--debug`` anywhere shows its traceback instead.
    ``commands`` adds commands from outside the study (see :func:`_main`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    try:
        return _main(argv, commands)
    except ModuleNotFoundError as err:
        if err.name not in ("pandas", "seaborn", "matplotlib") or debug:
            raise
        print(f"error: this command needs {err.name}, which the study's extra installs: pip install "
              "\"smf_lib[study]\"", file=sys.stderr)
        return 1
    except (ValueError, OSError, RuntimeError, FloatingPointError) as err:
        if debug:
            raise
        print(f"error: {err}\n(add --debug to see where it was raised)", file=sys.stderr)
        return 1


def _run_arguments(r) -> None:
    r.add_argument("--preset", required=True, choices=sorted(PRESETS) + sorted(FACT_PRESETS))
    r.add_argument("--split", default="dev", choices=["dev", "report"],
                   help="facts presets: the dev facts (rates are chosen there) or the reported ones")
    r.add_argument("--methods", nargs="+", choices=list(ARMS), help="default: the preset's grid")
    r.add_argument("--seeds", nargs="+", type=int, help="default: the preset's seeds")
    r.add_argument("--out", help="results folder (default results/PRESET)")
    r.add_argument("--fresh", action="store_true",
                   help="recompute results made with other settings or data (default: refuse them)")
    r.add_argument("--lr", nargs="+", metavar="KEY=RATE", default=[],
                   help="peak learning rates by rate key, e.g. smf-adam=1e-2 lora=5e-5 (keys: smf-adam, smf-sgd, "
                   "smf-paper, lora, full, retrofit); recorded in each run's identity")
    r.add_argument("--set", nargs="+", metavar="FIELD=VALUE", default=[], dest="fields",
                   help="preset fields, e.g. train_n=600 medmcqa_n=200 (JSON values: numbers, lists, strings)")
    r.add_argument("--data", metavar="DIR", help="data folder for this preset (default: the preset's, else "
                   "$SMF_DATA_DIR, else the Hub)")
    r.add_argument("--reuse", nargs="+", metavar="DIR", default=[],
                   help="other results folders: a run finished there with the same identity is copied, not repeated")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--allow-dirty", action="store_true",
                   help="start even if the checkout has uncommitted changes (the records say so); otherwise refused")
    r.add_argument("--show", action="store_true", help="print the settings that would run, and stop")
    r.add_argument("--no-tune-allocator", action="store_true",
                   help="leave glibc's malloc as it is (default: reuse freed CPU memory; see tune_cpu_allocator)")


def _run(args) -> int:
    if args.preset in FACT_PRESETS:
        from .facts_study import FactsRunner, get_facts_preset

        records = FactsRunner(get_facts_preset(args.preset), args.out or f"results/{args.preset}",
                              progress=not args.no_progress, allow_dirty=args.allow_dirty).run_all(args.split)
        print(f"{len(records)} runs finished on the {args.split} facts")
        return 0
    from ..training import TrainingDiverged
    from .runner import Runner

    preset = customise(get_preset(args.preset), args.lr, args.fields, args.data)
    if args.show:
        print(show_settings(preset))
        return 0
    if not args.no_tune_allocator:
        from ..allocator import tune_cpu_allocator

        tune_cpu_allocator()
    try:
        Runner(preset, args.out or f"results/{preset.name}", progress=not args.no_progress,
               fresh=args.fresh, reuse=args.reuse, allow_dirty=args.allow_dirty).run(args.methods, args.seeds)
    except TrainingDiverged as err:  # a measured outcome, not a crash: one line, whatever --debug says
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _status_arguments(st) -> None:
    st.add_argument("--preset", required=True, choices=sorted(PRESETS) + sorted(FACT_PRESETS))
    st.add_argument("--out", help="results folder (default results/PRESET)")


def _status(args) -> int:
    from .plan import damage_lines, dirty_lines, health_lines, status_line, study_status

    out = args.out or f"results/{args.preset}"
    if args.preset in FACT_PRESETS:
        from .facts_status import status_lines
        from .facts_study import get_facts_preset

        print("\n".join(status_lines(get_facts_preset(args.preset), out)))
        print(f"`python -m smf_lib run --preset {args.preset} --split dev` resumes the dev sweep; `--split report` "
              "runs the reported facts once it is complete.")
        return 0
    from .frontier import apply_choice, choice_lines

    preset = apply_choice(get_preset(args.preset), out)  # with the rates chosen on dev items, once chosen
    table = study_status(preset, out)
    print(table.drop(columns=["method", "seed"]).round({"minutes": 1}).fillna("").to_string(index=False))
    print(status_line(table))
    for line in choice_lines(preset, out):
        print(line)
    for line in health_lines(out) + dirty_lines(out) + damage_lines(out):
        print(line)
    if (table["state"] != "finished").any():
        print(f"`python -m smf_lib run --preset {args.preset}"
              f"{'' if args.out is None else ' --out ' + args.out}` resumes the rest.")
    return 0


def _summarize(args) -> int:
    from .results import write_summary

    print(write_summary(Path(args.out)))
    return 0


def _protocol_arguments(pr) -> None:
    pr.add_argument("--preset", required=True, choices=sorted(PRESETS))
    pr.add_argument("--format", default="markdown", choices=["markdown", "csv"])
    pr.add_argument("--update-doc", metavar="FILE", help="rewrite the preset's table between its markers in FILE "
                    "(e.g. docs/METHOD.md) instead of printing it")


def _protocol(args) -> int:
    preset = get_preset(args.preset)
    if args.update_doc:
        path = Path(args.update_doc)
        path.write_text(replace_block(path.read_text(), args.preset, protocol_markdown(preset)))
        print(f"{path}: the {args.preset} table rewritten")
        return 0
    table = protocol_table(preset)
    if not len(table):
        print(f"preset {args.preset!r} follows the paper's protocol in every setting smf_lib records")
    else:
        print(table.to_csv(index=False) if args.format == "csv" else markdown_table(table))
    return 0


def _calibrate_arguments(c) -> None:
    c.add_argument("--model", default="smollm2-135m-instruct")
    c.add_argument("--update", default="sgd", choices=["sgd", "adam", "paper"])
    c.add_argument("--rates", nargs="+", type=float, help="default: 1e3..1e6 for sgd, 1e-4..3e-3 otherwise")
    c.add_argument("--steps", type=int, default=8)
    c.add_argument("--heldout", type=int, default=48)
    c.add_argument("--adapter", help="start from this saved memory (e.g. a retrofit adapter)")
    c.add_argument("--layers", nargs="+", type=int, default=[7, 15, 22], help="memory layers of a fresh memory")
    c.add_argument("--n-keys", type=int, default=64)
    c.add_argument("--out", help="write the result as JSON here")


def _calibrate(args) -> int:
    from ..files import write_json
    from ..models import load_model
    from .calibrate import calibrate

    rates = args.rates or ([1e3, 1e4, 1e5, 1e6] if args.update == "sgd" else [1e-4, 3e-4, 1e-3, 3e-3])
    model, tok = load_model(args.model)
    res = calibrate(model, tok, rates, args.update, args.steps, args.heldout, adapter=args.adapter,
                    memory=dict(layers=tuple(args.layers), n_keys=args.n_keys), progress=True)
    for run in res["runs"]:
        print(f"lr {run['lr']:g}: held-out loss {run['heldout_loss']:.4f} (before {res['before']:.4f})")
    print(f"best lr: {res['best_lr']}")
    if args.out:
        write_json(args.out, {"model": args.model, **res})
    return 0


def _retrofit_pilot_arguments(rp) -> None:
    rp.add_argument("--out", default="results/retrofit-pilot")
    rp.add_argument("--recipes", nargs="+", metavar="INIT:LR", help="default: the pilot's recipes, e.g. zero:2e-3")
    rp.add_argument("--steps", type=int, help="optimizer steps per recipe (default 100)")
    rp.add_argument("--save-adapters", action="store_true", help="keep the memory at every probe step")
    rp.add_argument("--learning", nargs="+", metavar="RECIPE@STEP", help="instead: SMF's learning on top of these "
                    "saved checkpoints, e.g. zero-lr0.002@60 (dev MedMCQA items)")
    rp.add_argument("--smf-lr", type=float, default=1e-2, help="with --learning: SMF's rate (row-sparse Adam)")
    rp.add_argument("--no-progress", action="store_true")


def _retrofit_pilot(args) -> int:
    from .pilot import RECIPES, LearningSettings, PilotSettings, learning_table, pilot_table, run_recipe, smf_learning

    if args.learning:
        for spec in args.learning:
            recipe, _, step = spec.partition("@")
            if not step.isdigit():
                raise ValueError(f"--learning takes RECIPE@STEP such as zero-lr0.002@60, got {spec!r}")
            smf_learning(recipe, int(step), args.out, ls=LearningSettings(lr=args.smf_lr),
                         progress=not args.no_progress)
        print(learning_table(args.out).round(4).to_string(index=False))
        return 0
    recipes = RECIPES
    if args.recipes:
        try:
            recipes = [(r.split(":")[0], float(r.split(":")[1])) for r in args.recipes]
        except (IndexError, ValueError):
            raise ValueError(f"--recipes takes INIT:LR pairs such as zero:2e-3, got {args.recipes}") from None
    s = PilotSettings()
    if args.steps:
        s = dataclasses.replace(s, steps=args.steps, probe_steps=tuple(p for p in s.probe_steps if p < args.steps)
                                + (args.steps,))
    for init, lr in recipes:
        run_recipe(init, lr, args.out, s, save_adapters=args.save_adapters, progress=not args.no_progress)
    print(pilot_table(args.out).round(4).to_string(index=False))
    return 0


def _data(args) -> int:
    from ..fetch import fetch_data

    folder = fetch_data(args.to)
    print(f"done: export SMF_DATA_DIR={folder.resolve()}")
    return 0


#: The study's own commands: ``(name, help, add_arguments(parser), run(args) -> exit code)``.
COMMANDS = (
    ("run", "run a preset's grid (resumable)", _run_arguments, _run),
    ("status", "list a preset's planned runs and which of them are finished in OUT", _status_arguments, _status),
    ("summarize", "rewrite OUT/summary.csv and OUT/trajectories.csv from OUT/runs/*.json",
     lambda s: s.add_argument("--out", required=True), _summarize),
    ("protocol", "print a preset's departures from the paper's protocol, with reasons", _protocol_arguments,
     _protocol),
    ("calibrate", "pick an SMF update rule's learning rate on held-out training questions", _calibrate_arguments,
     _calibrate),
    ("retrofit-pilot", "compare retrofit recipes (init x rate) by the memory's share of the MLP's output and the "
     "held-out loss, along the retrofit (resumable)", _retrofit_pilot_arguments, _retrofit_pilot),
    ("data", "fetch the data sets from the Hugging Face Hub into a folder, for SMF_DATA_DIR",
     lambda d: d.add_argument("--to", required=True, metavar="DIR"), _data),
    FRONTIER,
)


def _main(argv, commands=()) -> int:
    """Run the command line on ``argv``. ``commands`` adds commands from outside the study, each a tuple
    ``(name, help, add_arguments(parser), run(args) -> exit code)`` (``python -m smf_lib`` adds the views'
    ``snapshot``)."""
    from .memory_effect import COMMAND as memory_effect
    from .spread_pilot import COMMAND as spread_pilot

    ap = argparse.ArgumentParser(prog="python -m smf_lib", description="Sparse Memory Finetuning experiments")
    sub = ap.add_subparsers(dest="cmd", required=True)
    runs = {}
    for name, help_text, add_arguments, run in (*commands, *COMMANDS, spread_pilot, memory_effect):
        add_arguments(sub.add_parser(name, help=help_text))
        runs[name] = run
    args = ap.parse_args(argv)
    return runs[args.cmd](args)
