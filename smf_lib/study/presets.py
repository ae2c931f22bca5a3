"""Experiment presets, as data: the model, the memory, data sizes, training settings and the grid of runs.

``python -m smf_lib run --preset NAME`` runs one (see :mod:`smf_lib.study.runner`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field

from ..memory import MemoryConfig
from ..models import DEFAULT_MODEL, PAPER_MODEL
from ..training import TrainConfig, rate_keys
from .frontier import MATCH_MARGIN  # nats of gold margin within which dev learning counts as matched
from .arms import ARMS
from .records import evaluation_kind

FIXTURES = "fixtures"


class Settings(dict):
    """Some :class:`~smf_lib.training.TrainConfig` fields for one stage of a preset (``method``: ``"smf"`` for the
    task runs, ``"retrofit"`` for the retrofit), checked against TrainConfig when made: an unknown name or a bad value
    is refused. A field left unset reads TrainConfig's own default (``settings.max_length``, :meth:`config`), so no
    default is restated here. It is a dict, so ``{**settings, "top_t": 4}`` and the stored identities stay plain."""

    def __init__(self, fields=(), /, method: str = "smf", **more):
        super().__init__(fields, **more)
        self.method = method
        known = {f.name for f in dataclasses.fields(TrainConfig)} - {"method"}
        unknown = sorted(set(self) - known)
        if unknown:
            raise ValueError(f"unknown training setting {unknown[0]!r}; allowed: the TrainConfig fields "
                             f"({', '.join(sorted(known))})")
        self.config(lr=1.0)  # raises on a bad value

    def config(self, **more) -> TrainConfig:
        """A TrainConfig from these fields (``more`` adds or overrides some)."""
        return TrainConfig(**{"method": self.method, **self, **more})

    def __getattr__(self, name: str):
        if name.startswith("_") or name == "method":
            raise AttributeError(name)
        if name in self:
            return self[name]
        if name in {f.name for f in dataclasses.fields(TrainConfig)}:
            return getattr(self.config(lr=1.0), name)
        raise AttributeError(f"{name!r} is not a TrainConfig field")


def rate_names() -> list[str]:
    """Every key a preset's ``lr`` may use: the rate keys of ``smf_lib.training.rate_keys()`` (one per method and SMF
    update rule), ``"retrofit"``, and the name of any arm that trains, for a rate of that arm alone."""
    keys = [*rate_keys(), *(["retrofit"] if "retrofit" not in rate_keys() else [])]
    return keys + [k for k, a in ARMS.items() if a.train is not None and k not in keys]


class Rates(dict):
    """Peak learning rates by rate key (:func:`rate_names`: ``smf-adam``, ``lora``, ..., ``retrofit``, or an arm's
    name such as ``smf-tfidf``, which overrides its rate key's rate for that arm alone), each a finite number > 0;
    anything else is refused when made. A key left out takes TrainConfig's default for it."""

    def __init__(self, rates=(), /, **more):
        super().__init__(rates, **more)
        unknown = set(self) - set(rate_names())
        if unknown:
            raise ValueError(f"unknown rate key {sorted(unknown)[0]!r}; allowed: {', '.join(rate_names())}")
        for k, v in self.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"learning rate {k!r} must be a finite number > 0, got {v!r}")


