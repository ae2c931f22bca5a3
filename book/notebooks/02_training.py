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
# # 2. Training on MedMCQA: retrofit, background statistics, sparse steps, baselines
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/smf-lib/smf_lib/blob/main/notebooks/02_training.ipynb)
#
# **In this chapter you will**
#
# - follow the four stages of the pipeline and what each one trains;
# - compute {term}`background statistics` on Wikipedia leads;
# - run a short sparse memory finetuning (SMF) on SmolLM2 with real MedMCQA training questions, and see which
#   value rows moved in each memory layer while every other parameter stayed bit-identical;
# - read the training curves of the cached study: retrofit, SMF, LoRA and full finetuning.
#
# The pipeline (section 3 of the {doc}`method <../method>`) has four stages:
#
# 1. **{term}`Retrofit`** ("healing"): insert the memory, freeze the base, and train every memory parameter densely
#    on general text ([OASST1](https://arxiv.org/abs/2304.07327) assistant replies).
# 2. **Background statistics**: run $B$ general documents one at a time through the model and count, per slot
#    $i$, how many documents read it ($df_i$) and how often it was read in total ($A_i$). They stay valid only
#    while the keys and query weights are frozen, so a fingerprint of those weights is stored with them.
# 3. **Sparse phase**: on MedMCQA, train only the value rows that the current step's batch reads far more than
#    general text does: the {term}`top-t` rows per memory layer and step, ranked by a {term}`selector` (KL by
#    default; chapter 4 compares them).
# 4. **Baselines** on the same text: LoRA (rank 16 on all seven projections of every decoder layer, merged into
#    the weights after training) and full finetuning.
#
# One training loop, {py:func}`~smf_lib.training.train`, serves all of them; a
# {py:class}`~smf_lib.training.TrainConfig` says which.

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

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import display

import smf_lib as S
from smf_lib.views.notebook import setup_notebook
from smf_lib.data import load_background, load_medmcqa, medmcqa_training_text
from smf_lib.study.arms import ORDER
from smf_lib.views.plotting import Panels, plot_loss_curves, plot_row_changes
from smf_lib.views.notebook import RUNNING_EXAMPLE
from smf_lib.views.tables import book_table
from smf_lib.study.records import is_report
from smf_lib.study.results import load_results
from smf_lib.selection import read_counts_of_texts

SEED = 0
device = setup_notebook(SEED)

# %% tags=["hide-input"]
from smf_lib.study.results import results_dir
from smf_lib.study.spread_pilot import spread_answer, spread_table
from smf_lib.views.notebook import found_box
from smf_lib.views.pilot_plots import spread_after

found_box([spread_answer(spread_after(spread_table(results_dir("spread-pilot"))))], title="In one sentence")

# %% [markdown]
# The whole pipeline in one picture:

# %%
from smf_lib.views.diagrams import plot_pipeline

plot_pipeline()
plt.show()

# %% [markdown]
# ## A sparse run, live, on SmolLM2
# The model gets the memory of chapter 1 (layers 7, 15 and 22, 4,096 slots each). Background statistics come
# from 32 Wikipedia lead paragraphs, each cut to 128 tokens; the task texts are the first 64 MedMCQA training
# questions, each the paper's prompt followed by the gold option:

# %%
model, tok = S.load_model(device=device)
memory = S.MemoryConfig(layers=(7, 15, 22), n_keys=64, heads=4, knn=16,
                        k_dim=256)
S.add_memory(model, memory)
background = load_background(32)
stats = S.compute_background_stats(model, tok, background, max_length=128,
                                   progress=False)
texts = [medmcqa_training_text(r) for r in load_medmcqa("train", n=64)]
print(f"background: {stats.n_docs} documents; task: {len(texts)} texts")
print("the first task text:\n")
print("\n".join(textwrap.fill(line, 68) for line in texts[0].splitlines()))

# %% [markdown]
# Sixteen optimizer steps of four texts each, one pass over the 64 texts, with KL selection of the top 16 rows
# per layer and step and the default update, row-sparse Adam at the paper's rate of $5 \times 10^{-4}$. This
# short run skips the retrofit, so the keys and query projections are as initialised; the cached study below
# retrofits first. Sixteen small steps barely move the loss; what matters here is *which* parameters moved, so
# every parameter is copied before the run and compared bit for bit after it.

# %%
values_before = [m.values.weight.detach().clone()
                 for m in S.memory_layers(model)]
