"""One training loop for retrofit, sparse memory finetuning (SMF), LoRA and full finetuning.

Two registries make the choices, so nothing else branches on names:

- ``METHODS``: what trains. ``retrofit``: all memory parameters densely (AdamW), the base frozen (METHOD.md
  section 3.1). ``smf``: only the value rows selected per step (sections 4-5). ``lora`` (peft, merged after
  training) and ``full``: dense AdamW.
- ``UPDATES`` (:mod:`smf_lib.updates`): how SMF moves the selected value rows: row-sparse Adam (default), strict
  SGD (its rate calibrated per model: ``python -m smf_lib calibrate``) or the paper's masked AdamW.

:func:`train` reads top to bottom as its phases: set up, resume, then per step accumulate (forward and backward
over the micro-batches), reduce (select the rows, average over processes), unscale and clip, apply, log, probe and
checkpoint. :class:`~smf_lib.steps.LossScaler` is float16's dynamic loss scale; :mod:`smf_lib.ddp` the
multi-process helpers.

Warm-up + cosine schedule, gradient accumulation, clipping, a loss log, probe trajectories, resumable
checkpoints (parameters, optimizer state, selection and dropout random state), and a stop with a clear error
when the loss stops being finite.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .batches import collate_batch
from .ddp import all_reduce_mean, all_reduce_sum, distributed
from .fingerprints import texts_fingerprint
from .memory import MemoryMLP, memory_layers, set_recording
from .selection import SELECTORS, BackgroundStats, SmfSettings, SparseMemory, check_background  # noqa: F401
from .updates import UPDATES, MaskedAdamW, RowSGD, RowSparseAdam, UpdateRule  # noqa: F401 (the public API)
from .methods import (ADDRESSING, LORA_TARGETS, METHODS, LoraSettings, Method, RetrofitSettings,  # noqa: F401
                      default_lr, prepare_model, rate_keys, settings_of)
from .steps import (LossScaler, TrainResult, _load_checkpoint, _run_probe, _save_checkpoint,  # noqa: F401
                    _tensor_bytes, lr_factor, micro_batches)

class TrainingDiverged(FloatingPointError):
    """The training loss stopped being finite; no metrics are written for such a run."""


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
        smf: SMF's own settings (:class:`~smf_lib.selection.SmfSettings`, or a dict of its fields: ``selector``,
            ``top_t``, ``update``, ``count_padding``, ``select_per_microbatch``, ``deterministic_ties``). Each of
            them may also be given by name, ``TrainConfig(selector="tfidf", top_t=500)``, and read back as
            ``config.top_t``; the defaults are SmfSettings' own.
        train_alpha: SMF also trains each layer's alpha densely (a variant in the paper).
        lora: LoRA's settings (:class:`~smf_lib.methods.LoraSettings`, or a dict of its fields; paper: r 16,
            alpha 32, dropout 0.05, 7 projections).
        retrofit: the retrofit's settings (:class:`~smf_lib.methods.RetrofitSettings`, or a dict of its fields;
            paper: everything trains densely, no balancing term).
        checkpoint_every: optimizer steps between checkpoints (0: none).
        loss_average: ``"step-tokens"`` (every real token of an optimizer step weighs the same across its
            micro-batches, as in the paper's code) or ``"micro-batch"`` (each micro-batch's mean loss weighs the
            same).
        schedule: ``"project"`` (warm-up step s at (s + 1) / warmup_steps, then cosine to 0), ``"paper"``
            (transformers' cosine schedule: s / warmup_steps, so the first step has rate 0) or ``"constant"`` (the
            project's warm-up, then the peak rate to the end: a stream of facts, where a decay would teach later
            facts at lower rates).
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
    train_alpha: bool = False
    smf: SmfSettings = field(default_factory=SmfSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    retrofit: RetrofitSettings = field(default_factory=RetrofitSettings)
    checkpoint_every: int = 0
    loss_average: str = "step-tokens"
    schedule: str = "project"
    autocast: str | None = None

    def __post_init__(self):
        for name, value, allowed in (("method", self.method, METHODS),
                                     ("loss_average", self.loss_average, ("step-tokens", "micro-batch")),
                                     ("schedule", self.schedule, ("project", "paper", "constant")),
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
        self.smf = settings_of(self.smf, SmfSettings, "SMF")
        self.lora = settings_of(self.lora, LoraSettings, "LoRA")
        self.retrofit = settings_of(self.retrofit, RetrofitSettings, "retrofit")
        integer("checkpoint_every", 0, "steps between checkpoints; 0 for none")
        integer("seed", 0, "random seed")
        if self.max_steps is not None:
            integer("max_steps", 1, "optimizer steps; None to use epochs")
        for name, low_ok in (("epochs", False), ("clip", True), ("weight_decay", True)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 \
                    or (v == 0 and not low_ok):
                raise ValueError(f"{name} must be a finite number {'>= 0' if low_ok else '> 0'}, got {v!r}")
        if self.lr is None:
            self.lr = default_lr(self.lr_key)
            if self.lr is None:
                raise ValueError(f"update {self.update!r} has no default rate: its step follows the scale of the "
                                 "model's gradients. Pass lr= (python -m smf_lib calibrate --model NAME "
                                 "--update sgd measures one on held-out training questions)")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) \
                or self.lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")

    def record(self) -> dict:
        """The config as one flat dict of plain values (LoRA's settings as ``lora_r``, ``lora_alpha``,
        ``lora_dropout``, ``lora_targets``; the retrofit's as ``retrofit_addressing``, ... where they differ from the
        paper's, so the identities of runs made before those settings existed still match): what run records,
        checkpoints and identities store."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("smf", "lora", "retrofit")}
        for f in fields(SmfSettings):
            out[f.name] = getattr(self.smf, f.name)
        for f in fields(LoraSettings):
            out[f"lora_{f.name}"] = getattr(self.lora, f.name)
        for f in fields(RetrofitSettings):
            if getattr(self.retrofit, f.name) != f.default:
                out[f"retrofit_{f.name}"] = getattr(self.retrofit, f.name)
        return out

    @property
    def smf_settings(self) -> SmfSettings:
        """SMF's own settings (``self.smf``), as the :class:`~smf_lib.selection.SparseMemory` of :func:`train`
        takes them."""
        return self.smf

    # SMF's settings read by name (``config.top_t``), as they may be given (``TrainConfig(top_t=...)``)
    selector = property(lambda self: self.smf.selector, doc="SMF's row scorer (``smf.selector``).")
    top_t = property(lambda self: self.smf.top_t, doc="SMF's rows per layer per step (``smf.top_t``).")
    update = property(lambda self: self.smf.update, doc="SMF's update rule (``smf.update``).")
    count_padding = property(lambda self: self.smf.count_padding, doc="``smf.count_padding``.")
    select_per_microbatch = property(lambda self: self.smf.select_per_microbatch,
                                     doc="``smf.select_per_microbatch``.")
    deterministic_ties = property(lambda self: self.smf.deterministic_ties, doc="``smf.deterministic_ties``.")

    @property
    def lr_key(self) -> str:
        """This config's key in a learning-rate table (``rate_keys()``): SMF by its update rule."""
        return f"smf-{self.update}" if METHODS[self.method].sparse else self.method


#: SMF's settings that TrainConfig also takes by name.
SMF_NAMES = tuple(f.name for f in fields(SmfSettings))
_dataclass_init = TrainConfig.__init__


def _init(self, *args, **kwargs):
    flat = {k: kwargs.pop(k) for k in SMF_NAMES if k in kwargs}
    if flat:  # by name: into SMF's settings (which check them)
        kwargs["smf"] = dataclasses.replace(settings_of(kwargs.get("smf", SmfSettings()), SmfSettings, "SMF"), **flat)
    _dataclass_init(self, *args, **kwargs)


_init.__doc__ = _dataclass_init.__doc__
_init.__signature__ = inspect.signature(_dataclass_init)
TrainConfig.__init__ = _init


def config_names() -> set[str]:
    """Every name :class:`TrainConfig` takes: its fields and SMF's settings by name."""
    return {f.name for f in fields(TrainConfig)} | set(SMF_NAMES)


def train(model, tokenizer, texts: list[str], config: TrainConfig, background: BackgroundStats | None = None,
          checkpoint_dir: str | Path | None = None, progress: bool = True,
          probe: Callable[[torch.nn.Module, int], dict] | None = None, probe_steps: Iterable[int] = (),
          order: list[list[list[int]]] | None = None) -> TrainResult:
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
        order: the data order itself: a list of optimizer steps, each a list of micro-batches of indices into
            ``texts`` (e.g. :func:`smf_lib.facts.fact_order`, one fact per step); ``None`` shuffles the texts per
            epoch (``micro_batch``, ``grad_accum``, ``epochs`` / ``max_steps``).

    Returns:
        A :class:`TrainResult`; for LoRA the adapter is merged into the returned model.

    Raises:
        TrainingDiverged: the loss became NaN or infinite (the message names the step).
    """
    c = config
    run = _setup(model, tokenizer, texts, c, background, checkpoint_dir, order)
    if run.ckpt is not None and run.ckpt.exists():
        _resume(run)
    if probe is not None and run.start == 0:
        run.trajectory.append(_run_probe(probe, run.model, 0))
    probe_at = {s for s in probe_steps if 0 < s <= len(run.plan)}
    run.model.train()
    set_recording(run.model, run.select)
    bar = tqdm(total=len(run.plan), initial=run.start, desc=c.method, disable=not progress or run.rank > 0)
    try:
        for step in range(run.start, len(run.plan)):
            loss = _step(run, step)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
            if probe is not None and step + 1 in probe_at:
                set_recording(run.model, False)
                run.trajectory.append(_run_probe(probe, run.model, step + 1))
                set_recording(run.model, run.select)
            _checkpoint(run, step + 1)
    finally:
        bar.close()
        _stop_recording(run)
    _check_finished(run.model, tokenizer, texts, run.plan, c, run.device, run.rank, run.world)
    model = run.model
    model.eval()
    model.requires_grad_(False)
    model = METHODS[c.method].finish(model)
    states = ([r.state_dict() for r in run.smf.rules] if run.smf else []) + \
        ([run.dense_opt.state_dict()] if run.dense_opt else [])
    resumed = {"step": run.start, "earlier_seconds": run.earlier} if run.earlier else None
    return TrainResult(model, run.log, run.seconds, _tensor_bytes(states), run.trajectory, resumed)


def _step(run: _Run, step: int) -> float:
    """One optimizer step: accumulate, reduce, unscale and clip, apply (unless float16 overflowed), log; the loss."""
    c, t0 = run.c, time.perf_counter()
    lr = c.lr * lr_factor(step, c.warmup_steps, len(run.plan), c.schedule)
    loss = _accumulate(run, step)
    row_grads, loss = _reduce(run, loss)
    row_grads, norm, skipped = _unscale_and_clip(run, row_grads, step)
    if not skipped:
        _apply(run, row_grads, lr)
    run.seconds += time.perf_counter() - t0
    run.log.append({"step": step + 1, "loss": loss, "lr": lr, "grad_norm": None if skipped else norm,
                    "rows": sum(int(r.numel()) for r, _ in row_grads), "seconds": run.seconds,
                    **({"skipped": True} if skipped else {})})
    return loss


def _stop_recording(run: _Run) -> None:
    """After the loop, finished or not: no reads recorded, no SMF hooks, the memory's training flags off."""
    set_recording(run.model, False)
    if run.smf is not None:
        run.smf.close()
    for m in memory_layers(run.model):
        m.sparse_grad = m.balance = False
        m.aux_loss = None


@dataclass
class _Run:
    """Everything one call of :func:`train` carries from phase to phase."""

    model: torch.nn.Module
    tokenizer: object
    texts: list
    c: TrainConfig
    background: BackgroundStats | None
    mems: list
    dense: list
    dense_opt: torch.optim.Optimizer | None
    smf: SparseMemory | None
    select: bool
    rank: int
    world: int
    plan: list
    rand: torch.Generator
    device: torch.device
    amp: torch.dtype | None
    scaler: LossScaler
    ckpt: Path | None
    identity: dict
    start: int = 0
    seconds: float = 0.0
    log: list = field(default_factory=list)
    trajectory: list = field(default_factory=list)
    began: float = field(default_factory=time.perf_counter)  # when this process took the training up
    earlier: float = 0.0  # wall seconds of earlier processes, up to the checkpoint resumed from

    def wall(self) -> float:
        """Wall seconds spent on this training so far, over every process that worked on it."""
        return self.earlier + time.perf_counter() - self.began


def _check_order(order, n_texts: int) -> list:
    if not order or not all(step and all(mb for mb in step) for step in order):
        raise ValueError("order must be a non-empty list of optimizer steps, each a non-empty list of non-empty "
                         "micro-batches of text indices")
    bad = next((i for step in order for mb in step for i in mb
                if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_texts), None)
    if bad is not None:
        raise ValueError(f"order names text {bad!r}, but there are {n_texts} texts (indices 0..{n_texts - 1})")
    return [[list(mb) for mb in step] for step in order]


def _setup(model, tokenizer, texts, c: TrainConfig, background, checkpoint_dir, order=None) -> _Run:
    """Check the inputs, set what trains, and build the optimizers, the data order and the random streams."""
    if not texts:
        raise ValueError("no training texts given")
    if METHODS[c.method].sparse:
        check_background(c.selector, background, model)
    torch.manual_seed(c.seed)  # every random draw of the method comes from its seed: LoRA's layers first
    model = prepare_model(model, c)
    select = METHODS[c.method].sparse  # SMF selects rows; a sparse retrofit moves every row it reads
    mems = memory_layers(model) if select or (c.method == "retrofit" and c.retrofit.sparse_values) else []
    if select and mems and c.top_t > mems[0].config.n_slots:
        warnings.warn(f"top_t={c.top_t} is more rows than a memory layer has ({mems[0].config.n_slots} slots): every "
                      "read row is selected, so SMF updates whatever the batch reads (the paper takes about 3% of the "
                      "slots)", stacklevel=3)
    dense = [p for n, p in model.named_parameters() if p.requires_grad and not (mems and n.endswith("values.weight"))]
    rank, world = distributed()
    if world > 1 and c.micro_batch < world:
        raise ValueError(f"micro_batch={c.micro_batch} is smaller than the {world} processes: each process takes "
                         "an equal share of every micro-batch; raise micro_batch to at least the world size")
    run = _Run(model=model, tokenizer=tokenizer, texts=texts, c=c, background=background, mems=mems, dense=dense,
               dense_opt=torch.optim.AdamW(dense, lr=c.lr, weight_decay=c.weight_decay) if dense else None,
               smf=SparseMemory(model, c.smf_settings, background, c.weight_decay, c.seed, select) if mems else None,
               select=select,
               rank=rank, world=world,
               plan=micro_batches(len(texts), c) if order is None else _check_order(order, len(texts)),
               rand=torch.Generator().manual_seed(c.seed),
               device=next(model.parameters()).device, amp=getattr(torch, c.autocast) if c.autocast else None,
               scaler=LossScaler(c.autocast == "float16"),
               ckpt=Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir else None,
               identity={"config": c.record(), "texts": texts_fingerprint(texts), "n_texts": len(texts)})
    if run.smf is not None:
        run.rand = run.smf.rand  # the selector's draws: checkpointed with the run
    if order is not None:  # an explicit order is part of what a checkpoint must match
        run.identity["texts"] += "/" + texts_fingerprint([repr(run.plan)])
    torch.manual_seed(c.seed)  # dropout (LoRA)
    return run


def _resume(run: _Run) -> None:
    """Restore parameters, optimizer states, random streams and logs from the run's checkpoint."""
    state = _load_checkpoint(run.ckpt, run.identity)
    with torch.no_grad():
        params = dict(run.model.named_parameters())
        for k, v in state["params"].items():
            params[k].copy_(v)
    if run.dense_opt:
        run.dense_opt.load_state_dict(state["dense_opt"])
    if run.smf is not None:
        run.smf.load_state_dict({"rules": state["rules"], "rand": state["rand"]})
    torch.set_rng_state(state["torch_rng"])
    if torch.cuda.is_available() and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    run.start, run.log, run.seconds, run.trajectory = state["step"], state["log"], state["seconds"], state["trajectory"]
    run.earlier = state.get("wall", state["seconds"])  # checkpoints of earlier versions kept the step time only
    run.scaler.load_state_dict(state["scaler"])


def _accumulate(run: _Run, step: int) -> float:
    """Forward and backward over the step's micro-batches, each recorded by the run's :class:`SparseMemory` (its reads
    and value-row gradients); returns the step's loss."""
    c, group = run.c, run.plan[step]
    total_loss = 0.0
    batches = [collate_batch(run.tokenizer, [run.texts[i] for i in mb[run.rank::run.world]], c.max_length, run.device)
               for mb in group]
    scored = [int((b["labels"][:, 1:] != -100).sum()) for b in batches]  # tokens each loss averages over
    step_tokens = float(all_reduce_sum(torch.tensor(float(sum(scored))), run.world)) / run.world
    for batch, n_scored in zip(batches, scored):
        weight = n_scored / max(step_tokens, 1) if c.loss_average == "step-tokens" else 1 / len(group)
        with torch.autocast(run.device.type, dtype=run.amp, enabled=run.amp is not None):
            loss = run.model(**batch).loss.float()
            if c.method == "retrofit" and c.retrofit.balance:
                loss = loss + c.retrofit.balance * torch.stack([m.memory.aux_loss.float() for m in run.model.modules()
                                                                if isinstance(m, MemoryMLP)]).mean()
            loss = loss * weight
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"the training loss is {loss.item()} at step {step + 1} of {len(run.plan)} "
                                   f"({c.method}, lr {c.lr:g}); lower the learning rate or check the data. No "
                                   "metrics are written for this run")
        run.scaler.scaled(loss).backward()
        total_loss += loss.item()
        if run.smf is not None:
            run.smf.record(batch["attention_mask"])
    return total_loss