@dataclass
class Preset:
    """One experiment setting, as data.

    Args:
        name: preset name.
        model: model name for :func:`~smf_lib.models.load_model`, or ``"tiny"`` (a random tiny Llama with the
            default tokenizer).
        data: local data folder (``None``: ``$SMF_DATA_DIR`` or the Hub; ``"fixtures"``: the packaged fixtures).
        memory: :class:`~smf_lib.memory.MemoryConfig` fields.
        methods: the grid's method names (keys of :data:`smf_lib.study.arms.ARMS`).
        seeds: training seeds of the methods in ``multi_seed``; every other method runs with the first seed.
        multi_seed: methods run with every seed.
        sweep: extra peak learning rates per method.
        sweep_evaluation: how swept runs are scored: ``"trajectory"`` (the dev subset along their trajectory only)
            or ``"report"`` (every probe, like the grid's runs).
        sweep_first: run the swept rates before the grid's training runs (their dev results choose its rates).
        sweep_seeds: the seeds the swept rates run at (empty: the first seed only); all of one seed's swept runs
            come before the next seed's.
        train_n: MedMCQA training questions (file order).
        medmcqa_n: reported MedMCQA validation items (the first ones); ``medmcqa_dev_n`` more after them form the
            dev split used to choose settings.
        triviaqa_n, triviaqa_dev_n: TriviaQA questions (reported, then dev).
        wikitext_lines, wikitext_dev_lines: WikiText test lines (reported, then dev).
        chat_n, chat_dev_n: held-out OASST1 validation replies scored in the chat template (the last ones of
            the file: reported, and dev before them); never used for retrofit or background statistics.
        chat_pool: ``"paper"`` (the rank 0/1 replies, 808 offline) or ``"all"`` (every English validation reply to a
            prompt, 1,174 offline; the retrofit and background corpora must then be train text or Wikipedia).
        acquisition_n: trained questions re-asked after training (the first ones of the training set).
        topk: base log-probabilities cached per position for the drift probe.
        dev_subset: sizes of the dev subset scored along each run's trajectory (``medmcqa``, ``acquisition``,
            ``chat``, ``wikitext_windows``).
        trajectory_points: probe points per run, evenly spaced, including step 0 and the last step.
        evaluate_on: ``"report"`` (the reported items) or ``"dev"`` (a pilot: only dev items are scored).
        retrofit_corpus: ``"oasst1-validation"`` | ``"oasst1-train"`` | ``"oasst1-both"``; ``retrofit_n`` texts.
        background_corpus: like retrofit_corpus, or ``"wikipedia"``; ``background_n`` documents.
        train: :class:`Settings` (TrainConfig fields) shared by all task runs; a plain dict is turned into one.
        retrofit: :class:`Settings` of the retrofit stage.
        lr: :class:`Rates`, peak learning rates by rate key (:func:`rate_names`); an arm's own name sets that arm's
            rate alone (``{"smf-adam": 3e-2, "smf-tfidf": 1e-1}``: TF-IDF at 1e-1, every other SMF arm at 3e-2).
        rates_to_choose: rate keys (or arm names) whose grid rate is still to be chosen from the sweep's dev results:
            the runner skips the grid's runs at such a rate (saying so) until the key is set here or by ``--lr``.
        eval_batch: batch size of the probes.
        dtype: the model's parameter dtype (``"float32"`` | ``"bfloat16"``); ``memory_dtype`` the memory's
            (``None``: the model's); ``eval_dtype`` the dtype the model is scored in (``None``: as trained).
        train_sample: ``"first"`` (the first ``train_n`` training questions, every seed) or ``"shuffle"`` (the
            paper's ``shuffle(seed).select(range(train_n))``: a different sample per seed).
        wikitext_raw: score the raw WikiText text, or the non-raw ``wikitext-103-v1`` (Hub only).
        ppl_first_window: ``"exact"`` (the first window's tokens counted as scored) or ``"paper"`` (counted one
            too many, as the paper's code does).
        departures: why this preset departs from the paper's protocol, one reason per departing setting (the
            keys of :func:`protocol_table`); a test requires exactly the departing settings here.
        notes: a summary of the preset.
    """

    name: str
    model: str
    data: str | None = None
    memory: dict = field(default_factory=dict)
    methods: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    multi_seed: tuple[str, ...] = ()
    sweep: dict = field(default_factory=dict)
    sweep_evaluation: str = "trajectory"
    sweep_first: bool = False
    sweep_seeds: tuple[int, ...] = ()
    train_n: int | None = None
    medmcqa_n: int = 1000
    medmcqa_dev_n: int = 0
    triviaqa_n: int = 1000
    triviaqa_dev_n: int = 0
    wikitext_lines: int = 1000
    wikitext_dev_lines: int = 0
    chat_n: int = 0
    chat_dev_n: int = 0
    chat_pool: str = "paper"
    acquisition_n: int = 0
    topk: int = 32
    dev_subset: dict = field(default_factory=dict)
    trajectory_points: int = 4
    evaluate_on: str = "report"
    retrofit_corpus: str = "oasst1-both"
    retrofit_n: int | None = None
    background_corpus: str = "oasst1-train"
    background_n: int = 2000
    train: Settings = field(default_factory=Settings)
    retrofit: Settings = field(default_factory=lambda: Settings(method="retrofit"))
    lr: Rates = field(default_factory=Rates)
    rates_to_choose: tuple[str, ...] = ()
    eval_batch: int = 16
    dtype: str = "float32"
    memory_dtype: str | None = None
    eval_dtype: str | None = None
    train_sample: str = "first"
    wikitext_raw: bool = True
    ppl_first_window: str = "exact"
    departures: dict = field(default_factory=dict)
    notes: str = ""

    def __post_init__(self):
        bad = [m for m in (*self.methods, *self.multi_seed, *self.sweep) if m not in ARMS]
        if bad:
            raise ValueError(f"preset {self.name!r}: unknown method {bad[0]!r}; allowed: {', '.join(ARMS)}")
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
        for k in ("train_n", "retrofit_n"):
            v = getattr(self, k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"preset {self.name!r}: {k} must be an integer >= 1 (or None for all), got {v!r}")
        if isinstance(self.background_n, bool) or not isinstance(self.background_n, int) or self.background_n < 1:
            raise ValueError(f"preset {self.name!r}: background_n must be an integer >= 1, got {self.background_n!r}")
        for k, v in self.dev_subset.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"preset {self.name!r}: dev_subset size {k!r} must be an integer >= 1, got {v!r}")
        try:
            self.lr = Rates(self.lr)
            self.train = Settings(self.train)
            self.retrofit = Settings(self.retrofit, method="retrofit")
            if self.memory:
                MemoryConfig(**self.memory)
        except (TypeError, ValueError) as err:
            raise ValueError(f"preset {self.name!r}: {err}") from err
        if self.trajectory_points < 2:
            raise ValueError(f"preset {self.name!r}: trajectory_points must be >= 2 (step 0 and the last step)")
        for k, allowed in (("train_sample", ("first", "shuffle")), ("ppl_first_window", ("exact", "paper")),
                           ("dtype", ("float32", "bfloat16", "float16", "auto"))):
            if getattr(self, k) not in allowed:
                raise ValueError(f"preset {self.name!r}: {k} must be one of {allowed}, got {getattr(self, k)!r}")
        corpora = ("oasst1-validation", "oasst1-train", "oasst1-both")
        for k, allowed in (("retrofit_corpus", corpora), ("background_corpus", (*corpora, "wikipedia")),
                           ("chat_pool", ("paper", "all"))):
            if getattr(self, k) not in allowed:
                raise ValueError(f"preset {self.name!r}: {k} must be one of {allowed}, got {getattr(self, k)!r}")
        if self.chat_pool == "all" and "validation" in self.retrofit_corpus + self.background_corpus \
                or self.chat_pool == "all" and self.retrofit_corpus == "oasst1-both":
            raise ValueError(f"preset {self.name!r}: chat_pool='all' scores every OASST1 validation reply, so the "
                             "retrofit and background corpora must not read validation text: use oasst1-train or "
                             "wikipedia")
        try:
            self.sweep_evaluation = evaluation_kind(self.sweep_evaluation)
        except ValueError as err:
            raise ValueError(f"preset {self.name!r}: sweep_evaluation: {err}") from err
        if self.evaluate_on not in ("report", "dev"):
            raise ValueError(f"preset {self.name!r}: evaluate_on must be 'report' or 'dev', got {self.evaluate_on!r}")
        if set(self.rates_to_choose) - set(rate_names()):
            raise ValueError(f"preset {self.name!r}: rates_to_choose names an unknown rate key; allowed: "
                             f"{', '.join(rate_names())}")
        for m, rates in self.sweep.items():
            if not rates or any(not isinstance(r, (int, float)) or not r > 0 for r in rates):
                raise ValueError(f"preset {self.name!r}: sweep rates of {m!r} must be positive numbers, got {rates}")
        if set(self.sweep_seeds) - set(self.seeds):
            raise ValueError(f"preset {self.name!r}: sweep_seeds {tuple(self.sweep_seeds)} must be among its seeds "
                             f"{tuple(self.seeds)}")

    def task_settings(self) -> TrainConfig:
        """The settings every task run shares (``train``) as a :class:`~smf_lib.training.TrainConfig`, so a field
        the preset leaves unset reads TrainConfig's own default (the method and rate are placeholders)."""
        return Settings(self.train).config(lr=1.0)

    def retrofit_config(self, seed: int) -> TrainConfig:
        """The TrainConfig of the retrofit stage at a seed."""
        return Settings(self.retrofit, method="retrofit").config(seed=seed, lr=self.lr.get("retrofit"))

    def rate_to_choose(self, method: str, seed: int, lr: float | None = None) -> str | None:
        """The rate key (or arm name) of a grid run (no swept ``lr``) whose rate is still to be chosen
        (``rates_to_choose``), else None."""
        if lr is not None or ARMS[method].train is None:
            return None
        if method in self.rates_to_choose:
            return method
        key = self.train_config(method, seed).lr_key
        return key if key in self.rates_to_choose and method not in self.lr else None

    def train_config(self, method: str, seed: int, lr: float | None = None) -> TrainConfig:
        """The TrainConfig of a grid method at a seed: at the swept ``lr`` if given, else at the arm's own rate if
        the preset sets one, else at its rate key's."""
        arm = ARMS[method]
        if arm.train is None:
            raise ValueError(f"method {method!r} does not train")
        cfg = TrainConfig(method=arm.train, seed=seed, **{**self.train, **arm.overrides})
        rate = lr if lr is not None else self.lr.get(method, self.lr.get(cfg.lr_key, cfg.lr))
        return dataclasses.replace(cfg, lr=rate)


