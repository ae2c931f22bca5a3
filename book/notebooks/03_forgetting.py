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
# # 3. Learning against forgetting
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/smf-lib/smf_lib/blob/main/notebooks/03_forgetting.ipynb)
#
# **In this chapter you will**
#
# - see the answer first: what each method learned against what it forgot, every method started from the same
#   model and read at the same learning (once that study's runs are in);
# - learn how each method's learning rate is chosen on dev items, by a rule fixed before the runs;
# - see why MedMCQA accuracy misleads at this scale (a letter prior), and what measures learning instead;
# - read SMF's changes net of the retrofit it starts from, with paired 95% intervals and what each probe can
#   resolve;
# - learn from the first study, whose memory was too quiet to test SMF at all.

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

# %% tags=["hide-input"]
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from smf_lib.views.notebook import setup_notebook
from smf_lib.study.arms import ORDER
from smf_lib.study.findings import (answer_cpu_v2, answer_sentences, caveats_cpu_v2, example_sentence, findings_cpu,
                                    findings_v1, reported_findings)
from smf_lib.study.paired_stats import mcnemar, mcnemar_words
from smf_lib.study.presets import get_preset
from smf_lib.study.records import is_report
from smf_lib.study.results import (claims_table, delta_table, load_results, matched_learning, net_table, pooled,
                                   repeated_trainings, resolution_table, results_dir, seed_spread,
                                   trajectory_table, verdicts)
from smf_lib.study.runner import status_line, study_status
from smf_lib.study.tables import interval_cell, without_intervals
from smf_lib.views.notebook import found_box
from smf_lib.views.plotting import plot_answer, plot_paths
from smf_lib.views.tables import book_table

SEED = 0
device = setup_notebook(SEED)
pd.set_option("display.max_colwidth", None)  # lists of metrics in full
folder, summary, runs = load_results("cpu-v2")
preset = get_preset("cpu-v2")
status = study_status(preset, folder)
v1_folder, v1_summary, v1_runs = load_results("cpu-v1")
v1_retrofit = next(r for r in v1_runs if r["method"] == "retrofit")
v1_share = v1_retrofit["retrofit"]["heldout_oasst1"]["after"]["memory_to_mlp_norm"]
planned = int((status["evaluation"] == "report").sum())

# %% tags=["hide-input"]
from smf_lib.study import cpu_findings as CF

eq_folder = folder.parent / "cpu"  # the comparison on an equal footing: python -m smf_lib run --preset cpu
eq = CF.study_state(eq_folder)
eq_status, eq_runs, eq_choice, eq_done, eq_answer = (eq[k] for k in ("status", "runs", "choice", "done", "answer"))
eq_finished, eq_planned = eq["finished"], eq["planned"]
if eq_answer:
    display(found_box([eq_answer], title="In one sentence"))
else:
    where = ("has not been run yet" if eq_finished == 0 else
             f"has not finished ({eq_finished} of {eq_planned} runs are in)" if not eq_done else
             "has finished, but no SMF arm and same-start baseline both have a reported run to compare")
    display(found_box([
        "The comparison on an equal footing, every method started from the same model and read at the same learning "
        f"(the cpu study, {eq_planned} runs), {where}, so this chapter cannot answer the question yet. The earlier "
        "study's answer is below, with why it cannot carry a verdict on the method."], title="In one sentence"))

# %% [markdown]
# ## The probes
# Every model is evaluated with the same protocols (section 6 of the {doc}`method <../method>`):
#
# - **MedMCQA** (what we teach; [Pal et al. 2022](https://arxiv.org/abs/2203.14371)): the option with the highest
#   mean per-token log-likelihood after the prompt is the answer (chapter 1). The gold option's log-likelihood
#   is kept too; it moves before accuracy does.
# - **WikiText perplexity** (general language; [Merity et al. 2016](https://arxiv.org/abs/1609.07843)): sliding
#   windows of 1,024 tokens with a stride of 512, each token scored once.
# - **TriviaQA** (world knowledge; [Joshi et al. 2017](https://arxiv.org/abs/1705.03551)): at most 32 greedy
#   tokens, correct when a normalised answer alias is contained in the output. A 135M model answers only a few
#   percent of the questions, so a **retention score** is reported too: the mean log-likelihood of the first
#   gold alias after the question.
# - Where the study has them: **{term}`drift`** on held-out WikiText and chat replies, **{term}`chat retention`**
#   and **{term}`acquisition`**. An instruct model trained on plain text can get better at plain text while its
#   chat behaviour drifts; these probes see that.
#
# Each probe keeps per-item results, so every change against the base model is **paired**
# ({term}`paired interval`): for a metric $m$ the change is $\Delta = m(\text{tuned}) - m(\text{base})$ on the same
# items, and its 95% interval comes from resampling the items 2,000 times, with replacement, for both models at
# once and taking the 2.5th and 97.5th percentiles of the resampled $\Delta$. Item difficulty cancels out.