def _reduce(run: _Run, total_loss: float):
    """Select the step's rows from its summed read counts, and average gradients and the loss over processes."""
    row_grads = []
    if run.smf is not None:
        run.smf.select()
        row_grads = run.smf.row_grads
    if run.world > 1:
        for p in run.dense:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad = all_reduce_mean(p.grad, run.world)
        total_loss = float(all_reduce_mean(torch.tensor(total_loss), run.world))
    return row_grads, total_loss


def _unscale_and_clip(run: _Run, row_grads, step: int):
    """Undo the loss scale, skip a float16 overflow (or stop on a non-finite norm) and clip the global norm."""
    c = run.c
    row_grads = run.scaler.unscale(row_grads, run.dense)
    sq = sum(float(g.float().square().sum()) for _, g in row_grads)
    sq += sum(float(p.grad.float().square().sum()) for p in run.dense if p.grad is not None)
    norm = math.sqrt(sq)
    skipped = run.scaler.update(math.isfinite(norm))
    if skipped:
        if run.dense_opt is not None:
            run.dense_opt.zero_grad(set_to_none=True)
        return [(r[:0], g[:0]) for r, g in row_grads], norm, True
    if not math.isfinite(norm):
        raise TrainingDiverged(f"the gradient norm is {norm} at step {step + 1} of {len(run.plan)} ({c.method}, "
                               f"lr {c.lr:g}); lower the learning rate. No metrics are written for this run")
    scale = min(1.0, c.clip / (norm + 1e-6)) if c.clip else 1.0
    if scale < 1.0:
        row_grads = [(r, g * scale) for r, g in row_grads]
        for p in run.dense:
            if p.grad is not None:
                p.grad.mul_(scale)
    return row_grads, norm, False


def _apply(run: _Run, row_grads, lr: float) -> None:
    """Move the selected value rows through their update rule and the dense parameters through AdamW."""
    if run.smf is not None:
        run.smf.row_grads = row_grads
        run.smf.step(lr)
    if run.dense_opt is not None:
        for grp in run.dense_opt.param_groups:
            grp["lr"] = lr
        run.dense_opt.step()
        run.dense_opt.zero_grad(set_to_none=True)


def _checkpoint(run: _Run, done: int) -> None:
    """Every ``checkpoint_every`` steps and after the last one (process 0 only)."""
    c = run.c
    if run.ckpt is None or run.rank != 0 or not c.checkpoint_every:
        return
    if done % c.checkpoint_every == 0 or done == len(run.plan):
        _save_checkpoint(run.ckpt, run.identity, run.model, run.dense_opt, run.smf, run.rand, done, run.log,
                         run.seconds, run.trajectory, run.scaler.state_dict(), run.wall())


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
