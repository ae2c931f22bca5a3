"""The parts of a training step that hold no model: the learning-rate schedule, the data order of a run, float16
loss scaling, checkpoint files and running a probe in isolation. ``smf_lib.training`` re-exports them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .files import verify_checked, write_checked

if TYPE_CHECKING:
    from .training import TrainConfig

def lr_factor(step: int, warmup: int, total: int, schedule: str = "project") -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine to 0 at ``total`` (``schedule="paper"``: the
    warm-up of transformers' cosine schedule, which starts at 0)."""
    if step < warmup:
        return (step + (schedule != "paper")) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def micro_batches(n_texts: int, config: TrainConfig) -> list[list[list[int]]]:
    """The whole run's data order: a list of optimizer steps, each a list of micro-batches of text indices."""
    c = config
    steps, epoch = [], 0
    while True:
        g = torch.Generator().manual_seed(c.seed * 1000 + epoch)
        order = torch.randperm(n_texts, generator=g).tolist()
        mbs = [order[i:i + c.micro_batch] for i in range(0, n_texts, c.micro_batch)]
        steps += [mbs[i:i + c.grad_accum] for i in range(0, len(mbs), c.grad_accum)]
        epoch += 1
        per_epoch = math.ceil(len(mbs) / c.grad_accum)
        if c.max_steps is not None and len(steps) >= c.max_steps:
            return steps[: c.max_steps]
        if c.max_steps is None and epoch >= math.ceil(c.epochs):
            return steps[: max(1, round(c.epochs * per_epoch))]


class LossScaler:
    """Dynamic loss scaling for float16 autocast (GPUs without fast bfloat16, e.g. a T4): the loss is multiplied
    by the scale before backward and the gradients divided after; a step whose gradients overflow is skipped and
    the scale halved, and after 2,000 good steps in a row the scale doubles. Disabled, it does nothing."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.scale, self.good = (2.0**16 if enabled else 1.0), 0

    def scaled(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale if self.scale != 1.0 else loss

    def unscale(self, row_grads, dense) -> list:
        """Gradients back to their true size (row gradients returned, dense ``.grad`` in place)."""
        if self.scale == 1.0:
            return row_grads
        for p in dense:
            if p.grad is not None:
                p.grad.div_(self.scale)
        return [(r, g / self.scale) for r, g in row_grads]

    def update(self, finite: bool) -> bool:
        """Record one step's gradient norm being finite or not; returns whether the step is skipped."""
        if not self.enabled:
            return False
        if not finite:
            self.scale, self.good = self.scale / 2, 0
            return True
        self.good += 1
        if self.good % 2000 == 0:
            self.scale *= 2
        return False

    def state_dict(self) -> dict:
        return {"scale": self.scale, "good": self.good}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.good = state["scale"], state["good"]


def _tensor_bytes(obj) -> int:
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _save_checkpoint(path: Path, identity, model, dense_opt, smf, rand, step, log, seconds, trajectory, scaler,
                     wall):
    state = {**identity, "step": step, "log": log, "seconds": seconds, "trajectory": trajectory, "scaler": scaler,
             "wall": wall,
             "rand": rand.get_state(), "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
             "params": {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
             "rules": [r.state_dict() for r in smf.rules] if smf else []}
    if dense_opt:
        state["dense_opt"] = dense_opt.state_dict()
    write_checked(path, lambda tmp: torch.save(state, tmp))


def _load_checkpoint(path: Path, identity: dict) -> dict:
    """A checkpoint made with the same config and texts; anything else is refused with the remedy."""
    verify_checked(path, "delete it to train from the start")
    try:
        state = torch.load(path, weights_only=True)
        saved = {k: state[k] for k in ("config", "texts", "n_texts")}
    except Exception as err:
        raise ValueError(f"checkpoint {path} is damaged or from an older smf_lib ({type(err).__name__}: {err}); "
                         "delete it to train from the start") from err
    if saved != identity:
        diff = sorted(k for k in identity["config"] if saved["config"].get(k) != identity["config"][k])
        what = f"config fields {diff}" if diff else "training texts"
        raise ValueError(f"checkpoint {path} was made with other {what}; delete it (or the run's folder) to "
                         "train from the start, or use the config it was made with")
    return state


def _run_probe(probe, model, step: int) -> dict:
    """Run ``probe`` in eval mode on the plain causal LM (peft's wrapper unwrapped), isolated from the training
    random streams."""
    was_training = model.training
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    model.eval()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            out = probe(inner, step)
    finally:
        model.train(was_training)
    return {"step": step, **out}


@dataclass
class TrainResult:
    """What :func:`~smf_lib.training.train` returns: the trained model (LoRA merged), the per-step log, the probe
    trajectory, the training seconds, the bytes of optimizer state held at the end, and ``resumed`` when it went on
    from a checkpoint: ``{"step": the step it resumed after, "earlier_seconds": wall seconds the earlier processes
    spent on it up to that checkpoint, probes included}``, so that a resumed run's cost counts every part."""

    model: torch.nn.Module
    log: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    optimizer_bytes: int = 0
    trajectory: list[dict] = field(default_factory=list)
    resumed: dict | None = None
