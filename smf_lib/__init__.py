"""smf_lib: Sparse Memory Finetuning for Hugging Face causal LMs, with LoRA and full-finetuning baselines."""

from .memory import (MemoryConfig, ProductKeyMemory, add_memory, load_memory, memory_layers, memory_state_dict,
                     print_trainable_parameters, save_memory, set_recording)
from .models import DEFAULT_MODEL, PAPER_MODEL, load_model, setup_notebook, tiny_model
from .perf import tune_cpu_allocator
from .selection import (SELECTORS, BackgroundStats, compute_background_stats, read_counts, score_rows,
                        select_for_layers, select_rows)
from .training import (METHODS, UPDATES, MaskedAdamW, RowSGD, RowSparseAdam, TrainConfig, TrainingDiverged,
                       TrainResult, train)

__version__ = "0.1.0"
__all__ = ["MemoryConfig", "ProductKeyMemory", "add_memory", "load_memory", "memory_layers", "memory_state_dict",
           "print_trainable_parameters", "save_memory", "set_recording", "DEFAULT_MODEL", "PAPER_MODEL",
           "load_model", "setup_notebook", "tiny_model",
           "tune_cpu_allocator", "BackgroundStats", "compute_background_stats",
           "read_counts", "score_rows", "select_for_layers", "select_rows", "SELECTORS", "METHODS", "UPDATES",
           "RowSGD", "RowSparseAdam", "MaskedAdamW", "TrainConfig", "TrainingDiverged", "TrainResult", "train"]
