# ---
# jupyter:
#   jupytext:
#     formats: notebooks///ipynb,book/notebooks///py:percent
#     notebook_metadata_filter: kernelspec,jupytext,accelerator,colab,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Sparse Memory Finetuning
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/smf-lib/smf_lib/blob/main/notebooks/00_intro.ipynb)
#
# Finetuning a language model on a new task tends to overwrite what it already knew (*catastrophic
# forgetting*). LoRA limits how many parameters change, but every low-rank update still touches every
# input. **Sparse Memory Finetuning** (SMF) takes a different route. It adds a large key-value
# {term}`memory layer` to the model, where each token reads only a few of many value rows. For the new task, it
# then trains only the rows that the task reads far more often than general text does. Knowledge stored
# elsewhere is left alone.

# %% tags=["remove-cell"]
# In Colab only: install smf_lib from the repository (or from SMF_INSTALL_SPEC) and fetch the cached results.
import os
import subprocess
import sys

REPO = "https://github.com/smf-lib/smf_lib"
if "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ:
    spec = os.environ.get("SMF_INSTALL_SPEC", f"smf_lib[study,widgets] @ git+{REPO}")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", spec], check=True)
    import smf_lib.views.colab

    smf_lib.views.colab.setup(REPO)

# %%
import textwrap

from smf_lib.views.notebook import setup_notebook
from smf_lib.study.arms import ORDER
from smf_lib.study.presets import get_preset
from smf_lib.study.results import delta_table, load_results
from smf_lib.views.tables import book_table
from smf_lib.study.runner import status_line, study_status

SEED = 0
device = setup_notebook(SEED)

# %% [markdown]
# ## The answer
# Does SMF learn a new task while forgetting less than LoRA and full finetuning? In one sentence per study, computed
# from the result files (SmolLM2-135M-Instruct on 2 CPU cores; read on dev items, where the rates and the level of
# comparison are chosen):

# %% tags=["hide-input"]
from smf_lib.study import facts_findings, facts_frontier
from smf_lib.study.facts_presets import get_facts_preset
from smf_lib.study.findings import answer_cpu_v2, findings_cpu, findings_v1
from smf_lib.study.records import is_report
from smf_lib.study.results import net_table, results_dir, trajectory_table
from smf_lib.study.tables import without_intervals
from smf_lib.views.notebook import found_box
from smf_lib.views.plotting import plot_answer
from IPython.display import Markdown, display

folder, summary, runs = load_results("cpu-v2")
status = study_status(get_preset("cpu-v2"), folder)
facts = facts_frontier.answer_runs(get_facts_preset("facts"), results_dir("facts"))
facts_answer = facts_findings.answer(facts["runs"], facts["start"], facts["seeds"], split=facts["split"],
                                     level=facts["level"])
found_box([s for s in (answer_cpu_v2(runs), facts_answer) if s], title="In one sentence")

# %% [markdown]
# **In this book you will**
#
# - build product-key memory layers into a real language model, SmolLM2-135M-Instruct, and check that they
#   leave it unchanged at insertion;
# - train it on MedMCQA medical exam questions with SMF, and beside it with LoRA and full finetuning;
# - measure what each method learned and what it forgot, with paired confidence intervals;
# - compare the two row selectors, KL and TF-IDF, with a top-t slider;
# - see how to run the paper's setting on a GPU, and what SMF costs in time and memory.
#
# The chapters:
#
# 1. {doc}`the memory layer <01_memory_layer>`: product keys, identity at insertion, the probes, what one token reads;
# 2. {doc}`training <02_training>`: retrofit, background statistics, a live sparse run, LoRA and full finetuning;
# 3. {doc}`learning against forgetting <03_forgetting>`: the answer in one figure, matched learning, paired
#    confidence intervals;
# 4. {doc}`KL versus TF-IDF <04_kl_vs_tfidf>` row selection, with a top-t slider;
# 5. {doc}`the paper's setting <05_paper_setting>` on Qwen2.5-0.5B-Instruct, in Colab;
# 6. {doc}`speed and memory <06_performance>`, side by side;
# 7. {doc}`learning new facts <07_new_facts>` one at a time, Lin et al.'s setting, where a sparse memory is
#    expected to help most.
#
# The {doc}`method <../method>` page specifies what `smf_lib` computes, the {doc}`data <../data>` page says where each
# data set comes from, and the {doc}`glossary <../glossary>` defines the terms the chapters use. The method follows
# Gupta et al. 2026 ([arXiv 2605.03229](https://arxiv.org/abs/2605.03229), "the paper" in this book), Lin et al.
# 2025 on sparse memory finetuning ([arXiv 2510.15103](https://arxiv.org/abs/2510.15103)), Berges et al. 2024 on
# memory layers at scale ([arXiv 2412.09764](https://arxiv.org/abs/2412.09764)) and Lample et al. 2019 on
# product keys ([arXiv 1907.05242](https://arxiv.org/abs/1907.05242)). Where this project departs from the paper,
# the departure is listed with its reason.

