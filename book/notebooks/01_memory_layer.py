# ---
# jupyter:
#   jupytext:
#     formats: notebooks///ipynb,book/notebooks///py:percent
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
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
# A memory layer is a very large table of value rows. Each token reads only a few of them. This chapter
# adds one to a real model (SmolLM2-135M-Instruct, the offline default), checks that it leaves the model
# unchanged at insertion, and draws what a single token reads.

# %% tags=["remove-cell"]
# In Colab only: install smf_lib from the repository (or from SMF_INSTALL_SPEC) and fetch the cached results.
import os
import subprocess
import sys

REPO = "https://github.com/smf-lib/smf_lib"
if "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ:
    spec = os.environ.get("SMF_INSTALL_SPEC", f"smf_lib[widgets] @ git+{REPO}")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", spec], check=True)
    import smf_lib.colab

    smf_lib.colab.setup(REPO)

# %%
import time

import matplotlib.pyplot as plt
import torch

import smf_lib as S
from smf_lib import setup_notebook
from smf_lib.plotting import plot_reads

SEED = 0
device = setup_notebook(SEED)

# %% [markdown]
# ## Product keys
# For an input $x$ (the MLP input of a decoder layer), each of $H$ heads forms a query $q = W_q x$ and
# splits it into two halves $q_1, q_2$. Two small tables of $n$ sub-keys score each half, and slot
# $(a, b)$ of the $N = n^2$ slots scores $K_1[a] \cdot q_1 + K_2[b] \cdot q_2$. The best $k$ slots of all
# $n^2$ must lie among the $k \times k$ sums of each half's own top $k$. The search is therefore exact at a cost
# of $O(n + k^2)$ instead of $O(n^2)$ (Lample et al. 2019). The read is a softmax-weighted sum of the
# selected value rows, $y = \sum w\, V[\text{slot}]$, and the output is gated as in Memory+ (Berges et al.
# 2024): $\text{out} = W_2\,(y \odot \text{silu}(W_1 x))$. In *additive* mode the layer's MLP becomes
# $\text{mlp}(x) + \alpha\,\text{out}(x)$.

# %%
config = S.MemoryConfig(layers=(7, 15, 22), n_keys=64, heads=4, knn=16, k_dim=256)
config

# %%
model, tok = S.load_model(device=device)
ids = tok("The heart pumps blood through the body.", return_tensors="pt").input_ids.to(device)
with torch.no_grad():
    before = model(ids).logits
S.add_memory(model, config)
with torch.no_grad():
    after = model(ids).logits
print("logits bit-identical after add_memory:", torch.equal(before, after))
model.requires_grad_(False)
for m in S.memory_layers(model):
    m.values.weight.requires_grad_(True)
S.print_trainable_parameters(model);

# %% [markdown]
# **Why the logits do not change.** With the project's default `init="zero"` the value table starts at
# zero, so every read is $y = 0$ and the memory adds exactly nothing. The gradient still reaches the values,
# though: $\partial L / \partial V = \alpha\, w\, (W_2^\top g \odot \text{silu}(W_1 x))$ is non-zero because
# $W_1$, $W_2$ and $\alpha$ are not zero. Had $\alpha$ or $W_2$ been zeroed instead, training only the
# values would get zero gradient forever. The paper's `init="paper"` (random values, $\alpha = 0.01$)
# perturbs the model slightly at insertion.

# %%
out = model(ids, labels=ids)
out.loss.backward()
for m in S.memory_layers(model):
    print(f"layer {m.layer_idx}: |dL/dV| = {m.values.weight.grad.norm():.2e}, "
          f"rows with gradient = {int((m.values.weight.grad.abs().sum(1) > 0).sum())} of {config.n_slots}")
    m.values.weight.grad = None

# %% [markdown]
# ## Exact, and cheaper than scoring every slot
# The product-key search returns the same slots as scoring all $N$ slots.

# %%
mem = S.memory_layers(model)[1]
x = torch.randn(4, 64, model.config.hidden_size, device=device)
with torch.no_grad():
    fast, w_fast = mem.lookup(x)
    slow, w_slow = mem.lookup_brute_force(x)
    print("same slots as brute force:", torch.equal(fast.sort(-1).values, slow.sort(-1).values))
    for name, fn in [("product keys", mem.lookup), ("brute force", mem.lookup_brute_force)]:
        t0 = time.perf_counter()
        for _ in range(5):
            fn(x)
        print(f"{name:>12}: {(time.perf_counter() - t0) / 5 * 1e3:.1f} ms for 256 tokens, N = {config.n_slots}")

# %% [markdown]
# ## What one token reads
# Recording is switched on without forward hooks: each memory layer then keeps its last selected indices
# `(batch, tokens, heads, knn)` and weights. The figure places the 4 x 16 reads of the token " heart" at
# layer 15 on the $n \times n$ slot grid.

# %%
S.set_recording(model, True)
with torch.no_grad():
    model(ids)
token = 1  # " heart"
print("token:", repr(tok.decode(ids[0, token])))
plot_reads(mem.last_indices[0, token].cpu(), mem.last_weights[0, token].float().cpu(), config.n_keys)
plt.show()
S.set_recording(model, False)

# %% [markdown]
# Each head reads a small cluster of 16 slots; the heads share one value table. A task that keeps reading
# the same slots far more than general text does is what SMF exploits (chapter 4).