# %% [markdown]
# ## How to read a learning-against-forgetting plot
# Every figure of this chapter puts what a run learned on the x axis and what it kept on the y axis, each as a
# change from the model the run started from. A method run at several rates gives several points, and they join
# into a curve: a higher rate learns more and usually forgets more. Two methods are compared **at equal
# learning**: on a vertical line that both curves reach, read the height of each; the gap between them is the
# answer, and its interval comes from the items. Two points at different learning cannot be ranked by height
# alone: the one further right may sit lower only because it learned more. The picture, on made-up numbers:

# %% tags=["hide-input"]
from smf_lib.views.diagrams import plot_how_to_read

fig = plot_how_to_read(("SMF", "LoRA"))
plt.show()

# %% [markdown]
# ## The comparison on an equal footing
# The figure above is the whole method of this comparison. Every method starts from the **same model**, the
# retrofitted one of chapter 2 (LoRA and full finetuning train the base weights with its memory in place), so no
# method is credited or blamed for where it started. Each method runs at several rates and seeds, scoring the dev
# items at points along training, so each draws a curve rather than a point. A rule fixed before the runs picks the
# **level** of learning every method reaches (the middle of the range all their curves share, never one method's
# highest rate) and each method's rate closest to it; "matched" means within an equivalence margin of gold margin
# stated in advance, not overlapping intervals. The runs at the chosen rates are then scored on every reported item,
# and SMF minus each baseline is paired item by item, per seed and pooled over seeds
# ({py:mod}`smf_lib.study.frontier`, {py:mod}`smf_lib.study.cpu_findings`). The design, from the preset:

# %% tags=["hide-input"]
from smf_lib.study.paired_stats import MATCH_MARGIN
from smf_lib.views.frontier_plots import plot_frontier_panels

eq_preset = get_preset("cpu")
display(Markdown(
    "; ".join(f"{CF.NAMES[a]} at {', '.join(f'{r:g}' for r in rates)}" for a, rates in eq_preset.sweep.items())
    + f"; seeds {', '.join(map(str, eq_preset.sweep_seeds))}; {eq_preset.trajectory_points} points along training on "
    f"the dev subset ({eq_preset.dev_subset['medmcqa']} MedMCQA questions, {eq_preset.dev_subset['chat']} chat "
    f"replies); the equivalence margin: {MATCH_MARGIN:g} nats of gold margin."))

EQ_ARMS = ("smf-kl", "smf-tfidf", "lora-mem", "full-mem")
if eq_done:
    fig = plot_frontier_panels(eq_runs, EQ_ARMS, level=eq_choice["level"],
                               title="dev items: each probe's change against learning, one line per method")
    plt.show()
    display(found_box(CF.findings(eq_runs, eq_choice)))
    failed = eq_status[eq_status["state"] == "failed"]
    if len(failed):  # a diverged run leaves its arm out of a pair, which the tables below would not show
        display(Markdown("Diverged, left out of every comparison: " + ", ".join(f"`{n}`" for n in failed["run"])
                         + "."))
else:
    print(textwrap.fill(f"Not finished yet: {eq_finished} of {eq_planned} runs are in "
                        "(python -m smf_lib status --preset cpu lists them). Once they are, this section shows the "
                        "figure above on the study's own curves, what it found, and SMF minus each baseline per "
                        "probe, with its interval and verdict.", 76))

# %% [markdown]
# At equal learning, read along the curves: SMF minus each same-start baseline at the level, on the dev items, each
# method interpolated along its trajectory where it crosses the level (the smallest swept rate that reaches it),
# with the 95% interval over items, each seed's own difference and the verdict. This comparison is matched by
# construction.

# %% tags=["hide-input"]
from smf_lib.study.frontier import compare_at_level

if eq_done:
    at = compare_at_level(eq_runs, eq_choice["level"], CF.SMF, CF.SAME_START, tuple(eq_preset.sweep_seeds))
    if len(at):
        display(book_table(pd.DataFrame({
            "SMF": at["smf"].map(CF.NAMES), "baseline": at["baseline"].map(CF.NAMES),
            "probe": at["probe"].map(lambda m: CF.WORDS.get(m, m)),
            "SMF minus baseline [95%]": [interval_cell(r.difference, r.lo, r.hi) for r in at.itertuples()],
            "seed 0 / seed 1": [" / ".join(f"{v:+.3g}" for v in r) for r in at["per seed"]],
            "verdict": at["verdict"]}), key=["SMF", "baseline"],
            caption=f"dev items, at {eq_choice['level']:+.3f} nats of dev gold margin"))
else:
    print("the comparison along the curves waits for the study's runs")

# %% [markdown]
# Then the runs at the chosen rates, on every reported item: SMF minus each baseline per probe, the difference
# pooled over the seeds, its 95% paired interval over the items, each seed's own difference, and the verdict
# ("better" means SMF kept more of that probe, for perplexity and drift a lower value; it needs the interval to
# exclude 0 and every seed to agree). The learning rows come first: on gold margin a pair is "matched" when its whole
# interval lies within the margin, and otherwise SMF learned more or less than the baseline; the accuracies and the
# trained questions say which learned more. The first table is the comparison from the same start; the second, the
# paper's view: LoRA and full finetuning trained from the base model, both runs of a pair counted from the base model
# (SMF's retrofit included), at the same-start arms' rates, so their learning is not matched (its gold-margin row
# says by how much).