# %% [markdown]
# ## What we found on MedMCQA
# The MedMCQA study is `python -m smf_lib run --preset cpu-v2`: a memory retrofitted until it carries a real share
# of the model's computation, MedMCQA for one epoch, SMF against LoRA and full finetuning. Its own verdict, with
# what goes against SMF (chapter 3 has the detail):

# %% tags=["hide-input"]
v1_folder, v1_summary, v1_runs = load_results("cpu-v1")
v1_retrofit = next(r for r in v1_runs if r["method"] == "retrofit")
v1_share = v1_retrofit["retrofit"]["heldout_oasst1"]["after"]["memory_to_mlp_norm"]
planned = int((status["evaluation"] == "report").sum())
display(found_box([without_intervals(f) for f in findings_cpu(runs, planned=planned, first_share=v1_share)[:4]]))
display(Markdown("With their paired 95% intervals over the reported items (changes from each run's start):"))
book_table(delta_table(net_table([r for r in runs if is_report(r)]), ("medmcqa_gold_margin", "chat_loglik")),
           key=["method", "lr", "seed"])

# %% [markdown]
# That verdict is stronger than the study can carry, for reasons its own records and the spread pilot show:

# %% tags=["hide-input"]
from smf_lib.study.findings import caveats_cpu_v2

found_box([without_intervals(c) for c in caveats_cpu_v2(runs, results_dir("spread-pilot"))],
          title="What this study cannot carry")

# %% [markdown]
# The `cpu` preset is built to answer both, compared at equal learning (`python -m smf_lib frontier`); its runs are
# not among this book's records:

# %% tags=["hide-input"]
new = get_preset("cpu")
print(textwrap.fill(
    f"the spread pilot's memory ({new.memory['n_keys'] ** 2:,} slots per layer, "
    f"{new.retrofit['retrofit']['addressing']} addressing) and every arm from the same retrofitted model (LoRA and "
    f"full finetuning with the memory frozen in place), each at {min(map(len, new.sweep.values()))} rates or more "
    f"and {len(new.sweep_seeds)} seeds, along {new.trajectory_points}-point dev trajectories.", 76))

# %% [markdown]
# ## At a glance
# Each point is one training run: what it learned on MedMCQA (x: the gold option's margin over the best
# distractor) against what it forgot (y: the log-likelihood of held-out chat replies), both measured from the model
# it started from, with 95% intervals. At equal learning, the higher point forgot less. Chapter 3 reads this figure
# in detail, on dev items and on the reported ones.

# %%
import matplotlib.pyplot as plt

traj = trajectory_table(runs, against="start")
ends = traj[traj["step"] == traj["steps"]] if len(traj) else traj
trained = net_table([r for r in runs if is_report(r)])
trained = trained[trained["method"] != "retrofit"]
points, where = (trained, "reported items") if len(trained) else (ends, "dev items")
ax = plot_answer(points, title=f"{where}: learning against forgetting")
ax.figure.tight_layout()
plt.show()
print(status_line(status, width=76))

# %% [markdown]
# ## One question, all the way through
# Every chapter follows one MedMCQA question, the running example: chapter 1 shows which memory rows it reads,
# chapter 2 which of them SMF moves, chapter 3 what each method did to it, chapter 4 which rows each selector picks
# for it. It is a reported validation item, so no training run ever sees it:

# %% tags=["hide-input"]
from smf_lib.data import load_medmcqa
from smf_lib.study.findings import example_sentence
from smf_lib.study.results import option_probabilities
from smf_lib.views.notebook import RUNNING_EXAMPLE

