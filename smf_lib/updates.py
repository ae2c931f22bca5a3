"""How SMF moves the selected value rows: the update-rule registry ``UPDATES``.

Every rule has ``step(rows, grads, lr)``, ``state_dict()`` and ``load_state_dict()``. ``adam`` (default): row-sparse
Adam; moments exist only for rows it has touched, with per-row step counts for bias correction. ``sgd``: plain SGD
on the selected rows. Both are strict: every other row is bit-identical after a step, and a step costs O(rows
read), no N x d sweep. ``paper``: the paper's gradient mask + dense AdamW over the whole table (its moments keep
moving a row for a while after it was last selected, and any weight decay moves every row); kept for fidelity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


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