_DEV_SUBSET_CPU = dict(medmcqa=150, acquisition=150, chat=40, wikitext_windows=4)

PRESETS = {
    "smoke": Preset(
        name="smoke", model="tiny", data=FIXTURES,
        methods=("base", "retrofit", "smf-kl", "smf-tfidf", "smf-kl-paper", "lora", "full"),
        seeds=(0,), memory=dict(layers=(1, 2), n_keys=8, heads=2, knn=4, k_dim=16),
        train_n=24, medmcqa_n=6, medmcqa_dev_n=4, triviaqa_n=4, triviaqa_dev_n=2, wikitext_lines=8,
        wikitext_dev_lines=4, chat_n=3, chat_dev_n=2, acquisition_n=4, topk=8,
        dev_subset=dict(medmcqa=3, acquisition=3, chat=2, wikitext_windows=1), trajectory_points=3,
        retrofit_n=12, background_n=8, background_corpus="wikipedia", eval_batch=4,
        train=dict(micro_batch=4, grad_accum=2, max_length=128, warmup_steps=1, epochs=1, top_t=8,
                   checkpoint_every=1),
        retrofit=dict(micro_batch=4, grad_accum=1, max_length=64, warmup_steps=1, epochs=1, checkpoint_every=1),
        lr={"smf-adam": 1e-2, "smf-sgd": 1.0, "smf-paper": 1e-2, "lora": 1e-3, "full": 1e-3, "retrofit": 1e-3},
        notes="tiny random Llama and synthetic fixtures: checks the pipeline, not the method",
        departures={k: "a seconds-long check of the pipeline on a tiny random model and fixtures" for k in (
            "model", "model dtype", "evaluation dtype", "full finetuning precision", "memory layers",
            "memory slots per layer", "memory heads x knn x k_dim", "memory init", "retrofit corpus", "retrofit texts",
            "retrofit epochs", "retrofit rate", "background statistics", "MedMCQA training questions",
            "MedMCQA training sample", "task epochs", "batch (micro x accumulation)", "max length", "warm-up steps",
            "warm-up schedule", "top-t", "deterministic ties", "SMF rate (paper's update)", "LoRA rate",
            "update and rate of SMF-KL / SMF-TF-IDF",
            "full finetuning rate", "MedMCQA items", "TriviaQA items", "WikiText lines", "WikiText text",
            "first perplexity window", "data source")}),
    # The first cpu study (results/cpu-v1), kept as it ran: its retrofit left a memory carrying 0.3% of the MLP's
    # output, so its SMF runs could barely learn (python -m smf_lib status --preset cpu-v1 --out results/cpu-v1).
    "cpu-v1": Preset(
        name="cpu-v1", model=DEFAULT_MODEL,
        methods=("base", "retrofit", "smf-kl", "lora", "full", "smf-tfidf", "smf-kl-paper"),  # run in this order
        seeds=(0, 1), multi_seed=("smf-kl", "smf-tfidf", "lora", "full"),
        # SMF-KL's sweep goes up to 100x the paper's rate: at 5e-4, 75 steps barely moved the gold option's
        # log-likelihood on the dev items of its trajectory, while full finetuning moved it clearly
        sweep={"smf-kl": (5e-3, 5e-2), "lora": (5e-5, 1e-3), "full": (5e-5, 1e-3)},
        memory=dict(layers=(7, 15, 22), n_keys=64, heads=4, knn=16, k_dim=256),
        train_n=1200, medmcqa_n=1000, medmcqa_dev_n=400, triviaqa_n=200, triviaqa_dev_n=100,
        wikitext_lines=120, wikitext_dev_lines=80, chat_n=150, chat_dev_n=100, acquisition_n=300, topk=32,
        dev_subset=_DEV_SUBSET_CPU, trajectory_points=4,
        retrofit_n=800, retrofit_corpus="oasst1-both", background_corpus="wikipedia", background_n=500,
        train=dict(micro_batch=8, grad_accum=2, max_length=256, warmup_steps=10, epochs=1, top_t=128,
                   checkpoint_every=20),
        retrofit=dict(micro_batch=8, grad_accum=2, max_length=256, warmup_steps=10, epochs=1, checkpoint_every=20),
        lr={"smf-adam": 5e-4, "smf-sgd": 1e6, "smf-paper": 5e-4, "lora": 2e-4, "full": 2e-4, "retrofit": 5e-4},
        notes=("offline default SmolLM2-135M-Instruct on 2 CPU cores. MedMCQA train has 2,650 questions offline "
               "(paper: a 60k sample); the first 1,200 are used for 1 epoch; no single-choice filter is possible "
               "on train. Max length 256. Retrofit on 800 OASST1 replies (validation + inferred train, minus the "
               "held-out chat replies) for 1 epoch (paper: 50k, 2 epochs). Background statistics on 500 Wikipedia "
               "leads. Top-t 128 of 4,096 slots (about 3%). Reported items: MedMCQA 1,000, TriviaQA 200 "
               "(unfiltered validation), WikiText 120 lines, 150 held-out OASST1 chat replies; settings are chosen "
               "on disjoint dev items only. Full finetuning at 2e-4: the smallest rate of the cpu-pilot at which a "
               "retention probe got worse on dev items. SMF-KL swept at 10x and 100x the paper's rate: at 5e-4 its "
               "dev trajectory barely moved"),
        departures={
            "model": "the offline default: runs on 2 CPU cores without the Hub",
            "model dtype": "CPU: float32 (bfloat16 matmuls are slow on this CPU)",
            "evaluation dtype": "float32 model",
            "full finetuning precision": "float32 model",
            "memory layers": "SmolLM2 has 30 layers: about the same relative depths",
            "memory slots per layer": "CPU time: 4,096 slots",
            "memory init": "project default: zero values, the model is unchanged at insertion",
            "retrofit corpus": "offline copy: OASST1 train roles are inferred, so the exact validation replies "
                               "are used too (minus the held-out chat replies)",
            "retrofit texts": "time on 2 CPU cores",
            "retrofit epochs": "time on 2 CPU cores",
            "background statistics": "Wikipedia leads: general text disjoint from the chat probe",
            "MedMCQA training questions": "the offline copy has 2,650; CPU time",
            "MedMCQA training sample": "one fixed sample, so seeds differ only in order and randomness",
            "task epochs": "CPU time; at 1 epoch full finetuning already forgets on dev items (cpu-pilot)",
            "update and rate of SMF-KL / SMF-TF-IDF": "project default update: row-sparse Adam (strict: rows "
                                                  "outside the selection never move); the paper's rate, with 5e-3 "
                                                  "and 5e-2 swept on dev items",
            "full finetuning rate": "chosen on dev items (cpu-pilot): at 5e-5 no retention probe got worse in 75 "
                                    "steps; 2e-4 is the smallest rate tried at which one did (chat log-likelihood)",
            "batch (micro x accumulation)": "time on 2 CPU cores",
            "max length": "time on 2 CPU cores",
            "warm-up steps": "75 steps in all",
            "warm-up schedule": "project default: the first step is not wasted at rate 0",
            "top-t": "about 3% of 4,096 slots, the paper's share",
            "deterministic ties": "project default: reproducible selections",
            "TriviaQA items": "greedy generation is the slowest probe on 2 CPU cores; 200 reported",
            "WikiText lines": "CPU time; 120 reported",
            "WikiText text": "the offline copy is the raw text",
            "first perplexity window": "project default: the first window scores one token fewer, counted so",
            "data source": "offline copies in SMF_DATA_DIR",
        }),
    "paper": Preset(
        name="paper", model=PAPER_MODEL,
        methods=("base", "smf-kl-paper-replacement", "smf-tfidf-paper-replacement", "smf-kl-paper",
                 "smf-tfidf-paper", "smf-kl-paper-alpha", "smf-tfidf-paper-alpha", "lora", "full", "retrofit",
                 "smf-kl", "smf-tfidf"),
        seeds=(0, 1, 2), multi_seed=("smf-kl-paper", "smf-tfidf-paper", "lora", "full"),
        memory=dict(layers=(6, 12, 18), n_keys=128, heads=4, knn=16, k_dim=256, init="paper", mode="additive"),
        train_n=60000, medmcqa_n=1000, medmcqa_dev_n=500, triviaqa_n=1000, wikitext_lines=1000, chat_n=200,
        acquisition_n=500, dev_subset=dict(medmcqa=200, acquisition=200, chat=50, wikitext_windows=8),
        retrofit_n=50000, retrofit_corpus="oasst1-train", background_corpus="oasst1-train", background_n=2000,
        train=dict(micro_batch=4, grad_accum=4, max_length=1024, warmup_steps=100, epochs=3, top_t=512,
                   checkpoint_every=200, schedule="paper", deterministic_ties=False),
        retrofit=dict(micro_batch=4, grad_accum=4, max_length=1024, warmup_steps=100, epochs=2, checkpoint_every=200,
                      schedule="paper"),
        lr={"smf-adam": 5e-4, "smf-paper": 5e-4, "lora": 2e-4, "full": 5e-5, "retrofit": 5e-4},
        dtype="bfloat16", memory_dtype="float32", eval_dtype="bfloat16", train_sample="shuffle", wikitext_raw=False,
        ppl_first_window="paper", data="hub",
        notes=("the paper's protocol on Qwen2.5-0.5B-Instruct (bfloat16 model, float32 memory); needs a GPU and "
               "the Hugging Face Hub (e.g. Colab). Beside the paper's rows it runs the project's SMF (smf-kl, "
               "smf-tfidf: strict row-sparse Adam, reads on real tokens, one selection per step)")),
}


