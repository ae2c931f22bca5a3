"""A preset, as data: the model, the memory, data sizes, training settings and the grid of runs, each checked when
the preset is made (:class:`Preset`, with :class:`Settings` of TrainConfig fields and :class:`Rates`). The presets
themselves are in :mod:`smf_lib.study.presets`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from ..memory import MemoryConfig
from ..training import TrainConfig, config_names, rate_keys
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
        known = config_names() - {"method"}
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
        if name in config_names():
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
            the runner holds back the grid's runs at such a rate (saying so) until it is set here or by ``--lr``, or,
            for swept arms, until the sweep is in and :mod:`smf_lib.study.frontier` has chosen it (kept in the results
            folder's ``chosen_rates.json``).
        eval_batch: batch size of the probes.
        dtype: the model's parameter dtype (``"float32"`` | ``"bfloat16"``); ``memory_dtype`` the memory's
            (``None``: the model's); ``eval_dtype`` the dtype the model is scored in (``None``: as trained).
        train_sample: ``"first"`` (the first ``train_n`` training questions, every seed) or ``"shuffle"`` (the
            paper's ``shuffle(seed).select(range(train_n))``: a different sample per seed).
        wikitext_raw: score the raw WikiText text, or the non-raw ``wikitext-103-v1`` (Hub only).
        ppl_first_window: ``"exact"`` (the first window's tokens counted as scored) or ``"paper"`` (counted one
            too many, as the paper's code does).
        departures: why this preset departs from the paper's protocol, one reason per departing setting (the
            keys of :func:`~smf_lib.study.protocol.protocol_table`); a test requires exactly the departing settings
            here.
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
        self._check_sizes()
        try:
            self.lr = Rates(self.lr)
            self.train = Settings(self.train)
            self.retrofit = Settings(self.retrofit, method="retrofit")
            if self.memory:
                MemoryConfig(**self.memory)
            self.sweep_evaluation = evaluation_kind(self.sweep_evaluation)
        except (TypeError, ValueError) as err:
            raise ValueError(f"preset {self.name!r}: {err}") from err
        self._check_choices()
        self._check_grid()

    def _check_sizes(self) -> None:
        """Seeds, item counts and data sizes: integers in their ranges."""
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"preset {self.name!r}: seeds must be non-negative integers, got {self.seeds}")
        lows = {**dict.fromkeys(("medmcqa_n", "triviaqa_n", "wikitext_lines", "eval_batch", "topk", "background_n"), 1),
                **dict.fromkeys(("medmcqa_dev_n", "triviaqa_dev_n", "wikitext_dev_lines", "chat_n", "chat_dev_n",
                                 "acquisition_n"), 0), "trajectory_points": 2}
        for k, low in lows.items():
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                why = " (step 0 and the last step)" if k == "trajectory_points" else ""
                raise ValueError(f"preset {self.name!r}: {k} must be an integer >= {low}{why}, got {v!r}")
        for k in ("train_n", "retrofit_n"):
            v = getattr(self, k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"preset {self.name!r}: {k} must be an integer >= 1 (or None for all), got {v!r}")
        for k, v in self.dev_subset.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"preset {self.name!r}: dev_subset size {k!r} must be an integer >= 1, got {v!r}")

    def _check_choices(self) -> None:
        """Settings that name one of a few choices, and the corpora that must not read the chat probe's text."""
        corpora = ("oasst1-validation", "oasst1-train", "oasst1-both")
        for k, allowed in (("train_sample", ("first", "shuffle")), ("ppl_first_window", ("exact", "paper")),
                           ("dtype", ("float32", "bfloat16", "float16", "auto")), ("evaluate_on", ("report", "dev")),
                           ("retrofit_corpus", corpora), ("background_corpus", (*corpora, "wikipedia")),
                           ("chat_pool", ("paper", "all"))):
            if getattr(self, k) not in allowed:
                raise ValueError(f"preset {self.name!r}: {k} must be one of {allowed}, got {getattr(self, k)!r}")
        if self.chat_pool == "all" and "validation" in self.retrofit_corpus + self.background_corpus \
                or self.chat_pool == "all" and self.retrofit_corpus == "oasst1-both":
            raise ValueError(f"preset {self.name!r}: chat_pool='all' scores every OASST1 validation reply, so the "
                             "retrofit and background corpora must not read validation text: use oasst1-train or "
                             "wikipedia")

    def _check_grid(self) -> None:
        """The grid's arms, sweeps and rates to choose name what exists."""
        bad = [m for m in (*self.methods, *self.multi_seed, *self.sweep) if m not in ARMS]
        if bad:
            raise ValueError(f"preset {self.name!r}: unknown method {bad[0]!r}; allowed: {', '.join(ARMS)}")
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
