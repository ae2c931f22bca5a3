"""Row-access statistics and row selectors (METHOD.md section 4).

Per memory layer and batch, ``c_i`` counts the reads of slot ``i`` (each real token contributes
heads * knn reads). Background statistics hold, per slot, ``df_i`` (documents that read it) and ``A_i``
(total reads) over ``B`` general-text documents. Selectors score the read slots; :func:`select_rows`
takes the top-t with deterministic ties and never an unread slot.

:class:`SparseMemory` is SMF as a step-level object for any training loop (sections 4-5): it takes the value tables
out of the ordinary optimizer's reach (their gradients are taken off the parameters the moment backward
accumulates them, so no optimizer, gradient clipper or ``zero_grad`` ever sees them), and only the rows it selects
move, through its own update rule. Around your own backward pass::

    smf = smf_lib.SparseMemory(model, smf_lib.SmfSettings(selector="kl", top_t=128), background=stats)
    for batch in loader:
        model(**batch).loss.backward()
        smf.record(batch["attention_mask"]); smf.select(); smf.step(lr)   # reads, top-t rows, move only them
    smf.close()

Other trainable parameters stay with your optimizer. :func:`smf_lib.training.train` is built on this class, and
:class:`smf_lib.hf.SmfCallback` runs it inside a stock ``transformers.Trainer``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .batches import padding_side
from .ddp import all_reduce_mean, all_reduce_sum, distributed
from .files import verify_checked, write_checked
from .fingerprints import tensors_fingerprint
from .memory import memory_layers, set_recording
from .updates import UPDATES


def read_counts(indices: torch.Tensor, n_slots: int, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Reads per slot from one forward's selected indices.

    Args:
        indices: (B, T, heads, knn) slot indices recorded by a memory layer.
        n_slots: N, the number of slots.
        attention_mask: (B, T); positions where it is 0 (padding) are not counted. ``None`` counts every
            position (as the paper's code does).

    Returns:
        int64 tensor (N,) of read counts.
    """
    if attention_mask is not None:
        indices = indices[attention_mask.bool()]
    return torch.bincount(indices.reshape(-1).long(), minlength=n_slots)


def batch_counts(model, attention_mask: torch.Tensor | None) -> list[torch.Tensor]:
    """Read counts of every memory layer from its last recorded forward (recording must be on)."""
    out = []
    for m in memory_layers(model):
        if m.last_indices is None:
            raise RuntimeError("memory layers recorded nothing: call set_recording(model, True) before forward")
        out.append(read_counts(m.last_indices, m.config.n_slots, attention_mask).cpu())
    return out


def memory_fingerprint(model) -> str:
    """Hash of the query weights and keys of every memory layer: what background statistics depend on."""
    return tensors_fingerprint(t for m in memory_layers(model) for t in
                               (m.query.weight, m.keys) + ((m.query.bias,) if m.query.bias is not None else ()))


@dataclass
class BackgroundStats:
    """Per-layer slot statistics over ``n_docs`` general-text documents.

    Args:
        df: (layers, N) number of documents that read each slot at least once.
        totals: (layers, N) total reads of each slot (A_i).
        n_docs: B, the number of documents.
        fingerprint: :func:`~smf_lib.selection.memory_fingerprint` of the model they were computed on.
    """

    df: torch.Tensor
    totals: torch.Tensor
    n_docs: int
    fingerprint: str

    def save(self, path: str | Path) -> None:
        """Write one safetensors file atomically; n_docs and the fingerprint go in its header."""
        meta = {"n_docs": str(self.n_docs), "fingerprint": self.fingerprint}
        tensors = {"df": self.df.contiguous(), "totals": self.totals.contiguous()}
        write_checked(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))

    @classmethod
    def load(cls, path: str | Path, model=None) -> BackgroundStats:
        """Load; with ``model``, refuse statistics computed under other keys / query weights."""
        path = Path(path)
        if path.exists():
            verify_checked(path, "delete it so it is computed again (python -m smf_lib run --fresh recomputes the "
                                 "stage)")
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                t = {k: f.get_tensor(k) for k in f.keys()}
            stats = cls(t["df"], t["totals"], int(meta["n_docs"]), meta["fingerprint"])
        except FileNotFoundError:
            raise
        except Exception as err:
            raise ValueError(f"{path} is not a background-statistics file written by BackgroundStats.save ({err}); "
                             "delete it so it is computed again") from err
        if model is not None:
            stats.check(model)
        return stats

    def check(self, model) -> None:
        """Raise if the model's keys / query weights changed since these statistics were computed."""
        fp = memory_fingerprint(model)
        if fp != self.fingerprint:
            raise ValueError(f"background statistics were computed with memory fingerprint {self.fingerprint}, "
                             f"the model has {fp}: keys or query weights changed; recompute them with "
                             "compute_background_stats on this model")