# One free Colab GPU (T4, 16 GB, no fast bfloat16), sized by the runtime estimate of chapter 5: base, SMF-KL,
# LoRA and full finetuning on Qwen2.5-0.5B-Instruct. "auto" precision: bfloat16 model + float32 memory where the
# GPU supports bfloat16, else float32 master weights with float16 autocast and loss scaling
# (smf_lib.study.cost.estimate_runtime gives the budget; chapter 5 shows it).
T4 = "sized for one T4 (chapter 5 estimates its minutes)"
PRESETS["colab"] = Preset(
    name="colab", model=PAPER_MODEL, data="hub", methods=("base", "smf-kl", "lora-mem", "full-mem"), seeds=(0,),
    memory=dict(layers=(6, 12, 18), n_keys=256, heads=4, knn=16, k_dim=256),
    train_n=4000, medmcqa_n=1000, medmcqa_dev_n=200, triviaqa_n=300, triviaqa_dev_n=100, wikitext_lines=200,
    wikitext_dev_lines=50, chat_n=100, chat_dev_n=50, acquisition_n=200,
    dev_subset=dict(medmcqa=100, acquisition=100, chat=30, wikitext_windows=4), trajectory_points=4,
    retrofit_n=3000, retrofit_corpus="oasst1-train", background_corpus="oasst1-train", background_n=500,
    train=dict(micro_batch=8, grad_accum=2, max_length=512, warmup_steps=10, epochs=1, top_t=512,
               checkpoint_every=50),
    retrofit=dict(micro_batch=8, grad_accum=2, max_length=512, warmup_steps=10, epochs=1, checkpoint_every=50,
                  retrofit=dict(addressing="frozen", sparse_values=True)),
    lr={"smf-adam": 5e-4, "smf-paper": 5e-4, "lora": 2e-4, "full": 5e-5, "retrofit": 2e-3},
    dtype="auto", memory_dtype="float32", eval_batch=16,
    departures={
        "retrofit rate": "the retrofit pilot (cpu): at 5e-4 a short retrofit leaves the memory below 1% of the MLP's "
                         "output; 2e-3 brought every layer above 10% (not measured on Qwen: the runner warns if not)",
        "model dtype": "auto: bfloat16 where the GPU supports it, else float32 master weights with float16 "
                       "autocast (a T4 has no fast bfloat16)",
        "evaluation dtype": "as trained (see model dtype)",
        "full finetuning precision": "as the model dtype",
        "retrofit texts": T4, "retrofit epochs": T4,
        "background statistics": T4,
        "MedMCQA training questions": T4,
        "MedMCQA training sample": "one fixed sample (one seed)",
        "task epochs": T4, "batch (micro x accumulation)": "8 x 2: fewer steps on a GPU",
        "max length": "512: MedMCQA texts are shorter; memory on a T4", "warm-up steps": "250 steps in all",
        "warm-up schedule": "project default: the first step is not wasted at rate 0",
        "deterministic ties": "project default: reproducible selections",
        "update and rate of SMF-KL / SMF-TF-IDF": "project default update: row-sparse Adam (strict: rows outside the "
                                                  "selection never move), at the paper's rate (not tuned on Qwen)",
        "TriviaQA items": "time; 300 reported", "WikiText lines": "time; 200 reported",
        "WikiText text": "the raw text, as offline (compare with the cpu study)",
        "first perplexity window": "project default: the first window scores one token fewer, counted so",
        "memory init": "project default: zero values, the model is unchanged at insertion",
        "memory slots per layer": "the spread pilot (cpu): at 16,384 slots a question reads about 15% of a layer's "
                                  "rows, at 65,536 about 4%",
        "retrofit addressing": "the spread pilot (cpu): trained addressing collapses the reads onto a few hub rows",
        "retrofit value gradients": "a step costs what it reads, not what the table holds",
        "baselines start from": "one starting model for every arm: the retrofit, its memory frozen in place",
    },
    notes="Qwen2.5-0.5B-Instruct sized for one Colab T4 (chapter 5 estimates its minutes; not run here): base, "
          "SMF-KL, and LoRA and full finetuning from the same retrofitted model, on the spread pilot's memory "
          "(65,536 slots per layer, frozen addressing)")

