"""Product-key memory layer (Lample et al. 2019, arXiv 1907.05242) with the Memory+ SiLU gate
(Berges et al. 2024, arXiv 2412.09764), plugged into the MLP of Hugging Face Qwen2 / Llama decoders,
with the memory's parameters and recording switch; :mod:`smf_lib.adapter` saves and loads it, peft-style.

Usage::

    model, tok = smf_lib.load_model()
    smf_lib.add_memory(model, smf_lib.MemoryConfig(layers=(7, 15, 22), n_keys=64))
    smf_lib.save_memory(model, "adapter/")
    fresh, _ = smf_lib.load_model(); smf_lib.load_memory(fresh, "adapter/")
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


MODES = ("additive", "replacement")
QUERY_NORMS = (None, "half")
INITS = ("zero", "zero-w2", "paper")
FORMAT = "smf_lib.memory/1"
CONFIG_NAME = "memory_config.json"
WEIGHTS_NAME = "memory.safetensors"


@dataclass
class MemoryConfig:
    """Where and how large the memory layers are (METHOD.md section 2).

    Args:
        layers: decoder layer indices whose MLP gets a memory (one table per layer, not shared).
        n_keys: sub-keys per half; each layer has ``n_keys ** 2`` value slots.
        heads: query heads; they share the layer's value table.
        knn: slots read per head and token (top-k of the product keys).
        k_dim: query/key width per head; must be even (split into two halves).
        mode: ``"additive"`` (mlp(x) + alpha * memory(x)) or ``"replacement"`` (memory(x) only).
        init: ``"zero"`` (project default: V = 0, no biases, alpha = 1, logits unchanged at insertion),
            ``"zero-w2"`` (W2 = 0 and random V, no biases, alpha = 1: also unchanged at insertion, but, as LoRA
            zeroes B and keeps A random, every token's gradient reaches the dense W2 from the first step and the
            value rows from the second) or ``"paper"`` (the paper's: random V, biases on, alpha = 0.01).
        alpha: scale of the memory output in additive mode; ``None`` takes the init's default.
        dtype: the memory parameters' dtype (``"float32"``, ``"bfloat16"``, ...); ``None``: the model's. The
            paper keeps them in float32 under a bfloat16 model; inputs are cast in and outputs back.
        query_norm: ``None`` (the paper's: the raw projection) or ``"half"``: each head's two half-queries are
            normalised to zero mean and unit variance, without parameters, before they meet the sub-keys (a
            departure from the paper, against a read distribution that collapses onto a few rows when the
            addressing trains; Lample et al. 2019 use a query BatchNorm for the same end). It has no statistics,
            so training and evaluation read the same rows.
    """

    layers: tuple[int, ...] = (7, 15, 22)
    n_keys: int = 64
    heads: int = 4
    knn: int = 16
    k_dim: int = 256
    mode: str = "additive"
    init: str = "zero"
    alpha: float | None = None
    dtype: str | None = None
    query_norm: str | None = None

    def __post_init__(self):
        if isinstance(self.layers, int):
            self.layers = (self.layers,)
        if isinstance(self.layers, (str, bytes)) or not all(
                isinstance(i, int) or (hasattr(i, "__index__") and not isinstance(i, bool)) for i in self.layers):
            raise ValueError(f"layers must be a sequence of decoder indices such as (12,) or (6, 12, 18), got "
                             f"{self.layers!r}")
        self.layers = tuple(int(i) for i in self.layers)
        if not self.layers or len(set(self.layers)) != len(self.layers) or min(self.layers) < 0:
            raise ValueError(f"layers must be distinct non-negative decoder indices, got {self.layers}")
        for name in ("n_keys", "heads", "knn", "k_dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{name} must be an integer, got {v!r}")
        if self.n_keys < 2:
            raise ValueError(f"n_keys must be >= 2 (N = n_keys**2 slots), got {self.n_keys}")
        if self.heads < 1:
            raise ValueError(f"heads must be >= 1, got {self.heads}")
        if not 1 <= self.knn <= self.n_keys:
            raise ValueError(f"knn must be in 1..n_keys={self.n_keys}, got {self.knn}")
        if self.k_dim < 2 or self.k_dim % 2:
            raise ValueError(f"k_dim must be even and >= 2 (split into two halves), got {self.k_dim}")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; allowed: {', '.join(MODES)}")
        if self.query_norm not in QUERY_NORMS:
            raise ValueError(f"unknown query_norm {self.query_norm!r}; allowed: None, 'half'")
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; allowed: {', '.join(INITS)}")
        if self.alpha is None:
            self.alpha = 0.01 if self.init == "paper" else 1.0
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) \
                or not math.isfinite(float(self.alpha)):
            raise ValueError(f"alpha must be a finite number (the memory output's scale), got {self.alpha}")
        self.alpha = float(self.alpha)
        if self.dtype is not None and not isinstance(getattr(torch, str(self.dtype), None), torch.dtype):
            raise ValueError(f"dtype must name a torch dtype such as 'float32' or 'bfloat16', got {self.dtype!r}")

    @property
    def n_slots(self) -> int:
        return self.n_keys**2


class ProductKeyMemory(nn.Module):
    """One memory: query -> exact product-key top-k -> weighted sum of value rows -> SiLU-gated output."""

    def __init__(self, d: int, config: MemoryConfig, layer_idx: int):
        super().__init__()
        c = config
        self.config, self.layer_idx = c, layer_idx
        bias = c.init == "paper"
        self.query = nn.Linear(d, c.heads * c.k_dim, bias=bias)
        # keys[h, 0] scores the first half of head h's query, keys[h, 1] the second half.
        self.keys = nn.Parameter(torch.empty(c.heads, 2, c.n_keys, c.k_dim // 2))
        self.values = nn.Embedding(c.n_slots, d)
        self.w1 = nn.Linear(d, d, bias=bias)
        self.w2 = nn.Linear(d, d, bias=bias)
        self.sparse_grad = False  # training sets True: value-table gradient as a sparse tensor
        self.record = False  # when True, the forward keeps last_indices / last_weights
        self.balance = False  # when True, the forward keeps aux_loss: how unevenly the sub-keys are used
        self.aux_loss: torch.Tensor | None = None
        self.last_indices: torch.Tensor | None = None
        self.last_weights: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self):
        c, d = self.config, self.values.embedding_dim
        nn.init.uniform_(self.keys, -1 / math.sqrt(c.k_dim), 1 / math.sqrt(c.k_dim))
        nn.init.xavier_uniform_(self.query.weight)
        for lin in (self.w1, self.w2):
            nn.init.normal_(lin.weight, std=d**-0.5)
        if c.init == "zero":
            # V = 0 makes the read y = 0, so the output is exactly 0 while dL/dV is not:
            # dL/dV = alpha * w * (W2^T g * silu(W1 x)). Zeroing alpha or W2 instead would kill dL/dV.
            nn.init.zeros_(self.values.weight)
        elif c.init == "zero-w2":
            # W2 = 0: the output is exactly 0 and dL/dV is 0 at the first step, but dL/dW2 = g (y * silu(W1 x))^T
            # is not, so W2 learns on every token at once and the values follow from the second step.
            nn.init.normal_(self.values.weight, std=d**-0.5)
            nn.init.zeros_(self.w2.weight)
        else:
            nn.init.normal_(self.values.weight, std=d**-0.5)

    def subkey_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Each head's two half-queries against their sub-keys: (..., heads, 2, n_keys)."""
        c = self.config
        q = self.query(x).unflatten(-1, (c.heads, 2, c.k_dim // 2))
        if c.query_norm == "half":
            q = F.layer_norm(q, q.shape[-1:])
        return torch.einsum("...hcd,hcnd->...hcn", q, self.keys.to(q.dtype))

    def lookup(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-knn slots per head: indices (..., heads, knn) and softmax weights."""
        c = self.config
        s = self.subkey_scores(x)
        if self.balance:
            self.aux_loss = usage_imbalance(s)
        s1, i1 = s[..., 0, :].topk(c.knn, dim=-1)
        s2, i2 = s[..., 1, :].topk(c.knn, dim=-1)
        # The best knn of all n*n sums lie among the knn*knn sums of the two halves' top-knn.
        cand = (s1.unsqueeze(-1) + s2.unsqueeze(-2)).flatten(-2)
        cand_idx = (i1.unsqueeze(-1) * c.n_keys + i2.unsqueeze(-2)).flatten(-2)
        scores, best = cand.topk(c.knn, dim=-1)
        indices = cand_idx.gather(-1, best)
        weights = scores.float().softmax(dim=-1).to(x.dtype)
        return indices, weights

    def lookup_brute_force(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same top-knn by scoring all N = n_keys**2 slots (for checks and teaching; O(N) per token)."""
        c = self.config
        s = self.subkey_scores(x)
        full = (s[..., 0, :].unsqueeze(-1) + s[..., 1, :].unsqueeze(-2)).flatten(-2)  # slot a * n_keys + b
        scores, indices = full.topk(c.knn, dim=-1)
        return indices, scores.float().softmax(dim=-1).to(x.dtype)

    def read(self, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """y = sum over heads and slots of w * V[slot] (one shared table, an embedding bag)."""
        flat_idx = indices.flatten(-2).reshape(-1, indices.shape[-2] * indices.shape[-1])
        flat_w = weights.flatten(-2).reshape(flat_idx.shape).to(self.values.weight.dtype)
        if self.sparse_grad:
            y = _RowSparseRead.apply(flat_idx, flat_w, self.values.weight)
        else:
            y = F.embedding_bag(flat_idx, self.values.weight, per_sample_weights=flat_w, mode="sum")
        return y.view(*indices.shape[:-2], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """out = W2 (y * silu(W1 x)) for the read y; records indices and weights when ``record`` is on.
        Computed in the memory's dtype and returned in the input's."""
        dtype = x.dtype
        x = x.to(self.w1.weight.dtype)
        indices, weights = self.lookup(x)
        if self.record:
            self.last_indices, self.last_weights = indices.detach(), weights.detach()
        y = self.read(indices, weights).to(x.dtype)
        return self.w2(y * F.silu(self.w1(x))).to(dtype)


def usage_imbalance(scores: torch.Tensor) -> torch.Tensor:
    """A usage-balancing term (as the load-balancing losses of mixtures of experts): 1 - H(u) / ln(n), averaged over
    heads and halves, where u is the softmax over each half's n sub-keys averaged over the forward's tokens. It is
    0 when every sub-key is used equally and 1 when all tokens pick one."""
    n = scores.shape[-1]
    usage = scores.float().softmax(dim=-1).reshape(-1, *scores.shape[-3:]).mean(dim=0)  # (heads, 2, n)
    entropy = -(usage * usage.clamp_min(1e-12).log()).sum(dim=-1)
    return 1 - entropy.mean() / math.log(n)


class _RowSparseRead(torch.autograd.Function):
    """Embedding-bag read whose value-table gradient is a coalesced sparse tensor over the U distinct rows
    read (U x d), built with one sparse matmul: no N x d buffer and no (reads x d) intermediate."""

    @staticmethod
    def forward(ctx, idx, w, table):
        ctx.save_for_backward(idx, w, table)
        return F.embedding_bag(idx, table, per_sample_weights=w, mode="sum")

    @staticmethod
    def backward(ctx, g):
        idx, w, table = ctx.saved_tensors
        grad_w = grad_table = None
        if ctx.needs_input_grad[1]:
            grad_w = (table[idx] * g.unsqueeze(1)).sum(-1)
        if ctx.needs_input_grad[2]:
            rows, inverse = torch.unique(idx, return_inverse=True)
            bags = torch.arange(idx.shape[0], device=idx.device).unsqueeze(1).expand_as(idx)
            # accumulate in float32 (bf16 sums over many reads lose rows' small gradients; and sparse.mm's
            # bf16 support varies by device), then store in the table's dtype
            scatter = torch.sparse_coo_tensor(torch.stack([inverse.reshape(-1), bags.reshape(-1)]),
                                              w.reshape(-1).float(), (rows.numel(), idx.shape[0]),
                                              check_invariants=False)
            vals = torch.sparse.mm(scatter, g.float()).to(table.dtype)
            grad_table = torch.sparse_coo_tensor(rows.unsqueeze(0), vals, table.shape, is_coalesced=True,
                                                 check_invariants=False)
        return None, grad_w, grad_table


class MemoryMLP(nn.Module):
    """Replaces a decoder layer's ``mlp``: additive (mlp + alpha * memory) or replacement (memory only)."""

    def __init__(self, mlp: nn.Module, memory: ProductKeyMemory):
        super().__init__()
        self.mlp, self.memory = mlp, memory  # in replacement mode the pretrained mlp is kept but bypassed
        self.alpha = nn.Parameter(torch.tensor(float(memory.config.alpha)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """mlp(x) + alpha * memory(x) (additive) or memory(x) (replacement)."""
        out = self.memory(x)
        if self.memory.config.mode == "replacement":
            return out
        return self.mlp(x) + self.alpha.to(out.dtype) * out


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a Qwen2/Llama-style causal LM (``model.model.layers``)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no model.model.layers; smf_lib supports Qwen2/Llama-style "
                         "causal LMs (AutoModelForCausalLM). Pass the causal LM, not a peft wrapper.")
    return layers


def add_memory(model: nn.Module, config: MemoryConfig) -> nn.Module:
    """Wrap ``model.model.layers[i].mlp`` for each ``i`` in ``config.layers`` with a memory, in place.

    Args:
        model: a Hugging Face Qwen2 or Llama causal LM without memory.
        config: the memory configuration.

    Returns:
        The same model, with ``model.smf_memory_config`` set. Parameters are created on the model's
        device and dtype; nothing is frozen here (the trainer decides what trains).
    """
    layers = decoder_layers(model)
    if memory_layers(model):
        raise ValueError("this model already has memory layers; load a fresh base model first")
    bad = [i for i in config.layers if i >= len(layers)]
    if bad:
        raise ValueError(f"memory layer index {bad} out of range: the model has {len(layers)} decoder layers "
                         f"(allowed 0..{len(layers) - 1})")
    ref = next(model.parameters())
    d = model.config.hidden_size
    for i in config.layers:
        dtype = getattr(torch, config.dtype) if config.dtype else ref.dtype
        mem = ProductKeyMemory(d, config, i).to(device=ref.device, dtype=dtype)
        layers[i].mlp = MemoryMLP(layers[i].mlp, mem)
    model.smf_memory_config = config
    return model


def memory_layers(model: nn.Module) -> list[ProductKeyMemory]:
    """The model's memory modules, in layer order."""
    return sorted((m for m in model.modules() if isinstance(m, ProductKeyMemory)), key=lambda m: m.layer_idx)


def _memory_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The memory parameters (and alphas) themselves, keyed by ``layers.{i}.{name}`` (the adapter's keys)."""
    out = {}
    for mod in model.modules():
        if isinstance(mod, MemoryMLP):
            i = mod.memory.layer_idx
            out[f"layers.{i}.alpha"] = mod.alpha
            out.update({f"layers.{i}.{n}": p for n, p in mod.memory.named_parameters()})
    return out


def memory_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """All memory parameters (and alphas) keyed by ``layers.{i}.{name}``; detached clones."""
    return {k: p.detach().clone() for k, p in _memory_parameters(model).items()}


def set_recording(model: nn.Module, on: bool) -> None:
    """Ask every memory layer to keep (or stop keeping) its last selected indices and weights."""
    for m in memory_layers(model):
        m.record = on
        if not on:
            m.last_indices = m.last_weights = None


def print_trainable_parameters(model: nn.Module) -> str:
    """Print and return 'trainable params: X || all params: Y || trainable%: Z', as peft does."""
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    msg = f"trainable params: {train:,} || all params: {total:,} || trainable%: {100 * train / max(total, 1):.4f}"
    print(msg)
    return msg