others_before = {n: p.detach().clone() for n, p in model.named_parameters()
                 if not n.endswith("values.weight")}
config = S.TrainConfig(method="smf", selector="kl", top_t=16, micro_batch=4,
                       grad_accum=1, max_steps=16, max_length=256,
                       warmup_steps=2)
result = S.train(model, tok, texts, config, background=stats, progress=False)
log = pd.DataFrame(result.log)
per_step = ", ".join(str(n) for n in sorted(set(log["rows"])))
print(f"{len(log)} steps in {result.seconds:.0f} s")
print(f"rows updated per step, the three layers together: {per_step}")
print(f"mean loss: {log['loss'].iloc[:4].mean():.2f} over the first four "
      f"steps, {log['loss'].iloc[-4:].mean():.2f} over the last four")

# %% [markdown]
# The default update is **strict** ({term}`strict update`): it touches only the selected rows, so every value row
# that was never selected, and every frozen parameter, is bit-identical after the run. For each memory layer:
# how many of its 4,096 rows the 64 texts read at all, how many the run moved (at most 16 steps x 16 rows),
# and how many of the moved rows are {term}`hub rows <hub row>` (read by more than half of the background
# documents):

# %%
reads = read_counts_of_texts(model, tok, texts, max_length=256)
moves = [(m.values.weight.detach() - v).norm(dim=1)
         for m, v in zip(S.memory_layers(model), values_before)]
frozen = all(torch.equal(p, others_before[n])
             for n, p in model.named_parameters() if n in others_before)
moved = sum(int((d > 0).sum()) for d in moves)
print("every other parameter bit-identical:", frozen)
print(f"value rows moved: {moved} of {len(moves) * memory.n_slots:,}")
hub = [stats.df[j] > stats.n_docs / 2 for j in range(len(moves))]
rows = pd.DataFrame({"memory layer": memory.layers,
                     "rows read": [int((c > 0).sum()) for c in reads],
                     "rows moved": [int((d > 0).sum()) for d in moves],
                     "moved hub rows": [int(((d > 0) & h).sum())
                                        for d, h in zip(moves, hub)]})
book_table(rows, key=["memory layer"])

# %% [markdown]
# And the running example of chapter 1, the question on axonal transport? It is a reported validation question,
# never trained on here. SMF only moves value rows (the keys are frozen, so the rows a text reads do not change),
# so what this run changed *for it* is the overlap between the rows it reads and the rows the run moved:

# %%
example = load_medmcqa("validation", n=RUNNING_EXAMPLE + 1)[RUNNING_EXAMPLE]
example_reads = read_counts_of_texts(model, tok, [medmcqa_training_text(example)], max_length=256)
for layer, c, d in zip(memory.layers, example_reads, moves):
    read, touched = c > 0, (c > 0) & (d > 0)
    print(f"layer {layer}: it reads {int(read.sum()):,} rows, {int(touched.sum()):,} of them moved "
          f"({int(c[touched].sum()):,} of its {int(c.sum()):,} reads)")

# %% [markdown]
# The shared rows are the only path by which sixteen steps on other medical questions can change this
# question's answer: the rest of what it reads is exactly as before. (Chapter 1 counted the question alone, without
# its answer, on a memory before any training; here the whole training text is read at 256 tokens by this chapter's
# model, so the counts differ.)
#
# The figure places each moved row on the slot grid of chapter 1, coloured by how far it moved; the blank slots
# did not move at all. Rows selected in several steps moved furthest.

# %%
Panels(plot_row_changes(moves, memory.n_keys, memory.layers, split=True))

# %% [markdown]
# The run changed only rows it selected, a small share of the 12,288 value rows, and nothing else. Without a
# retrofit the keys are untrained and the texts read nearly every row, so the selectors have little to go on;
# chapter 4 shows the selection on a retrofitted memory. The paper's own update
# (`update="paper"`, the {term}`paper update`) behaves differently: it masks the gradient and steps the whole table
# with AdamW, so Adam's moments keep moving a row for several steps after it was last selected, and any weight
# decay moves every row. `smf_lib` reproduces that update for fidelity (the `smf-kl-paper` method of the grid) and
# tests the leak. Adam's step has about the same size whatever the scale of the model's gradients, so one rate
# transfers across models; plain SGD on the rows (`update="sgd"`) is strict too, but its rate must be calibrated
# per model (`python -m smf_lib calibrate`).
#
# ## The cached study
# The runs below come from `python -m smf_lib run --preset cpu-v2`, which writes `results/cpu-v2/` (resumable; on 2 CPU
# cores it takes hours): the living-memory study that chapter 3 reads. Every method trains on the same MedMCQA texts
# in the same order. Each run records its own settings; the {doc}`method page <../method>` lists every setting in
# which the `cpu` preset departs from the paper, and why.