# The pilot that chose the cpu regime: full finetuning at three rates, scored on dev items only (disjoint from
# every reported item), to see whether this regime makes full finetuning forget.
PRESETS["cpu-pilot"] = dataclasses.replace(
    PRESETS["cpu-v1"], name="cpu-pilot", methods=("base", "full"), multi_seed=(), seeds=(0,),
    lr={**PRESETS["cpu-v1"].lr, "full": 5e-5}, sweep={"full": (2e-4, 1e-3)}, sweep_evaluation="report",
    evaluate_on="dev",
    departures={k: v for k, v in PRESETS["cpu-v1"].departures.items()
                if k not in ("full finetuning rate", "update and rate of SMF-KL / SMF-TF-IDF")},
    notes=PRESETS["cpu-v1"].notes.split(". Full finetuning at 2e-4")[0]
    + ". Pilot: dev items only; full finetuning at 5e-5, 2e-4 and 1e-3")


# The second cpu study (results/cpu-v2), kept as it ran: a living memory, but its retrofit (the paper's: query and
# keys train) collapsed the reads onto about 150 hub rows per layer (results/spread-pilot, recipe "trained"), and its
# baselines started from the base model while SMF started from the retrofit. The retrofit recipe comes from the
# retrofit pilot
# (python -m smf_lib retrofit-pilot, results/retrofit-pilot): with zero values at rate 5e-3, every memory layer
# carried more than 10% of its MLP's output after 30 of 100 steps of 16 OASST1 train replies of 128 tokens (at
# 2e-3 after 60; the paper's init not within 100). The preset retrofits for 50 steps at 5e-3; its own retrofit
# record measures the share that schedule reaches, and the runner warns below 10%. Chat retention is scored
# on every English OASST1 validation reply to a prompt (1,000 reported, 174 dev), so the retrofit and the
# background statistics read no validation text. SMF-KL's rates are swept first on dev items (the dev subset along the
# trajectory); LoRA's and full finetuning's grid runs (5e-5) record their dev learning along the same trajectory
# points, and the grid's SMF rate is chosen where the two meet.
PRESETS["cpu-v2"] = dataclasses.replace(
    PRESETS["cpu-v1"], name="cpu-v2", methods=("base", "retrofit", "lora", "full", "smf-kl", "smf-tfidf"),
    seeds=(0, 1), multi_seed=("retrofit", "smf-kl", "smf-tfidf", "lora", "full"),  # SMF-s1 starts from retrofit-s1
    # SMF-TF-IDF at SMF-KL's rate (3e-2) learned less on dev items than LoRA and full finetuning (intervals apart),
    # so its own rate is swept too and chosen the same way (lr["smf-tfidf"] below).
    sweep={"smf-kl": (3e-3, 1e-2, 3e-2), "smf-tfidf": (3e-2, 1e-1)},
    sweep_first=True, chat_pool="all", chat_n=1000, chat_dev_n=174,
    retrofit_corpus="oasst1-train", retrofit_n=800,
    retrofit=dict(micro_batch=8, grad_accum=2, max_length=128, warmup_steps=10, epochs=1, checkpoint_every=20),
    # smf-adam: the swept rate whose dev gold-margin interval meets LoRA's at 5e-5 (results.matched_learning on
    # results/cpu-v2's trajectories: SMF-KL at 3e-2 against LoRA seed 0; 3e-3 and 1e-2 fall short). smf-tfidf: its
    # own swept rate that meets LoRA's and full finetuning's dev learning (1e-1; 3e-2 falls short of both).
    lr={**PRESETS["cpu-v1"].lr, "retrofit": 5e-3, "smf-adam": 3e-2, "smf-tfidf": 1e-1, "lora": 5e-5, "full": 5e-5},
    departures={**{k: v for k, v in PRESETS["cpu-v1"].departures.items()
                   if k not in ("retrofit corpus", "full finetuning rate")},
                "LoRA rate": "chosen on cpu-v1's dev items: at 5e-5 LoRA learned most of what it learned at 2e-4 "
                             "with a small fraction of the chat drift, a learning SMF's swept rates can meet",
                "retrofit texts": "the retrofit pilot: 800 replies of 128 tokens (50 steps of 16)",
                "retrofit rate": "the retrofit pilot: the fastest rate tried to a living memory (5e-4 stays below 1%)",
                "max length": "time on 2 CPU cores; retrofit replies 128 tokens (the pilot's)",
                "update and rate of SMF-KL / SMF-TF-IDF": (
                    "project default update: row-sparse Adam (strict); each arm's rate chosen on dev items where "
                    "its learning meets LoRA's and full finetuning's (SMF-KL swept 3e-3 to 3e-2, SMF-TF-IDF 3e-2 "
                    "and 1e-1)")},
    notes=("offline default SmolLM2-135M-Instruct on 2 CPU cores, on a living memory: the retrofit pilot's recipe "
           "(zero values, 5e-3, 50 steps of 16 OASST1 train replies of 128 tokens). Task: the first 1,200 MedMCQA "
           "train questions, 1 epoch (75 steps). Reported items: MedMCQA 1,000, TriviaQA 200, WikiText 120 lines, "
           "1,000 held-out OASST1 chat replies (every English validation reply to a prompt; 174 more are dev). "
           "LoRA and full finetuning at 5e-5; SMF-KL's rate is swept first on dev items (3e-3, 1e-2, 3e-2), and "
           "the grid's SMF rate, 3e-2, is the swept rate whose dev learning meets LoRA's. SMF-TF-IDF at that rate "
           "fell short on dev items, so its own rate is swept too (3e-2, 1e-1) and chosen the same way: 1e-1"))