example = load_medmcqa("validation", n=RUNNING_EXAMPLE + 1)[RUNNING_EXAMPLE]
print(textwrap.fill(example["question"], 76))
for k in "ABCD":
    print(textwrap.fill(f"{k}. {example[f'op{k.lower()}']}", 76, subsequent_indent="   "))
display(Markdown(example_sentence(option_probabilities(runs, RUNNING_EXAMPLE))))

# %% [markdown]
# ## The first study
# The same grid ran first on a memory retrofitted at the paper's rate for 50 steps (`results/cpu-v1/`). Its
# memory was too quiet to test SMF; what it found:

# %% tags=["hide-input"]
found_box(findings_v1(v1_summary, v1_runs, results_dir("retrofit-pilot")), title="The first study")

# %% [markdown]
# Its numbers: each cell is one method's change against the base model, with a paired-bootstrap 95% interval over
# the same probe items; accuracies are in points.

# %%
print(status_line(study_status(get_preset("cpu-v1"), v1_folder), width=76))
v1_summary = v1_summary[v1_summary["method"].isin(ORDER)]  # the grid's methods
headline = ("medmcqa_acc", "wikitext_ppl", "chat_drift_kl",
            "triviaqa_alias_loglik")
book_table(delta_table(v1_summary, headline), key=["method", "lr", "seed"])

# %% [markdown]
# The model is small and near chance on MedMCQA, so changes in accuracy are small. The question the paper asks,
# whether SMF moves the forgetting probes less than LoRA and full finetuning do *for what it learns*, needs a memory
# that learns, and a comparison at matched learning: chapter 2 shows the retrofit pilot that found such a memory,
# and chapter 3 the study that runs on it.
#
# ## Summary
# - SMF trains only the memory rows that a task reads far more than general text does; everything else stays
#   frozen.
# - This book builds it step by step on SmolLM2-135M-Instruct and compares it with LoRA and full finetuning on
#   the same items.
#
# ## Exercises
# 1. (reading only) Before reading on, write down which method you expect to change WikiText perplexity least, and
#    why. Check your guess against the first study's table above, then against chapter 3.
#
#    :::{dropdown} Hint
#    Read the `wikitext ppl` column: each cell is a change against the base model with its 95% interval. Then ask
#    how much each method learned (chapter 3's first study), and note that SMF starts from the retrofitted model,
#    whose own change is the `retrofit` row.
#    :::
#
#    :::{dropdown} Solution
#    The SMF runs, and the retrofit alone, change perplexity least by far; LoRA and full finetuning change it most.
#    Three things temper the guess that SMF forgets least. Every method *lowers* perplexity: trained on MedMCQA's
#    plain text, the instruct model predicts plain text better, so this change is not forgetting. Much of SMF's
#    small change is already in the `retrofit` row, since SMF starts from that model. And in this first study SMF
#    barely learned (chapter 3), because its memory carried almost nothing, so its small change in perplexity goes
#    with a small change everywhere. This study cannot rank SMF against LoRA at matched learning; the cpu study,
#    on a living memory, matches their learning on dev items first (chapter 3).
#    :::
#
# 2. (CPU, about 1 minute) Run `python -m smf_lib run --preset smoke --out /tmp/smoke` (a tiny random model) and
#    open `/tmp/smoke/summary.csv`. Which of its columns make up one cell of the table above?
#
#    :::{dropdown} Hint
#    The table above is {py:func}`~smf_lib.study.results.delta_table` applied to such a summary. Look at the
#    columns whose names start with `d_`.
#    :::
#
#    :::{dropdown} Solution
#    For a metric `m`, a cell is built from three columns: `d_m`, the change against the `base` row, and `d_m_lo`
#    and `d_m_hi`, the bounds of its paired 95% interval. Accuracies are multiplied by 100 (points), and all three
#    numbers are rounded to two significant digits of the interval's width. The `method`, `seed` and `lr` columns
#    say which row the cell is in.
#
#    ```python
#    import pandas as pd
#    from smf_lib.study.results import delta_table
#
#    smoke = pd.read_csv("/tmp/smoke/summary.csv")
#    print(smoke[["method", "seed", "lr", "d_wikitext_ppl", "d_wikitext_ppl_lo", "d_wikitext_ppl_hi"]])
#    delta_table(smoke, ("wikitext_ppl",))
#    ```
#
#    The smoke numbers themselves mean nothing: a tiny random model on synthetic fixtures checks the pipeline, not
#    the method.
#    :::
