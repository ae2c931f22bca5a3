"""The book's views: figures, widgets, notebook set-up and Colab helpers. Built on the core and the study."""

from .notebook import setup_notebook

__all__ = ["setup_notebook"]
