"""Experiment presets, as data: the model, the memory, data sizes, training settings and the grid of runs.

``python -m smf_lib run --preset NAME`` runs one (see :mod:`smf_lib.runner`).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

from .methods import GRID_METHODS
from .models import DEFAULT_MODEL, PAPER_MODEL
from .training import TrainConfig, rate_keys

FIXTURES = "fixtures"


@dataclass
class Preset:
    """One experiment setting, as data.

    Args:
        name: preset name.
        model: model name for :func:`~smf_lib.models.load_model`, or ``"tiny"`` (a random tiny Llama with the
            default tokenizer).
        data: local data folder (``None``: ``$SMF_DATA_DIR`` or the Hub; ``"fixtures"``: the packaged fixtures).
        memory: :class:`~smf_lib.memory.MemoryConfig` fields.
        methods: the grid's method names (keys of :data:`smf_lib.methods.GRID_METHODS`).
        seeds: training seeds of the methods in ``multi_seed``; every other method runs with the first seed.
        multi_seed: methods run with every seed.
        sweep: extra peak learning rates per method; these runs are scored on the cheap dev subset only.
        train_n: MedMCQA training questions (file order).
        medmcqa_n: reported MedMCQA validation items (the first ones); ``medmcqa_dev_n`` more after them form the
            dev split used to choose settings.
        triviaqa_n, triviaqa_dev_n: TriviaQA questions (reported, then dev).
        wikitext_lines, wikitext_dev_lines: WikiText test lines (reported, then dev).
        chat_n, chat_dev_n: held-out OASST1 validation replies scored in the chat template (the last ones of
            the file: reported, and dev before them); never used for retrofit or background statistics.
        acquisition_n: trained questions re-asked after training (the first ones of the training set).
        topk: base log-probabilities cached per position for the drift probe.
        cheap: sizes of the cheap dev subset scored along each run's trajectory (``medmcqa``, ``acquisition``,
            ``chat``, ``wikitext_windows``).
        trajectory_points: probe points per run, evenly spaced, including step 0 and the last step.
        evaluate_on: ``"report"`` (the reported items) or ``"dev"`` (a pilot: only dev items are scored).
        retrofit_corpus: ``"oasst1-validation"`` | ``"oasst1-train"`` | ``"oasst1-both"``; ``retrofit_n`` texts.
        background_corpus: like retrofit_corpus, or ``"wikipedia"``; ``background_n`` documents.
        train: :class:`~smf_lib.training.TrainConfig` fields shared by all task runs.
        retrofit: TrainConfig fields of the retrofit stage.
        lr: peak learning rates by rate key (``smf_lib.training.rate_keys()``).
        eval_batch: batch size of the probes.
        notes: departures from the paper this preset makes.
    """

    name: str
    model: str
    data: str | None = None
    memory: dict = field(default_factory=dict)
    methods: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    multi_seed: tuple[str, ...] = ()
    sweep: dict = field(default_factory=dict)
    train_n: int | None = None
    medmcqa_n: int = 1000
    medmcqa_dev_n: int = 0
    triviaqa_n: int = 1000
    triviaqa_dev_n: int = 0
    wikitext_lines: int = 1000
    wikitext_dev_lines: int = 0
    chat_n: int = 0
    chat_dev_n: int = 0
    acquisition_n: int = 0
    topk: int = 32
    cheap: dict = field(default_factory=dict)
    trajectory_points: int = 4
    evaluate_on: str = "report"
    retrofit_corpus: str = "oasst1-both"
    retrofit_n: int | None = None
    background_corpus: str = "oasst1-train"
    background_n: int = 2000
    train: dict = field(default_factory=dict)
    retrofit: dict = field(default_factory=dict)
    lr: dict = field(default_factory=dict)
    eval_batch: int = 16
    notes: str = ""

    def __post_init__(self):
        bad = [m for m in (*self.methods, *self.multi_seed, *self.sweep) if m not in GRID_METHODS]
        if bad:
            raise ValueError(f"preset {self.name!r}: unknown method {bad[0]!r}; allowed: {', '.join(GRID_METHODS)}")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"preset {self.name!r}: seeds must be non-negative integers, got {self.seeds}")
        for k in ("medmcqa_n", "triviaqa_n", "wikitext_lines", "eval_batch", "topk", "trajectory_points"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"preset {self.name!r}: {k} must be an integer >= 1, got {v!r}")
        for k in ("medmcqa_dev_n", "triviaqa_dev_n", "wikitext_dev_lines", "chat_n", "chat_dev_n", "acquisition_n"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"preset {self.name!r}: {k} must be an integer >= 0, got {v!r}")
        if self.trajectory_points < 2:
            raise ValueError(f"preset {self.name!r}: trajectory_points must be >= 2 (step 0 and the last step)")
        if self.evaluate_on not in ("report", "dev"):
            raise ValueError(f"preset {self.name!r}: evaluate_on must be 'report' or 'dev', got {self.evaluate_on!r}")
        unknown = set(self.lr) - set(rate_keys()) - {"retrofit"}
        if unknown:
            raise ValueError(f"preset {self.name!r}: unknown rate key {sorted(unknown)[0]!r}; allowed: "
                             f"{', '.join(rate_keys())}")
        for m, rates in self.sweep.items():
            if not rates or any(not isinstance(r, (int, float)) or not r > 0 for r in rates):
                raise ValueError(f"preset {self.name!r}: sweep rates of {m!r} must be positive numbers, got {rates}")

    def train_config(self, method: str, seed: int, lr: float | None = None) -> TrainConfig:
        """The TrainConfig of a grid method at a seed (and an optional swept rate)."""
        gm = GRID_METHODS[method]
        if gm.train is None:
            raise ValueError(f"method {method!r} does not train")
        cfg = TrainConfig(method=gm.train, seed=seed, **{**self.train, **gm.overrides})
        rate = lr if lr is not None else self.lr.get(cfg.lr_key, cfg.lr)
        return dataclasses.replace(cfg, lr=rate)


_CHEAP_CPU = dict(medmcqa=150, acquisition=150, chat=40, wikitext_windows=4)

PRESETS = {
    "smoke": Preset(
        name="smoke", model="tiny", data=FIXTURES,
        methods=("base", "retrofit", "smf-kl", "smf-tfidf", "smf-kl-paper", "lora", "full"),
        seeds=(0,), memory=dict(layers=(1, 2), n_keys=8, heads=2, knn=4, k_dim=16),
        train_n=24, medmcqa_n=6, medmcqa_dev_n=4, triviaqa_n=4, triviaqa_dev_n=2, wikitext_lines=8,
        wikitext_dev_lines=4, chat_n=3, chat_dev_n=2, acquisition_n=4, topk=8,
        cheap=dict(medmcqa=3, acquisition=3, chat=2, wikitext_windows=1), trajectory_points=3,
        retrofit_n=20, background_n=8, background_corpus="wikipedia", eval_batch=4,
        train=dict(micro_batch=4, grad_accum=2, max_length=128, warmup_steps=1, epochs=1, top_t=8,
                   checkpoint_every=1),
        retrofit=dict(micro_batch=4, grad_accum=1, max_length=64, warmup_steps=1, epochs=1, checkpoint_every=1),
        lr={"smf-adam": 1e-2, "smf-sgd": 1.0, "smf-paper": 1e-2, "lora": 1e-3, "full": 1e-3, "retrofit": 1e-3},
        notes="tiny random Llama and synthetic fixtures: checks the pipeline, not the method"),
    "cpu": Preset(
        name="cpu", model=DEFAULT_MODEL,
        methods=("base", "retrofit", "smf-kl", "smf-tfidf", "smf-kl-paper", "lora", "full"),
        seeds=(0, 1), multi_seed=("smf-kl", "smf-tfidf", "lora", "full"),
        sweep={"smf-kl": (1e-4, 2e-3), "lora": (5e-5, 1e-3), "full": (1e-5, 2e-4)},
        memory=dict(layers=(7, 15, 22), n_keys=64, heads=4, knn=16, k_dim=256),
        train_n=1200, medmcqa_n=1000, medmcqa_dev_n=400, triviaqa_n=300, triviaqa_dev_n=200,
        wikitext_lines=120, wikitext_dev_lines=80, chat_n=150, chat_dev_n=100, acquisition_n=300, topk=32,
        cheap=_CHEAP_CPU, trajectory_points=4,
        retrofit_n=800, retrofit_corpus="oasst1-both", background_corpus="wikipedia", background_n=500,
        train=dict(micro_batch=8, grad_accum=2, max_length=256, warmup_steps=10, epochs=1, top_t=128,
                   checkpoint_every=20),
        retrofit=dict(micro_batch=8, grad_accum=2, max_length=256, warmup_steps=10, epochs=1, checkpoint_every=20),
        lr={"smf-adam": 5e-4, "smf-sgd": 1e6, "smf-paper": 5e-4, "lora": 2e-4, "full": 5e-5, "retrofit": 5e-4},
        notes=("offline default SmolLM2-135M-Instruct on 2 CPU cores. MedMCQA train has 2,650 questions offline "
               "(paper: a 60k sample); the first 1,200 are used for 1 epoch; no single-choice filter is possible "
               "on train. Max length 256. Retrofit on 800 OASST1 replies (validation + inferred train, minus the "
               "held-out chat replies) for 1 epoch (paper: 50k, 2 epochs). Background statistics on 500 Wikipedia "
               "leads. Top-t 128 of 4,096 slots (about 3%). Reported items: MedMCQA 1,000, TriviaQA 300 "
               "(unfiltered validation), WikiText 120 lines, 150 held-out OASST1 chat replies; settings are chosen "
               "on disjoint dev items only")),
    "paper": Preset(
        name="paper", model=PAPER_MODEL,
        methods=("base", "smf-kl-paper-replacement", "smf-tfidf-paper-replacement", "smf-kl-paper",
                 "smf-tfidf-paper", "smf-kl-paper-alpha", "smf-tfidf-paper-alpha", "lora", "full", "retrofit",
                 "smf-kl", "smf-tfidf"),
        seeds=(0, 1, 2), multi_seed=("smf-kl-paper", "smf-tfidf-paper", "lora", "full"),
        memory=dict(layers=(6, 12, 18), n_keys=128, heads=4, knn=16, k_dim=256, init="paper", mode="additive"),
        train_n=60000, medmcqa_n=1000, medmcqa_dev_n=500, triviaqa_n=1000, wikitext_lines=1000, chat_n=200,
        acquisition_n=500, cheap=dict(medmcqa=200, acquisition=200, chat=50, wikitext_windows=8),
        retrofit_n=50000, retrofit_corpus="oasst1-both", background_corpus="oasst1-train", background_n=2000,
        train=dict(micro_batch=4, grad_accum=4, max_length=1024, warmup_steps=100, epochs=3, top_t=512,
                   checkpoint_every=200),
        retrofit=dict(micro_batch=4, grad_accum=4, max_length=1024, warmup_steps=100, epochs=2, checkpoint_every=200),
        lr={"smf-adam": 5e-4, "smf-paper": 5e-4, "lora": 2e-4, "full": 5e-5, "retrofit": 5e-4},
        notes="the paper's protocol on Qwen2.5-0.5B-Instruct; needs a GPU and the Hub (e.g. Colab)"),
}


def get_preset(name: str) -> Preset:
    """A copy of the preset called ``name``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
