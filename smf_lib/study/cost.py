"""The cost model: a preset's compute estimated from FLOPs, and the speed and memory targets checked on the
benchmark's tables (``benchmarks/bench_steps.py``)."""

from __future__ import annotations

import pandas as pd

from ..probes import PROBES
from .arms import ARMS
from .plan import plan


def benchmark_targets(steps: pd.DataFrame, slots: pd.DataFrame | None = None, gpu: bool = False,
                      probes: list[dict] | None = None) -> pd.DataFrame:
    """The project's speed and memory targets, checked on a benchmark's tables (``benchmarks/bench_steps.py``).

    Args:
        steps: ``{target}_steps.csv`` (one row per method: median_step_s, peak_mem_mb).
        slots: ``{target}_slots.csv`` (n_slots, median_step_s and, when present, run, allocator and
            unused_tensor_mb; one verdict per run and allocator; rows with an unused tensor are a control and
            are left out here).
        gpu: whether the tables come from a GPU (the forward-overhead goal is stated for GPU only).
        probes: the ``probes`` rows of ``{target}_meta.json`` (MedMCQA scoring speed against the base forward).

    Returns:
        A table with one row per target, giving what was measured, the goal, and whether it holds (yes / no /
        not measured / reported).
    """
    t = steps.set_index("method")
    rows = []

    def add(name, value, goal, holds):
        rows.append({"target": name, "measured": value, "goal": goal,
                     "holds": "not measured" if holds is None else ("yes" if holds else "no")})

    def ratio(a, b, col="median_step_s"):
        return float(t.loc[a, col] / t.loc[b, col]) if a in t.index and b in t.index else None

    # the studies' update (row-sparse Adam) first, then the strict SGD steps
    for smf, what in (("smf-kl-adam", "row-sparse Adam"), ("smf-kl", "SGD"), ("smf-tfidf", "SGD")):
        r = ratio(smf, "lora")
        add(f"{smf} ({what}) step / LoRA step", None if r is None else round(r, 3), "<= 1",
            None if r is None else r <= 1)
        r = ratio(smf, "smf-floor")
        add(f"{smf} ({what}) step / SMF floor", None if r is None else round(r, 3), "<= 1.15",
            None if r is None else r <= 1.15)
    r = ratio("smf-kl", "lora", "peak_mem_mb")
    add("smf-kl peak memory / LoRA peak", None if r is None else round(r, 3), "< 1", None if r is None else r < 1)
    if slots is not None and "unused_tensor_mb" in slots:
        slots = slots[slots["unused_tensor_mb"] == 0]  # the control rows (an unused tensor beside) are not a size
    if slots is not None and len(slots):
        keys = [k for k in ("run", "allocator") if k in slots]
        groups = slots.groupby(keys, sort=False) if keys else [((), slots)]
        for key, g in groups:
            g = g.sort_values("n_slots")
            r = float(g["median_step_s"].max() / g["median_step_s"].iloc[0])
            what = ", ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
            label = (f"slot scaling{' (' + what + ')' if what else ''}: slowest step / "
                     f"{int(g['n_slots'].iloc[0]):,}-slot step, up to {int(g['n_slots'].max()):,} slots")
            add(label, round(r, 3), "<= 1.2", r <= 1.2)
    r = ratio("memory-forward", "base-forward")
    add("memory forward / base forward", None if r is None else round(r, 3),
        "<= 1.10 (goal on GPU)", None if r is None or not gpu else r <= 1.10)
    if not gpu and r is not None:
        rows[-1]["holds"] = "reported (goal is for GPU)"
    batched = [p for p in probes or [] if p.get("vs_base_forward") is not None]
    if probes is not None:
        best = max((p["vs_base_forward"] for p in batched), default=None)
        add("MedMCQA scoring tokens/s / base forward tokens/s", None if best is None else round(best, 3), ">= 0.8",
            None if best is None else best >= 0.8)
    return pd.DataFrame(rows)


# parameters of the models the presets use (embeddings included)
MODEL_PARAMS = {"Qwen/Qwen2.5-0.5B-Instruct": 494e6, "smollm2-135m-instruct": 135e6}


def probe_size(p, probe) -> int:
    """The items a report of preset ``p`` scores on a probe: its registered size, read from the preset when it
    names one of the preset's fields."""
    return int(getattr(p, probe.size) if isinstance(probe.size, str) else probe.size)