# The cpu study on a spread memory, every arm from one start (python -m smf_lib run --preset cpu). The memory comes
# from the spread pilot (python -m smf_lib spread-pilot, results/spread-pilot): with the query and keys frozen the
# retrofit keeps random addressing's spread at every size, and 65,536 slots per layer (256 sub-keys) is the largest
# table whose memory stays alive at every layer (at least 10% of the MLP's output; 262,144 left layer 22 at 7%),
# with a question reading about 4% of a layer's rows. The value rows train with row-sparse gradients and a lazy
# row-wise Adam, so a retrofit step costs what it reads. LoRA and full finetuning train from the same retrofitted
# model with its memory frozen in place (lora-mem, full-mem); from the base model (lora, full) they are the paper's
# view, shown second. Every same-start arm runs three rates at both seeds along 8-point trajectories on the dev
# subset (all 174 dev chat replies); the reported runs wait for the rates at which the arms' dev learning meets
# (rates_to_choose), chosen from those trajectories.
PRESETS["cpu"] = dataclasses.replace(
    PRESETS["cpu-v2"], name="cpu",
    methods=("base", "retrofit", "smf-kl", "smf-tfidf", "lora-mem", "full-mem", "lora", "full"),
    seeds=(0, 1), multi_seed=("retrofit", "smf-kl", "smf-tfidf", "lora-mem", "full-mem", "lora", "full"),
    memory=dict(layers=(7, 15, 22), n_keys=256, heads=4, knn=16, k_dim=256, init="zero"),
    retrofit=dict(micro_batch=8, grad_accum=2, max_length=128, warmup_steps=10, epochs=1, checkpoint_every=20,
                  retrofit=dict(addressing="frozen", sparse_values=True)),
    sweep={"smf-kl": (1e-2, 3e-2, 1e-1), "smf-tfidf": (1e-2, 3e-2, 1e-1), "lora-mem": (2e-5, 5e-5, 2e-4),
           "full-mem": (1e-5, 3e-5, 1e-4)},
    sweep_first=True, sweep_seeds=(0, 1), trajectory_points=8,
    dev_subset=dict(medmcqa=150, acquisition=100, chat=174, wikitext_windows=4),
    rates_to_choose=("smf-kl", "smf-tfidf", "lora-mem", "full-mem", "lora", "full"),
    departures={**PRESETS["cpu-v2"].departures,
                "memory slots per layer": "the spread pilot: the largest table alive at every layer (a question "
                                          "reads about 4% of a layer's rows at 65,536 slots, 30% at 4,096)",
                "retrofit addressing": "the spread pilot: trained addressing collapses the reads onto about 150 "
                                       "hub rows per layer; frozen addressing keeps random addressing's spread",
                "retrofit value gradients": "a step costs what it reads, not what the table holds",
                "baselines start from": "one starting model for every arm (the retrofit, memory frozen); from the "
                                        "base model too, as the paper's view",
                "top-t": "128 rows per layer per step, as the cpu-v2 study, so the memory is the change (0.2% of "
                         "65,536 slots; the paper's share is 3%)",
                "LoRA rate": "chosen on dev items where the arms' learning meets (three rates swept per arm)",
                "full finetuning rate": "chosen on dev items where the arms' learning meets (three rates swept per "
                                        "arm)",
                "update and rate of SMF-KL / SMF-TF-IDF": (
                    "project default update: row-sparse Adam (strict); each selector's rate chosen on dev items "
                    "where the arms' learning meets (three rates swept per arm)")},
    notes=("offline default SmolLM2-135M-Instruct on 2 CPU cores, on a spread memory (65,536 slots per layer, "
           "frozen addressing, the spread pilot's choice), every arm from the same retrofitted model. Task: the "
           "first 1,200 MedMCQA train questions, 1 epoch (75 steps). SMF-KL, SMF-TF-IDF, LoRA and full finetuning "
           "(the last two with the memory frozen in place) each swept at three rates and two seeds along 8-point "
           "dev trajectories; the reported runs at the rates where the dev learning meets, within "
           f"{MATCH_MARGIN:g} nats of gold margin. LoRA and full finetuning from the base model are the paper's "
           "view"))