# %% tags=["hide-input"]
if eq_done:
    for view, baselines in (("from the same start", CF.SAME_START),
                            ("the paper's view: baselines from the base model", CF.PAPER_VIEW)):
        t = CF.verdict_table(eq_runs, baselines)
        if len(t):
            said = [("matched" if CF.matched(r, eq_choice["margin"]) else
                     "not matched: " + ("learned more" if r["difference"] > 0 else "learned less"))
                    if r["metric"] == "medmcqa_gold_margin" else
                    {"better": "learned more", "worse": "learned less"}.get(r["verdict"], r["verdict"])
                    if r["metric"] in CF.LEARNING else r["verdict"] for r in t.to_dict("records")]
            display(book_table(pd.DataFrame({
                "SMF": t["smf"].map(CF.NAMES), "baseline": t["baseline"].map(CF.NAMES),
                "probe": t["metric"].map(CF.WORDS),
                "SMF minus baseline [95%]": [interval_cell(r.difference, r.lo, r.hi) for r in t.itertuples()],
                "seed 0 / seed 1": [" / ".join(f"{v:+.3g}" for v in r) for r in t["per seed"]],
                "verdict": said}), key=["SMF", "baseline"], caption=view))
else:
    print("the verdict tables wait for the study's reported runs")

# %% [markdown]
# ## The earlier study
# The rest of this chapter is the study that came before, `cpu-v2`. It taught two things that shaped the comparison
# above. Its memory was alive (it added a large share to the MLP's output) but its reads had collapsed: they landed
# on a small fraction of the rows random addressing reaches, most of them rows general text reads too, so SMF had
# few rows of the task's own to train (chapter 2). And its arms started from different models: SMF from the
# retrofit, LoRA and full finetuning from the base, so counted from the base model, as the paper counts, part of
# SMF's chat result was the retrofit's, and counted from each start, the arms changed different models. Its answer
# and what its design cannot carry, computed from its records:

# %% tags=["hide-input"]
display(found_box([answer_cpu_v2(runs)], title="Its answer"))
display(found_box([without_intervals(f) for f in findings_cpu(runs, planned=planned, first_share=v1_share)]))
display(found_box([without_intervals(c) for c in caveats_cpu_v2(runs, results_dir("spread-pilot"))],
                  title="What the earlier study cannot carry"))
display(Markdown("The changes behind these sentences, each from the model the run started from, with paired 95% "
                 "intervals over the reported items:"))
book_table(delta_table(net_table([r for r in runs if is_report(r)]), ("medmcqa_gold_margin", "chat_loglik",
                                                                       "wikitext_ppl")), key=["method", "lr", "seed"])

# %% [markdown]
# The study is `python -m smf_lib run --preset cpu-v2` (files in `results/cpu-v2/`): SmolLM2-135M-Instruct on 2 CPU
# cores, a memory retrofitted with the recipe of chapter 2's pilot, the first 1,200 MedMCQA training questions for
# one epoch (75 steps), and every probe scored on reported items that nothing was chosen on. Where it stands:

# %%
print(status_line(status, width=76))
runs = [r for r in runs if r["method"] in ORDER]
full_runs = [r for r in runs if is_report(r)]
base = next(r for r in full_runs if r["method"] == "base")
probe_items = {"MedMCQA questions": "medmcqa_correct",
               "trained questions (acquisition)": "acquisition_correct",
               "TriviaQA questions": "triviaqa_correct",
               "WikiText windows": "wikitext_window_nll",
               "held-out chat replies": "chat_loglik"}
print(textwrap.fill("reported items: " + ", ".join(
    f"{len(base['items'][k]):,} {name}" for name, k in probe_items.items()
    if k in base["items"]), 76))

# %% [markdown]
# ## The earlier study in one figure
# Each point is one training run: how much it learned (x) against how much it forgot (y), each as a paired change
# with its 95% interval on both axes. Learning is the gold option's log-likelihood margin over the best distractor
# on MedMCQA questions (next sections say why not accuracy); forgetting is the change in log-likelihood of held-out
# chat replies, the text the instruct model was made for (down is forgetting). Every change is measured from the
# model the run **started from**: the base model for LoRA and full finetuning, the retrofitted model for SMF, so
# SMF is not credited or blamed for the retrofit's own change.
#
# The top panel is the dev items (150 held-out MedMCQA questions and 40 chat replies, at the end of each run at
# every rate tried); the bottom panel is the reported items of the runs at the chosen rates. At equal learning,
# the higher point forgot less; where two methods' learning intervals do not overlap, they are not at matched
# learning and this figure cannot rank them.

