"""Write every chapter's Colab badge and Colab install cell from ``repository.url`` in ``_config.yml``.

    python scripts/sync_colab.py           # rewrite book/notebooks/*.py, then jupytext --sync their .ipynb
    python scripts/sync_colab.py --check   # exit 1 if a chapter differs from what would be written
    python scripts/sync_colab.py --outputs # copy the built book's executed outputs into notebooks/*.ipynb

``--outputs`` reads ``book/_build/jupyter_execute/notebooks/*.ipynb`` (written by ``jupyter-book build book/``), so
that a reader who opens a notebook on GitHub or in Colab sees its results before running anything. Widget views
keep their text fallback only (Colab cannot restore a saved widget's state), so the files stay small.

The install cell is the chapter's code cell tagged ``remove-cell``; the badge is the markdown line that starts
with ``[![Open In Colab]``. Both open the ``.ipynb`` that jupytext pairs with the chapter (``notebooks/``).
"""

import argparse
import re
import subprocess
import sys
from pathlib import Path

import yaml

from smf_lib.views.colab import colab_url, paired_ipynb

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "book" / "notebooks").glob("*.py"))
BADGE = "# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"
# Self-contained on purpose: smf_lib is not installed yet when it runs. Only REPO differs between books.
INSTALL_CELL = '''# %% tags=["remove-cell"]
# In Colab only: install smf_lib from the repository (or from SMF_INSTALL_SPEC) and fetch the cached results.
import os
import subprocess
import sys

REPO = "{repo}"
if "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ:
    spec = os.environ.get("SMF_INSTALL_SPEC", f"smf_lib[study,widgets] @ git+{{REPO}}")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", spec], check=True)
    import smf_lib.views.colab

    smf_lib.views.colab.setup(REPO)
'''
CELL_RE = re.compile(r'^# %% tags=\["remove-cell"\]\n.*?(?=^# %%)', re.S | re.M)
BADGE_RE = re.compile(r"^# \[!\[Open In Colab\]\(.*$", re.M)


def config() -> dict:
    """``repository`` and ``launch_buttons`` of the book's ``_config.yml``."""
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    return {"repo": cfg["repository"]["url"], "branch": cfg["repository"].get("branch", "main"),
            "colab": cfg["launch_buttons"]["colab_url"]}


def install_cell(repo: str) -> str:
    """The install cell (py:percent text, followed by one blank line) for repository ``repo``."""
    return INSTALL_CELL.format(repo=repo) + "\n"


def render(source: Path, cfg: dict) -> str:
    """The text ``source`` should have: its badge and install cell written from ``cfg``."""
    text = source.read_text()
    url = colab_url(cfg["repo"], paired_ipynb(source, ROOT), cfg["branch"], cfg["colab"])
    if len(BADGE_RE.findall(text)) != 1 or len(CELL_RE.findall(text)) != 1:
        raise SystemExit(f"{source}: needs exactly one '[![Open In Colab]' line and one remove-cell install cell")
    text = BADGE_RE.sub(lambda _: BADGE.format(url=url), text)
    return CELL_RE.sub(lambda _: install_cell(cfg["repo"]), text)


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def copy_outputs(executed: Path, paired: Path) -> int:
    """Copy the outputs of ``executed`` into ``paired`` cell by cell (matched by source); returns how many code
    cells got outputs. Widget views keep only their text fallback; the notebook's widget state is dropped."""
    import nbformat

    done = nbformat.read(executed, as_version=4)
    nb = nbformat.read(paired, as_version=4)
    by_source = {}
    for cell in done.cells:
        if cell.cell_type == "code":
            by_source.setdefault(cell.source, []).append(cell)
    filled = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        match = by_source.get(cell.source, [])
        if not match:
            raise SystemExit(f"{paired}: a code cell has no executed twin in {executed}; rebuild the book first")
        ran = match.pop(0)
        outputs = []
        for out in ran.get("outputs", []):
            if out.get("output_type") == "error":
                raise SystemExit(f"{executed}: an executed cell raised an error; fix the chapter first")
            data = out.get("data", {})
            if WIDGET_VIEW in data:
                out = nbformat.from_dict({**out, "data": {k: v for k, v in data.items() if k == "text/plain"}})
            outputs.append(out)
        cell.outputs, cell.execution_count = outputs, ran.get("execution_count")
        filled += bool(outputs)
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, paired)
    return filled


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="report chapters that differ; write nothing")
    ap.add_argument("--outputs", action="store_true",
                    help="copy the built book's executed outputs into notebooks/*.ipynb")
    args = ap.parse_args()
    if args.outputs:
        built = ROOT / "book" / "_build" / "jupyter_execute" / "notebooks"
        for source in SOURCES:
            executed, paired = built / f"{source.stem}.ipynb", ROOT / paired_ipynb(source, ROOT)
            if not executed.exists():
                raise SystemExit(f"no {executed}: run `jupyter-book build book/` first")
            n = copy_outputs(executed, paired)
            print(f"{paired.relative_to(ROOT)}: outputs of {n} code cells ({paired.stat().st_size / 1e6:.2f} MB)")
        return 0
    cfg = config()
    stale = [s for s in SOURCES if render(s, cfg) != s.read_text()]
    for s in stale:
        print(f"{'differs' if args.check else 'rewrote'}: {s.relative_to(ROOT)}")
        if not args.check:
            s.write_text(render(s, cfg))
    if stale and not args.check:
        subprocess.run([sys.executable, "-m", "jupytext", "--sync", *map(str, stale)], cwd=ROOT, check=True,
                       capture_output=True)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
