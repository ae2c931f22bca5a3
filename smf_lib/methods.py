"""What each training method trains (``METHODS``), their default rates, and the settings of LoRA and of the
retrofit: the parts of :mod:`smf_lib.training` that hold no training loop. ``smf_lib.training`` re-exports them."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from .memory import MemoryMLP, memory_layers
from .updates import UPDATES

if TYPE_CHECKING:
    from .training import TrainConfig

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _prepare_retrofit(model, c):
    r = c.retrofit
    for mod in model.modules():
        if isinstance(mod, MemoryMLP):
            mod.requires_grad_(True)
            mod.mlp.requires_grad_(False)
            if r.addressing == "frozen":  # the reads stay those of the random query and keys
                mod.memory.query.requires_grad_(False)
                mod.memory.keys.requires_grad_(False)
            mod.memory.sparse_grad = r.sparse_values
            mod.memory.balance = r.balance > 0
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

    lcfg = LoraConfig(r=c.lora.r, lora_alpha=c.lora.alpha, lora_dropout=c.lora.dropout,
                      target_modules=list(c.lora.targets), task_type="CAUSAL_LM")
    return get_peft_model(model, lcfg)


def _prepare_full(model, c):
    model.requires_grad_(True)
    for mod in model.modules():  # a memory in place stays as it is: full finetuning trains the base weights
        if isinstance(mod, MemoryMLP):
            mod.memory.requires_grad_(False)
            mod.alpha.requires_grad_(False)
    return model


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


@dataclass(frozen=True)
class LoraSettings:
    """LoRA's own settings (``TrainConfig.lora``), as peft's ``LoraConfig`` names them; the paper's values are the
    defaults.

    Args:
        r: rank (>= 1).
        alpha: scale numerator: the update is scaled by ``alpha / r`` (> 0).
        dropout: dropout on LoRA's input, in [0, 1).
        targets: names of the projections LoRA wraps (a tuple, e.g. ``("q_proj", "v_proj")``).
    """

    r: int = 16
    alpha: float = 32
    dropout: float = 0.05
    targets: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self):
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"lora.r must be an integer >= 1 (LoRA rank), got {self.r!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not math.isfinite(self.alpha) \
                or self.alpha <= 0:
            raise ValueError(f"lora.alpha must be a finite number > 0 (LoRA's scale is alpha / r), got {self.alpha!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) \
                or not math.isfinite(self.dropout) or not 0 <= self.dropout < 1:
            raise ValueError(f"lora.dropout must be a number in [0, 1), got {self.dropout!r}")
        if isinstance(self.targets, (str, bytes)) or not all(isinstance(t, str) and t for t in self.targets):
            raise ValueError(f"lora.targets must be a tuple of module names such as ('q_proj', 'v_proj'), got "
                             f"{self.targets!r}")
        object.__setattr__(self, "targets", tuple(self.targets))


ADDRESSING = ("train", "frozen")


@dataclass(frozen=True)
class RetrofitSettings:
    """How the retrofit trains the memory (``TrainConfig.retrofit``); the paper's recipe is the default.

    Args:
        addressing: ``"train"`` (the paper's: the query and the sub-keys train with everything else) or
            ``"frozen"`` (they keep their random initialisation, so the reads keep the spread of random addressing
            and background statistics computed before the retrofit stay valid; values, W1, W2 and alpha train).
        balance: weight of a usage-balancing term added to the loss (``memory.usage_imbalance``: 1 minus the
            normalised entropy of each half's sub-key usage); 0 turns it off.
        sparse_values: the value tables get row-sparse gradients and a lazy row-wise Adam that keeps moments only
            for rows read so far (as ``torch.optim.SparseAdam`` does for embeddings), so a step costs what it reads,
            not what the table holds. Rows never read stay exactly unchanged. The other memory parameters train
            with AdamW as before.
    """

    addressing: str = "train"
    balance: float = 0.0
    sparse_values: bool = False

    def __post_init__(self):
        if self.addressing not in ADDRESSING:
            raise ValueError(f"unknown retrofit addressing {self.addressing!r}; allowed: {', '.join(ADDRESSING)}")
        if isinstance(self.balance, bool) or not isinstance(self.balance, (int, float)) \
                or not math.isfinite(self.balance) or self.balance < 0:
            raise ValueError(f"retrofit.balance must be a finite number >= 0 (0: off), got {self.balance!r}")
        if not isinstance(self.sparse_values, bool):
            raise ValueError(f"retrofit.sparse_values must be True or False, got {self.sparse_values!r}")


def settings_of(value, cls, name: str):
    """A settings dataclass from itself or a dict of its fields; anything else is refused by name."""
    if isinstance(value, dict):
        unknown = set(value) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown {name} setting(s) {sorted(unknown)}; allowed: "
                             f"{', '.join(f.name for f in fields(cls))}")
        value = cls(**value)
    if not isinstance(value, cls):
        raise ValueError(f"{name} must be a {cls.__name__} or a dict of its fields, got {value!r}")
    return value


def prepare_model(model, config: TrainConfig):
    """Set what trains for the method (wrapping with peft for LoRA); returns the model to train."""
    method = METHODS[config.method]
    if method.needs_memory and not memory_layers(model):
        raise ValueError(f"method {config.method!r} needs memory layers: call smf_lib.add_memory(model, config) "
                         "first")
    model.requires_grad_(False)
    return method.prepare(model, config)
