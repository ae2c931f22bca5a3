"""Product-key memory layer (Lample et al. 2019, arXiv 1907.05242) with the Memory+ SiLU gate
(Berges et al. 2024, arXiv 2412.09764), plugged into the MLP of Hugging Face Qwen2 / Llama decoders,
and a peft-style adapter format that saves only the memory.

Usage::

    model, tok = smf_lib.load_model()
    smf_lib.add_memory(model, smf_lib.MemoryConfig(layers=(7, 15, 22), n_keys=64))
    smf_lib.save_memory(model, "adapter/")
    fresh, _ = smf_lib.load_model(); smf_lib.load_memory(fresh, "adapter/")
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .files import atomic_write

MODES = ("additive", "replacement")
INITS = ("zero", "paper")
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
        init: ``"zero"`` (project default: V = 0, no biases, alpha = 1, logits unchanged at insertion)
            or ``"paper"`` (the paper's: random V, biases on, alpha = 0.01).
        alpha: scale of the memory output in additive mode; ``None`` takes the init's default.
        dtype: the memory parameters' dtype (``"float32"``, ``"bfloat16"``, ...); ``None``: the model's. The
            paper keeps them in float32 under a bfloat16 model; inputs are cast in and outputs back.
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
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; allowed: {', '.join(INITS)}")
        if self.alpha is None:
            self.alpha = 1.0 if self.init == "zero" else 0.01
        if not math.isfinite(float(self.alpha)):
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
        else:
            nn.init.normal_(self.values.weight, std=d**-0.5)

    def lookup(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-knn slots per head: indices (..., heads, knn) and softmax weights."""
        c = self.config
        q = self.query(x).unflatten(-1, (c.heads, 2, c.k_dim // 2))
        s = torch.einsum("...hcd,hcnd->...hcn", q, self.keys.to(q.dtype))
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
        q = self.query(x).unflatten(-1, (c.heads, 2, c.k_dim // 2))
        s = torch.einsum("...hcd,hcnd->...hcn", q, self.keys.to(q.dtype))
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


def base_fingerprint(model: nn.Module) -> dict:
    """Shape facts and a hash of the base weights outside the memory, to refuse a wrong base model."""
    cfg = model.config
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if ".memory." in name or name.endswith("mlp.alpha") or "lora_" in name:
            continue
        h.update(name.replace(".mlp.mlp.", ".mlp.").encode())
        h.update(p.detach().reshape(-1)[::997].float().cpu().numpy().tobytes())
    return {"model_type": cfg.model_type, "hidden_size": cfg.hidden_size,
            "num_hidden_layers": cfg.num_hidden_layers, "vocab_size": cfg.vocab_size,
            "weights_sha256": h.hexdigest()[:16]}


def save_memory(model: nn.Module, path: str | Path, reference: str | Path | None = None) -> Path:
    """Save only the memory, peft-style: ``memory_config.json`` + ``memory.safetensors``, each written atomically
    (the weights first, the config last: a folder with a config is complete).

    Args:
        model: a model with memory layers.
        path: output folder (created).
        reference: an earlier saved memory (e.g. the retrofit). When given, only the value rows that differ
            from it are stored (plus any other memory tensor that differs), with the reference's path relative
            to ``path`` and its hash, so a copied results folder still loads. ``path`` itself is refused.

    Returns:
        The folder written.
    """
    path = Path(path)
    state = memory_state_dict(model)
    meta = {"memory_config": dataclasses.asdict(model.smf_memory_config), "base": base_fingerprint(model),
            "format": FORMAT}
    tensors = state
    if reference is not None:
        reference = Path(reference)
        if reference.resolve() == path.resolve():
            raise ValueError(f"reference {reference} is the folder being written: a delta adapter cannot point at "
                             "itself; save the full memory (reference=None) or write to another folder")
        if not (reference / WEIGHTS_NAME).exists():
            raise FileNotFoundError(f"no {WEIGHTS_NAME} in reference {reference}: pass a folder written by "
                                    "save_memory")
        ref_state = load_file(str(reference / WEIGHTS_NAME))
        tensors = {}
        for k, v in state.items():
            r = ref_state.get(k)
            if r is None or r.shape != v.shape:
                raise ValueError(f"reference {reference} has no matching {k}: save without reference")
            if k.endswith("values.weight"):
                rows = (v != r.to(v.dtype)).any(dim=1).nonzero().flatten()
                tensors[k + ".rows"], tensors[k + ".data"] = rows, v[rows].contiguous()
            elif not torch.equal(v, r.to(v.dtype)):
                tensors[k] = v
        rel = os.path.relpath(reference.resolve(), path.resolve())
        meta["reference"] = {"path": Path(rel).as_posix(), "sha256": _file_sha(reference / WEIGHTS_NAME)}
    atomic_write(path / WEIGHTS_NAME, lambda tmp: save_file({k: t.contiguous() for k, t in tensors.items()}, str(tmp)))
    atomic_write(path / CONFIG_NAME, json.dumps(meta, indent=2))
    return path


def _read_adapter(path: Path) -> tuple[dict, dict]:
    """The adapter's metadata and tensors, checked for the damage a hand edit or a crash could leave."""
    if not (path / CONFIG_NAME).exists():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {path}: pass a folder written by smf_lib.save_memory")
    try:
        meta = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path / CONFIG_NAME} is damaged ({err}): save the memory again") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path / CONFIG_NAME}: format {meta.get('format') if isinstance(meta, dict) else None!r} "
                         f"is not {FORMAT!r}; this smf_lib reads only its own adapter format")
    for key in ("memory_config", "base"):
        if not isinstance(meta.get(key), dict):
            raise ValueError(f"{path / CONFIG_NAME} has no {key!r} entry: the file is incomplete; save it again")
    try:
        saved = load_file(str(path / WEIGHTS_NAME))
    except FileNotFoundError:
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {path}: the adapter is incomplete; save it again") from None
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{path / WEIGHTS_NAME} is damaged ({err}): save the memory again") from err
    return meta, saved


def load_memory(model: nn.Module, path: str | Path) -> nn.Module:
    """Add the saved memory to a fresh base model and load its weights (safetensors only, no pickle).

    Args:
        model: the base model the memory was trained on, without memory.
        path: a folder written by :func:`save_memory`.

    Returns:
        The model with memory, weights restored.
    """
    path = Path(path)
    meta, saved = _read_adapter(path)
    want, have = meta["base"], base_fingerprint(model)
    diff = {k: (want[k], have.get(k)) for k in want if want[k] != have.get(k)}
    if diff:
        raise ValueError(f"memory at {path} was saved from a different base model (saved vs given: {diff}); "
                         "load the same base model (name, revision and dtype) it was trained on")
    try:
        config = MemoryConfig(**meta["memory_config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path / CONFIG_NAME}: invalid memory_config ({err}); save the memory again") from err
    if "reference" in meta:
        ref = (path / meta["reference"]["path"]).resolve()
        if ref == path.resolve():
            raise ValueError(f"memory at {path} names itself as its reference: it cannot be loaded; save it again "
                             "without reference")
        if not (ref / WEIGHTS_NAME).exists() or _file_sha(ref / WEIGHTS_NAME) != meta["reference"].get("sha256"):
            raise ValueError(f"memory at {path} stores only changed rows on top of {ref}, which is missing or "
                             "has changed; restore that reference adapter or save the memory without reference")
        _, state = _read_adapter(ref)
        for k in list(saved):
            if k.endswith(".rows"):
                base_k = k[: -len(".rows")]
                rows, data = saved[k], saved.get(base_k + ".data")
                if base_k not in state or data is None:
                    raise ValueError(f"{path / WEIGHTS_NAME}: {k} has no matching table or data; save it again")
                n = state[base_k].shape[0]
                ok = rows.dtype == torch.long and rows.dim() == 1 and len(torch.unique(rows)) == len(rows)
                ok = ok and (not len(rows) or (rows.min() >= 0 and rows.max() < n))
                if not ok or tuple(data.shape) != (len(rows), state[base_k].shape[1]):
                    raise ValueError(f"{path / WEIGHTS_NAME}: {k} holds bad row indices or data (rows must be "
                                     f"distinct in 0..{n - 1}, one data row each); the file was edited or damaged")
                state[base_k] = state[base_k].clone()
                state[base_k][rows] = data.to(state[base_k].dtype)
            elif not k.endswith(".data"):
                state[k] = saved[k]
    else:
        state = saved
    add_memory(model, config)
    own = _memory_parameters(model)
    missing = sorted(set(own) - set(state))
    if missing:
        _remove_memory(model)
        raise ValueError(f"memory at {path} lacks tensors {missing[:3]}...: its layers do not match its config "
                         f"(layers {list(config.layers)}); the file is incomplete or was edited")
    bad = [k for k, p in own.items() if tuple(state[k].shape) != tuple(p.shape)]
    if bad:
        _remove_memory(model)
        raise ValueError(f"memory at {path}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, its config asks for "
                         f"{tuple(own[bad[0]].shape)}; the file was edited or damaged")
    with torch.no_grad():
        for k, p in own.items():
            p.copy_(state[k].to(p.dtype))
    return model


def _remove_memory(model: nn.Module) -> None:
    """Undo :func:`add_memory` (used when loading fails half-way, so the caller's model is left as it was)."""
    for layer in decoder_layers(model):
        if isinstance(layer.mlp, MemoryMLP):
            layer.mlp = layer.mlp.mlp
    if hasattr(model, "smf_memory_config"):
        del model.smf_memory_config


def print_trainable_parameters(model: nn.Module) -> str:
    """Print and return 'trainable params: X || all params: Y || trainable%: Z', as peft does."""
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    msg = f"trainable params: {train:,} || all params: {total:,} || trainable%: {100 * train / max(total, 1):.4f}"
    print(msg)
    return msg


def _file_sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
