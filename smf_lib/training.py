"""One training loop for retrofit, sparse memory finetuning (SMF), LoRA and full finetuning.

- ``retrofit``: all memory parameters train densely (AdamW), the base is frozen (METHOD.md section 3.1).
- ``smf``: only value rows selected per step train (sections 4-5). Update modes:
  ``strict`` (default): the optimizer touches only the selected rows, so every other row and every frozen
  parameter is bit-identical after a step; SGD (no momentum, no decay) or a row-sparse Adam whose moments
  exist only for rows it has touched (per-row step counts for bias correction). Cost is O(rows read), no
  N x d sweep. ``seed``: the paper's gradient mask + dense AdamW over the whole table. Its moments keep
  moving a row for a while after it was last selected (the "momentum leak"), and any weight decay moves
  every row; kept for fidelity.
- ``lora`` (peft, merged after training) and ``full``: dense AdamW.

Warm-up + cosine schedule, gradient accumulation, clipping, a loss log, resumable checkpoints.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .memory import MemoryMLP, memory_layers, set_recording
from .selection import SELECTORS, BackgroundStats, batch_counts, select_for_layers

METHODS = ("retrofit", "smf", "lora", "full")
UPDATES = ("strict", "seed")
OPTIMIZERS = ("sgd", "adam")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# smf-sgd: the value-table gradient of a mean-token loss is tiny (softmax weight x gate, averaged over every
# token of the batch), so plain SGD needs a very large rate; 1e6 had the best held-out loss of 1e3..1e6 on
# SmolLM2-135M (benchmarks/calibrate_smf_lr.py). Recalibrate for another model. The others are the seed's.
DEFAULT_LR = {"retrofit": 5e-4, "smf-sgd": 1e6, "smf-adam": 5e-4, "lora": 2e-4, "full": 5e-5}


@dataclass
class TrainConfig:
    """How to train (METHOD.md sections 3-5; seed values are the defaults where the seed gives one).

    Args:
        method: ``retrofit`` | ``smf`` | ``lora`` | ``full``.
        lr: peak learning rate; ``None`` takes the method's default (``DEFAULT_LR``).
        weight_decay: AdamW decay (seed: 0 for SMF; applied to touched rows only in strict Adam).
        epochs: passes over the texts (ignored when ``max_steps`` is set).
        max_steps: stop after this many optimizer steps.
        micro_batch: texts per forward.
        grad_accum: micro-batches per optimizer step.
        max_length: truncation length in tokens.
        warmup_steps: linear warm-up, then cosine decay to 0.
        clip: gradient-norm clip (over all trainable gradients; for SMF the selected rows).
        seed: data order and random selector seed.
        selector: SMF row scorer: ``kl`` | ``tfidf`` | ``tf`` | ``random``.
        top_t: rows per memory layer per step (per micro-batch with ``select_per_microbatch``).
        update: SMF update mode: ``strict`` (project default) | ``seed`` (gradient mask + AdamW).
        optimizer: strict-mode optimizer: ``sgd`` (default) | ``adam`` (row-sparse).
        count_padding: count reads at padded positions (seed quirk; default counts real tokens only).
        select_per_microbatch: select per micro-batch, updating the union (seed quirk; default selects once
            per optimizer step from counts summed over its micro-batches).
        train_alpha: SMF also trains each layer's alpha densely (seed variant).
        lora_r, lora_alpha, lora_dropout, lora_targets: LoRA settings (seed: 16, 32, 0.05, 7 projections).
        checkpoint_every: optimizer steps between checkpoints (0: none).
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
    update: str = "strict"
    optimizer: str = "sgd"
    count_padding: bool = False
    select_per_microbatch: bool = False
    train_alpha: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = LORA_TARGETS
    checkpoint_every: int = 0

    def __post_init__(self):
        for name, value, allowed in (("method", self.method, METHODS), ("update", self.update, UPDATES),
                                     ("optimizer", self.optimizer, OPTIMIZERS),
                                     ("selector", self.selector, SELECTORS)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")
        if self.top_t < 1:
            raise ValueError(f"top_t must be >= 1 (rows per layer per step), got {self.top_t}")
        if self.micro_batch < 1 or self.grad_accum < 1:
            raise ValueError("micro_batch and grad_accum must be >= 1")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.lr_key]
        self.lora_targets = tuple(self.lora_targets)

    @property
    def lr_key(self) -> str:
        """This config's key in ``DEFAULT_LR`` (and in a preset's ``lr``): SMF by its update's optimizer."""
        if self.method != "smf":
            return self.method
        return f"smf-{'adam' if self.update == 'seed' else self.optimizer}"


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model (LoRA merged), the per-step log, the training seconds and
    the bytes of optimizer state held at the end."""

    model: torch.nn.Module
    log: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    optimizer_bytes: int = 0


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class RowSparseAdam:
    """Adam over the rows of one table that have been touched: moments exist only for those rows, each row
    keeps its own step count for bias correction; untouched rows cost nothing and never move."""

    def __init__(self, table: torch.Tensor, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.table, self.betas, self.eps, self.wd = table, betas, eps, weight_decay
        self.slot_of = torch.full((table.shape[0],), -1, dtype=torch.long, device=table.device)
        self.m = table.new_zeros(0, table.shape[1])
        self.v = table.new_zeros(0, table.shape[1])
        self.steps = torch.zeros(0, dtype=torch.long, device=table.device)

    @torch.no_grad()
    def step(self, rows: torch.Tensor, grads: torch.Tensor, lr: float) -> None:
        new = rows[self.slot_of[rows] < 0]
        if new.numel():
            self.slot_of[new] = torch.arange(len(self.m), len(self.m) + len(new), device=rows.device)
            self.m = torch.cat([self.m, self.m.new_zeros(len(new), self.m.shape[1])])
            self.v = torch.cat([self.v, self.v.new_zeros(len(new), self.v.shape[1])])
            self.steps = torch.cat([self.steps, self.steps.new_zeros(len(new))])
        s = self.slot_of[rows]
        b1, b2 = self.betas
        self.steps[s] += 1
        m = self.m[s].mul_(b1).add_(grads, alpha=1 - b1)
        v = self.v[s].mul_(b2).addcmul_(grads, grads, value=1 - b2)
        self.m[s], self.v[s] = m, v
        k = self.steps[s].unsqueeze(1).to(m.dtype)
        update = (m / (1 - b1**k)) / ((v / (1 - b2**k)).sqrt() + self.eps)
        if self.wd:
            update = update + self.wd * self.table[rows]
        self.table.index_add_(0, rows, update.to(self.table.dtype), alpha=-lr)

    def state_dict(self) -> dict:
        return {"slot_of": self.slot_of, "m": self.m, "v": self.v, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.slot_of, self.m, self.v, self.steps = state["slot_of"], state["m"], state["v"], state["steps"]


def prepare_model(model, config: TrainConfig):
    """Set what trains for the method (wrapping with peft for LoRA); returns the model to train."""
    c = config
    mems = memory_layers(model)
    if c.method in ("retrofit", "smf") and not mems:
        raise ValueError(f"method {c.method!r} needs memory layers: call smf_lib.add_memory(model, config) first")
    model.requires_grad_(False)
    if c.method == "full":
        model.requires_grad_(True)
    elif c.method == "retrofit":
        for mod in model.modules():
            if isinstance(mod, MemoryMLP):
                mod.requires_grad_(True)
                mod.mlp.requires_grad_(False)
    elif c.method == "smf":
        for m in mems:
            m.values.weight.requires_grad_(True)
            m.sparse_grad = True
        if c.train_alpha:
            for mod in model.modules():
                if isinstance(mod, MemoryMLP):
                    mod.alpha.requires_grad_(True)
    else:
        from peft import LoraConfig, get_peft_model

        lcfg = LoraConfig(r=c.lora_r, lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout,
                          target_modules=list(c.lora_targets), task_type="CAUSAL_LM")
        model = get_peft_model(model, lcfg)
    return model


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


def _collate(tokenizer, texts, max_length, device):
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
    return {"input_ids": enc.input_ids.to(device), "attention_mask": enc.attention_mask.to(device),
            "labels": labels.to(device)}


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


def train(model, tokenizer, texts: list[str], config: TrainConfig, stats: BackgroundStats | None = None,
          checkpoint_dir: str | Path | None = None, progress: bool = True) -> TrainResult:
    """Train ``model`` on ``texts`` with one of the four methods.

    Args:
        model: a causal LM (with memory layers for ``retrofit`` and ``smf``).
        tokenizer: its tokenizer (padding side right; ``pad_token`` set).
        texts: training texts; the loss covers every real token.
        config: the method and its hyper-parameters.
        stats: background statistics (required by SMF with ``kl`` / ``tfidf``); checked against the model.
        checkpoint_dir: where to keep ``checkpoint.pt``; an existing one is resumed from.
        progress: show a tqdm bar.

    Returns:
        A :class:`TrainResult`; for LoRA the adapter is merged into the returned model.
    """
    c = config
    if not texts:
        raise ValueError("no training texts given")
    if c.method == "smf" and c.selector in ("kl", "tfidf"):
        if stats is None:
            raise ValueError(f"selector {c.selector!r} needs background statistics: pass stats= from "
                             "compute_background_stats(model, tokenizer, texts)")
        stats.check(model)
    model = prepare_model(model, c)
    mems = memory_layers(model) if c.method == "smf" else []
    device = next(model.parameters()).device
    dense = [p for n, p in model.named_parameters() if p.requires_grad and not (mems and n.endswith("values.weight"))]
    dense_opt = torch.optim.AdamW(dense, lr=c.lr, weight_decay=c.weight_decay) if dense else None
    row_opts, seed_opt = [], None
    if mems and c.update == "strict" and c.optimizer == "adam":
        row_opts = [RowSparseAdam(m.values.weight, weight_decay=c.weight_decay) for m in mems]
    elif mems and c.update == "seed":
        seed_opt = torch.optim.AdamW([m.values.weight for m in mems], lr=c.lr, weight_decay=c.weight_decay)
    rank, world = distributed()
    if world > 1 and c.micro_batch < world:
        raise ValueError(f"micro_batch={c.micro_batch} is smaller than the {world} processes: each process takes "
                         "an equal share of every micro-batch; raise micro_batch to at least the world size")
    plan = micro_batches(len(texts), c)
    rand = torch.Generator().manual_seed(c.seed)
    log, start, seconds = [], 0, 0.0
    ckpt = Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        with torch.no_grad():
            params = dict(model.named_parameters())
            for k, v in state["params"].items():
                params[k].copy_(v)
        if dense_opt:
            dense_opt.load_state_dict(state["dense_opt"])
        if seed_opt:
            seed_opt.load_state_dict(state["seed_opt"])
        for o, s in zip(row_opts, state.get("row_opts", [])):
            o.load_state_dict(s)
        rand.set_state(state["rand"])
        start, log, seconds = state["step"], state["log"], state["seconds"]
    model.train()
    set_recording(model, bool(mems))
    bar = tqdm(total=len(plan), initial=start, desc=c.method, disable=not progress or rank > 0)
    try:
        for step in range(start, len(plan)):
            t0 = time.perf_counter()
            lr = c.lr * lr_factor(step, c.warmup_steps, len(plan))
            group, total_loss = plan[step], 0.0
            counts = [torch.zeros(m.config.n_slots, dtype=torch.long) for m in mems]
            parts = [[] for _ in mems]
            for mb in group:
                batch = _collate(tokenizer, [texts[i] for i in mb[rank::world]], c.max_length, device)
                loss = model(**batch).loss / len(group)
                loss.backward()
                total_loss += loss.item()
                if not mems:
                    continue
                mb_counts = batch_counts(model, None if c.count_padding else batch["attention_mask"])
                grads = _take_row_grads(mems)
                if c.select_per_microbatch:
                    # every process sums the same counts, so every process selects the same rows
                    mb_counts = [_all_reduce_sum(x, world) for x in mb_counts]
                    chosen = select_for_layers(mb_counts, c.selector, c.top_t, stats, rand)
                    grads = [_restrict(r, g, s) for (r, g), s in zip(grads, chosen)]
                for j in range(len(mems)):
                    counts[j] += mb_counts[j]
                    parts[j].append(grads[j])
            row_grads = [_merge(p, m.values.weight) for p, m in zip(parts, mems)]
            if mems and not c.select_per_microbatch:
                counts = [_all_reduce_sum(x, world) for x in counts]
                chosen = select_for_layers(counts, c.selector, c.top_t, stats, rand)
                row_grads = [_restrict(r, g, s) for (r, g), s in zip(row_grads, chosen)]
            if world > 1:  # average gradients over processes (the selected rows are the same everywhere)
                row_grads = [(r, _all_reduce_mean(g.contiguous(), world)) for r, g in row_grads]
                for p in dense:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    p.grad = _all_reduce_mean(p.grad, world)
                total_loss = float(_all_reduce_mean(torch.tensor(total_loss), world))
            sq = sum(float(g.float().square().sum()) for _, g in row_grads)
            sq += sum(float(p.grad.float().square().sum()) for p in dense if p.grad is not None)
            norm = math.sqrt(sq)
            scale = min(1.0, c.clip / (norm + 1e-6)) if c.clip else 1.0
            if scale < 1.0:
                row_grads = [(r, g * scale) for r, g in row_grads]
                for p in dense:
                    if p.grad is not None:
                        p.grad.mul_(scale)
            with torch.no_grad():
                for j, (m, (rows, g)) in enumerate(zip(mems, row_grads)):
                    if seed_opt is not None:
                        m.values.weight.grad = torch.zeros_like(m.values.weight).index_put_((rows,), g)
                    elif row_opts:
                        row_opts[j].step(rows, g, lr)
                    else:
                        m.values.weight.index_add_(0, rows, g.to(m.values.weight.dtype), alpha=-lr)
            for opt in (dense_opt, seed_opt):
                if opt is not None:
                    for grp in opt.param_groups:
                        grp["lr"] = lr
                    opt.step()
                    opt.zero_grad(set_to_none=True)
            seconds += time.perf_counter() - t0
            log.append({"step": step + 1, "loss": total_loss, "lr": lr, "grad_norm": norm,
                        "rows": sum(int(r.numel()) for r, _ in row_grads), "seconds": seconds})
            bar.update(1)
            bar.set_postfix(loss=f"{total_loss:.3f}")
            last = step + 1 == len(plan)
            if ckpt is not None and rank == 0 and c.checkpoint_every and ((step + 1) % c.checkpoint_every == 0 or last):
                _save_checkpoint(ckpt, model, dense_opt, seed_opt, row_opts, rand, step + 1, log, seconds, c)
    finally:
        bar.close()
        set_recording(model, False)
        for m in mems:
            m.sparse_grad = False
    model.eval()
    model.requires_grad_(False)
    if c.method == "lora":
        model = model.merge_and_unload()
    states = [o.state_dict() for o in row_opts] + [s for o in (dense_opt, seed_opt) if o for s in o.state.values()]
    opt_bytes = sum(t.numel() * t.element_size() for st in states for t in st.values() if torch.is_tensor(t))
    return TrainResult(model, log, seconds, opt_bytes)


def _save_checkpoint(path: Path, model, dense_opt, seed_opt, row_opts, rand, step, log, seconds, config):
    state = {"step": step, "log": log, "seconds": seconds, "rand": rand.get_state(), "config": asdict(config),
             "params": {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}}
    if dense_opt:
        state["dense_opt"] = dense_opt.state_dict()
    if seed_opt:
        state["seed_opt"] = seed_opt.state_dict()
    if row_opts:
        state["row_opts"] = [o.state_dict() for o in row_opts]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
