"""The new-facts study's presets, as data (:mod:`smf_lib.study.facts_study` runs them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

#: The arms: TrainConfig fields of each (SMF with the project's update and with plain SGD, as Lin et al.).
FACT_ARMS = {
    "smf-tfidf": dict(method="smf", selector="tfidf"),
    "smf-kl": dict(method="smf", selector="kl"),
    "smf-tfidf-sgd": dict(method="smf", selector="tfidf", update="sgd"),
    "smf-kl-sgd": dict(method="smf", selector="kl", update="sgd"),
    "lora": dict(method="lora"),
    "full": dict(method="full"),
}


@dataclass
class FactsPreset:
    """One new-facts study, as data.

    Args:
        name: the preset's name (its results go to ``results/<name>``).
        start: the spread-pilot recipe of the starting memory,
            :class:`~smf_lib.study.spread_pilot.SpreadSettings` fields for it, and optionally ``reuse``: a
            spread-pilot folder whose record of the same recipe and settings (and its saved memory) is copied
            instead of retrofitting again.
        n_facts, dev_facts: reported and dev facts (disjoint: different seeds of :func:`smf_lib.facts.make_facts`).
        steps_per_fact: optimizer steps on each fact's batch.
        first_facts: the first facts of the stream, scored apart (overwriting).
        rates: the rates of each arm (a frontier: learning brackets the other arms'), by arm name, in the order
            the arms run.
        seeds: training seeds of the reported facts. A seed other than 0 shuffles the arrival of every fact after
            the first ``first_facts`` (:func:`smf_lib.facts.arrival_order`); seed 0 is the stream as built.
        dev_seeds: training seeds of the dev sweep (it only chooses the rates; the reported runs carry the seed
            spread).
        top_t: SMF's rows per layer per step.
        max_length: tokens per phrasing.
        chat_n, wikitext_lines, triviaqa_n, medmcqa_n: items per forgetting probe and split.
        background_n: Wikipedia paragraphs for the background statistics.
    """

    name: str
    model: str = "smollm2-135m-instruct"
    data: str | None = None
    start: dict = field(default_factory=lambda: {"recipe": "frozen", "settings": {}})
    n_facts: int = 100
    dev_facts: int = 40
    steps_per_fact: int = 4
    first_facts: int = 20
    rates: dict = field(default_factory=dict)
    seeds: tuple[int, ...] = (0, 1)
    dev_seeds: tuple[int, ...] = (0,)
    top_t: int = 128
    max_length: int = 64
    chat_n: int = 174
    wikitext_lines: int = 80
    triviaqa_n: int = 200
    medmcqa_n: int = 150
    background_n: int = 500

    def __post_init__(self):
        unknown = sorted(set(self.rates) - set(FACT_ARMS))
        if unknown:
            raise ValueError(f"preset {self.name!r}: unknown arm {unknown[0]!r}; allowed: {', '.join(FACT_ARMS)}")


FACT_PRESETS = {
    # the offline default on 2 CPU cores: 100 reported facts and 40 dev facts, 4 steps each (400 and 160 steps per
    # run); the dev sweep runs one seed (it chooses rates), the reported runs two
    # the start is the spread pilot's own 65,536-slot memory (same recipe and settings, so its record and memory in
    # results/spread-pilot are copied rather than retrofitted again when they are there)
    "facts": FactsPreset(name="facts", start={"recipe": "frozen-n256", "settings": {"probe_steps": (50,)},
                                             "reuse": "results/spread-pilot"},
        # in the order they run: the comparison's four arms first, then SMF with plain SGD (Lin et al.'s update).
        # Chosen on the dev facts so that every arm's learning brackets the others': at its lowest first rate (1e-4)
        # LoRA learned +3.0 nats of answer log-likelihood and SMF-TF-IDF at its highest (1e-1) +0.56, so LoRA and
        # full finetuning go lower and SMF higher (the first rates' runs are kept).
        # LoRA's 3e-5 fills the tenfold gap between 1e-5 (+0.31) and 1e-4 (+3.0), where the common level falls.
        # Plain SGD moves a row by rate x gradient, and on this memory a fact's value-row gradients are small (their
        # elements' RMS in the 128 rows with the largest gradient was about 6e-5 on the first dev fact's batch, at
        # every memory layer), so Lin et al.'s rates (2 to 5, for their model) move nothing here: at 0.3 SMF-TF-IDF
        # learned nothing measurable (its run is kept). The SGD rates sit where rate x 6e-5 spans the Adam arms'
        # rates (1e-2 to 3e-1): 1e2, 1e3 and 1e4.
        rates={"smf-tfidf": (1e-2, 3e-2, 1e-1, 3e-1), "lora": (1e-4, 3e-6, 1e-5, 3e-5), "full": (3e-7, 1e-6, 3e-6),
               "smf-kl": (1e-2, 3e-2, 1e-1, 3e-1), "smf-tfidf-sgd": (0.3, 1e2, 1e3, 1e4),
               "smf-kl-sgd": (1e2, 1e3, 1e4)}),
    # a tiny random model on the real data folder: checks the pipeline in under a minute, not the method
    "facts-smoke": FactsPreset(
        name="facts-smoke", model="tiny", start={"recipe": "frozen", "settings": {
            "model": "tiny", "memory": dict(layers=(1, 2), n_keys=8, heads=2, knn=4, k_dim=16, init="zero"),
            "steps": 2, "texts_per_step": 4, "micro_batch": 2, "max_length": 32, "warmup_steps": 1,
            "probe_steps": (2,), "heldout_n": 4, "general_n": 4, "task_n": 4, "top_t": 4}},
        n_facts=4, dev_facts=2, steps_per_fact=1, first_facts=2, rates={"smf-tfidf": (1e-2,), "lora": (1e-3,)},
        seeds=(0,), dev_seeds=(0,), top_t=4, max_length=32, chat_n=2, wikitext_lines=4, triviaqa_n=2, medmcqa_n=2,
        background_n=4),
}


def get_facts_preset(name: str) -> FactsPreset:
    if name not in FACT_PRESETS:
        raise ValueError(f"unknown facts preset {name!r}; allowed: {', '.join(FACT_PRESETS)}")
    return dataclasses.replace(FACT_PRESETS[name])
