"""Sphinx hooks of this book (loaded through ``sphinx.local_extensions`` in ``_config.yml``).

- The header's Colab launch button opens the ``.ipynb`` that jupytext pairs with a chapter (``notebooks/``),
  not the ``.py`` source the book is built from. The address is made by :func:`smf_lib.views.colab.colab_url` from
  ``repository.url``, ``repository.branch`` and ``launch_buttons.colab_url``, as the chapters' badges are.
- The chapters run with ``SMF_STATIC_WIDGETS`` set (the kernels inherit the build's environment), so that
  :func:`smf_lib.views.widgets.selection_explorer` draws its states in advance: the page has no kernel to redraw.
- The header's download menu offers a chapter's paired ``.ipynb`` (copied to ``_sources/``) next to its ``.py``.
- A chapter whose Colab badge or install cell names another repository than ``repository.url`` fails the build.
- A page loads each script once (sphinx-thebe's and sphinx-togglebutton's inline settings arrive twice, and
  declaring ``THEBE_JS_URL`` twice is an error) and nothing from the network: the Colab badge's image comes
  from ``_static/colab-badge.svg``. ``scripts/check_book.py`` fails on any console error or missing file.
"""

import os
import re
from pathlib import Path

from sphinx.errors import ExtensionError

from smf_lib.views.colab import colab_url, paired_ipynb

ROOT = Path(__file__).resolve().parents[2]
STATIC_WIDGETS = "SMF_STATIC_WIDGETS"  # smf_lib.views.widgets.STATIC_ENV
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"


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


def ipynb_download(app, pagename, templatename, context, doctree):
    """Offer a chapter's paired ``.ipynb`` (with its outputs) in the header's download menu, next to the ``.py``."""
    source = Path(app.env.doc2path(pagename))
    if source.suffix == ".py" and (ROOT / paired_ipynb(source, ROOT)).exists():
        context["ipynb_source"] = f"{Path(pagename).parent}/{Path(paired_ipynb(source, ROOT)).name}"


def copy_ipynb(app, exception):
    """Copy the chapters' paired notebooks to ``_sources/`` of the built book, where the download menu points."""
    if exception is not None or app.builder.format != "html":
        return
    import shutil

    for docname in app.env.found_docs:
        source = Path(app.env.doc2path(docname))
        if source.suffix != ".py":
            continue
        paired = ROOT / paired_ipynb(source, ROOT)
        if paired.exists():
            target = Path(app.outdir) / "_sources" / Path(docname).parent / paired.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(paired, target)


def each_script_once(app, pagename, templatename, context, doctree):
    """Drop repeated scripts (same file or same inline body, whatever their priorities), keeping the first."""
    seen, scripts = set(), []
    for js in sorted(context.get("script_files", []), key=lambda js: js.priority):
        key = (str(js.filename or ""), tuple(sorted(js.attributes.items())))  # inline: None or ""
        if key not in seen:
            seen.add(key)
            scripts.append(js)
    context["script_files"] = scripts


def local_badge(app, pagename, templatename, context, doctree):
    """The Colab badge's image from ``_static`` (the link still opens Colab)."""
    if "body" in context:
        local = context["pathto"]("_static/colab-badge.svg", 1)
        context["body"] = context["body"].replace(f'src="{COLAB_BADGE}"', f'src="{local}"')


def one_repository_address(app, docname, source):
    """Fail the build when a chapter's Colab badge or install cell points at another repository than
    ``repository.url`` in ``_config.yml`` (the one place the address is defined)."""
    url = app.config.html_theme_options.get("repository_url", "").rstrip("/")
    if not url or not str(app.env.doc2path(docname)).endswith(".py"):
        return
    repo = url.split("github.com/", 1)[-1]
    text = source[0]
    named = re.findall(r"colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/", text)
    named += re.findall(r"^REPO = \"https://github\.com/([\w.-]+/[\w.-]+?)/?\"", text, flags=re.M)
    wrong = sorted({m for m in named if m != repo})
    if wrong:
        raise ExtensionError(f"{docname}: points at {wrong}, but _config.yml's repository.url is {url}: change the "
                             "chapter (its badge and its REPO) or repository.url, so that both name one address")


def setup(app):
    os.environ[STATIC_WIDGETS] = "1"
    app.connect("source-read", one_repository_address)
    # before sphinx-book-theme builds the header's download menu (priority 501)
    app.connect("html-page-context", ipynb_download, priority=400)
    app.connect("build-finished", copy_ipynb)
    # after sphinx-book-theme's add_launch_buttons (priority 501)
    app.connect("html-page-context", colab_launch_button, priority=502)
    # after every extension that adds scripts to the page
    app.connect("html-page-context", each_script_once, priority=900)
    app.connect("html-page-context", local_badge, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
