"""The spread pilot: which retrofit keeps the memory alive *and* spread, and how large the memory must be to be sparse.

``python -m smf_lib spread-pilot --out results/spread-pilot`` retrofits the cpu preset's memory with each recipe
(the retrofit of the ``cpu`` study; frozen addressing; a normalised query; a usage-balancing term; then the chosen
recipe at several table sizes) and measures, before, along and after the retrofit, on dev texts only:

- health (:func:`smf_lib.health.memory_health`): the memory's share of the MLP's output per layer and the loss on
  held-out OASST1 train replies (the file's last ones, never trained on, never a reported item);
- spread and sparsity (:func:`smf_lib.spread.memory_spread`): on held-out Wikipedia lead paragraphs (the file's
  last ones; background statistics read the first) and on MedMCQA dev prompts (validation rows after the reported
  1,000): effective rows, top-5% share, a question's footprint, its overlap with general text, hub shares.

One JSON per recipe, written atomically; a finished recipe is read back and an unfinished one resumes from its
checkpoint. :func:`choose` applies the pilot's rule: the cheapest recipe that is alive and spread.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from .. import data
from ..adapter import save_memory
from ..files import git_state, plain as _plain, read_json, write_json
from ..health import MIN_SHARE, loss_change, memory_health
from ..memory import MemoryConfig, add_memory
from ..models import DEFAULT_MODEL, load_named as load
from ..spread import MAX_TOP5_SHARE, MIN_EFFECTIVE_RATIO, memory_spread, spread_summary
from ..training import TrainConfig, train

#: The smallest held-out chat loss gain (nats per token) at which a retrofit counts as alive.
MIN_LOSS_GAIN = 0.10


@dataclasses.dataclass
class SpreadSettings:
    """What every recipe of the spread pilot shares (the cpu study's retrofit: 50 steps of 16 OASST1 train replies
    of 128 tokens, warm-up 10, rate 5e-3, zero values).

    Args:
        model: the model name for :func:`~smf_lib.models.load_model` (``"tiny"`` for tests).
        memory: :class:`~smf_lib.memory.MemoryConfig` fields every recipe starts from.
        lr: the retrofit's peak rate.
        steps, texts_per_step, micro_batch, max_length, warmup_steps: the retrofit.
        probe_steps: steps after which health and spread are measured (step 0 always).
        heldout_n: held-out OASST1 train replies for the chat loss.
        general_n: held-out Wikipedia paragraphs for the spread (the file's last ones).
        task_n: MedMCQA dev prompts (validation rows from ``task_offset``).
        task_offset: the first dev row (the reported items come before it).
        spread_length: tokens per text when the spread is measured.
        top_t: rows per layer a selector takes, for the hub share.
        checkpoint_every: steps between retrofit checkpoints.
        data: data folder (``None``: ``$SMF_DATA_DIR``, else the Hub).
    """

    model: str = DEFAULT_MODEL
    memory: dict = dataclasses.field(default_factory=lambda: dict(layers=(7, 15, 22), n_keys=64, heads=4, knn=16,
                                                                  k_dim=256, init="zero"))
    lr: float = 5e-3
    steps: int = 50
    texts_per_step: int = 16
    micro_batch: int = 8
    max_length: int = 128
    warmup_steps: int = 10
    probe_steps: tuple[int, ...] = (25, 50)
    heldout_n: int = 200
    general_n: int = 200
    task_n: int = 200
    task_offset: int = 1000
    spread_length: int = 256
    top_t: int = 128
    checkpoint_every: int = 10
    data: str | None = None


#: Recipes: a name, the MemoryConfig fields it changes and its retrofit settings (``RetrofitSettings`` fields).
RECIPES: dict[str, dict] = {
    "trained": {"memory": {}, "retrofit": {}},  # the cpu study's retrofit (the paper's: everything trains)
    "frozen": {"memory": {}, "retrofit": {"addressing": "frozen"}},
    "half-norm": {"memory": {"query_norm": "half"}, "retrofit": {}},
    "balance": {"memory": {}, "retrofit": {"balance": 0.1}},
}


def size_recipes(base: str, sizes=(64, 128, 256, 512)) -> dict[str, dict]:
    """The recipe ``base`` at several table sizes (``n_keys``: N = n_keys**2 slots), with row-sparse values so a
    step costs what it reads."""
    r = RECIPES[base]
    return {f"{base}-n{n}": {"memory": {**r["memory"], "n_keys": n}, "retrofit": {**r["retrofit"],
                                                                                   "sparse_values": True}}
            for n in sizes}


def dev_texts(s: SpreadSettings) -> dict[str, list[str]]:
    """Training replies, held-out replies, general paragraphs and task prompts: disjoint, and none a reported item."""
    replies = data.load_oasst1_replies("train", root=s.data)
    need = s.steps * s.texts_per_step + s.heldout_n
    if len(replies) < need:
        raise ValueError(f"the spread pilot needs {need} OASST1 train replies, the data has {len(replies)}: lower "
                         "steps, texts_per_step or heldout_n")
    general = data.load_background(root=s.data)
    if len(general) < s.general_n:
        raise ValueError(f"the spread pilot needs {s.general_n} general paragraphs, the data has {len(general)}")
    task = data.load_medmcqa("validation", s.task_offset + s.task_n, root=s.data)[s.task_offset:]
    if not task:
        raise ValueError(f"no MedMCQA validation rows after the first {s.task_offset}: lower task_offset")
    return {"train": replies[: s.steps * s.texts_per_step], "heldout": replies[-s.heldout_n:],
            "general": general[-s.general_n:], "task": [data.medmcqa_prompt(r) for r in task]}


def measure(model, tok, texts: dict, s: SpreadSettings) -> dict:
    """Health and spread of ``model``'s memory on the dev texts, with the seconds they took."""
    t0 = time.perf_counter()
    h = memory_health(model, tok, texts["heldout"], s.max_length, batch_size=16)
    sp = memory_spread(model, tok, texts["general"], texts["task"], max_length=s.spread_length, top_t=s.top_t)
    return {"health": h, "spread": sp, "summary": spread_summary(sp), "seconds": time.perf_counter() - t0}


def _recipe(name: str) -> dict:
    recipe = {**RECIPES, **size_recipes("frozen")}.get(name)
    if recipe is None:
        raise ValueError(f"unknown recipe {name!r}; allowed: {', '.join({**RECIPES, **size_recipes('frozen')})}")
    return recipe


def recipe_identity(name: str, s: SpreadSettings, recipe: dict | None = None, seed: int = 0) -> dict:
    """What a recipe's record must match to be read back: the recipe, the seed and every setting."""
    return _plain({"recipe": recipe or _recipe(name), "seed": seed, "settings": dataclasses.asdict(s)})


def run_recipe(name: str, out: str | Path, s: SpreadSettings | None = None, recipe: dict | None = None,
               seed: int = 0, progress: bool = True) -> dict:
    """Retrofit one recipe, measuring health and spread along the way (resumable; read back when done).

    Returns:
        dict: the recipe's record, with its identity, per probe step the health, spread and their summaries, the
        retrofit's seconds per step, and whether the memory ends alive and spread (:func:`verdict`).
    """
    s = s or SpreadSettings()
    recipe = recipe or _recipe(name)
    out = Path(out)
    path = out / f"{name}.json"
    identity = recipe_identity(name, s, recipe, seed)
    if path.exists():
        rec = read_json(path)
        if rec.get("identity") == identity:
            return rec
        raise ValueError(f"{path} was made with other settings; delete it to rerun the recipe, or keep the settings")
    code = git_state(Path(__file__).parent)  # the code that runs, read before it starts
    texts = dev_texts(s)
    model, tok = load(s.model, seed)
    torch.manual_seed(seed)
    add_memory(model, MemoryConfig(**{**s.memory, **recipe["memory"]}))
    folder = out / "artifacts" / name
    cfg = TrainConfig(method="retrofit", lr=s.lr, seed=seed, max_steps=s.steps, micro_batch=s.micro_batch,
                      grad_accum=max(1, s.texts_per_step // s.micro_batch), max_length=s.max_length,
                      warmup_steps=s.warmup_steps, checkpoint_every=s.checkpoint_every, retrofit=recipe["retrofit"])
    # the probe's measurements travel in the training's checkpoints, so a resumed recipe keeps its earlier points
    res = train(model, tok, texts["train"], cfg, checkpoint_dir=folder / "ckpt", progress=progress,
                probe=lambda m, step: measure(m, tok, texts, s), probe_steps=s.probe_steps)
    points = {p["step"]: p for p in res.trajectory}
    first = points[0]
    traj = []
    for step in sorted(points):
        p = points[step]
        h = p["health"]
        traj.append({"step": step, "share_by_layer": h["share_by_layer"], "min_share": h["min_share"],
                     "loss": h["loss"], "loss_change": loss_change(first["health"], h),
                     "spread": p["spread"], "summary": p["summary"], "measure_seconds": p["seconds"]})
    save_memory(res.model, folder / "final")
    rec = {"identity": identity, "recipe": name, "settings": recipe, "code": code,
           "n_slots": first["spread"]["n_slots"],
           "train_seconds": res.seconds, "seconds_per_step": res.seconds / max(len(res.log), 1),
           "resumed": res.resumed, "loss_log": [round(r["loss"], 5) for r in res.log], "trajectory": traj}
    rec["verdict"] = verdict(rec)
    write_json(path, rec)
    ckpt = folder / "ckpt" / "checkpoint.pt"
    if ckpt.exists():
        ckpt.unlink()
    return rec


def verdict(rec: dict) -> dict:
    """Whether a recipe's memory ends alive (every layer's share >= 10%, held-out chat loss down by >= 0.10 nats)
    and spread (every layer's effective rows >= half of random addressing's, its top 5% of rows <= 40% of reads)."""
    first, last = rec["trajectory"][0], rec["trajectory"][-1]
    alive = last["min_share"] >= MIN_SHARE and -last["loss_change"]["delta"] >= MIN_LOSS_GAIN
    ratios = {k: row["general_effective_rows"] / first["spread"]["layers"][k]["general_effective_rows"]
              for k, row in last["spread"]["layers"].items()}
    top5 = {k: row["general_top5_share"] for k, row in last["spread"]["layers"].items()}
    spread = min(ratios.values()) >= MIN_EFFECTIVE_RATIO and max(top5.values()) <= MAX_TOP5_SHARE
    return {"alive": alive, "spread": spread, "min_effective_ratio": min(ratios.values()),
            "max_top5_share": max(top5.values()), "min_share": last["min_share"],
            "loss_gain": -last["loss_change"]["delta"]}


def choose(records: list[dict]) -> str | None:
    """The cheapest recipe (seconds per retrofit step) whose memory is alive and spread; ``None`` if none is."""
    ok = [r for r in records if r["verdict"]["alive"] and r["verdict"]["spread"]]
    return min(ok, key=lambda r: r["seconds_per_step"])["recipe"] if ok else None


def spread_table(out: str | Path):
    """One row per recipe, probe step and memory layer: health, spread and sparsity.

    Returns:
        A pandas DataFrame.
    """
    import pandas as pd

    rows = []
    for path in sorted(Path(out).glob("*.json")):
        rec = read_json(path)
        for p in rec["trajectory"]:
            for layer, m in p["spread"]["layers"].items():
                rows.append({"recipe": rec["recipe"], "n_slots": rec["n_slots"], "step": p["step"], "layer": layer,
                             "share": p["share_by_layer"][layer], "loss_change": p["loss_change"]["delta"],
                             "seconds_per_step": rec["seconds_per_step"], **m})
    return pd.DataFrame(rows)


def run_pilot(out: str | Path, names=tuple(RECIPES), s: SpreadSettings | None = None,
              progress: bool = True) -> list[dict]:
    """Every named recipe, in order (finished ones are read back)."""
    return [run_recipe(n, out, s, progress=progress) for n in names]


def _add_arguments(p) -> None:
    p.add_argument("--out", default="results/spread-pilot")
    p.add_argument("--recipes", nargs="+", metavar="NAME", help=f"default: {' '.join(RECIPES)}")
    p.add_argument("--sizes", nargs="+", type=int, metavar="N_KEYS",
                   help="instead: recipe --base at these n_keys (N = n_keys**2 slots), row-sparse values")
    p.add_argument("--base", default="frozen", choices=sorted(RECIPES), help="with --sizes: the recipe to size")
    p.add_argument("--probe-steps", nargs="+", type=int, metavar="STEP",
                   help="measure after these retrofit steps (and before the first; default 25 50)")
    p.add_argument("--no-progress", action="store_true")


def _run_command(args) -> int:
    if args.sizes:
        recipes = size_recipes(args.base, tuple(args.sizes))
    else:
        unknown = [n for n in args.recipes or () if n not in RECIPES]
        if unknown:
            raise SystemExit(f"unknown recipe {unknown[0]!r}; allowed: {', '.join(RECIPES)}")
        recipes = {n: RECIPES[n] for n in args.recipes or RECIPES}
    s = SpreadSettings()
    if args.probe_steps:
        s = dataclasses.replace(s, probe_steps=tuple(args.probe_steps))
    records = [run_recipe(n, args.out, s, recipe=r, progress=not args.no_progress) for n, r in recipes.items()]
    for rec in records:
        v = rec["verdict"]
        print(f"{rec['recipe']}: {rec['n_slots']:,} slots, {rec['seconds_per_step']:.1f} s/step; alive {v['alive']} "
              f"(min share {v['min_share']:.1%}, chat loss gain {v['loss_gain']:.3f}); spread {v['spread']} "
              f"(effective rows >= {v['min_effective_ratio']:.2f} of random, top 5% <= {v['max_top5_share']:.0%})")
    print(f"chosen (cheapest alive and spread): {choose(records)}")
    return 0


#: ``(name, help, add_arguments, run)`` for :func:`smf_lib.study.cli.main`.
COMMAND = ("spread-pilot", "which retrofit keeps the memory alive and spread, and how large it must be to be sparse "
           "(resumable)", _add_arguments, _run_command)


def spread_answer(after, chosen: str = "frozen-n256") -> str:
    """Chapter 2's answer in one sentence, from the spread pilot's table after the retrofit (one row per recipe and
    layer, e.g. :func:`~smf_lib.views.pilot_plots.spread_after`): the paper's retrofit collapses the reads, frozen
    addressing keeps them spread, and what the ``chosen`` memory (the studies') looks like."""
    by = after.groupby("recipe")
    trained, frozen, pick = by.get_group("trained"), by.get_group("frozen"), by.get_group(chosen)
    return (f"The paper's retrofit keeps the memory alive but collapses its reads onto few rows (at most "
            f"{trained['effective_ratio'].max():.0%} of random addressing's effective rows); with the query and keys "
            f"frozen they stay spread ({frozen['effective_ratio'].min():.0%} or more), and at "
            f"{int(pick['slots'].iloc[0]):,} slots per layer, the memory the new-facts study runs on, every layer "
            f"carries {pick['share'].min():.1%} or more of its MLP's output while a question reads at most "
            f"{pick['footprint'].max():.1%} of a layer's rows, {pick['overlap'].min():.0%} to "
            f"{pick['overlap'].max():.0%} of them shared with a general paragraph.")
