"""One training loop for retrofit, sparse memory finetuning (SMF), LoRA and full finetuning.

Two registries make the choices, so nothing else branches on names:

- ``METHODS``: what trains. ``retrofit``: all memory parameters densely (AdamW), the base frozen (METHOD.md
  section 3.1). ``smf``: only the value rows selected per step (sections 4-5). ``lora`` (peft, merged after
  training) and ``full``: dense AdamW.
- ``UPDATES``: how SMF moves the selected value rows. Every rule has ``step(rows, grads, lr)`` and
  ``state_dict()`` / ``load_state_dict()``:
  ``adam`` (default): row-sparse Adam; moments exist only for rows it has touched, with per-row step counts for
  bias correction. Its step size does not depend on the scale of the model's gradients, so one rate transfers
  across models. ``sgd``: plain SGD on the selected rows; its rate must be calibrated per model
  (``python -m smf_lib calibrate``). Both are strict: every other row and every frozen parameter is
  bit-identical after a step, and the cost is O(rows read), no N x d sweep. ``paper``: the paper's gradient
  mask + dense AdamW over the whole table; its moments keep moving a row for a while after it was last
  selected (the "momentum leak"), and any weight decay moves every row; kept for fidelity.

Warm-up + cosine schedule, gradient accumulation, clipping, a loss log, probe trajectories, resumable
checkpoints (parameters, optimizer state, selection and dropout random state), and a stop with a clear error
when the loss stops being finite.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .batches import collate_batch
from .files import verify_checked, write_checked
from .fingerprints import texts_fingerprint
from .memory import MemoryMLP, memory_layers, set_recording
from .selection import SELECTORS, BackgroundStats, batch_counts, select_for_layers

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class TrainingDiverged(FloatingPointError):
    """The training loss stopped being finite; no metrics are written for such a run."""


# ----------------------------------------------------------------------------------------------------------------
# Row-update rules for the value tables (one interface: step, state_dict, load_state_dict)

class RowSGD:
    """Plain SGD on the selected rows (no momentum, no decay): ``V[rows] -= lr * grads``."""

    def __init__(self, table: torch.Tensor, weight_decay: float = 0.0):
        self.table = table

    @torch.no_grad()
    def step(self, rows: torch.Tensor, grads: torch.Tensor, lr: float) -> None:
        self.table.index_add_(0, rows, grads.to(self.table.dtype), alpha=-lr)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class RowSparseAdam:
    """Adam over the rows of one table that have been touched: moments exist only for those rows, each row
    keeps its own step count for bias correction; untouched rows cost nothing and never move.

    The moments live in a table of slots that grows geometrically (doubling), so a step costs O(t) for its t
    rows, not O(rows touched so far)."""

    def __init__(self, table: torch.Tensor, weight_decay: float = 0.0, betas=(0.9, 0.999), eps=1e-8):
        self.table, self.betas, self.eps, self.wd = table, betas, eps, weight_decay
        self.slot_of = torch.full((table.shape[0],), -1, dtype=torch.long, device=table.device)
        self.used = 0
        self._m = table.new_zeros(0, table.shape[1], dtype=torch.float32)
        self._v = table.new_zeros(0, table.shape[1], dtype=torch.float32)
        self._steps = torch.zeros(0, dtype=torch.long, device=table.device)

    def _grow(self, need: int) -> None:
        cap = self._m.shape[0]
        if need <= cap:
            return
        new_cap = min(self.table.shape[0], max(need, 2 * cap, 64))
        for name in ("_m", "_v", "_steps"):
            old = getattr(self, name)
            grown = old.new_zeros(new_cap, *old.shape[1:])
            grown[:cap] = old
            setattr(self, name, grown)

    @torch.no_grad()
    def step(self, rows: torch.Tensor, grads: torch.Tensor, lr: float) -> None:
        new = rows[self.slot_of[rows] < 0]
        if new.numel():
            self._grow(self.used + len(new))
            self.slot_of[new] = torch.arange(self.used, self.used + len(new), device=rows.device)
            self.used += len(new)
        s = self.slot_of[rows]
        b1, b2 = self.betas
        grads = grads.float()
        self._steps[s] += 1
        m = self._m[s].mul_(b1).add_(grads, alpha=1 - b1)
        v = self._v[s].mul_(b2).addcmul_(grads, grads, value=1 - b2)
        self._m[s], self._v[s] = m, v
        k = self._steps[s].unsqueeze(1).to(m.dtype)
        update = (m / (1 - b1**k)) / ((v / (1 - b2**k)).sqrt() + self.eps)
        if self.wd:
            update = update + self.wd * self.table[rows].float()
        self.table.index_add_(0, rows, update.to(self.table.dtype), alpha=-lr)

    @property
    def m(self) -> torch.Tensor:
        """First moments of the touched rows, in the order they were first touched."""
        return self._m[: self.used]

    @property
    def v(self) -> torch.Tensor:
        """Second moments of the touched rows."""
        return self._v[: self.used]

    @property
    def steps(self) -> torch.Tensor:
        """Each touched row's own step count."""
        return self._steps[: self.used]

    def state_dict(self) -> dict:
        return {"slot_of": self.slot_of, "m": self.m, "v": self.v, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.slot_of = state["slot_of"].clone()
        self._m, self._v, self._steps = state["m"].clone(), state["v"].clone(), state["steps"].clone()
        self.used = self._m.shape[0]


class MaskedAdamW:
    """The paper's update: the value gradient is zero outside the selected rows, and a dense AdamW steps the
    whole table (so its moments move rows selected earlier, and weight decay moves every row)."""

    def __init__(self, table: torch.Tensor, weight_decay: float = 0.0):
        self.table = table
        self.opt = torch.optim.AdamW([table], lr=1.0, weight_decay=weight_decay)

    @torch.no_grad()
    def step(self, rows: torch.Tensor, grads: torch.Tensor, lr: float) -> None:
        self.table.grad = torch.zeros_like(self.table).index_put_((rows,), grads.to(self.table.dtype))
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.step()
        self.table.grad = None

    def state_dict(self) -> dict:
        return self.opt.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state)