def get_preset(name: str) -> Preset:
    """A copy of the preset called ``name``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


# ----------------------------------------------------------------------------------------------------------------
# The paper's protocol, as settings, and the table of a preset's departures from it

#: What the paper's code does (METHOD.md sections 3-6), in the terms of :func:`protocol_settings`.
PAPER_PROTOCOL = {
    "model": PAPER_MODEL,
    "model dtype": "bfloat16",
    "memory dtype": "float32",
    "evaluation dtype": "bfloat16",
    "full finetuning precision": "bfloat16 weights and AdamW state",
    "memory layers": (6, 12, 18),
    "memory slots per layer": 16384,
    "memory heads x knn x k_dim": "4 x 16 x 256",
    "memory init": "paper",
    "retrofit corpus": "oasst1-train",
    "retrofit texts": 50000,
    "retrofit epochs": 2,
    "retrofit rate": 5e-4,
    "retrofit addressing": "train",
    "retrofit value gradients": "dense",
    "baselines start from": "the base model",
    "background statistics": "oasst1-train, 2000",
    "MedMCQA training questions": 60000,
    "MedMCQA training sample": "shuffle",
    "task epochs": 3,
    "batch (micro x accumulation)": "4 x 4",
    "max length": 1024,
    "warm-up steps": 100,
    "warm-up schedule": "paper",
    "loss average": "step-tokens",
    "top-t": 512,
    "SMF update of the paper's variants": "paper",
    "reads counted at padding": True,
    "selection per micro-batch": True,
    "deterministic ties": False,
    "SMF rate (paper's update)": 5e-4,
    "update and rate of SMF-KL / SMF-TF-IDF": "paper, 0.0005",
    "LoRA r / alpha / dropout": "16 / 32 / 0.05",
    "LoRA rate": 2e-4,
    "full finetuning rate": 5e-5,
    "MedMCQA items": 1000,
    "TriviaQA items": 1000,
    "WikiText lines": 1000,
    "WikiText text": "wikitext-103-v1 (non-raw)",
    "first perplexity window": "paper",
    "data source": "Hugging Face Hub",
}


def _grid_smf(p: Preset) -> str:
    """The update rule and rate of the preset's SMF-KL and SMF-TF-IDF arms (one value when they agree). The paper's
    value when the grid runs neither, or runs the paper's own variants of both selectors (``paper``): its SMF is
    then those variants (the rows above), and the project's arms are extras beside them."""
    arms = [a for a in ("smf-kl", "smf-tfidf") if a in p.methods]
    if not arms or {"smf-kl-paper", "smf-tfidf-paper"} <= set(p.methods):
        return PAPER_PROTOCOL["update and rate of SMF-KL / SMF-TF-IDF"]
    values = [f"{p.train_config(a, 0).update}, {r if isinstance(r, str) else f'{r:g}'}"
              for a, r in ((a, _rate(p, a)) for a in arms)]
    return values[0] if len(set(values)) == 1 else " / ".join(values)