# %%
folder, summary, runs = load_results("cpu-v2")
runs = [r for r in runs if r["method"] in ORDER]  # the grid's methods
runs.sort(key=lambda r: (ORDER.index(r["method"]), str(r["seed"])))
settings = []
for r in runs:
    cfg = r.get("train_config")
    if not cfg:
        continue
    smf = cfg["method"] == "smf"
    settings.append({"method": r["method"], "seed": r["seed"],
                     "sweep": "" if is_report(r) else "yes",
                     "texts": r["data"].get("n_train"),
                     "steps": len(r.get("train_log") or []),
                     "rate": f"{cfg['lr']:g}",
                     "top-t": cfg["top_t"] if smf else "",
                     "row update": (cfg.get("optimizer", cfg.get("update"))
                                    if smf else ""),
                     "minutes": round(r.get("train_seconds", 0) / 60)})
book_table(pd.DataFrame(settings), key=["method", "seed"])

# %% [markdown]
# ### Retrofit
# The memory trains on OASST1 replies while the base stays frozen (its loss is on chat replies, not on MedMCQA);
# the sparse phase starts from the model with this memory.

# %%
retro = next((r["retrofit"] for r in runs
              if r["method"] == "retrofit" and "retrofit" in r), None)
if retro is not None:
    ax = plot_loss_curves([{"method": "retrofit", "train_log": retro["log"]}])
    ax.set_ylabel("training loss (OASST1)")
    ax.set_title(f"retrofit: {len(retro['log'])} steps on "
                 f"{retro['n_texts']} texts", fontsize=10)
    plt.show()

# %% [markdown]
# What the retrofit changed, measured on held-out OASST1 replies (the dev chat replies, used nowhere in training):
# the mean token loss of the model with its memory, and the size of the memory's output next to the output of the
# MLP it is added to ($\lVert \alpha\, m(x) \rVert / \lVert \mathrm{MLP}(x) \rVert$, averaged over tokens and
# memory layers). The value rows start at zero, so before the retrofit the memory adds nothing, the model is
# exactly the base model and the ratio is 0.

# %%
heldout = (retro or {}).get("heldout_oasst1") or {}
if heldout.get("before") and heldout.get("after"):
    report = pd.DataFrame([heldout["before"], heldout["after"]],
                          index=["before retrofit", "after retrofit"])
    report = report.rename(columns={"loss": "held-out loss",
                                    "memory_to_mlp_norm": "memory / MLP norm",
                                    "texts": "replies"})
    shown = [c for c in ("held-out loss", "memory / MLP norm", "replies") if c in report]
    display(book_table(report.rename_axis("stage")[shown]))
    change = heldout["after"]["loss"] - heldout["before"]["loss"]
    print(textwrap.fill(f"the retrofit changed the held-out loss by {change:+.4f} nats per token; the memory's "
                        f"output is now {heldout['after']['memory_to_mlp_norm']:.1%} of the MLP's", 76))
else:
    print("this study's retrofit stage recorded no held-out measurement")

# %% [markdown]
# With zero-initialised values there is nothing to heal: inserting the memory leaves the model exactly as it was, so
# the "before" row is the base model itself. What the retrofit can do is *add* something general to the memory, and
# the change in held-out loss measures how much. The paper initialises the values randomly (`init="paper"`); then
# insertion perturbs the model, and the retrofit first has to undo that perturbation, which is where the word
# "healing" comes from.
#
# How much the retrofit can add is bounded by its length and rate. Adam moves each parameter by about the learning
# rate per step, so the first study's 50 retrofit steps at the paper's $5 \times 10^{-4}$ moved a value coordinate by
# at most about 0.025 from zero, and its memory entered the sparse phase nearly empty. The paper retrofits for two
# epochs over 50,000 replies, thousands of steps, which 2 CPU cores cannot afford. The study above uses the recipe
# the pilot below found instead: a higher rate, at which 50 steps are enough for a memory that carries a real share
# of the MLP's output (printed above).

