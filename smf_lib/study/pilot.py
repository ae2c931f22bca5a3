"""The retrofit pilot: which memory init, rate and length make a memory that carries signal, at what CPU cost.

``python -m smf_lib retrofit-pilot --out results/retrofit-pilot`` trains the memory of the cpu preset densely on
OASST1 train replies for each recipe (init x rate) and measures, along the retrofit, the memory's share of the
MLP's output per layer and the loss on held-out dev replies (the last OASST1 train replies, never trained on, never
a reported item). One JSON per recipe, written atomically; a finished recipe is skipped on a rerun and an
unfinished one resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from .. import data
from ..files import plain as _plain, read_json, write_json
from ..health import MIN_SHARE, loss_change, memory_health
from ..adapter import save_memory
from ..memory import MemoryConfig, add_memory
from ..models import DEFAULT_MODEL, load_named as load
from ..training import TrainConfig, train


@dataclasses.dataclass
class PilotSettings:
    """What every recipe of the pilot shares.

    Args:
        model: the model name for :func:`~smf_lib.models.load_model`.
        memory: :class:`~smf_lib.memory.MemoryConfig` fields (the init is the recipe's).
        steps: optimizer steps of every retrofit (warm-up then cosine to 0 at the last step).
        probe_steps: steps at which the memory's health is measured (step 0 always).
        texts_per_step: OASST1 train replies per optimizer step.
        micro_batch: texts per forward.
        max_length: tokens per reply.
        warmup_steps: linear warm-up steps.
        heldout_n: dev replies (the last ones of the OASST1 train file) scored at each probe step.
        data: data folder (``None``: ``$SMF_DATA_DIR``, else the Hub).
    """

    model: str = DEFAULT_MODEL
    memory: dict = dataclasses.field(default_factory=lambda: dict(layers=(7, 15, 22), n_keys=64, heads=4, knn=16,
                                                                  k_dim=256))
    steps: int = 100
    probe_steps: tuple[int, ...] = (15, 30, 60, 100)
    texts_per_step: int = 16
    micro_batch: int = 8
    max_length: int = 128
    warmup_steps: int = 10
    heldout_n: int = 64
    data: str | None = None


#: The recipes compared: (init, peak rate).
RECIPES = (("zero", 2e-3), ("zero-w2", 2e-3), ("paper", 2e-3), ("zero", 5e-3))


def recipe_name(init: str, lr: float) -> str:
    return f"{init}-lr{lr:g}"


def pilot_texts(s: PilotSettings) -> tuple[list[str], list[str]]:
    """(training replies, held-out dev replies): disjoint slices of the OASST1 train replies."""
    replies = data.load_oasst1_replies("train", root=s.data)
    need = s.steps * s.texts_per_step + s.heldout_n
    if len(replies) < need:
        raise ValueError(f"the retrofit pilot needs {need} OASST1 train replies, the data has {len(replies)}: lower "
                         "steps, texts_per_step or heldout_n")
    return replies[: s.steps * s.texts_per_step], replies[-s.heldout_n:]


def run_recipe(init: str, lr: float, out: str | Path, s: PilotSettings | None = None, seed: int = 0,
               save_adapters: bool = False, progress: bool = True) -> dict:
    """Retrofit one recipe and record its memory's health along the way (resumable; skipped when done).

    Returns:
        dict: the recipe's record: settings, seconds, and a ``trajectory`` of health points (step, share per layer,
        loss, loss change from step 0 with its paired interval).
    """
    s = s or PilotSettings()
    out = Path(out)
    name = recipe_name(init, lr)
    path = out / f"{name}.json"
    identity = _plain({"init": init, "lr": lr, "seed": seed, "settings": dataclasses.asdict(s)})
    if path.exists():
        rec = read_json(path)
        if rec.get("identity") == identity:
            return rec
        raise ValueError(f"{path} was made with other settings; delete it to rerun the recipe, or keep the settings")
    texts, heldout = pilot_texts(s)
    model, tok = load(s.model, seed)
    torch.manual_seed(seed)
    add_memory(model, MemoryConfig(**{**s.memory, "init": init}))
    folder = out / "artifacts" / name
    t_probe = [0.0]

    def probe(m, step):
        t0 = time.perf_counter()
        h = memory_health(m, tok, heldout, s.max_length, batch_size=16)
        if save_adapters:
            save_memory(m, folder / f"step{step}")
        t_probe[0] += time.perf_counter() - t0
        return h

    cfg = TrainConfig(method="retrofit", lr=lr, seed=seed, max_steps=s.steps, micro_batch=s.micro_batch,
                      grad_accum=max(1, s.texts_per_step // s.micro_batch), max_length=s.max_length,
                      warmup_steps=s.warmup_steps, checkpoint_every=10)
    res = train(model, tok, texts, cfg, checkpoint_dir=folder / "ckpt", progress=progress, probe=probe,
                probe_steps=s.probe_steps)
    first = res.trajectory[0]
    traj = [{"step": p["step"], "share": p["share"], "min_share": p["min_share"],
             "share_by_layer": p["share_by_layer"], "loss": p["loss"],
             "loss_change": loss_change(first, p), "train_seconds": _seconds_at(res.log, p["step"])}
            for p in res.trajectory]
    rec = {"identity": identity, "recipe": name, "init": init, "lr": lr, "train_seconds": res.seconds,
           "seconds_per_step": res.seconds / max(len(res.log), 1), "heldout_texts": len(heldout),
           "loss_log": [round(r["loss"], 5) for r in res.log], "trajectory": traj,
           "alive_at": next((p["step"] for p in traj if p["min_share"] >= MIN_SHARE), None)}
    write_json(path, rec)
    ckpt = folder / "ckpt" / "checkpoint.pt"
    if ckpt.exists():
        ckpt.unlink()
    return rec


def _seconds_at(log: list[dict], step: int) -> float:
    return log[step - 1]["seconds"] if step else 0.0


def run_pilot(out: str | Path, recipes=RECIPES, s: PilotSettings | None = None, progress: bool = True) -> list[dict]:
    """Every recipe of the pilot, in order (finished ones are read back)."""
    return [run_recipe(init, lr, out, s, progress=progress) for init, lr in recipes]


def pilot_table(out: str | Path):
    """One row per recipe and probe step: share (mean and minimum over layers), loss change and its interval,
    and the training seconds so far.

    Returns:
        A pandas DataFrame.
    """
    import pandas as pd

    rows = []
    for path in sorted(Path(out).glob("*.json")):
        rec = read_json(path)
        for p in rec["trajectory"]:
            rows.append({"recipe": rec["recipe"], "init": rec["init"], "lr": rec["lr"], "step": p["step"],
                         "share": p["share"], "min_share": p["min_share"],
                         **{f"share_L{k}": v for k, v in p["share_by_layer"].items()},
                         "loss_change": p["loss_change"]["delta"], "loss_lo": p["loss_change"]["lo"],
                         "loss_hi": p["loss_change"]["hi"], "train_seconds": p["train_seconds"]})
    return pd.DataFrame(rows)


@dataclasses.dataclass
class LearningSettings:
    """How SMF's learning is measured on top of a retrofit checkpoint (dev items only).

    Args:
        steps: SMF optimizer steps.
        lr: row-sparse Adam's peak rate.
        top_t: rows per memory layer per step.
        selector: the row selector.
        texts_per_step, micro_batch, max_length: the task batches (MedMCQA training texts).
        dev_offset, dev_n: the MedMCQA validation items scored (``dev_offset`` skips the reported ones).
        background_n: Wikipedia lead paragraphs for the background statistics.
    """

    steps: int = 20
    lr: float = 1e-2
    top_t: int = 128
    selector: str = "kl"
    texts_per_step: int = 16
    micro_batch: int = 8
    max_length: int = 256
    dev_offset: int = 1000
    dev_n: int = 100
    background_n: int = 200


def smf_learning(recipe: str, step: int, out: str | Path, s: PilotSettings | None = None,
                 ls: LearningSettings | None = None, progress: bool = True) -> dict:
    """SMF's learning in a fixed number of steps on top of one retrofit checkpoint (saved by
    ``run_recipe(..., save_adapters=True)``): the change in the gold option's margin over the best distractor,
    its renormalised probability and accuracy on dev MedMCQA items, each with a paired 95% interval, next to the
    checkpoint's memory share. One JSON per checkpoint under ``out/learning/``; finished ones are read back."""
    from ..adapter import load_memory
    from ..probes import medmcqa_accuracy
    from ..selection import compute_background_stats
    from .paired_stats import paired_bootstrap

    s, ls = s or PilotSettings(), ls or LearningSettings()
    out = Path(out)
    path = out / "learning" / f"{recipe}-step{step}-lr{ls.lr:g}.json"
    identity = _plain({"recipe": recipe, "step": step, "settings": dataclasses.asdict(ls), "model": s.model})
    if path.exists():
        rec = read_json(path)
        if rec.get("identity") == identity:
            return rec
        raise ValueError(f"{path} was made with other settings; delete it to rerun")
    adapter = out / "artifacts" / recipe / f"step{step}"
    if not adapter.exists():
        raise FileNotFoundError(f"no retrofit checkpoint {adapter}: run `python -m smf_lib retrofit-pilot --recipes "
                                f"{recipe.replace('-lr', ':')} --save-adapters` first")
    t0 = time.perf_counter()
    model, tok = load(s.model)
    load_memory(model, adapter)
    health = read_json(out / f"{recipe}.json")["trajectory"]
    share = next(p for p in health if p["step"] == step)
    dev = data.load_medmcqa("validation", ls.dev_offset + ls.dev_n, root=s.data)[ls.dev_offset:]
    questions = data.load_medmcqa("train", ls.steps * ls.texts_per_step, root=s.data)
    task = [data.medmcqa_training_text(r) for r in questions]
    bg = data.load_background(ls.background_n, s.data)
    stats = compute_background_stats(model, tok, bg, max_length=ls.max_length, progress=progress)
    before = medmcqa_accuracy(model, tok, dev, progress)
    cfg = TrainConfig(method="smf", lr=ls.lr, max_steps=ls.steps, micro_batch=ls.micro_batch,
                      grad_accum=max(1, ls.texts_per_step // ls.micro_batch), max_length=ls.max_length,
                      warmup_steps=min(5, ls.steps), top_t=ls.top_t, selector=ls.selector)
    res = train(model, tok, task, cfg, background=stats, progress=progress)
    after = medmcqa_accuracy(res.model, tok, dev, progress)
    arrays = {}
    for name, run in (("before", before), ("after", after)):
        arrays[name] = {"medmcqa_correct": [i["correct"] for i in run["items"]],
                        "medmcqa_gold_margin": [i["gold_margin"] for i in run["items"]],
                        "medmcqa_gold_prob": [i["gold_prob"] for i in run["items"]],
                        "medmcqa_gold_loglik": [i["gold_loglik"] for i in run["items"]]}
    deltas = {m: paired_bootstrap(arrays["before"], arrays["after"], m)
              for m in ("medmcqa_gold_margin", "medmcqa_gold_prob", "medmcqa_acc", "medmcqa_gold_loglik")}
    rec = {"identity": identity, "recipe": recipe, "retrofit_step": step, "share": share["share"],
           "min_share": share["min_share"], "share_by_layer": share["share_by_layer"], "deltas": deltas,
           "changed_predictions": sum(a["pred"] != b["pred"] for a, b in zip(before["items"], after["items"])),
           "loss_log": [round(r["loss"], 5) for r in res.log], "smf_seconds": res.seconds,
           "seconds": time.perf_counter() - t0, "dev_items": len(dev)}
    write_json(path, rec)
    return rec


def learning_table(out: str | Path):
    """One row per retrofit checkpoint scored by :func:`smf_learning`: share and SMF's learning with intervals.

    Returns:
        A pandas DataFrame.
    """
    import pandas as pd

    rows = []
    for path in sorted((Path(out) / "learning").glob("*.json")):
        rec = read_json(path)
        row = {"recipe": rec["recipe"], "retrofit_step": rec["retrofit_step"], "lr": rec["identity"]["settings"]["lr"],
               "share": rec["share"], "min_share": rec["min_share"], "changed": rec["changed_predictions"]}
        for m, d in rec["deltas"].items():
            key = m.replace("medmcqa_", "d_")
            row.update({key: d["delta"], f"{key}_lo": d["lo"], f"{key}_hi": d["hi"]})
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["recipe", "lr", "retrofit_step"]).reset_index(drop=True) if rows else \
        pd.DataFrame(rows)
