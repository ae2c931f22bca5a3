"""The named methods of an experiment grid: one table gives each its training, memory, order, label and colour.

A grid method is a training method of :data:`smf_lib.training.METHODS` (or none: ``base`` and ``retrofit`` only
evaluate) with fixed :class:`~smf_lib.training.TrainConfig` fields and a memory mode. The table's order is the
order of every results table and figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GridMethod:
    """One named method of a grid.

    Args:
        train: the :class:`~smf_lib.training.TrainConfig` method, or ``None`` (evaluate only).
        overrides: TrainConfig fields this method fixes (selector, update rule, ...).
        memory: memory mode (``"additive"`` | ``"replacement"``), or ``None`` for a model without memory.
        label: the name figures and tables show.
        colour: its colour in figures.
    """

    train: str | None
    overrides: dict = field(default_factory=dict)
    memory: str | None = None
    label: str = ""
    colour: str = "#333333"


# The paper's own SMF update: gradient mask + dense AdamW, reads counted at padded positions, selection per
# micro-batch (METHOD.md sections 4-5).
PAPER_UPDATE = {"update": "paper", "count_padding": True, "select_per_microbatch": True}

_TABLE: list[tuple[str, GridMethod]] = [
    ("base", GridMethod(None, label="base", colour="#444444")),
    ("retrofit", GridMethod(None, memory="additive", label="retrofit only", colour="#999999")),
    ("smf-kl", GridMethod("smf", {"selector": "kl"}, "additive", "SMF KL", "#1b9e77")),
    ("smf-tfidf", GridMethod("smf", {"selector": "tfidf"}, "additive", "SMF TF-IDF", "#66a61e")),
    ("smf-kl-paper", GridMethod("smf", {"selector": "kl", **PAPER_UPDATE}, "additive", "SMF KL, paper update",
                                "#7fc97f")),
    ("smf-tfidf-paper", GridMethod("smf", {"selector": "tfidf", **PAPER_UPDATE}, "additive",
                                   "SMF TF-IDF, paper update", "#b3de69")),
    ("smf-kl-paper-alpha", GridMethod("smf", {"selector": "kl", **PAPER_UPDATE, "train_alpha": True}, "additive",
                                      "SMF KL, paper update + alpha", "#a6d854")),
    ("smf-tfidf-paper-alpha", GridMethod("smf", {"selector": "tfidf", **PAPER_UPDATE, "train_alpha": True},
                                         "additive", "SMF TF-IDF, paper update + alpha", "#ccebc5")),
    ("smf-kl-paper-replacement", GridMethod("smf", {"selector": "kl", **PAPER_UPDATE}, "replacement",
                                            "SMF KL, replacement", "#8dd3c7")),
    ("smf-tfidf-paper-replacement", GridMethod("smf", {"selector": "tfidf", **PAPER_UPDATE}, "replacement",
                                               "SMF TF-IDF, replacement", "#80b1d3")),
    ("smf-tf", GridMethod("smf", {"selector": "tf"}, "additive", "SMF TF only", "#e6ab02")),
    ("smf-random", GridMethod("smf", {"selector": "random"}, "additive", "SMF random rows", "#a6761d")),
    ("smf-kl-sgd", GridMethod("smf", {"selector": "kl", "update": "sgd"}, "additive", "SMF KL, strict SGD",
                              "#117a5b")),
    ("lora", GridMethod("lora", label="LoRA", colour="#7570b3")),
    ("full", GridMethod("full", label="full finetuning", colour="#d95f02")),
]

#: name -> method, in display order.
GRID_METHODS: dict[str, GridMethod] = dict(_TABLE)
#: display order of method names.
ORDER: tuple[str, ...] = tuple(GRID_METHODS)
#: method name -> colour.
PALETTE: dict[str, str] = {k: m.colour for k, m in GRID_METHODS.items()}


def get_method(name: str) -> GridMethod:
    """The grid method called ``name``; an unknown name raises with the allowed ones."""
    if name not in GRID_METHODS:
        raise ValueError(f"unknown method {name!r}; allowed: {', '.join(GRID_METHODS)}")
    return GRID_METHODS[name]


def order_key(name: str) -> int:
    """Sort key of a method name (unknown names last)."""
    return ORDER.index(name) if name in GRID_METHODS else len(ORDER)