@torch.no_grad()
def compute_background_stats(model, tokenizer, texts: list[str], max_length: int = 1024,
                             progress: bool = True) -> BackgroundStats:
    """Run each document alone through the model (eval mode) and count slot reads per layer.

    Args:
        model: a model with memory layers (e.g. after retrofit).
        tokenizer: its tokenizer.
        texts: background documents (B of them).
        max_length: truncation length in tokens.
        progress: show a progress bar.

    Returns:
        The statistics, fingerprinted with the model's keys and query weights.
    """
    if not texts:
        raise ValueError("no background documents: background statistics from 0 documents would make every row look "
                         "task-specific; pass general texts (e.g. smf_lib.data.load_background())")
    blank = next((i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()), None)
    if blank is not None:
        raise ValueError(f"background document {blank} (of {len(texts)}) is blank: it reads no rows; drop blank texts")
    mems = memory_layers(model)
    n = mems[0].config.n_slots
    df = torch.zeros(len(mems), n, dtype=torch.long)
    totals = torch.zeros_like(df)
    was_training = model.training
    model.eval()
    set_recording(model, True)
    device = next(model.parameters()).device
    try:
        for text in tqdm(texts, desc="background stats", disable=not progress):
            ids = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt").input_ids
            model(input_ids=ids.to(device))
            for j, c in enumerate(batch_counts(model, None)):
                totals[j] += c
                df[j] += c > 0
    finally:
        set_recording(model, False)
        model.train(was_training)
    return BackgroundStats(df, totals, len(texts), memory_fingerprint(model))


def _tf(p, c, df, totals, n_docs, generator):
    """c_i / C: how much of the batch's reads go to the row."""
    return p


def _random(p, c, df, totals, n_docs, generator):
    """Uniform noise: a random subset of the read rows (ablation)."""
    return torch.rand(c.shape, generator=generator, dtype=torch.float64)


def _tfidf(p, c, df, totals, n_docs, generator):
    """(c_i / C) ln((B + 1) / (df_i + 1)) with B background documents, df_i of which read the row."""
    return p * torch.log((n_docs + 1) / (df.double() + 1))


def _kl(p, c, df, totals, n_docs, generator):
    """p_i ln((p_i + 1e-8) / (q_i + 1e-8)), p = c / C, q_i = (A_i + 1) / sum_j (A_j + 1) from background reads."""
    q = (totals.double() + 1) / (totals.double() + 1).sum()
    return p * torch.log((p + 1e-8) / (q + 1e-8))


@dataclass(frozen=True)
class Selector:
    """A row scorer: ``score(p, counts, df, totals, n_docs, generator)`` -> (N,) float64, and the background
    statistics it reads (``df``, ``totals``, ``n_docs``; none for selectors that need no background)."""

    score: object
    needs: tuple[str, ...] = ()

    @property
    def needs_background(self) -> bool:
        return bool(self.needs)


# The selector registry: a new selector is one scoring function and one line here.
SELECTORS: dict[str, Selector] = {
    "kl": Selector(_kl, ("totals",)),
    "tfidf": Selector(_tfidf, ("df", "n_docs")),
    "tf": Selector(_tf),
    "random": Selector(_random),
}


