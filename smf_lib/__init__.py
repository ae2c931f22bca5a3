"""smf_lib: Sparse Memory Finetuning for Hugging Face causal LMs, with LoRA and full-finetuning baselines."""

from .allocator import tune_cpu_allocator
from .health import MIN_SHARE, MemoryHealthWarning, check_health, memory_health
from .adapter import load_memory, save_memory
from .memory import (MemoryConfig, ProductKeyMemory, add_memory, memory_layers, memory_state_dict,
                     print_trainable_parameters, set_recording)
from .models import DEFAULT_MODEL, PAPER_MODEL, load_model, tiny_model
from .selection import (SELECTORS, BackgroundStats, SmfSettings, SparseMemory, compute_background_stats,
                        read_counts, score_rows, select_for_layers, select_rows)
from .training import (METHODS, UPDATES, LoraSettings, MaskedAdamW, RetrofitSettings, RowSGD, RowSparseAdam,
                       TrainConfig, TrainingDiverged, TrainResult, train)

# 0.2.0: LoRA layers drawn from TrainConfig.seed; MedMCQA records keep all four option scores
# 0.3.0: LoRA's settings in TrainConfig.lora (LoraSettings); records and identities keep the flat lora_* keys
# 0.4.0: pandas and seaborn in the ``study`` extra; ``setup_notebook`` from ``smf_lib.views.notebook`` only
__version__ = "0.4.0"
__all__ = ["MemoryConfig", "ProductKeyMemory", "add_memory", "load_memory", "memory_layers", "memory_state_dict",
           "print_trainable_parameters", "save_memory", "set_recording", "DEFAULT_MODEL", "PAPER_MODEL",
           "load_model", "tiny_model", "MIN_SHARE", "MemoryHealthWarning", "check_health",
           "memory_health",
           "tune_cpu_allocator", "BackgroundStats", "compute_background_stats",
           "read_counts", "score_rows", "select_for_layers", "select_rows", "SELECTORS", "METHODS", "UPDATES",
           "RowSGD", "RowSparseAdam", "MaskedAdamW", "LoraSettings", "RetrofitSettings",
           "SmfSettings", "SparseMemory", "TrainConfig", "TrainingDiverged", "TrainResult",
           "train"]