# %% [markdown]
# ### A memory that carries signal: the retrofit pilot
# Before measuring what sparse updates do, check that the memory is alive. `python -m smf_lib retrofit-pilot`
# (files in `results/retrofit-pilot/`) retrofits the same memory with several recipes, each for 100 steps of 16
# OASST1 train replies of 128 tokens, and measures along the way the smallest per-layer share of the MLP's output
# and the loss on 64 held-out replies (the last of the train file, never trained on), with paired 95% intervals.
# The recipes differ in the initialisation: the project's zero values; the paper's random values with
# $\alpha = 0.01$; and `zero-w2`, which keeps the model unchanged at insertion as zero values do, but zeroes $W_2$
# instead and keeps the values random, as LoRA zeroes $B$ and keeps $A$ random, so every token's gradient reaches
# the dense $W_2$ from the first step. And in the peak rate. The dotted line is the 10% that
# {py:data}`smf_lib.health.MIN_SHARE` asks of every layer; a runner that finishes a retrofit below it warns.

# %%
from smf_lib.study.findings import pilot_choice
from smf_lib.study.pilot import pilot_table
from smf_lib.study.results import results_dir
from smf_lib.study.tables import interval_cell
from smf_lib.views.pilot_plots import plot_retrofit_pilot

pilot_dir = results_dir("retrofit-pilot")
pilot = pilot_table(pilot_dir)
display(Panels(plot_retrofit_pilot(pilot, split=True)))
last = pilot.sort_values("step").groupby("recipe").tail(1)
last = last.assign(minutes=last["train_seconds"] / 60)
book_table(pd.DataFrame({
    "recipe": last["recipe"], "step": last["step"], "mean share": last["share"].map("{:.1%}".format),
    "smallest layer's share": last["min_share"].map("{:.1%}".format),
    "held-out loss change, nats [95%]": [interval_cell(r.loss_change, r.loss_lo, r.loss_hi, digits=3)
                                         for r in last.itertuples()],
    "minutes": last["minutes"].round().astype(int)}), key=["recipe", "step"])

# %% [markdown]
# Does the initialisation matter, does the rate, and which recipe is cheapest to bring every layer above 10% with a
# held-out gain whose interval excludes zero?

# %%
from smf_lib.study.findings import pilot_answer

for sentence in pilot_answer(pilot_dir):
    print(textwrap.fill(sentence, 76))
choice = pilot_choice(pilot_dir)
print(textwrap.fill(f"{choice['recipe']}: every layer at {choice['min_share']:.0%} or more after step "
                    f"{choice['step']} (16 replies of 128 tokens per step); held-out loss "
                    f"{choice['loss_change']['delta']:+.3f} [{choice['loss_change']['lo']:+.3f}, "
                    f"{choice['loss_change']['hi']:+.3f}] nats", 76))

# %% [markdown]
# ### How much retrofit does SMF need?
# A living memory is necessary for SMF to learn, but is it enough, and how much retrofit is enough? Each retrofit
# checkpoint of the `zero` recipe at rate 2e-3 gets the same short SMF-KL run (20 steps of 16 MedMCQA training
# questions, row-sparse Adam at 1e-2, top-t 128; `python -m smf_lib retrofit-pilot --learning zero-lr0.002@60
# ...`), and its learning is measured on 100 dev MedMCQA questions (never reported) as the change in the gold
# option's margin over the best distractor, a measure that the letter prior does not move (chapter 3).

# %%
from smf_lib.study.pilot import learning_table
from smf_lib.views.pilot_plots import plot_learning_by_share

learning = learning_table(pilot_dir)
plot_learning_by_share(learning)
plt.show()
display(book_table(pd.DataFrame({
    "retrofit step": learning["retrofit_step"], "mean share": learning["share"].map("{:.1%}".format),
    "smallest layer's share": learning["min_share"].map("{:.1%}".format),
    "gold-margin change, nats [95%]": [interval_cell(r.d_gold_margin, r.d_gold_margin_lo, r.d_gold_margin_hi,
                                                     digits=3) for r in learning.itertuples()],
    "accuracy change": learning["d_acc"].map("{:+.1%}".format), "answers changed": learning["changed"]}),
    key=["retrofit step"]))

# %% [markdown]
# Does SMF learn more on a memory that carries more? The answer, from the records:

# %%
from smf_lib.study.findings import learning_answer

for sentence in learning_answer(pilot_dir):
    print(textwrap.fill(sentence, 76))