@torch.no_grad()
def read_counts_of_texts(model, tokenizer, texts: list[str], max_length: int = 1024, batch_size: int = 8,
                         count_padding: bool = False) -> list[torch.Tensor]:
    """Per memory layer, the read counts of ``texts`` run in batches (eval mode): what a training batch of
    these texts would select from.

    Returns:
        One int64 (N,) tensor per memory layer.
    """
    if not texts:
        raise ValueError("no texts to count reads on")
    was_training = model.training
    model.eval()
    set_recording(model, True)
    device = next(model.parameters()).device
    counts = None
    try:
        for b in range(0, len(texts), batch_size):
            with padding_side(tokenizer, "right"):
                enc = tokenizer(texts[b:b + batch_size], padding=True, truncation=True, max_length=max_length,
                                return_tensors="pt")
            mask = enc.attention_mask.to(device)
            model(input_ids=enc.input_ids.to(device), attention_mask=mask)
            c = batch_counts(model, None if count_padding else mask)
            counts = c if counts is None else [a + x for a, x in zip(counts, c)]
    finally:
        set_recording(model, False)
        model.train(was_training)
    return counts


def score_rows(counts: torch.Tensor, selector: str, df: torch.Tensor | None = None,
               totals: torch.Tensor | None = None, n_docs: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Score every slot of one layer for one batch; only slots with counts > 0 are eligible later.

    Args:
        counts: (N,) read counts c_i of the batch.
        selector: a key of ``SELECTORS``: ``"tfidf"``: (c_i/C) ln((B+1)/(df_i+1)); ``"kl"``:
            p_i ln((p_i+1e-8)/(q_i+1e-8)) with p = c/C and q_i = (A_i+1)/sum_j(A_j+1); ``"tf"``: c_i/C;
            ``"random"``: uniform noise.
        df: (N,) background document frequencies df_i.
        totals: (N,) background total reads A_i.
        n_docs: B, the number of background documents.
        generator: random source for ``"random"``.

    Returns:
        float64 (N,) scores.
    """
    if selector not in SELECTORS:
        raise ValueError(f"unknown selector {selector!r}; allowed: {', '.join(SELECTORS)}")
    sel = SELECTORS[selector]
    given = {"df": df, "totals": totals, "n_docs": n_docs}
    missing = [k for k in sel.needs if given[k] is None]
    if missing:
        raise ValueError(f"selector {selector!r} needs background statistics ({', '.join(missing)}): "
                         "compute_background_stats first")
    c = counts.double()
    p = c / c.sum().clamp_min(1)
    return sel.score(p, c, df, totals, n_docs, generator)


def select_rows(counts: torch.Tensor, scores: torch.Tensor, top_t: int, deterministic: bool = True) -> torch.Tensor:
    """Indices of the top-t read slots by score, t clipped to the number of read slots.

    Slots with zero reads are never selected. With ``deterministic`` ties go to the lower slot index; without it
    ``torch.topk`` breaks them as the paper's code does (its order among equal scores is not specified).

    Returns:
        int64 indices sorted by descending score.
    """
    if top_t < 1:
        raise ValueError(f"top_t must be >= 1, got {top_t}")
    read = counts.nonzero().flatten()  # ascending slot order
    if not deterministic:
        return read[scores[read].topk(min(top_t, len(read))).indices]
    order = torch.sort(scores[read], descending=True, stable=True).indices
    return read[order[:top_t]]


def select_for_layers(counts: list[torch.Tensor], selector: str, top_t: int,
                      stats: BackgroundStats | None = None,
                      generator: torch.Generator | None = None, deterministic: bool = True) -> list[torch.Tensor]:
    """:func:`select_rows` for every memory layer, with per-layer background statistics."""
    return [select_rows(c, score_rows(c, selector, generator=generator, **layer_stats(stats, j)), top_t, deterministic)
            for j, c in enumerate(counts)]


def layer_stats(stats: BackgroundStats | None, j: int) -> dict:
    """The :func:`score_rows` keyword arguments (df, totals, n_docs) of memory layer ``j``; empty without stats."""
    return {} if stats is None else dict(df=stats.df[j], totals=stats.totals[j], n_docs=stats.n_docs)


# SMF in any training loop ---------------------------------------------------------------------------------------
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
        model: a causal LM with memory layers (:func:`smf_lib.memory.add_memory`).
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