# %%
traj = trajectory_table(runs, against="start")
ends = traj[traj["step"] == traj["steps"]] if len(traj) else traj
ax = plot_answer(ends, title="dev items: every rate tried, end of training")
ax.figure.tight_layout()
plt.show()
net = net_table(full_runs)
trained = net[net["method"] != "retrofit"]
if len(trained):
    ax = plot_answer(trained, title="reported items: the chosen rates, per seed")
    ax.figure.tight_layout()
    plt.show()
else:
    print("no trained run is fully evaluated on the reported items")

# %% tags=["hide-input"]
display(Markdown(answer_sentences(dev=ends, reported=trained)))
display(Markdown(" ".join(reported_findings(net)[:2])))

# %% [markdown]
# ## Matched learning: how SMF's rate is chosen
# SMF trains a few hundred value rows with Adam, and at the paper's rate 75 steps move them very little, while
# LoRA and full finetuning learn the answer format within a few dozen steps. Comparing each method at its own
# paper rate would compare a method that learned nothing with methods that learned a lot. So SMF-KL's rate is
# **swept on dev items** first, at three rates, and the grid's SMF rate is the one whose learning on the dev items
# meets LoRA's and full finetuning's (their intervals overlap). SMF-TF-IDF was first run at the same rate; where its
# dev learning falls short of the baselines', its own rate is swept too and chosen the same way. Nothing here looks
# at the reported items
# ({py:func}`~smf_lib.study.results.matched_learning`).

# %%
match = matched_learning(traj)
cells = pd.DataFrame({
    "baseline": [f"{b} {lr:g}" for b, lr in zip(match["baseline"], match["baseline lr"])],
    "its learning": [interval_cell(r["baseline learning"], r["baseline lo"], r["baseline hi"])
                     for _, r in match.iterrows()],
    "closest SMF": [f"{m} {lr:g}" for m, lr in zip(match["smf"], match["smf lr"])],
    "SMF learning": [interval_cell(r["smf learning"], r["smf lo"], r["smf hi"]) for _, r in match.iterrows()],
    "matched": np.where(match["matched"], "yes", "no")})
display(book_table(cells, key=["baseline"]))
print("the grid's rates: " + ", ".join(f"{arm} {preset.train_config(arm, 0).lr:g}" for arm in ("smf-kl", "smf-tfidf")))

# %% [markdown]
# "Overlapping intervals" is a weak definition of matched: here both SMF rates were the highest tried, and the
# baselines ran at one rate each, so no rate brackets the others. The trajectories allow a fairer reading. Along
# each run, learning and chat change are scored at the same dev steps; reading every arm where its learning reaches
# the same level (interpolating between the two steps around it, the smallest rate that gets there, averaged over
# seeds) compares the methods at equal learning by construction ({py:mod}`smf_lib.study.frontier`). At a given x,
# the higher line forgot less:

# %%
from smf_lib.study.frontier import compare_at_level, final_learning, reachable_level
from smf_lib.views.plotting import plot_equal_learning

arms = ("smf-kl", "smf-tfidf", "lora", "full")
level = reachable_level(final_learning(runs, arms))
ax = plot_equal_learning(runs, arms, level=level)
ax.figure.tight_layout()
plt.show()
equal = compare_at_level(runs, level, baselines=("lora", "full"), metrics=("chat_loglik",))
display(book_table(pd.DataFrame({
    "SMF": equal["smf"], "against": equal["baseline"],
    "chat log-lik, SMF minus baseline, nats [95%]": [interval_cell(r.difference, r.lo, r.hi, digits=3)
                                                     for r in equal.itertuples()],
    "per seed": [", ".join(f"{v:+.3f}" for v in r) for r in equal["per seed"]], "verdict": equal["verdict"]}),
    key=["SMF", "against"]))

# %% [markdown]
# A swept SMF run keeps its trained memory, and the grid's run at the same seed and rate loads it and is only
# evaluated on every reported item (its record names the swept run in `trained_by`). Where a grid run was trained
# again instead, the two records check that training is deterministic: the same seed, rate and data must give the
# same loss at every step
# ({py:func}`~smf_lib.study.results.repeated_trainings`).

# %%
for _, r in repeated_trainings(runs).iterrows():
    verdict = ("the same at every step" if r["same losses"] else
               f"apart by up to {r['largest difference']:.2g}")
    print(textwrap.fill(f"{r['method']} s{r['seed']} at {r['lr']:g}: sweep and grid losses "
                        f"are {verdict} over {r['steps']} steps", 76))

# %% [markdown]
# ## Why not accuracy: the letter prior
# A 135M model is near chance on MedMCQA, and chance is not 25% here: the base model prefers some answer letters,
# and the reported items' gold letters are not spread evenly. A model that learns the task's *format* spreads its
# answers over the letters, and its accuracy can fall while it learns. The table shows, per run, the accuracy next
# to two answers that need no knowledge at all (always "A", and always the most common gold letter) and the share
# of questions the run answers "A". The gold margin and the gold option's probability among the four options do
# not reward a letter preference, so this chapter measures learning with them.

