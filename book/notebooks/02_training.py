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
# # 2. Training on MedMCQA: retrofit, background statistics, sparse steps, baselines
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/smf-lib/smf_lib/blob/main/notebooks/02_training.ipynb)
#
# The pipeline (METHOD.md section 3) has four stages:
#
# 1. **Retrofit** ("healing"): insert the memory, freeze the base, and train every memory parameter densely
#    on general text (OASST1 assistant replies).
# 2. **Background statistics**: run general documents one at a time and count, per slot, how many documents
#    read it (`df`) and how often it was read in total (`A`). They stay valid only while the keys and query
#    weights are frozen, so a fingerprint of those weights is stored with them.
# 3. **Sparse phase**: on MedMCQA, train only the value rows that the current step's batch reads far more
#    than general text does (top-t per layer per step).
# 4. **Baselines** on the same text: LoRA (r 16 on all 7 projections, merged after training) and full
#    finetuning.
#
# One training loop (`smf_lib.train`) serves all of them.

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
import matplotlib.pyplot as plt
import pandas as pd
import torch

import smf_lib as S
from smf_lib import setup_notebook
from smf_lib.presets import get_preset
from smf_lib.results import load_results
from smf_lib.plotting import plot_loss_curves

SEED = 0
device = setup_notebook(SEED)

# %% [markdown]
# ## A sparse step, live, on a tiny model
# Before looking at the real runs, here are three SMF steps on a tiny random Llama. The default update,
# row-sparse Adam, is **strict**: it touches only the selected rows. Every other value row, and every frozen
# parameter, stays bit-identical. Adam's step has the same size whatever the scale of the model's gradients,
# so one rate transfers across models; plain SGD on the rows (`update="sgd"`) is strict too, but its rate must
# be calibrated per model (`python -m smf_lib calibrate`).

# %%
tok = S.models.load_tokenizer()
tiny = S.tiny_model("llama", vocab=len(tok), seed=SEED)
S.add_memory(tiny, S.MemoryConfig(layers=(1, 2), n_keys=8, heads=2, knn=4, k_dim=16))
texts = ["Medical exam question: which organ pumps blood? Answer: the heart.",
         "Insulin is secreted by the beta cells of the pancreas.",
         "The kidney filters blood and produces urine.", "Red blood cells carry oxygen."]
stats = S.compute_background_stats(tiny, tok, ["A general sentence about the weather.",
                                               "Another one about history and art."], progress=False)
before = {n: p.detach().clone() for n, p in tiny.named_parameters()}
cfg = S.TrainConfig(method="smf", selector="kl", top_t=4, lr=1e-2, micro_batch=2, grad_accum=2,
                    max_steps=3, warmup_steps=1)
res = S.train(tiny, tok, texts, cfg, background=stats, progress=False)
after = dict(tiny.named_parameters())
changed = {n: int((before[n] != after[n]).reshape(len(before[n]), -1).any(1).sum())
           for n in before if not torch.equal(before[n], after[n])}
print("tensors that changed, with the number of rows:", changed)
pd.DataFrame(res.log)[["step", "loss", "lr", "rows"]]

# %% [markdown]
# At most `top_t` rows change per layer per step. The paper's own update (`update="paper"`: a gradient mask
# plus AdamW over the whole table) behaves differently: Adam's moments keep moving a row for several steps
# after it was last selected, and any weight decay moves every row. `smf_lib` reproduces that update for
# fidelity (the `smf-kl-paper` method) and tests the leak.
#
# ## The real runs
# The runs below come from `python -m smf_lib run --preset cpu` (about an hour on 2 CPU cores, resumable).
# Their departures from the paper are stored with the results:

# %%
folder, summary, runs = load_results("cpu")
print(get_preset("cpu").notes)

# %% [markdown]
# ### Retrofit
# The memory is trained on 800 OASST1 replies while the base stays frozen. The loss it reaches is what
# later stages start from.

# %%
retro = next(r for r in runs if r["method"] == "retrofit")["retrofit"]
ax = plot_loss_curves([{"method": "retrofit", "train_log": retro["log"]}])
ax.set_ylabel("training loss (OASST1)")
plt.show()
print(f"retrofit: {len(retro['log'])} steps on {retro['n_texts']} texts in {retro['seconds'] / 60:.1f} min")

# %% [markdown]
# ### SMF, LoRA and full finetuning on MedMCQA
# The same 1,200 MedMCQA training texts, in the same order, for every method.

# %%
plot_loss_curves(runs)
plt.show()
pd.DataFrame([{"method": r["method"], "steps": len(r.get("train_log") or []),
               "train minutes": round(r.get("train_seconds", 0) / 60, 1)} for r in runs])

# %% [markdown]
# Full finetuning moves every weight and drives the training loss down fastest. SMF changes at most
# top-t = 128 of 4,096 rows in each of three layers per step, so its training loss moves less. Chapter 3
# asks what each method forgot in exchange.
