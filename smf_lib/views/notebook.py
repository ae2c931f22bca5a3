"""Notebook set-up for the book's chapters: seed, device, and quiet model loading."""

from __future__ import annotations

import torch


def setup_notebook(seed: int = 0, quiet: bool = True) -> str:
    """Seed torch and pick the device for a book chapter; prints both and returns the device.

    With ``quiet``, loading a model draws no progress bars and logs only errors (transformers, the Hugging Face
    Hub), so a chapter's output shows results only; smf_lib's own bars still follow each call's ``progress``.
    """
    torch.manual_seed(seed)
    if quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        except ImportError:  # an older huggingface_hub
            pass
        try:  # the GGUF reader draws its bar with tqdm directly: route it through transformers' switch above
            import transformers.modeling_gguf_pytorch_utils as gguf

            gguf.tqdm = hf_logging.tqdm
        except ImportError:
            pass
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"torch {torch.__version__}, device {device}, seed {seed}")
    return device