# %%
rows = []
for r in full_runs:
    pred = np.asarray(r["items"]["medmcqa_pred"])
    m = r["metrics"]
    rows.append({"method": r["method"], "seed": r["seed"] if r["method"] != "base" else "",
                 "accuracy (%)": 100 * m["medmcqa_acc"], "always A (%)": 100 * m["medmcqa_always_a_acc"],
                 "majority (%)": 100 * m["medmcqa_majority_acc"], "answers A (%)": 100 * float(np.mean(pred == 0)),
                 "gold prob. (%)": 100 * m["medmcqa_gold_prob"], "gold margin": m["medmcqa_gold_margin"]})
book_table(pd.DataFrame(rows).round(3), key=["method", "seed"])

# %%
letters = pd.DataFrame(rows)
first = letters.iloc[0]
after = letters[~letters["method"].isin(["base", "retrofit"])]
text = (f"The base model answers A on {first['answers A (%)']:.0f}% of the reported questions, "
        f"and A is right on {first['always A (%)']:.0f}% of them.")
if len(after):
    low = after.loc[after["answers A (%)"].idxmin()]
    text += (f" After training, {low['method']} (seed {low['seed']}) answers A on "
             f"{low['answers A (%)']:.0f}%: accuracy moves with the letter preference, not only with what "
             "was learned.")
display(Markdown(text))

# %% [markdown]
# ## The running example
# The question chapters 1 and 2 followed, on axonal transport, is reported item 3. Its four option probabilities
# (a softmax of the four option scores, the quantity behind the gold probability above) under each run, the gold
# option marked:

# %%
from smf_lib.data import load_medmcqa
from smf_lib.study.results import option_probabilities
from smf_lib.views.notebook import RUNNING_EXAMPLE

example = load_medmcqa("validation", n=RUNNING_EXAMPLE + 1)[RUNNING_EXAMPLE]
print(textwrap.fill(example["question"] + " " + "  ".join(
    f"{k}. {example[f'op{k.lower()}']}" for k in "ABCD"), 76))
probs = option_probabilities(full_runs, RUNNING_EXAMPLE)
gold = probs.loc[probs["gold"], "option"].iloc[0]
wide = probs.pivot(index="run", columns="option", values="probability")
wide = (100 * wide.reindex(probs["run"].unique())).round(1)
wide = wide.rename(columns={gold: f"{gold} (gold, %)"}).rename(
    columns=lambda c: c if "gold" in c else f"{c} (%)").reset_index()
display(book_table(wide, key=["run"]))
display(Markdown(example_sentence(probs)))

# %% [markdown]
# ## What each probe can resolve
# A paired interval's half-width is the smallest change a probe can tell from zero on these items. The earlier study
# (`cpu-v2`) scores chat retention on every English OASST1 validation reply to a prompt, so that a change of a
# hundredth of a nat is resolved; the first study's 150 replies could not
# ({py:func}`~smf_lib.study.results.resolution_table`: the median over the study's runs).

# %%
resolution = resolution_table(summary, full_runs)
display(book_table(resolution.round({"half-width": 4}), key=["metric"]))
chat = resolution.set_index("metric").loc["held-out chat log-lik"]
display(Markdown(f"On {chat['items']:,} replies the chat probe resolves a change of about "
                 f"{chat['half-width']:.3f} nats; a change smaller than a probe's half-width is "
                 "read as no change."))

# %% [markdown]
# ## The retrofit's own change, and SMF's net of it
# SMF does not start from the base model: it starts from the retrofitted one, whose memory was trained on chat
# replies for 50 steps. That retrofit changes the model by itself, so each run below is compared with the model it
# started from ({py:func}`~smf_lib.study.results.net_table`); the `retrofit` row is the retrofit against the base
# model. One cell per run and metric: the change and its paired 95% interval, accuracies in points.

# %%
groups = {"learning": ("medmcqa_gold_margin", "medmcqa_gold_prob", "medmcqa_acc"),
          "general text": ("wikitext_ppl", "wikitext_drift_kl"),
          "chat and world knowledge": ("chat_loglik", "chat_drift_kl", "triviaqa_acc")}
for name, metrics in groups.items():
    table = delta_table(net, metrics)
    if len(table.columns) > 3:
        display(Markdown(f"**{name}**"), book_table(table, key=["method", "lr", "seed"]))

# %% [markdown]
# The drift KLs are measured against the base model, so an SMF cell above is its drift from the base model minus its
# retrofit's (the `retrofit` row); `results/cpu-v2/summary.csv` has every run's drift from the base model.

# %% [markdown]
# The paper's table scores every model against the base model, so there an SMF row includes its retrofit. Counted
# that way, with the seeds pooled (the mean, and the union of their intervals):