@dataclass(frozen=True)
class UpdateRule:
    """A value-row update rule and its default peak learning rate (``None``: must be given per model)."""

    make: Callable
    default_lr: float | None


# The update registry: a new rule is one class with the interface above and one line here.
UPDATES: dict[str, UpdateRule] = {
    "adam": UpdateRule(RowSparseAdam, 5e-4),
    "sgd": UpdateRule(RowSGD, None),
    "paper": UpdateRule(MaskedAdamW, 5e-4),
}


# ----------------------------------------------------------------------------------------------------------------
# Methods: what trains

def _prepare_retrofit(model, c):
    for mod in model.modules():
        if isinstance(mod, MemoryMLP):
            mod.requires_grad_(True)
            mod.mlp.requires_grad_(False)
    return model


def _prepare_smf(model, c):
    for m in memory_layers(model):
        m.values.weight.requires_grad_(True)
        m.sparse_grad = True
    if c.train_alpha:
        for mod in model.modules():
            if isinstance(mod, MemoryMLP):
                mod.alpha.requires_grad_(True)
    return model


def _prepare_lora(model, c):
    from peft import LoraConfig, get_peft_model

    lcfg = LoraConfig(r=c.lora_r, lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout,
                      target_modules=list(c.lora_targets), task_type="CAUSAL_LM")
    return get_peft_model(model, lcfg)


def _prepare_full(model, c):
    return model.requires_grad_(True)


@dataclass(frozen=True)
class Method:
    """What a training method trains.

    Args:
        prepare: ``(model, config) -> model`` sets ``requires_grad`` (or wraps the model) for the method.
        needs_memory: the model must have memory layers.
        sparse: value rows move through an update rule of ``UPDATES`` (the rate key is ``smf-{update}``).
        finish: ``model -> model`` after training (LoRA merges its adapter).
        default_lr: peak rate when the config gives none (sparse methods take their update rule's).
    """

    prepare: Callable
    needs_memory: bool = False
    sparse: bool = False
    finish: Callable = staticmethod(lambda m: m)
    default_lr: float | None = None


# The method registry (the paper's rates are the defaults).
METHODS: dict[str, Method] = {
    "retrofit": Method(_prepare_retrofit, needs_memory=True, default_lr=5e-4),
    "smf": Method(_prepare_smf, needs_memory=True, sparse=True),
    "lora": Method(_prepare_lora, finish=lambda m: m.merge_and_unload(), default_lr=2e-4),
    "full": Method(_prepare_full, default_lr=5e-5),
}


