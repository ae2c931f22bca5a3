"""Notebook set-up for the book's chapters: seed, device, and quiet model loading."""

from __future__ import annotations

import torch


def setup_notebook(seed: int = 0, quiet: bool = True) -> str:
    """Seed torch and pick the device for a book chapter; prints both and returns the device.

    Figures get the book's type sizes and are shown through :func:`smf_lib.views.figures.figure_html` (readable
    at any page width, with the measurements the book's checks read). With ``quiet``, loading a model draws no
    progress bars and logs only errors (transformers, the Hugging Face Hub), so a chapter's output shows results
    only; smf_lib's own bars still follow each call's ``progress``.
    """
    from .figures import book_style, show_figures_as_html

    torch.manual_seed(seed)
    book_style()
    show_figures_as_html()
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


#: The book's running example: MedMCQA validation item 3 ("Axonal transport is: A. Antegrade, B. Retrograde,
#: C. Antegrade and retrograde, D. None"; gold C), one of the reported items. Chapter 1 shows the rows it reads,
#: chapter 2 the rows SMF trains for it, chapter 3 its four option probabilities before and after each method and
#: chapter 4 whether the two selectors pick its rows.
RUNNING_EXAMPLE = 3


def found_box(sentences: list[str], title: str = "What we found"):
    """A highlighted box of plain-answer sentences at the top of a page (an HTML admonition the book's theme
    styles); the sentences come from the result files."""
    import html

    from IPython.display import HTML

    body = "".join(f"<p>{html.escape(s)}</p>" for s in sentences)
    return HTML(f'<div class="admonition tip"><p class="admonition-title">{html.escape(title)}</p>{body}</div>')