def estimate_runtime(p, flops_per_s: float, tokens_per_text: float = 230.0, n_params: float | None = None):
    """A preset's compute, estimated from FLOPs: 6 N per trained token for full finetuning (forward, backward
    and weight gradients), 4 N for the methods that train few weights (backward through the activations),
    2 N per scored token; divided by a sustained rate ``flops_per_s``.

    Args:
        p: the preset.
        flops_per_s: sustained FLOP/s of the machine (measured, or an assumption stated with the result).
        tokens_per_text: mean tokens per training text or probe item.
        n_params: model parameters (default: :data:`MODEL_PARAMS`).

    Returns:
        A pandas DataFrame, one row per stage (tokens, TFLOPs, minutes), with a total row.
    """
    n = n_params or MODEL_PARAMS.get(p.model, 494e6)
    epochs = p.task_settings().epochs
    rows = []
    trained = (p.train_n or 0) * tokens_per_text * epochs
    retro = (p.retrofit_n or 0) * tokens_per_text * p.retrofit_config(0).epochs
    if any(ARMS[s.method].memory for s in plan(p)):
        rows.append(("retrofit", retro, 4 * n * retro))
        bg = p.background_n * tokens_per_text
        rows.append(("background statistics", bg, 2 * n * bg))
    full_eval = sum(probe.cost * probe_size(p, probe) for probe in PROBES.values()) * tokens_per_text
    dev = sum(p.dev_subset.get(k, 0) for k in ("medmcqa", "acquisition", "chat")) * tokens_per_text
    for s in plan(p):
        arm = ARMS[s.method]
        if arm.train is not None:
            per = 6 if arm.train == "full" else 4
            rows.append((f"train {s.name}", trained, per * n * trained))
            pts = p.trajectory_points - 1
            rows.append((f"trajectory {s.name}", dev * pts, 2 * n * dev * pts))
        if s.evaluation == "report":
            rows.append((f"evaluate {s.name}", full_eval, 2 * n * full_eval))
    df = pd.DataFrame(rows, columns=["stage", "tokens", "flops"])
    df.loc[len(df)] = ["total", df["tokens"].sum(), df["flops"].sum()]
    df["minutes"] = df["flops"] / flops_per_s / 60
    df["tflops"] = df["flops"] / 1e12
    return df[["stage", "tokens", "tflops", "minutes"]].round({"tokens": 0, "tflops": 1, "minutes": 1})


def performance_answer(steps: pd.DataFrame, slots: pd.DataFrame | None = None, device: str = "2 CPU cores") -> str:
    """Chapter 6's answer in one sentence, from a benchmark's tables: the studies' SMF step (row-sparse Adam)
    against a LoRA and a full-finetuning step, in time and peak memory, and how its time moves from the smallest to
    the largest table with the allocator tuned (the first run of ``slots``, its controls left out)."""
    t = steps.set_index("method")
    smf = "smf-kl-adam" if "smf-kl-adam" in t.index else "smf-kl"
    time = {b: float(t.loc[smf, "median_step_s"] / t.loc[b, "median_step_s"]) for b in ("lora", "full") if b in t.index}
    mem = {b: float(t.loc[smf, "peak_mem_mb"] / t.loc[b, "peak_mem_mb"]) for b in time}
    names = {"lora": "LoRA's", "full": "full finetuning's"}
    out = (f"On {device}, an SMF step ({'row-sparse Adam' if smf == 'smf-kl-adam' else 'SGD'}) takes "
           + " and ".join(f"{time[b]:.2f}x {names[b]} time" for b in time) + " at "
           + " and ".join(f"{mem[b]:.0%} of {names[b]} peak memory" for b in mem))
    if slots is not None and len(slots):
        s = slots[slots.get("unused_tensor_mb", 0) == 0]
        if "allocator" in s:
            s = s[s["allocator"] == "tuned"] if (s["allocator"] == "tuned").any() else s
        if "run" in s:
            s = s[s["run"] == s["run"].iloc[0]]
        s = s.sort_values("n_slots")
        if len(s) > 1:
            out += (f"; from {int(s['n_slots'].iloc[0]):,} to {int(s['n_slots'].iloc[-1]):,} slots per layer a "
                    f"sparse step's time goes from {s['median_step_s'].iloc[0]:.2f} s to "
                    f"{s['median_step_s'].iloc[-1]:.2f} s")
    return out + "."