# %%
trained_names = {"smf-kl": "SMF-KL", "smf-tfidf": "SMF-TF-IDF", "lora": "LoRA", "full": "full finetuning"}
from_base = pooled(summary[summary["method"].isin(list(trained_names))], "d_chat_loglik")
retro = summary[summary["method"] == "retrofit"]["d_chat_loglik"]
if len(from_base) and len(retro):
    parts = [trained_names[r["method"]] + " " + interval_cell(r["d_chat_loglik"], r["d_chat_loglik_lo"],
                                                              r["d_chat_loglik_hi"], digits=3)
             for _, r in from_base.iterrows()]
    text = ("Held-out chat log-likelihood against the base model, retrofit included: " + ", ".join(parts)
            + f" nats. The retrofit alone moves it by {retro.min():+.3f} to {retro.max():+.3f} nats (the range over "
            "its seeds); it trained the memory on OASST1 train replies, the chat probe's own domain.")
    top = from_base.set_index("method")["d_chat_loglik"]
    ahead = []
    for arm in [a for a in ("smf-kl", "smf-tfidf") if a in top]:
        beaten = [trained_names[b] for b in ("lora", "full") if b in top and top[arm] > top[b]]
        if beaten:
            ahead.append(f"{trained_names[arm]} above {' and '.join(beaten)}")
    if retro.min() > 0:
        text += (" Every SMF run keeps part of that gain"
                 + (", so counted this way the ranking changes (on the means): " + "; ".join(ahead) if ahead else "")
                 + ". That gain is the retrofit's, not SMF's: the comparison of SMF's own updates with LoRA's and "
                 "full finetuning's is the one net of the retrofit, above.")
    display(Markdown(text))

# %% [markdown]
# ## Along training
# Every trained run of the earlier study (`cpu-v2`) also scored the dev subset at points along training
# (`trajectories.csv`). The paths below
# start at each run's own start (x = 0) and end at its last step (the arrow); a flat path learned without moving
# chat log-likelihood, and a path that bends down lost chat log-likelihood as it learned.

# %%
if len(traj):
    ax = plot_paths(traj, learn="d_medmcqa_gold_margin", forget="d_chat_loglik", against="start",
                    ax=plt.subplots(figsize=(7, 4.6))[1])
    ax.figure.tight_layout()
    plt.show()

# %% [markdown]
# ## Seeds against items
# The intervals above resample the evaluation items of one trained model. A second training seed (another order of
# the same training texts; for LoRA also another initialisation and dropout; for SMF also another retrofit) says how
# much the result depends on the training run itself, which item resampling cannot see.

# %%
spread_metrics = ("d_medmcqa_gold_margin", "d_chat_loglik", "d_wikitext_ppl")
spread = seed_spread(net.assign(lr=net["lr"].astype(str)), spread_metrics) if len(net) else pd.DataFrame()
spread = spread[spread["seeds"] > 1] if len(spread) else spread
if len(spread):
    cells = []
    for _, r in spread.iterrows():
        first = net[net["method"] == r["method"]].iloc[0]
        row = {"method": r["method"], "seeds": r["seeds"]}
        for m in spread_metrics:
            half = (first[f"{m}_hi"] - first[f"{m}_lo"]) / 2
            row[m[2:].replace("_", " ")] = (
                f"{r[f'{m}_mean']:+.2g} (seeds {r[f'{m}_min']:+.2g} to "
                f"{r[f'{m}_max']:+.2g}; items ±{half:.2g})")
        cells.append(row)
    display(book_table(pd.DataFrame(cells), key=["method"]))
else:
    print("no method of the earlier study has a second seed")

# %% [markdown]
# ## Paired tests on MedMCQA
# McNemar's test looks only at the questions on which two models disagree: $b$ questions the tuned model newly
# gets right and $c$ it newly gets wrong, each run against the model it started from. If training changed nothing,
# each such question would go either way with probability 1/2
# ({py:func}`~smf_lib.study.paired_stats.mcnemar`).

# %%
from smf_lib.study.results import start_run

tests = [{"method": r["method"], "seed": r["seed"], "against": start_run(r, full_runs)["method"],
          **mcnemar(start_run(r, full_runs)["items"]["medmcqa_correct"], r["items"]["medmcqa_correct"])}
         for r in full_runs if r["method"] != "base" and start_run(r, full_runs) is not None]
labels = {"gained": "newly right (b)", "lost": "newly wrong (c)"}
display(book_table(pd.DataFrame(tests).rename(columns=labels).round(3), key=["method", "seed"]))
lines = [mcnemar_words(t, f"{t['method']} (seed {t['seed']})", f"the {t['against']} model") for t in tests]
display(Markdown("Answer by answer, against the model each run started from:\n\n"
                 + "\n".join(f"- {line}" for line in lines)))

# %% [markdown]
# ## The paper's claims, checked on the earlier study
# The paper claims that SMF gains about 2.5 points on MedMCQA while keeping WikiText perplexity and TriviaQA
# accuracy within about a point of the base model, and that LoRA and full finetuning gain more and drift clearly
# (section 7 of the {doc}`method <../method>`). Each row tests one claim for one training seed, against the base
# model as the paper does: what was measured, with its paired 95% interval, and whether the interval agrees with the
# claim, contradicts it, or cannot tell ({py:func}`~smf_lib.study.results.claims_table`). The model, the data sizes
# and the run lengths are far from the paper's, so a disagreement here is about this setting, not a refutation.

