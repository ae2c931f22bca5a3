"""The book's sources: paired notebooks in sync, no committed outputs, the conventions every chapter follows."""

import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "book" / "notebooks").glob("*.py"))


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


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_chapter_conventions(path):
    nb = jupytext.read(path)
    ipynb = jupytext.read(ROOT / "notebooks" / (path.stem + ".ipynb"))
    assert all(not c.get("outputs") for c in ipynb.cells), "commit the .ipynb without outputs"
    text = path.read_text()
    assert f"colab.research.google.com/github/smf-lib/smf_lib/blob/main/notebooks/{path.stem}.ipynb" in text
    install = [c for c in nb.cells if "remove-cell" in c.metadata.get("tags", [])]
    assert install and '"google.colab" in sys.modules' in install[0].source
    assert "device" in text and "SEED" in text
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "\ndef " not in "\n" + code and "\nclass " not in "\n" + code, "helpers belong in smf_lib"


def test_toc_lists_every_chapter_and_config_is_linked():
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for c in toc["chapters"]]
    assert {f"notebooks/{p.stem}" for p in SOURCES} <= set(files)
    assert (ROOT / "_toc.yml").resolve() == (ROOT / "book" / "_toc.yml").resolve()
    assert (ROOT / "book" / "_config.yml").resolve() == (ROOT / "_config.yml").resolve()
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "cache"
    for js in cfg["sphinx"]["config"]["html_js_files"]:
        js = js if isinstance(js, str) else js[0]
        assert (ROOT / "book" / "_static" / js).exists(), f"vendored widget script {js} missing"
