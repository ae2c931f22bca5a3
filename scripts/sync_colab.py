"""Write every chapter's Colab badge and Colab install cell from ``repository.url`` in ``_config.yml``.

    python scripts/sync_colab.py           # rewrite book/notebooks/*.py, then jupytext --sync their .ipynb
    python scripts/sync_colab.py --check   # exit 1 if a chapter differs from what would be written

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
    spec = os.environ.get("SMF_INSTALL_SPEC", f"smf_lib[widgets] @ git+{{REPO}}")
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="report chapters that differ; write nothing")
    args = ap.parse_args()
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