# %%
seeds = sorted({r["seed"] for r in full_runs if r["method"] in ("smf-kl", "lora", "full")})
if seeds:
    per_seed = {s: claims_table(full_runs, seed=s).set_index(["claim", "view", "compared"]) for s in seeds}
    claims = pd.concat({f"seed {s}": t for s, t in per_seed.items()}, axis=1)
    claims.columns = [f"{a}: {b}" for a, b in claims.columns]
    display(book_table(claims, key=["claim", "view", "compared"]))
else:
    print("no trained run of the grid is finished")

# %% [markdown]
# ## The first study: a memory too quiet to test SMF
# Before the earlier study (`cpu-v2`), the same grid ran on a memory retrofitted at the paper's rate for 50 steps
# (`python -m smf_lib run --preset cpu-v1`, files in `results/cpu-v1/`). What it found, computed from its files:

# %% tags=["hide-input"]
found_box(findings_v1(v1_summary, v1_runs, results_dir("retrofit-pilot")), title="The first study")

# %% [markdown]
# Its full finetuning rate was chosen by a pilot on dev items (`results/cpu-pilot/`): the smallest rate at which a
# retention probe got worse. A rate chosen *because* a dev interval excluded zero will often show a smaller change
# on new items: the choice selected a dev draw that happened to be extreme. The next cell compares the pilot's dev
# verdict with the same training on the reported items.

# %%
pilot_folder, pilot, _ = load_results("cpu-pilot")
retention = ("chat_loglik", "wikitext_ppl", "triviaqa_alias_loglik", "triviaqa_acc")
rate = get_preset("cpu-v1").lr["full"]
pilot_verdicts = verdicts(pilot)
on_dev = pilot_verdicts[(pilot_verdicts["method"] == "full")
                        & (pd.to_numeric(pilot_verdicts["lr"]) == rate)]
hit = [m.replace("_", " ") for m in retention if len(on_dev) and on_dev.iloc[0].get(m) == "worse"]
print(f"pilot, dev items, full finetuning at {rate:g}: "
      + (f"worse on {', '.join(hit)}" if hit else "no retention probe worse"))
study_verdicts = verdicts(v1_summary)
at_rate = study_verdicts[(study_verdicts["method"] == "full")
                         & (pd.to_numeric(study_verdicts["lr"], errors="coerce") == rate)]
for _, row in at_rate.iterrows():
    hit = [m.replace("_", " ") for m in retention if row.get(m) == "worse"]
    print(f"first study, reported items, seed {row['seed']}: "
          + (f"worse on {', '.join(hit)}" if hit else "no retention probe worse"))

# %% [markdown]
# ## What the earlier study answers
# The paper's question is: at equal learning, which method forgets less? The earlier study's reading, from its
# reported items, each run from the model it started from, with its seeds pooled (the mean, and the union of their
# intervals):

# %% tags=["hide-input"]
display(Markdown("\n\n".join(reported_findings(net)) or
                 "No SMF run and baseline are both evaluated on the reported items."))