def default_lr(key: str) -> float | None:
    """The default peak rate of a rate key (``retrofit``, ``lora``, ``full`` or ``smf-{update}``)."""
    if key.startswith("smf-") and key[4:] in UPDATES:
        return UPDATES[key[4:]].default_lr
    if key in METHODS:
        return METHODS[key].default_lr
    raise ValueError(f"unknown rate key {key!r}; allowed: {', '.join(rate_keys())}")


def rate_keys() -> list[str]:
    """Every key a learning-rate table (``TrainConfig.lr_key``, a preset's ``lr``) may use."""
    return [k for k in METHODS if not METHODS[k].sparse] + [f"smf-{u}" for u in UPDATES]


@dataclass
class TrainConfig:
    """How to train (METHOD.md sections 3-5; the paper's values are the defaults where it gives one).

    Args:
        method: a key of ``METHODS``: ``retrofit`` | ``smf`` | ``lora`` | ``full``.
        lr: peak learning rate (> 0); ``None`` takes the default of the method (or of SMF's update rule).
        weight_decay: AdamW decay, >= 0 (paper: 0 for SMF; applied to touched rows only in row-sparse Adam).
        epochs: passes over the texts, > 0 (ignored when ``max_steps`` is set).
        max_steps: stop after this many optimizer steps (>= 1).
        micro_batch: texts per forward.
        grad_accum: micro-batches per optimizer step.
        max_length: truncation length in tokens (>= 2).
        warmup_steps: linear warm-up, then cosine decay to 0.
        clip: gradient-norm clip, >= 0 (0: off; over all trainable gradients, for SMF the selected rows).
        seed: data order, random selector and dropout seed.
        selector: SMF row scorer, a key of ``SELECTORS``: ``kl`` | ``tfidf`` | ``tf`` | ``random``.
        top_t: rows per memory layer per step (per micro-batch with ``select_per_microbatch``).
        update: SMF update rule, a key of ``UPDATES``: ``adam`` (default, row-sparse Adam) | ``sgd`` (strict
            SGD; calibrate its rate per model) | ``paper`` (gradient mask + dense AdamW).
        count_padding: count reads at padded positions (the paper's code does; default counts real tokens).
        select_per_microbatch: select per micro-batch, updating the union (the paper's code does; default
            selects once per optimizer step from counts summed over its micro-batches).
        train_alpha: SMF also trains each layer's alpha densely (a variant in the paper).
        lora_r, lora_alpha, lora_dropout, lora_targets: LoRA settings (paper: 16, 32, 0.05, 7 projections).
        checkpoint_every: optimizer steps between checkpoints (0: none).
        loss_average: ``"step-tokens"`` (every real token of an optimizer step weighs the same across its
            micro-batches, as in the paper's code) or ``"micro-batch"`` (each micro-batch's mean loss weighs the
            same).
        schedule: ``"project"`` (warm-up step s at (s + 1) / warmup_steps) or ``"paper"`` (transformers' cosine
            schedule: s / warmup_steps, so the first step has rate 0).
        deterministic_ties: equal selector scores go to the lower slot index (``False``: ``torch.topk``'s order,
            as in the paper's code).
        autocast: run forwards under ``torch.autocast`` in this dtype (``"float16"`` | ``"bfloat16"``) with the
            parameters in their own dtype (float32 master weights). ``"float16"`` adds dynamic loss scaling: a
            step whose gradients overflow is skipped and the scale halved (GPUs without fast bfloat16, e.g. T4).
    """

    method: str = "smf"
    lr: float | None = None
    weight_decay: float = 0.0
    epochs: float = 1.0
    max_steps: int | None = None
    micro_batch: int = 4
    grad_accum: int = 4
    max_length: int = 1024
    warmup_steps: int = 100
    clip: float = 1.0
    seed: int = 0
    selector: str = "kl"
    top_t: int = 512
    update: str = "adam"
    count_padding: bool = False
    select_per_microbatch: bool = False
    train_alpha: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = LORA_TARGETS
    checkpoint_every: int = 0
    loss_average: str = "step-tokens"
    schedule: str = "project"
    deterministic_ties: bool = True
    autocast: str | None = None

    def __post_init__(self):
        for name, value, allowed in (("method", self.method, METHODS), ("update", self.update, UPDATES),
                                     ("selector", self.selector, SELECTORS),
                                     ("loss_average", self.loss_average, ("step-tokens", "micro-batch")),
                                     ("schedule", self.schedule, ("project", "paper")),
                                     ("autocast", self.autocast, (None, "float16", "bfloat16"))):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")

        def integer(name, low, what):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an integer >= {low} ({what}), got {v!r}")

        integer("micro_batch", 1, "texts per forward")
        integer("grad_accum", 1, "micro-batches per optimizer step")
        integer("max_length", 2, "tokens per text")
        integer("warmup_steps", 0, "linear warm-up steps")
        integer("top_t", 1, "rows per layer per step")
        integer("lora_r", 1, "LoRA rank")
        if isinstance(self.lora_alpha, bool) or not isinstance(self.lora_alpha, (int, float)) \
                or not math.isfinite(self.lora_alpha) or self.lora_alpha <= 0:
            raise ValueError(f"lora_alpha must be a finite number > 0 (LoRA's scale is alpha / r), got "
                             f"{self.lora_alpha!r}")
        if isinstance(self.lora_targets, (str, bytes)) or not all(isinstance(t, str) and t
                                                                  for t in self.lora_targets):
            raise ValueError(f"lora_targets must be a tuple of module names such as ('q_proj', 'v_proj'), got "
                             f"{self.lora_targets!r}")
        integer("checkpoint_every", 0, "steps between checkpoints; 0 for none")
        integer("seed", 0, "random seed")
        if self.max_steps is not None:
            integer("max_steps", 1, "optimizer steps; None to use epochs")
        for name, low_ok in (("epochs", False), ("clip", True), ("weight_decay", True), ("lora_dropout", True)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 \
                    or (v == 0 and not low_ok):
                raise ValueError(f"{name} must be a finite number {'>= 0' if low_ok else '> 0'}, got {v!r}")
        if self.lora_dropout >= 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.lr is None:
            self.lr = default_lr(self.lr_key)
            if self.lr is None:
                raise ValueError(f"update {self.update!r} has no default rate: its step follows the scale of the "
                                 "model's gradients. Pass lr= (python -m smf_lib calibrate --model NAME "
                                 "--update sgd measures one on held-out training questions)")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) \
                or self.lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        self.lora_targets = tuple(self.lora_targets)

    @property
    def lr_key(self) -> str:
        """This config's key in a learning-rate table (``rate_keys()``): SMF by its update rule."""
        return f"smf-{self.update}" if METHODS[self.method].sparse else self.method


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model (LoRA merged), the per-step log, the probe trajectory, the
    training seconds and the bytes of optimizer state held at the end."""

    model: torch.nn.Module
    log: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    optimizer_bytes: int = 0
    trajectory: list[dict] = field(default_factory=list)


def lr_factor(step: int, warmup: int, total: int, schedule: str = "project") -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine to 0 at ``total`` (``schedule="paper"``: the
    warm-up of transformers' cosine schedule, which starts at 0)."""
    if step < warmup:
        return (step + (schedule == "project")) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def prepare_model(model, config: TrainConfig):
    """Set what trains for the method (wrapping with peft for LoRA); returns the model to train."""
    method = METHODS[config.method]
    if method.needs_memory and not memory_layers(model):
        raise ValueError(f"method {config.method!r} needs memory layers: call smf_lib.add_memory(model, config) "
                         "first")
    model.requires_grad_(False)
    return method.prepare(model, config)


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


