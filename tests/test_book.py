"""The book's sources: paired notebooks in sync, no committed outputs, the conventions every chapter follows."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "book" / "notebooks").glob("*.py"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())


def test_every_source_has_its_paired_ipynb_and_back():
    assert SOURCES
    py = {p.stem for p in SOURCES}
    ipynb = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert py == ipynb


def test_jupytext_sync_would_change_nothing(tmp_path):
    for sub in ("book/notebooks", "notebooks"):
        shutil.copytree(ROOT / sub, tmp_path / sub)
    shutil.copy(ROOT / "jupytext.toml", tmp_path / "jupytext.toml")
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    subprocess.run([sys.executable, "-m", "jupytext", "--sync", *[f"book/notebooks/{p.name}" for p in SOURCES]],
                   cwd=tmp_path, check=True, capture_output=True)
    after = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    changed = [str(k) for k in after if before.get(k) != after[k]]
    assert not changed, f"run `jupytext --sync book/notebooks/*.py` and commit: {changed}"


def install_cell(nb):
    cells = [c for c in nb.cells if "remove-cell" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "one install cell (tagged remove-cell) per chapter"
    return cells[0]


def test_install_cell_is_the_same_everywhere_and_names_the_configured_repository():
    cells = {install_cell(jupytext.read(p)).source for p in SOURCES}
    assert len(cells) == 1, "chapters differ in their install cell: run python scripts/sync_colab.py"
    (cell,) = cells
    # the one address in it is repository.url of _config.yml; the rest is names
    assert re.findall(r'https?://[^\s"]+', cell) == [CONFIG["repository"]["url"]]
    assert re.search(r'^REPO = "(.*)"$', cell, re.M)[1] == CONFIG["repository"]["url"]
    assert '"google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ' in cell
    assert 'os.environ.get("SMF_INSTALL_SPEC", f"smf_lib[widgets] @ git+{REPO}")' in cell
    assert "smf_lib.colab.setup(REPO)" in cell


def test_badges_and_install_cells_are_written_from_config():
    run = subprocess.run([sys.executable, "scripts/sync_colab.py", "--check"], cwd=ROOT, capture_output=True,
                         text=True)
    assert run.returncode == 0, f"run `python scripts/sync_colab.py` and commit: {run.stdout}{run.stderr}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_chapter_conventions(path):
    nb = jupytext.read(path)
    ipynb = jupytext.read(ROOT / "notebooks" / (path.stem + ".ipynb"))
    assert all(not c.get("outputs") for c in ipynb.cells), "commit the .ipynb without outputs"
    repo, branch = CONFIG["repository"]["url"], CONFIG["repository"]["branch"]
    badge = f"{CONFIG['launch_buttons']['colab_url']}/github/{repo.split('github.com/')[1]}/blob/{branch}/notebooks"
    assert path.read_text().count(f"]({badge}/{path.stem}.ipynb)") == 1, "one Open-in-Colab badge, to the .ipynb"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0] is install_cell(nb), "the install cell comes first"
    assert re.search(r"^SEED = \d+$", code[1].source, re.M) and "setup_notebook(SEED)" in code[1].source, \
        "the cell after it imports, sets SEED and calls setup_notebook(SEED)"
    source = "\n".join(c.source for c in code)
    assert "\ndef " not in "\n" + source and "\nclass " not in "\n" + source, "helpers belong in smf_lib"
    unused = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F401", "--output-format", "concise",
                             "--no-cache", str(path)], capture_output=True, text=True)
    assert unused.returncode == 0, f"import only what the chapter uses:\n{unused.stdout}"


def test_toc_lists_every_chapter_and_config_is_linked():
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for c in toc["chapters"]]
    assert {f"notebooks/{p.stem}" for p in SOURCES} <= set(files)
    assert (ROOT / "_toc.yml").resolve() == (ROOT / "book" / "_toc.yml").resolve()
    assert (ROOT / "book" / "_config.yml").resolve() == (ROOT / "_config.yml").resolve()
    cfg = CONFIG
    assert cfg["execute"]["execute_notebooks"] == "cache"
    for js in cfg["sphinx"]["config"]["html_js_files"]:
        js = js if isinstance(js, str) else js[0]
        assert (ROOT / "book" / "_static" / js).exists(), f"vendored widget script {js} missing"