# %% [markdown]
# :::{admonition} What this chapter shows, and what it does not
# :class: note
# **It shows** SMF against LoRA and full finetuning started from the same model and read at the same learning, with
# a verdict per selector and probe (once that study's runs are in); and, for every run of the earlier study, what it
# learned against what it forgot, each measured from the model it started from, with paired 95% intervals and what
# each probe can resolve; why accuracy is not the learning measure at this scale; and, counted from the base model
# as the paper's table counts, how much of SMF's chat result was its retrofit's.
#
# **It does not show** the paper's setting. A 135M model trained on 1,200 questions for one epoch is far from
# Qwen2.5-0.5B on 60,000, so the verdicts are about this setting. An interval that crosses zero does not show that
# nothing changed, only that any change is too small for these items to resolve. Matched learning is matched on one
# measure (the gold margin on dev items); two methods can learn different things for the same margin.
# :::
#
# ## Summary
# - Compare methods at matched learning: at their own default rates, a method that learns little will also forget
#   little, and that says nothing about the method. Sweep every method's rate so the curves overlap, and fix the
#   level and the margin before the runs.
# - Start every method from the same model; where they cannot, measure each run from the model it started from:
#   SMF's retrofit changes the model by itself.
# - At this scale accuracy carries a letter prior; the gold option's margin over the best distractor measures
#   learning without it.
# - A rate matched on dev items is a prediction: check on the reported items that the learning still matches before
#   ranking the methods' forgetting, and say so when it does not.
# - Check that a probe can resolve the change you care about (its interval's half-width) before reading its
#   verdict, and choose everything on dev items: a choice made on an interval's edge does not repeat on new items.
#
# ## Exercises
# 1. (CPU, about 1 minute) Recompute one interval with {py:func}`~smf_lib.study.paired_stats.paired_bootstrap`:
#    the first study's `smf-kl` against its base on `medmcqa_acc` with `n_boot=10_000` and two other `seed`s. How
#    much do the bounds move?
#
#    :::{dropdown} Hint
#    Take both runs from the first study's records, `v1_runs`. The function returns fractions; the tables show
#    points.
#    :::
#
#    :::{dropdown} Solution
#    ```python
#    from smf_lib.study.paired_stats import paired_bootstrap
#    from smf_lib.study.records import is_report
#
#    smf = next(r for r in v1_runs if r["method"] == "smf-kl" and r["seed"] == 0 and is_report(r))
#    base = next(r for r in v1_runs if r["method"] == "base")
#    for s in (0, 1, 2):
#        ci = paired_bootstrap(base["items"], smf["items"], "medmcqa_acc", n_boot=10_000, seed=s)
#        print(s, {k: round(100 * ci[k], 2) for k in ("delta", "lo", "hi")}, f"p_le_0 {ci['p_le_0']:.3f}")
#    ```
#
#    The change does not move at all: it is computed once, on all items. The bounds move little or not at all: an
#    accuracy over 1,000 questions changes in steps of one question (0.1 points), and 2,000 resamples already put
#    the 2.5th and 97.5th percentiles on the same step or the next one. Only `p_le_0`, the share of resampled
#    changes at or below zero, moves a little. Rounded as the tables round them, the cells do not change: the
#    interval's width comes from the items, not from the number of resamples.
#    :::
#
# 2. (CPU, about 1 minute) In the first study, compare `smf-kl` with `lora` directly, with
#    {py:func}`~smf_lib.study.paired_stats.mcnemar` on their `medmcqa_correct` items. Is either better on MedMCQA at
#    this sample size?
#
#    :::{dropdown} Hint
#    `mcnemar(a, b)` counts the questions that `b` newly gets right against `a` (`gained`) and newly gets wrong
#    (`lost`). Pair the two methods' runs of the same seed.
#    :::
#
#    :::{dropdown} Solution
#    ```python
#    full_v1 = [r for r in v1_runs if is_report(r)]
#    for s in (0, 1):
#        smf = next(r for r in full_v1 if r["method"] == "smf-kl" and r["seed"] == s)
#        lora = next(r for r in full_v1 if r["method"] == "lora" and r["seed"] == s)
#        print(f"seed {s}:", mcnemar(smf["items"]["medmcqa_correct"], lora["items"]["medmcqa_correct"]))
#    ```
#
#    Neither. At both seeds the two models disagree on many questions but split them nearly evenly, LoRA losing a
#    few more than it gains, and `p` stays above 0.05. That matches the changes table, where LoRA's accuracy
#    interval crosses zero. MedMCQA accuracy cannot rank the two at this size; the gold option's log-likelihood,
#    which LoRA moved far more than SMF, is the sensitive score. Repeat it on `full_runs` of the `cpu-v2` records:
#    the same question, on a living memory.
#    :::
#
# 3. (reading only) The first study's `smf-kl` and `smf-tfidf` runs differ only in their selector. In chapter 4's
#    top-t explorer, compare the rows the two select at the study's top-t of 128 on each memory layer: do they
#    differ enough for the two runs to differ on the probes?
#
#    :::{dropdown} Hint
#    Chapter 4's first overlap figure gives the Jaccard overlap of the two selections at t = 128 directly. Then
#    compare the first study's `smf-kl` and `smf-tfidf` rows, `delta_table(v1_summary)`, the log-likelihood and
#    drift columns too.
#    :::
#
#    :::{dropdown} Solution
#    The selections differ a lot: at t = 128 their Jaccard overlap is well below 1 at every layer, and KL takes far
#    more hub rows. The runs differ far less. Both barely moved the model: the retrofit left the memory carrying a
#    tiny share of the MLP's output, so whichever rows were written, little came out of them. The difference shows
#    only in the scores with narrow intervals, the gold option's log-likelihood and the drift KLs, where the KL run
#    moved a little more at both seeds; on accuracy the two cannot be told apart. Different rows are needed for the
#    selector to matter, but they are not enough: the memory must also carry signal.
#    :::
#
# 4. (CPU, seconds) Predict for the first study's LoRA and full finetuning: will their two training seeds differ by
#    more or by less than one seed's item interval? Check with
#    `seed_spread(v1_summary, ("d_medmcqa_acc", "d_chat_loglik", "d_wikitext_ppl"))` beside the intervals of
#    `delta_table(v1_summary)`.
#
#    :::{dropdown} Hint
#    A second seed changes only the order of the same training texts (and LoRA's initialisation and dropout). The
#    item interval says how much the result could change with another draw of as many evaluation items.
#    :::
#
#    :::{dropdown} Solution
#    By less. For LoRA and full finetuning, the range from the lower seed to the higher one is, in every cell,
#    smaller than the item half-width (±) printed beside it, on all three metrics. Here the evaluation items are the
#    larger source of noise, so more items, not more seeds, would sharpen these results. For the SMF runs the two
#    are closer in size, because SMF barely changed the model and its item intervals are very narrow.
#    :::
