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
    assert 'os.environ.get("SMF_INSTALL_SPEC", f"smf_lib[study,widgets] @ git+{REPO}")' in cell
    assert "smf_lib.views.colab.setup(REPO)" in cell


def test_badges_and_install_cells_are_written_from_config():
    run = subprocess.run([sys.executable, "scripts/sync_colab.py", "--check"], cwd=ROOT, capture_output=True,
                         text=True)
    assert run.returncode == 0, f"run `python scripts/sync_colab.py` and commit: {run.stdout}{run.stderr}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_chapter_conventions(path):
    nb = jupytext.read(path)
    ipynb = jupytext.read(ROOT / "notebooks" / (path.stem + ".ipynb"))
    outputs = [o for c in ipynb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    fix = "`jupyter-book build book/`, then `python scripts/sync_colab.py --outputs`, and commit the .ipynb"
    assert outputs, f"the .ipynb carries no outputs: {fix}"
    assert not [o for o in outputs if o.get("output_type") == "error"], f"an output is an error: {fix}"
    assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})], fix
    assert (ROOT / "notebooks" / (path.stem + ".ipynb")).stat().st_size < 2_000_000, "keep each .ipynb under 2 MB"
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
    assert CONFIG["execute"]["execute_notebooks"] == "cache"


def test_vendored_scripts_load_once_in_order_and_find_their_fonts():
    sphinx = CONFIG["sphinx"]["config"]
    # Jupyter Book would add every .js under book/_static to every page (MathJax a second time)
    assert not (ROOT / "book" / "_static").exists()
    static = [ROOT / "book" / d for d in sphinx["html_static_path"]]
    scripts = [js if isinstance(js, str) else js[0] for js in sphinx["html_js_files"]]
    assert scripts == ["widgets/require.js", "widgets/embed-setup.js", "widgets/embed-amd.js", "smf/smf.js"]
    for name in [*scripts, *sphinx["html_css_files"], sphinx["mathjax_path"], "colab-badge.svg"]:
        assert any((d / name).is_file() for d in static), f"{name} is not in {sphinx['html_static_path']}"
    (widgets,) = [d / "widgets" for d in static if (d / "widgets").is_dir()]
    wanted = set(re.findall(r'"([0-9a-f]{20}\.woff2)"', (widgets / "embed-amd.js").read_text()))
    assert wanted and wanted <= {p.name for p in (widgets / "fonts").iterdir()}
    assert sphinx["html_context"]["default_mode"] in ("auto", "light", "dark")


def test_book_extension_keeps_one_copy_of_each_script_and_a_local_badge():
    from sphinx.builders.html._assets import _JavaScript

    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    try:
        import smf_book
    finally:
        sys.path.pop(0)
    body = "const THEBE_JS_URL = 'x'"
    ctx = {"script_files": [_JavaScript("a.js"), _JavaScript(None, body=body), _JavaScript("b.js", priority=800),
                            _JavaScript("", body=body), _JavaScript("a.js", priority=900)],
           "body": f'<a href="u"><img alt="Open In Colab" src="{smf_book.COLAB_BADGE}" /></a>',
           "pathto": lambda name, resource: f"../{name}"}
    smf_book.each_script_once(None, "p", "page.html", ctx, None)
    assert [(js.filename, js.attributes) for js in ctx["script_files"]] == [("a.js", {}), (None, {"body": body}),
                                                                           ("b.js", {})]
    smf_book.local_badge(None, "p", "page.html", ctx, None)
    assert 'src="../_static/colab-badge.svg"' in ctx["body"] and smf_book.COLAB_BADGE not in ctx["body"]


#: Phrases that describe a study while it runs or the writing of the book, not what the book shows.
STALE = ("not in yet", "so far", "fills as it runs", "until then", "once both", "for this book yet", "still running",
         "when it lands", "not run yet")


def test_no_chapter_carries_a_stale_phrase():
    """The chapters speak of finished results: no branch or sentence for a study still running."""
    found = [f"{p.name}: {phrase!r}" for p in [*SOURCES, *(ROOT / "book").glob("*.md")]
             for phrase in STALE if phrase in p.read_text(encoding="utf-8").lower()]
    assert not found, f"rewrite for the finished results: {found}"


_BARE_COUNT = re.compile(r"(?<![\w.,:/#@-])\d{4,}(?![\w,]|\.\d)")


def bare_counts(text: str) -> list[str]:
    """Whole numbers of 4 or more digits printed without thousands separators in an output's text or HTML, leaving
    out a book table's identifier cells (``smf-id``), markup, images and years."""
    text = re.sub(r'<(td|caption) class="[^"]*smf-id[^"]*">.*?</\1>', "", text)
    text = re.sub(r"<style>.*?</style>|<script.*?</script>|data:image[^\"']*", "", text, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", text)
    return [m.group(0) for m in _BARE_COUNT.finditer(text) if not 1900 <= int(m.group(0)) <= 2100]


def test_bare_counts_finds_a_count_without_separators_but_not_an_identifier_or_a_decimal():
    assert bare_counts("<td>4096</td><td class=\"smf-id\">3947</td> 1.2345 4,096 2026 v2.13.0") == ["4096"]
    assert bare_counts('<caption class="smf-id">3947</caption><caption>5000</caption>') == ["5000"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_counts_in_the_outputs_carry_thousands_separators(path):
    """One formatter: every count a chapter prints or tabulates has separators (``smf_lib.study.tables.count``)."""
    ipynb = jupytext.read(ROOT / "notebooks" / (path.stem + ".ipynb"))
    found = []
    for cell in ipynb.cells:
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = o.get("data", {})
            texts = ["".join(o.get("text", ""))] + ["".join(data.get(k, "")) for k in ("text/html", "text/markdown")]
            found += [n for t in texts for n in bare_counts(t)]
    assert not found, f"{path.stem} prints counts without separators {found[:8]}: format them with `:,` or count()"


_PLUMBING = re.compile(r"^(display\()?(found_box|Markdown)\(|^print\((textwrap\.fill\()?status_line\(")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_plumbing_cells_show_their_output_not_their_code(path):
    """A cell that only places a computed box or status line on the page hides its code (``hide-input``)."""
    shown = []
    for cell in jupytext.read(path).cells:
        lines = [ln for ln in cell.source.splitlines() if ln.strip() and not ln.startswith("#")]
        tags = cell.metadata.get("tags", [])
        if cell.cell_type == "code" and lines and all(_PLUMBING.match(ln) or ln.startswith(" ") for ln in lines) \
                and not {"hide-input", "remove-input", "remove-cell"} & set(tags):
            shown.append(lines[0][:60])
    assert not shown, f"tag these cells hide-input: {shown}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_no_table_heads_a_column_with_a_raw_name(path):
    """Tables name their columns in words (``gold log-lik``), never by a record's key (``gold_loglik``)."""
    ipynb = jupytext.read(ROOT / "notebooks" / (path.stem + ".ipynb"))
    heads = {h for cell in ipynb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
             for h in re.findall(r"<th[^>]*>(.*?)</th>", "".join(o.get("data", {}).get("text/html", "")))}
    raw = sorted(h for h in heads if re.search(r"[a-z]_[a-z]", h))
    assert not raw, f"{path.stem}: rename these columns for the reader: {raw}"