# %% [markdown]
# ### A memory that stays spread: the spread pilot
# A living memory is not yet a *sparse* one. SMF bets that a task reads rows that general text does not, so that
# training those rows leaves general text alone. That needs reads spread over many rows, and a table large enough
# that a question reads few of them. `python -m smf_lib spread-pilot` (files in `results/spread-pilot/`) retrofits
# the memory with each recipe (the same 50 steps of 16 OASST1 train replies at 5e-3 as the study above) and
# measures, before and after, on 200 held-out Wikipedia leads and 200 dev MedMCQA prompts
# ({py:func}`~smf_lib.spread.memory_spread`):
#
# - **effective rows**, $\exp(H)$ of the distribution of reads over rows: how many rows the reads are spread over,
#   compared with the same memory before the retrofit (random addressing, the most spread it can be);
# - a question's **footprint**, the rows it reads as a share of the layer, and its **overlap**: the share of those
#   rows that a general paragraph of the same length reads too.
#
# The recipes: `trained` is the paper's (query and keys train with everything else, as in the study above);
# `frozen` keeps the query and keys at their random initialisation (values, $W_1$, $W_2$ and $\alpha$ train);
# `half-norm` normalises each half of the query, as XLM's memory can; `balance` adds a usage-balancing term.

# %%
from smf_lib.study.spread_pilot import MIN_LOSS_GAIN, spread_table
from smf_lib.views.pilot_plots import OVERLAP_GOAL, plot_sizes, plot_spread, spread_after

spread_dir = results_dir("spread-pilot")
after = spread_after(spread_table(spread_dir))
display(Panels([plot_spread(after).figure]))

# %% [markdown]
# The answer, from the records:

# %%
by = after.groupby("recipe")
trained, frozen = by.get_group("trained"), by.get_group("frozen")
lines = [
    f"Trained addressing collapses the reads: after the retrofit they spread over "
    f"{trained['effective_ratio'].min():.0%} to {trained['effective_ratio'].max():.0%} as many rows as random "
    f"addressing's, and the top 5% of rows take "
    f"{trained['top5_share'].min():.0%} to {trained['top5_share'].max():.0%} of all reads (random: "
    f"{trained['random_top5_share'].min():.0%} to {trained['random_top5_share'].max():.0%}).",
    f"Frozen addressing keeps {frozen['effective_ratio'].min():.0%} or more of random addressing's effective rows at "
    f"the same health: the smallest layer carries {frozen['share'].min():.0%} of its MLP's output (trained: "
    f"{trained['share'].min():.0%}) and held-out chat loss falls by {-frozen['loss_change'].iloc[0]:.3f} nats "
    f"(trained: {-trained['loss_change'].iloc[0]:.3f}; alive means at least {MIN_LOSS_GAIN:.2f})."]
for name in ("half-norm", "balance"):
    if name in by.groups:
        g = by.get_group(name)
        lines.append(f"{name}: effective rows {g['effective_ratio'].min():.0%} to {g['effective_ratio'].max():.0%} "
                     f"of random addressing's; smallest layer share {g['share'].min():.0%}; chat loss "
                     f"{g['loss_change'].iloc[0]:+.3f} nats.")
for line in lines:
    print(textwrap.fill(line, 76))

# %% [markdown]
# Spread is not sparse yet. With 4 heads reading 16 rows each per token, a question of a few dozen tokens reads a
# large share of a 4,096-row table, and a general paragraph reads many of the same rows. The same frozen recipe at
# larger tables (values with row-sparse gradients, so a step costs what it reads;
# `python -m smf_lib spread-pilot --sizes 64 128 256 512 --probe-steps 50`) gives, per layer, with the pilot's goals
# dotted (at most 5% of the layer, at most 10% shared):

# %%
display(Panels(plot_sizes(after, split=True)))
sizes = after[after["recipe"].str.startswith("frozen-n")].groupby("slots").agg(
    footprint=("footprint", "max"), overlap=("overlap", "max"), smallest_share=("share", "min"),
    chat_gain=("loss_change", lambda v: -v.iloc[0]), seconds_per_step=("seconds_per_step", "first")).reset_index()
book_table(pd.DataFrame({
    "slots per layer": sizes["slots"].map("{:,}".format),
    "footprint (largest layer)": sizes["footprint"].map("{:.1%}".format),
    "overlap (largest layer)": sizes["overlap"].map("{:.0%}".format),
    "smallest layer's share": sizes["smallest_share"].map("{:.1%}".format),
    "chat loss gain, nats": sizes["chat_gain"].map("{:.3f}".format),
    "retrofit s/step": sizes["seconds_per_step"].map("{:.1f}".format)}), key=["slots per layer"])

