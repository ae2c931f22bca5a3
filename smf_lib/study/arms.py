"""The study's arms: one table gives each its training, memory, order, label and colour.

An arm is a training method of :data:`smf_lib.methods.METHODS` (or none: ``base`` and ``retrofit`` only
evaluate) with fixed :class:`~smf_lib.training.TrainConfig` fields and a memory mode, under one name (``smf-kl``,
``lora``, ...). Run records and presets call that name the run's ``method``. The table's order is the order of
every results table and figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Arm:
    """One arm of the study.

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

_TABLE: list[tuple[str, Arm]] = [
    ("base", Arm(None, label="base", colour="#444444")),
    ("retrofit", Arm(None, memory="additive", label="retrofit only", colour="#999999")),
    ("smf-kl", Arm("smf", {"selector": "kl"}, "additive", "SMF KL", "#1b9e77")),
    ("smf-tfidf", Arm("smf", {"selector": "tfidf"}, "additive", "SMF TF-IDF", "#66a61e")),
    ("smf-kl-paper", Arm("smf", {"selector": "kl", **PAPER_UPDATE}, "additive", "SMF KL, paper update",
                                "#7fc97f")),
    ("smf-tfidf-paper", Arm("smf", {"selector": "tfidf", **PAPER_UPDATE}, "additive",
                                   "SMF TF-IDF, paper update", "#b3de69")),
    ("smf-kl-paper-alpha", Arm("smf", {"selector": "kl", **PAPER_UPDATE, "train_alpha": True}, "additive",
                                      "SMF KL, paper update + alpha", "#a6d854")),
    ("smf-tfidf-paper-alpha", Arm("smf", {"selector": "tfidf", **PAPER_UPDATE, "train_alpha": True},
                                         "additive", "SMF TF-IDF, paper update + alpha", "#ccebc5")),
    ("smf-kl-paper-replacement", Arm("smf", {"selector": "kl", **PAPER_UPDATE}, "replacement",
                                            "SMF KL, replacement", "#8dd3c7")),
    ("smf-tfidf-paper-replacement", Arm("smf", {"selector": "tfidf", **PAPER_UPDATE}, "replacement",
                                               "SMF TF-IDF, replacement", "#80b1d3")),
    ("smf-tf", Arm("smf", {"selector": "tf"}, "additive", "SMF TF only", "#e6ab02")),
    ("smf-random", Arm("smf", {"selector": "random"}, "additive", "SMF random rows", "#a6761d")),
    ("smf-kl-sgd", Arm("smf", {"selector": "kl", "update": "sgd"}, "additive", "SMF KL, strict SGD",
                              "#117a5b")),
    ("lora", Arm("lora", label="LoRA", colour="#7570b3")),
    ("full", Arm("full", label="full finetuning", colour="#d95f02")),
    # The baselines from SMF's own starting point: the retrofitted model, its memory kept in place and frozen, so
    # every arm of a comparison starts from the same model (LoRA's adapters merge into the base weights; full
    # finetuning trains every base weight).
    ("lora-mem", Arm("lora", memory="additive", label="LoRA, same start", colour="#4a3f9c")),
    ("full-mem", Arm("full", memory="additive", label="full finetuning, same start", colour="#a6470a")),
]

#: name -> arm, in display order.
ARMS: dict[str, Arm] = dict(_TABLE)
#: display order of arm names.
ORDER: tuple[str, ...] = tuple(ARMS)
#: arm name -> colour.
PALETTE: dict[str, str] = {k: m.colour for k, m in ARMS.items()}


def get_arm(name: str) -> Arm:
    """The arm called ``name``; an unknown name raises with the allowed ones."""
    if name not in ARMS:
        raise ValueError(f"unknown method {name!r}; allowed: {', '.join(ARMS)}")
    return ARMS[name]


def order_key(name: str) -> int:
    """Sort key of an arm name (unknown names last)."""
    return ORDER.index(name) if name in ARMS else len(ORDER)


# Earlier names, kept for code written against smf_lib 0.2.
GridMethod, GRID_METHODS, get_method = Arm, ARMS, get_arm
