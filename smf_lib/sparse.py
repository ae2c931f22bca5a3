"""SMF as a step-level object, for any training loop (METHOD.md sections 4-5).

:class:`SparseMemory` takes the value tables out of the ordinary optimizer's reach: their gradients are taken off
the parameters the moment backward accumulates them (so no optimizer, gradient clipper or ``zero_grad`` ever sees
them), and only the rows it selects move, through its own update rule. Around your own backward pass::

    smf = smf_lib.SparseMemory(model, smf_lib.SmfSettings(selector="kl", top_t=128), background=stats)
    for batch in loader:
        loss = model(**batch).loss
        loss.backward()
        smf.record(batch["attention_mask"])   # this micro-batch's reads and its value-row gradients
        smf.select()                           # the top-t rows per layer, from the reads summed since the last step
        smf.step(lr)                           # move the selected rows only
    smf.close()

Any other trainable parameter (e.g. alpha) stays with your optimizer. :func:`smf_lib.train` is built on this class,
and :class:`smf_lib.hf.SmfCallback` runs it inside a stock ``transformers.Trainer``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .ddp import all_reduce_mean, all_reduce_sum, distributed
from .memory import memory_layers, set_recording
from .selection import SELECTORS, BackgroundStats, batch_counts, select_for_layers
from .updates import UPDATES


@dataclass(frozen=True)
class SmfSettings:
    """SMF's own settings (``TrainConfig.smf``); the project's defaults, with the paper's quirks behind options.

    Args:
        selector: row scorer, a key of ``SELECTORS``: ``kl`` | ``tfidf`` | ``tf`` | ``random``.
        top_t: rows per memory layer per step (per micro-batch with ``select_per_microbatch``).
        update: the update rule of the selected rows, a key of ``UPDATES``: ``adam`` (row-sparse Adam) | ``sgd`` |
            ``paper`` (gradient mask + dense AdamW).
        count_padding: count reads at padded positions (the paper's code does).
        select_per_microbatch: select per micro-batch and update the union (the paper's code does).
        deterministic_ties: equal scores go to the lower slot index (``False``: ``torch.topk``'s order).
    """

    selector: str = "kl"
    top_t: int = 512
    update: str = "adam"
    count_padding: bool = False
    select_per_microbatch: bool = False
    deterministic_ties: bool = True

    def __post_init__(self):
        for name, value, allowed in (("selector", self.selector, SELECTORS), ("update", self.update, UPDATES)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")
        if isinstance(self.top_t, bool) or not isinstance(self.top_t, int) or self.top_t < 1:
            raise ValueError(f"top_t must be an integer >= 1 (rows per layer per step), got {self.top_t!r}")
        for name in ("count_padding", "select_per_microbatch", "deterministic_ties"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")


def check_background(selector: str, background: BackgroundStats | None, model) -> None:
    """Refuse a selector that needs background statistics without them, or with statistics of other addressing."""
    if not SELECTORS[selector].needs_background:
        return
    if background is None:
        raise ValueError(f"selector {selector!r} needs background statistics: pass background= from "
                         "compute_background_stats(model, tokenizer, texts)")
    background.check(model)


def _rows(g: torch.Tensor | None, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, grads) of one value-table gradient, coalesced (no rows when there is none)."""
    if g is None:
        return torch.zeros(0, dtype=torch.long, device=table.device), table.new_zeros(0, table.shape[1])
    g = g.coalesce() if g.is_sparse else g.to_sparse().coalesce()
    return g.indices()[0], g.values()


def restrict(rows: torch.Tensor, grads: torch.Tensor, selected: torch.Tensor):
    """Gradient rows of ``selected`` (zeros for a selected row this process did not read: under DDP another rank may
    have read it)."""
    selected = selected.sort().values.to(rows.device)
    out = grads.new_zeros(len(selected), grads.shape[1])
    if len(rows):
        pos = torch.searchsorted(rows, selected).clamp_max(len(rows) - 1)
        found = rows[pos] == selected
        out[found] = grads[pos[found]]
    return selected, out


def _merge(parts: list[tuple[torch.Tensor, torch.Tensor]], table: torch.Tensor):
    if not parts:
        return _rows(None, table)
    rows = torch.cat([p[0] for p in parts])
    vals = torch.cat([p[1] for p in parts])
    g = torch.sparse_coo_tensor(rows.unsqueeze(0), vals, table.shape, check_invariants=False).coalesce()
    return g.indices()[0], g.values()


class SparseMemory:
    """Sparse memory finetuning around any training loop: record reads, select rows, update the selected rows.

    Args:
        model: a causal LM with memory layers (:func:`smf_lib.add_memory`).
        settings: :class:`SmfSettings` (or a dict of its fields).
        background: background statistics, when the selector needs them (``kl``, ``tfidf``); checked against the
            model's addressing.
        weight_decay: decay of the update rule (touched rows only in row-sparse Adam).
        seed: seed of the random selector's draws.
        select: ``False`` moves every row a step reads (a row-sparse retrofit) instead of the top-t.

    The value tables get ``requires_grad`` and row-sparse gradients; everything else is left as it is.
    """

    def __init__(self, model, settings: SmfSettings | dict | None = None, background: BackgroundStats | None = None,
                 weight_decay: float = 0.0, seed: int = 0, select: bool = True):
        s = settings if isinstance(settings, SmfSettings) else SmfSettings(**(settings or {}))
        self.settings, self.selecting, self.background = s, select, background
        self.mems = memory_layers(model)
        if not self.mems:
            raise ValueError("SparseMemory needs memory layers: call smf_lib.add_memory(model, config) first")
        if select:
            check_background(s.selector, background, model)
        self.model = model
        self.rank, self.world = distributed()
        self.rand = torch.Generator().manual_seed(seed)
        rule = UPDATES[s.update if select else "adam"]
        self.rules = [rule.make(m.values.weight, weight_decay=weight_decay) for m in self.mems]
        self._pending: list[torch.Tensor | None] = [None] * len(self.mems)
        self._hooks = []
        for j, m in enumerate(self.mems):
            m.values.weight.requires_grad_(True)
            m.sparse_grad = True
            self._hooks.append(m.values.weight.register_post_accumulate_grad_hook(self._taker(j)))
        set_recording(model, select)
        self._reset()

    def _taker(self, j: int):
        def take(param):  # runs as backward accumulates the table's gradient: keep it here, not on the parameter
            g, param.grad = param.grad, None
            self._pending[j] = g if self._pending[j] is None else self._pending[j] + g
        return take

    def _reset(self) -> None:
        self.counts = [torch.zeros(m.config.n_slots, dtype=torch.long) for m in self.mems]
        self._parts: list[list] = [[] for _ in self.mems]
        self.row_grads: list[tuple[torch.Tensor, torch.Tensor]] = []

    def record(self, attention_mask: torch.Tensor | None = None) -> None:
        """After one micro-batch's backward: add its reads (real tokens only unless ``count_padding``) and take its
        value-row gradients."""
        grads = [_rows(g, m.values.weight) for g, m in zip(self._pending, self.mems)]
        self._pending = [None] * len(self.mems)
        if not self.selecting:
            for j, g in enumerate(grads):
                self._parts[j].append(g)
            return
        mb = batch_counts(self.model, None if self.settings.count_padding else attention_mask)
        if self.settings.select_per_microbatch:  # every process sums the same counts, so selects the same rows
            mb = [all_reduce_sum(x, self.world) for x in mb]
            grads = [restrict(r, g, c) for (r, g), c in zip(grads, self._choose(mb))]
        for j in range(len(self.mems)):
            self.counts[j] += mb[j]
            self._parts[j].append(grads[j])

    def _choose(self, counts: list[torch.Tensor]) -> list[torch.Tensor]:
        s = self.settings
        return select_for_layers(counts, s.selector, s.top_t, self.background, self.rand, s.deterministic_ties)

    def select(self) -> list[torch.Tensor]:
        """Choose the step's rows from the reads recorded since the last step (summed over processes), and keep
        their gradients (averaged over processes) in ``row_grads``.

        Returns:
            The selected rows of each memory layer (every read row when ``select=False``).
        """
        if self._pending[0] is not None:
            self.record()  # a backward that was not recorded: its rows count, with every position's reads
        grads = [_merge(p, m.values.weight) for p, m in zip(self._parts, self.mems)]
        if self.selecting and not self.settings.select_per_microbatch:
            counts = [all_reduce_sum(x, self.world) for x in self.counts]
            grads = [restrict(r, g, c) for (r, g), c in zip(grads, self._choose(counts))]
        if self.world > 1:  # the selected rows are the same everywhere
            grads = [(r, all_reduce_mean(g.contiguous(), self.world)) for r, g in grads]
        self.row_grads = grads
        return [r for r, _ in grads]

    def grad_norm(self) -> float:
        """The L2 norm of the selected rows' gradients."""
        return math.sqrt(sum(float(g.float().square().sum()) for _, g in self.row_grads))

    def clip_(self, max_norm: float, norm: float | None = None) -> None:
        """Scale the selected rows' gradients so that ``norm`` (default: their own) is at most ``max_norm``."""
        norm = self.grad_norm() if norm is None else norm
        scale = min(1.0, max_norm / (norm + 1e-6))
        if scale < 1.0:
            self.row_grads = [(r, g * scale) for r, g in self.row_grads]

    def step(self, lr: float) -> None:
        """Move the selected rows through the update rule at rate ``lr``, then start the next step's record."""
        if not self.row_grads:
            self.select()
        for rule, (rows, g) in zip(self.rules, self.row_grads):
            rule.step(rows, g, lr)
        self._reset()

    def state_dict(self) -> dict:
        """The update rules' states and the selector's random state (for resuming)."""
        return {"rules": [r.state_dict() for r in self.rules], "rand": self.rand.get_state()}

    def load_state_dict(self, state: dict) -> None:
        for rule, st in zip(self.rules, state["rules"]):
            rule.load_state_dict(st)
        self.rand.set_state(state["rand"])

    def close(self) -> None:
        """Stop recording and taking gradients; the value tables' gradients are ordinary again."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        set_recording(self.model, False)
        for m in self.mems:
            m.sparse_grad = False