def _baselines_start(p: Preset) -> str:
    """Where the preset's LoRA and full finetuning start: the base model (the paper's), the retrofitted model with
    its memory frozen in place (``lora-mem``, ``full-mem``), or both."""
    same = any(m in p.methods for m in ("lora-mem", "full-mem"))
    base = any(m in p.methods for m in ("lora", "full"))
    if same and base:
        return "the retrofitted model (memory frozen), and the base model"
    return "the retrofitted model (memory frozen)" if same else "the base model"


def _rate(p: Preset, arm: str) -> str | float:
    """An arm's grid rate, or what says it is still to be chosen."""
    return "chosen on dev items" if p.rate_to_choose(arm, 0) else p.train_config(arm, 0).lr


def protocol_settings(p: Preset) -> dict:
    """A preset's values of the settings in :data:`PAPER_PROTOCOL`."""
    smf = p.train_config("smf-kl-paper", 0)
    lora = p.train_config("lora", 0)
    retrofit = p.retrofit_config(0).retrofit
    m = p.memory
    full_precision = ("bfloat16 weights and AdamW state" if p.dtype == "bfloat16"
                      else f"{p.dtype} weights and AdamW state")
    data = {"fixtures": "packaged fixtures", "hub": "Hugging Face Hub"}.get(
        p.data, "Hugging Face Hub, or the local copy SMF_DATA_DIR names")
    return {
        "model": p.model,
        "model dtype": p.dtype,
        "memory dtype": p.memory_dtype or p.dtype,
        "evaluation dtype": p.eval_dtype or p.dtype,
        "full finetuning precision": full_precision,
        "memory layers": tuple(m.get("layers", ())),
        "memory slots per layer": m.get("n_keys", 0) ** 2,
        "memory heads x knn x k_dim": f"{m.get('heads')} x {m.get('knn')} x {m.get('k_dim')}",
        "memory init": m.get("init", "zero"),
        "retrofit corpus": p.retrofit_corpus,
        "retrofit texts": p.retrofit_n,
        "retrofit epochs": p.retrofit_config(0).epochs,
        "retrofit rate": p.lr.get("retrofit"),
        "retrofit addressing": retrofit.addressing,
        "retrofit value gradients": "row-sparse, lazy row-wise Adam" if retrofit.sparse_values else "dense",
        "baselines start from": _baselines_start(p),
        "background statistics": f"{p.background_corpus}, {p.background_n}",
        "MedMCQA training questions": p.train_n,
        "MedMCQA training sample": p.train_sample,
        "task epochs": smf.epochs,
        "batch (micro x accumulation)": f"{smf.micro_batch} x {smf.grad_accum}",
        "max length": smf.max_length,
        "warm-up steps": smf.warmup_steps,
        "warm-up schedule": smf.schedule,
        "loss average": smf.loss_average,
        "top-t": smf.top_t,
        "SMF update of the paper's variants": smf.update,
        "reads counted at padding": smf.count_padding,
        "selection per micro-batch": smf.select_per_microbatch,
        "deterministic ties": smf.deterministic_ties,
        "SMF rate (paper's update)": smf.lr,
        "update and rate of SMF-KL / SMF-TF-IDF": _grid_smf(p),
        "LoRA r / alpha / dropout": f"{lora.lora.r} / {lora.lora.alpha} / {lora.lora.dropout:g}",
        "LoRA rate": _rate(p, "lora"),
        "full finetuning rate": _rate(p, "full"),
        "MedMCQA items": p.medmcqa_n,
        "TriviaQA items": p.triviaqa_n,
        "WikiText lines": p.wikitext_lines,
        "WikiText text": "wikitext-103-raw-v1 (raw)" if p.wikitext_raw else "wikitext-103-v1 (non-raw)",
        "first perplexity window": p.ppl_first_window,
        "data source": data,
    }


def protocol_table(p: Preset):
    """The settings where preset ``p`` departs from the paper's protocol, with the paper's value, the preset's
    and the reason (from ``p.departures``) for each.

    Returns:
        A pandas DataFrame with columns setting, paper, preset, why.
    """
    import pandas as pd

    ours = protocol_settings(p)
    rows = [{"setting": k, "paper's code": str(v), "this preset": str(ours[k]), "why": p.departures.get(k, "")}
            for k, v in PAPER_PROTOCOL.items() if ours[k] != v]
    return pd.DataFrame(rows, columns=["setting", "paper's code", "this preset", "why"])
