"""Sphinx hooks of this book (loaded through ``sphinx.local_extensions`` in ``_config.yml``).

- The header's Colab launch button opens the ``.ipynb`` that jupytext pairs with a chapter (``notebooks/``),
  not the ``.py`` source the book is built from. The address is made by :func:`smf_lib.colab.colab_url` from
  ``repository.url``, ``repository.branch`` and ``launch_buttons.colab_url``, as the chapters' badges are.
- The chapters run with ``SMF_STATIC_WIDGETS`` set (the kernels inherit the build's environment), so that
  :func:`smf_lib.widgets.selection_explorer` draws its states in advance: the page has no kernel to redraw.
"""

import os
from pathlib import Path

from smf_lib.colab import colab_url, paired_ipynb

ROOT = Path(__file__).resolve().parents[2]
STATIC_WIDGETS = "SMF_STATIC_WIDGETS"  # smf_lib.widgets.STATIC_ENV


def colab_launch_button(app, pagename, templatename, context, doctree):
    """Point the Colab launch button of a chapter at its paired ``.ipynb``."""
    opts = app.config.html_theme_options
    colab = opts.get("launch_buttons", {}).get("colab_url")
    source = Path(app.env.doc2path(pagename))
    if not colab or source.suffix != ".py":
        return
    url = colab_url(opts["repository_url"], paired_ipynb(source, ROOT), opts.get("repository_branch", "main"), colab)
    for group in context.get("header_buttons", []):
        for button in group.get("buttons", []) if group.get("label") == "launch-buttons" else []:
            if button.get("text") == "Colab":
                button["url"] = url


def setup(app):
    os.environ[STATIC_WIDGETS] = "1"
    # after sphinx-book-theme's add_launch_buttons (priority 501)
    app.connect("html-page-context", colab_launch_button, priority=502)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