# %% [markdown]
# A retrofit must cost what it reads, not what the table holds. One run of `python benchmarks/bench_retrofit.py
# --target cpu` times a retrofit step at each size with the values trained densely (AdamW over the whole table) and
# row-sparse (gradients and a lazy Adam on the rows read only), side by side on a 2-core CPU:

# %%
bench = pd.read_csv(results_dir("cpu-v1").parents[1] / "benchmarks" / "results" / "cpu_retrofit.csv")
step = bench.pivot_table(index="slots", columns="mode", values="seconds_per_step")
rss = bench.pivot_table(index="slots", columns="mode", values="peak_rss_mb")
sparse_ratio = step["row-sparse values"] / step["row-sparse values"].iloc[0]
display(book_table(pd.DataFrame({"slots per layer": [f"{n:,}" for n in step.index],
                         "dense s/step": step["dense AdamW"].round(1).values,
                         "row-sparse s/step": step["row-sparse values"].round(1).values,
                         "row-sparse vs smallest": [f"{r:.2f}x" for r in sparse_ratio],
                         "dense peak MB": rss["dense AdamW"].round(0).astype(int).values,
                         "row-sparse peak MB": rss["row-sparse values"].round(0).astype(int).values}),
                   key=["slots per layer"]))
print(textwrap.fill(f"Row-sparse, a step at {step.index[-1]:,} slots costs {sparse_ratio.iloc[-1]:.2f}x one at "
                    f"{step.index[0]:,} (goal: at most 1.2x); dense, "
                    f"{step['dense AdamW'].iloc[-1] / step['dense AdamW'].iloc[0]:.2f}x and "
                    f"{rss['dense AdamW'].iloc[-1] / rss['row-sparse values'].iloc[-1]:.1f}x the row-sparse peak "
                    "memory.", 76))

# %% [markdown]
# The `cpu` preset takes the largest table that stays alive at every layer, and the pilot's rule (the cheapest
# recipe alive and spread) takes frozen addressing:

# %%
from smf_lib.files import read_json
from smf_lib.health import MIN_SHARE
from smf_lib.spread import MAX_TOP5_SHARE

alive = sizes[sizes["smallest_share"] >= MIN_SHARE]
pick = alive.iloc[-1]
too_big = sizes[sizes["slots"] > pick["slots"]]
text = (f"Chosen: frozen addressing at {int(pick['slots']):,} slots per layer. A question reads at most "
        f"{pick['footprint']:.1%} of a layer's rows and shares at most {pick['overlap']:.0%} of them with a general "
        f"paragraph (the goal was {OVERLAP_GOAL:.0%}); every layer carries {pick['smallest_share']:.1%} or more of "
        "its MLP's output.")
chosen = after[after["slots"] == pick["slots"]]
pilot_settings = read_json(spread_dir / "frozen.json")["identity"]["settings"]
general_n, steps = pilot_settings["general_n"], pilot_settings["steps"]
text += (f" At this size the top 5% of rows take up to {chosen['top5_share'].max():.0%} of general reads, but so do "
         f"random addressing's ({chosen['random_top5_share'].max():.0%}): {general_n} paragraphs do not read a "
         f"table this large evenly. Against random addressing the reads keep {chosen['effective_ratio'].min():.0%} "
         f"or more of its effective rows, so the table has not collapsed; the pilot's {MAX_TOP5_SHARE:.0%} bound "
         "on the top 5% is met by random addressing only at the smallest table.")
if len(too_big):
    big = too_big.iloc[0]
    text += (f" At {int(big['slots']):,} slots the overlap falls to {big['overlap']:.0%}, but the weakest layer "
             f"carries only {big['smallest_share']:.1%} after the same {steps} steps: a larger table needs a "
             f"longer retrofit than the pilot's {steps} steps.")
print(textwrap.fill(text, 76))

# %% [markdown]
# Part of what a question shares with general text are hub rows: rows that at least half of all general
# paragraphs read, through common words and the chat template, and that nearly every question reads too.

