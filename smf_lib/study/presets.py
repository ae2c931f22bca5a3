"""Experiment presets, as data: the model, the memory, data sizes, training settings and the grid of runs.

``python -m smf_lib run --preset NAME`` runs one (see :mod:`smf_lib.study.runner`); ``smf_lib.study.preset_spec``
defines what a preset holds.
"""

from __future__ import annotations

import copy
import dataclasses

from ..models import DEFAULT_MODEL, PAPER_MODEL
from .paired_stats import MATCH_MARGIN  # nats of gold margin within which dev learning counts as matched
from .preset_spec import FIXTURES, Preset, Rates, Settings, rate_names  # noqa: F401 (the study's names for them)

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
        # batches, lengths, warm-up, top-t and every rate are TrainConfig's defaults, which are the paper's
        train=dict(epochs=3, checkpoint_every=200, schedule="paper", deterministic_ties=False),
        retrofit=dict(epochs=2, checkpoint_every=200, schedule="paper"),
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
        "retrofit rate": "the retrofit pilot (cpu): at 5e-4 a short retrofit leaves the memory nearly silent; 2e-3 "
                         "brought every layer past the health threshold (not measured on Qwen: the runner warns if "
                         "not)",
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
        "memory slots per layer": "the spread pilot (cpu): a question reads a far smaller share of a layer's rows "
                                  "at 65,536 slots than at 16,384 (chapter 2 prints both)",
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
                "retrofit rate": "the retrofit pilot: the fastest rate tried to a living memory (5e-4 stays nearly "
                                 "silent)",
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
# (rates_to_choose), chosen from those trajectories by smf_lib.study.frontier once the sweep is in (lora and full from
# the base model take lora-mem's and full-mem's rates).
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
                                          "reads a far smaller share of a layer's rows at 65,536 slots than at "
                                          "4,096; chapter 2 prints both)",
                "retrofit addressing": "the spread pilot: trained addressing collapses the reads onto a few hub "
                                       "rows per layer; frozen addressing keeps random addressing's spread",
                "retrofit value gradients": "a step costs what it reads, not what the table holds",
                "baselines start from": "one starting model for every arm (the retrofit, memory frozen); from the "
                                        "base model too, as the paper's view",
                "top-t": "128 rows per layer per step, as the cpu-v2 study, so the memory is the change (0.2% of "
                         "65,536 slots; the paper's share is 3%)",
                "LoRA rate": "chosen on dev items where the arms' learning meets (three rates swept per arm, "
                             "more by a fixed rule where an arm misses the level; from the base model, the "
                             "same-start arm's rate)",
                "full finetuning rate": "chosen on dev items where the arms' learning meets (three rates swept per "
                                        "arm, more by a fixed rule where an arm misses the level; from the base "
                                        "model, the same-start arm's rate)",
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