def _take_row_grads(mems) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(rows, grads) of each value table, coalesced; clears ``.grad``."""
    out = []
    for m in mems:
        g = m.values.weight.grad
        m.values.weight.grad = None
        if g is None:
            w = m.values.weight
            out.append((torch.zeros(0, dtype=torch.long, device=w.device), w.new_zeros(0, w.shape[1])))
            continue
        g = g.coalesce()
        out.append((g.indices()[0], g.values()))
    return out


def _restrict(rows: torch.Tensor, grads: torch.Tensor, selected: torch.Tensor):
    """Gradient rows of ``selected`` (zeros for a selected row this process did not read: under DDP another
    rank may have read it)."""
    selected = selected.sort().values.to(rows.device)
    out = grads.new_zeros(len(selected), grads.shape[1])
    if len(rows):
        pos = torch.searchsorted(rows, selected).clamp_max(len(rows) - 1)
        found = rows[pos] == selected
        out[found] = grads[pos[found]]
    return selected, out


def distributed() -> tuple[int, int]:
    """(rank, world size). Under ``accelerate launch`` (or torchrun) joins the process group through
    accelerate's ``PartialState`` (gloo on CPU, NCCL on GPU); otherwise (0, 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        from accelerate import PartialState

        PartialState()
    return dist.get_rank(), dist.get_world_size()