# %%
hubs = after[after["slots"] == pick["slots"]]
print(textwrap.fill(f"At {int(pick['slots']):,} slots, hub rows are {hubs['hub_rows'].min():,} to "
                    f"{hubs['hub_rows'].max():,} of a layer's rows and take {hubs['hub_reads'].min():.0%} to "
                    f"{hubs['hub_reads'].max():.0%} of a question's reads.", 76))

# %% [markdown]
# ### What spread and size do to SMF
# Does the memory change what SMF does? Each memory gets the same short SMF training from its own retrofitted
# start, with each selector at two rates (`python -m smf_lib memory-effect`), and is scored on dev items only:
# learning is the change of the gold option's margin on dev MedMCQA questions, the chat change that of the
# log-likelihood of the dev chat replies. Up and to the right is better.

# %%
from smf_lib.study.memory_effect import EffectSettings, effect_lines, effect_table
from smf_lib.views.pilot_plots import plot_memory_effect

effect = effect_table(spread_dir)
es = EffectSettings()
print(textwrap.fill(f"{es.steps} steps of {es.texts_per_step} MedMCQA training questions, top-t {es.top_t} rows per "
                    f"layer, row-sparse Adam; {es.dev_n} dev questions, {es.chat_n} dev chat replies; "
                    f"{effect['memory'].nunique()} memories, {len(effect)} runs.", 76))
ax = plot_memory_effect(effect)
ax.figure.tight_layout()
plt.show()
for line in effect_lines(effect):
    print(textwrap.fill(line, 76))

# %% [markdown]
# The study above ran on the `trained` memory; chapter 3 says what that did to its verdict.

# %% [markdown]
# ### SMF, LoRA and full finetuning on MedMCQA

# %%
plot_loss_curves([r for r in runs if is_report(r) and r.get("train_log")])  # each method at its grid rate
plt.show()

# %% [markdown]
# Full finetuning moves every weight and drives the training loss down fastest. SMF changes at most top-t rows
# in each of three memory layers per step, so its training loss moves less. Chapter 3 asks what each method
# forgot in exchange.
#
# :::{admonition} What this chapter shows, and what it does not
# :class: note
# **It shows** the four stages on a real model: a live sparse run in which only selected value rows move and every
# other parameter stays bit-identical; the retrofit's effect on held-out chat replies; and the training curves of
# the study's runs, all on the same texts in the same order.
#
# **It does not show** what training did to the model's knowledge, which is chapter 3's subject. A lower training
# loss is not more learning on held-out questions, nor more forgetting: the probes measure both. The live run skips
# the retrofit and is far shorter than the study's runs.
# :::
#
# ## Summary
# - Retrofit trains the whole memory on general text; background statistics then record how general text reads
#   each slot ($df_i$, $A_i$ over $B$ documents).
# - A sparse step trains only the top-t value rows per memory layer that the batch reads far more than general
#   text does. The strict update leaves every other row and every frozen parameter bit-identical.
# - One loop, {py:func}`~smf_lib.training.train`, runs retrofit, SMF, LoRA and full finetuning.
#
# ## Exercises
# 1. (CPU, about 5 minutes) Rerun the live training with `selector="tfidf"`, then with `selector="random"`. How do
#    the rows moved per layer, and the number of them that are hub rows, compare with KL's?
#
#    :::{dropdown} Hint
#    Change only `selector=` in the live run's {py:class}`~smf_lib.training.TrainConfig` and run the chapter again
#    from the top: the seed set there gives the same memory, background statistics and texts each time. Random
#    draws among the rows the batch read and ignores the background.
#    :::
#
#    :::{dropdown} Solution
#    `rows read` is the same for all three: reads depend on the keys and query projections, which SMF does not
#    train. `rows moved` is at most $16 \times 16 = 256$ per layer for each. Random comes closest to that bound: it
#    draws new rows at every step, seldom the same row twice, and its hub rows follow their share among the rows
#    read. KL and TF-IDF return to the rows that the task keeps reading more than general text does, so they move
#    fewer distinct rows, several of them in more than one step. TF-IDF moves the fewest hub rows: its weight
#    $\ln\frac{B+1}{df_i+1}$ is below $\ln 2$ for any row that more than half of the background documents read,
#    however much the batch reads it, while KL still takes a hub row that the batch reads many times more than
#    general text does. Without a retrofit, general text reads most rows, which blurs these differences; chapter 4
#    shows them on the study's retrofitted memory.
#    :::
#
# 2. (reading only) In chapter 4's top-t explorer, choose memory layer 15 and the smallest top-t, and switch
#    between KL and TF-IDF. Which selector picks rows that general text reads often (to the right of the figure),
#    and how does that match your answer to exercise 1?
#
#    :::{dropdown} Hint
#    The x axis is the background's share of reads, $q_i$; hub rows lie toward the right.
#    :::
#
#    :::{dropdown} Solution
#    KL. Its picks lie further right, many of them hub rows, yet all above the diagonal: general text reads them
#    often, and the task reads them even more. TF-IDF's picks sit to the left, on rows that few background
#    documents read. Chapter 4's hub-share figure says the same for every memory layer: at small top-t, a larger
#    share of KL's selection are hub rows than of TF-IDF's. This matches exercise 1 if TF-IDF moved fewer hub rows
#    than KL there; the live run's memory was never retrofitted, so the gap there can be smaller.
#    :::
#
# 3. (CPU, about 5 minutes) Train with `update="paper"` and pass `probe=` and `probe_steps=` to
#    {py:func}`~smf_lib.training.train` to copy the value tables after every step. Find a row that moved in a step
#    in which it was not selected.
#
#    :::{dropdown} Hint
#    The rows a step selected can be recomputed: {py:func}`~smf_lib.steps.micro_batches` gives the texts of
#    every step, {py:func}`~smf_lib.selection.read_counts_of_texts` their reads, and
#    {py:func}`~smf_lib.selection.select_for_layers` the top-t rows of those reads. Start from a fresh model with
#    new background statistics, and let the probe return a dict.
#    :::
#
#    :::{dropdown} Solution
#    ```python
#    from smf_lib.training import micro_batches
#
#    model, tok = S.load_model(device=device)
#    S.add_memory(model, memory)
#    stats = S.compute_background_stats(model, tok, background, max_length=128, progress=False)
#    config = S.TrainConfig(method="smf", selector="kl", top_t=16, micro_batch=4, grad_accum=1, max_steps=16,
#                           max_length=256, warmup_steps=2, update="paper")
#
#    def copy_values(m, step):
#        return {"values": [mem.values.weight.detach().cpu().clone() for mem in S.memory_layers(m)]}
#
#    result = S.train(model, tok, texts, config, background=stats, progress=False,
#                     probe=copy_values, probe_steps=range(1, 17))
#    tables = [point["values"] for point in result.trajectory]  # after step 0, 1, ..., 16
#    plan = micro_batches(len(texts), config)
#    for s in range(2, len(tables)):
#        step_texts = [texts[i] for mb in plan[s - 1] for i in mb]
#        reads = read_counts_of_texts(model, tok, step_texts, max_length=256)
#        chosen = S.select_for_layers(reads, "kl", config.top_t, stats)
#        for j, layer in enumerate(memory.layers):
#            moved = (tables[s][j] != tables[s - 1][j]).any(dim=1)
#            moved[chosen[j]] = False
#            rows = moved.nonzero().flatten()
#            if len(rows):
#                print(f"step {s}, layer {layer}: {len(rows)} rows moved but were not selected, "
#                      f"e.g. row {int(rows[0])}")
#    ```
#
#    From step 2 on, every step moves rows outside its own selection. The paper's update steps the whole table
#    with AdamW: a row selected once keeps non-zero moments and moves at every later step, by a slowly shrinking
#    amount (the momentum leak). Rows never selected stay bit-identical, because their moments are zero and the
#    weight decay is 0 by default. With the default `update="adam"` the same loop prints nothing: only the rows a
#    step selects move.
#    :::
#
# 4. (reading only) Before reading the output of the live run, write down the number that the line "rows updated
#    per step, the three layers together" will show, and an upper bound on `rows moved` per layer in the table
#    after it. Check both against the chapter's output.
#
#    :::{dropdown} Hint
#    The run selects `top_t=16` rows per memory layer in each of 16 steps. How many rows does one batch of four
#    texts read?
#    :::
#
#    :::{dropdown} Solution
#    Every step selects the top 16 rows in each of the three memory layers, and a batch of four texts reads far
#    more than 16 rows per layer, so the line shows a single number, $3 \times 16 = 48$. A row counts once in
#    `rows moved` however often it was selected, so each layer moved at most $16 \times 16 = 256$ rows, and fewer
#    when steps select the same row again, as KL does (the rows that moved furthest in the figure). `rows read` is
#    far larger: on a memory that was never retrofitted, the 64 texts read nearly every row.
#    :::