def _all_reduce(t: torch.Tensor, world: int, mean: bool) -> torch.Tensor:
    """Sum (or mean) of ``t`` over processes, returned on ``t``'s device. NCCL reduces only CUDA tensors, so
    CPU tensors (read counts, the loss) travel through this process's GPU there."""
    if world == 1:
        return t
    import torch.distributed as dist

    on = t.device
    if dist.get_backend() == "nccl" and t.device.type != "cuda":
        t = t.to(torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(t)
    if mean:
        t = t / world
    return t.to(on)


def _all_reduce_mean(t: torch.Tensor, world: int) -> torch.Tensor:
    return _all_reduce(t, world, mean=True)


def _all_reduce_sum(t: torch.Tensor, world: int) -> torch.Tensor:
    return _all_reduce(t, world, mean=False)


def _merge(parts: list[tuple[torch.Tensor, torch.Tensor]], table: torch.Tensor):
    rows = torch.cat([p[0] for p in parts])
    vals = torch.cat([p[1] for p in parts])
    g = torch.sparse_coo_tensor(rows.unsqueeze(0), vals, table.shape, check_invariants=False).coalesce()
    return g.indices()[0], g.values()


def train(model, tokenizer, texts: list[str], config: TrainConfig, background: BackgroundStats | None = None,
          checkpoint_dir: str | Path | None = None, progress: bool = True,
          probe: Callable[[torch.nn.Module, int], dict] | None = None, probe_steps: Iterable[int] = ()) -> TrainResult:
    """Train ``model`` on ``texts`` with one of the methods of ``METHODS``.

    Args:
        model: a causal LM (with memory layers for ``retrofit`` and ``smf``).
        tokenizer: its tokenizer (``pad_token`` set; batches are padded on the right whatever its setting).
        texts: training texts; the loss covers every real token.
        config: the method and its hyper-parameters.
        background: background statistics (required by selectors that need them); checked against the model.
        checkpoint_dir: where to keep ``checkpoint.pt``; an existing one is resumed from when it was made with
            the same config and texts, and refused otherwise.
        progress: show a tqdm bar.
        probe: ``probe(model, step) -> dict`` of cheap metrics, run in eval mode before the first step
            (step 0) and after each step in ``probe_steps``; its random draws do not disturb training.
        probe_steps: optimizer steps after which to run ``probe``.

    Returns:
        A :class:`TrainResult`; for LoRA the adapter is merged into the returned model.

    Raises:
        TrainingDiverged: the loss became NaN or infinite (the message names the step).
    """
    c = config
    if not texts:
        raise ValueError("no training texts given")
    if METHODS[c.method].sparse and SELECTORS[c.selector].needs_background:
        if background is None:
            raise ValueError(f"selector {c.selector!r} needs background statistics: pass background= from "
                             "compute_background_stats(model, tokenizer, texts)")
        background.check(model)
    torch.manual_seed(c.seed)  # every random draw of the method comes from its seed: LoRA's layers first
    model = prepare_model(model, c)
    mems = memory_layers(model) if METHODS[c.method].sparse else []
    if mems and c.top_t > mems[0].config.n_slots:
        warnings.warn(f"top_t={c.top_t} is more rows than a memory layer has ({mems[0].config.n_slots} slots): every "
                      "read row is selected, so SMF updates whatever the batch reads (the paper takes about 3% of the "
                      "slots)", stacklevel=2)
    device = next(model.parameters()).device
    dense = [p for n, p in model.named_parameters() if p.requires_grad and not (mems and n.endswith("values.weight"))]
    dense_opt = torch.optim.AdamW(dense, lr=c.lr, weight_decay=c.weight_decay) if dense else None
    rules = [UPDATES[c.update].make(m.values.weight, weight_decay=c.weight_decay) for m in mems]
    rank, world = distributed()
    if world > 1 and c.micro_batch < world:
        raise ValueError(f"micro_batch={c.micro_batch} is smaller than the {world} processes: each process takes "
                         "an equal share of every micro-batch; raise micro_batch to at least the world size")
    plan = micro_batches(len(texts), c)
    probe_at = {s for s in probe_steps if 0 < s <= len(plan)}
    rand = torch.Generator().manual_seed(c.seed)
    torch.manual_seed(c.seed)  # dropout (LoRA)
    log, trajectory, start, seconds = [], [], 0, 0.0
    amp = getattr(torch, c.autocast) if c.autocast else None
    scaler = {"scale": 2.0**16 if c.autocast == "float16" else 1.0, "good": 0}
    ckpt = Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir else None
    identity = {"config": asdict(c), "texts": texts_fingerprint(texts), "n_texts": len(texts)}
    if ckpt is not None and ckpt.exists():
        state = _load_checkpoint(ckpt, identity)
        with torch.no_grad():
            params = dict(model.named_parameters())
            for k, v in state["params"].items():
                params[k].copy_(v)
        if dense_opt:
            dense_opt.load_state_dict(state["dense_opt"])
        for rule, st in zip(rules, state["rules"]):
            rule.load_state_dict(st)
        rand.set_state(state["rand"])
        torch.set_rng_state(state["torch_rng"])
        if torch.cuda.is_available() and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        start, log, seconds, trajectory = state["step"], state["log"], state["seconds"], state["trajectory"]
        scaler = state["scaler"]
    if probe is not None and start == 0:
        trajectory.append(_run_probe(probe, model, 0))
    model.train()
    set_recording(model, bool(mems))
    bar = tqdm(total=len(plan), initial=start, desc=c.method, disable=not progress or rank > 0)
    try:
        for step in range(start, len(plan)):
            t0 = time.perf_counter()
            lr = c.lr * lr_factor(step, c.warmup_steps, len(plan), c.schedule)
            group, total_loss = plan[step], 0.0
            counts = [torch.zeros(m.config.n_slots, dtype=torch.long) for m in mems]
            parts = [[] for _ in mems]
            batches = [collate_batch(tokenizer, [texts[i] for i in mb[rank::world]], c.max_length, device)
                       for mb in group]
            scored = [int((b["labels"][:, 1:] != -100).sum()) for b in batches]  # tokens each loss averages over
            step_tokens = float(_all_reduce_sum(torch.tensor(float(sum(scored))), world)) / world
            for batch, n_scored in zip(batches, scored):
                weight = n_scored / max(step_tokens, 1) if c.loss_average == "step-tokens" else 1 / len(group)
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    loss = model(**batch).loss.float() * weight
                if not torch.isfinite(loss):
                    raise TrainingDiverged(f"the training loss is {loss.item()} at step {step + 1} of "
                                           f"{len(plan)} ({c.method}, lr {c.lr:g}); lower the learning rate or "
                                           "check the data. No metrics are written for this run")
                (loss * scaler["scale"] if scaler["scale"] != 1.0 else loss).backward()
                total_loss += loss.item()
                if not mems:
                    continue
                mb_counts = batch_counts(model, None if c.count_padding else batch["attention_mask"])
                grads = _take_row_grads(mems)
                if c.select_per_microbatch:
                    # every process sums the same counts, so every process selects the same rows
                    mb_counts = [_all_reduce_sum(x, world) for x in mb_counts]
                    chosen = select_for_layers(mb_counts, c.selector, c.top_t, background, rand, c.deterministic_ties)
                    grads = [_restrict(r, g, s) for (r, g), s in zip(grads, chosen)]
                for j in range(len(mems)):
                    counts[j] += mb_counts[j]
                    parts[j].append(grads[j])
            row_grads = [_merge(p, m.values.weight) for p, m in zip(parts, mems)]
            if mems and not c.select_per_microbatch:
                counts = [_all_reduce_sum(x, world) for x in counts]
                chosen = select_for_layers(counts, c.selector, c.top_t, background, rand, c.deterministic_ties)
                row_grads = [_restrict(r, g, s) for (r, g), s in zip(row_grads, chosen)]
            if world > 1:  # average gradients over processes (the selected rows are the same everywhere)
                row_grads = [(r, _all_reduce_mean(g.contiguous(), world)) for r, g in row_grads]
                for p in dense:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    p.grad = _all_reduce_mean(p.grad, world)
                total_loss = float(_all_reduce_mean(torch.tensor(total_loss), world))
            if scaler["scale"] != 1.0:  # float16 loss scaling: gradients back to their true size
                row_grads = [(r, g / scaler["scale"]) for r, g in row_grads]
                for p in dense:
                    if p.grad is not None:
                        p.grad.div_(scaler["scale"])
            sq = sum(float(g.float().square().sum()) for _, g in row_grads)
            sq += sum(float(p.grad.float().square().sum()) for p in dense if p.grad is not None)
            norm = math.sqrt(sq)
            skipped = not math.isfinite(norm) and c.autocast == "float16"
            if skipped:  # float16 overflow: skip the step, halve the scale
                scaler["scale"], scaler["good"] = scaler["scale"] / 2, 0
                if dense_opt is not None:
                    dense_opt.zero_grad(set_to_none=True)
                row_grads = [(r[:0], g[:0]) for r, g in row_grads]
            elif c.autocast == "float16":
                scaler["good"] += 1
                if scaler["good"] % 2000 == 0:
                    scaler["scale"] *= 2
            if not math.isfinite(norm) and c.autocast != "float16":
                raise TrainingDiverged(f"the gradient norm is {norm} at step {step + 1} of {len(plan)} ({c.method}, "
                                       f"lr {c.lr:g}); lower the learning rate. No metrics are written for this run")
            scale = min(1.0, c.clip / (norm + 1e-6)) if c.clip else 1.0
            if scale < 1.0:
                row_grads = [(r, g * scale) for r, g in row_grads]
                for p in dense:
                    if p.grad is not None:
                        p.grad.mul_(scale)
            for rule, (rows, g) in zip(rules, row_grads):
                if not skipped:
                    rule.step(rows, g, lr)
            if dense_opt is not None and not skipped:
                for grp in dense_opt.param_groups:
                    grp["lr"] = lr
                dense_opt.step()
                dense_opt.zero_grad(set_to_none=True)
            seconds += time.perf_counter() - t0
            log.append({"step": step + 1, "loss": total_loss, "lr": lr, "grad_norm": None if skipped else norm,
                        "rows": sum(int(r.numel()) for r, _ in row_grads), "seconds": seconds,
                        **({"skipped": True} if skipped else {})})
            bar.update(1)
            bar.set_postfix(loss=f"{total_loss:.3f}")
            if probe is not None and step + 1 in probe_at:
                set_recording(model, False)
                trajectory.append(_run_probe(probe, model, step + 1))
                set_recording(model, bool(mems))
            last = step + 1 == len(plan)
            if ckpt is not None and rank == 0 and c.checkpoint_every and ((step + 1) % c.checkpoint_every == 0 or last):
                _save_checkpoint(ckpt, identity, model, dense_opt, rules, rand, step + 1, log, seconds, trajectory,
                                 scaler)
    finally:
        bar.close()
        set_recording(model, False)
        for m in mems:
            m.sparse_grad = False
    _check_finished(model, tokenizer, texts, plan, c, device, rank, world)
    model.eval()
    model.requires_grad_(False)
    model = METHODS[c.method].finish(model)
    states = [r.state_dict() for r in rules] + ([dense_opt.state_dict()] if dense_opt else [])
    return TrainResult(model, log, seconds, _tensor_bytes(states), trajectory)


def _check_finished(model, tokenizer, texts, plan, c, device, rank, world) -> None:
    """The last step's divergence is divergence too: every trained parameter is finite, and so is the loss of the
    last step's first micro-batch under the trained weights (one forward)."""
    bad = next((n for n, p in model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()), None)
    loss = None
    if bad is None:
        batch = collate_batch(tokenizer, [texts[i] for i in plan[-1][0][rank::world]], c.max_length, device)
        with torch.no_grad():
            loss = model(**batch).loss.float()
    if bad is not None or not torch.isfinite(loss):
        what = f"parameter {bad} is not finite" if bad else f"the loss is {loss.item()}"
        raise TrainingDiverged(f"{what} after step {len(plan)} of {len(plan)} ({c.method}, lr {c.lr:g}); lower the "
                               "learning rate. No metrics are written for this run")


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


def _tensor_bytes(obj) -> int:
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _save_checkpoint(path: Path, identity, model, dense_opt, rules, rand, step, log, seconds, trajectory, scaler):
    state = {**identity, "step": step, "log": log, "seconds": seconds, "trajectory": trajectory, "scaler": scaler,
             "rand": rand.get_state(), "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
             "params": {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
             "rules": [r.state_dict() for r in rules]}
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
