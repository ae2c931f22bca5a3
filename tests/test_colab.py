"""smf_lib.views.colab: the Colab marker, the addresses the badges and launch buttons use, and the set-up."""

import os
from pathlib import Path

import pytest

from smf_lib.views import colab

ROOT = Path(__file__).resolve().parents[1]


def test_the_colab_marker_can_be_set_through_the_environment(monkeypatch):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    assert not colab.in_colab()
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab-test")
    assert colab.in_colab()


def test_colab_url_opens_the_repository_file():
    for repo in ("https://github.com/org/repo", "https://github.com/org/repo/", "https://github.com/org/repo.git"):
        assert colab.colab_url(repo, "notebooks/a.ipynb", "dev") == \
            "https://colab.research.google.com/github/org/repo/blob/dev/notebooks/a.ipynb"


def test_every_chapter_is_paired_with_its_ipynb_in_notebooks():
    for source in sorted((ROOT / "book" / "notebooks").glob("*.py")):
        assert colab.paired_ipynb(source, ROOT) == f"notebooks/{source.stem}.ipynb"


def fake_checkout(path: Path) -> Path:
    (path / "results").mkdir(parents=True)
    (path / "pyproject.toml").write_text("")
    return path


@pytest.fixture
def no_model_install(monkeypatch):
    """setup() must find the offline model installed here, and not call pip or git."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"unexpected subprocess: {args}")
    monkeypatch.setattr(colab.subprocess, "run", refuse)
    monkeypatch.delenv("SMF_DATA_DIR", raising=False)
    monkeypatch.delenv("SMF_INSTALL_SPEC", raising=False)
    yield
    os.environ.pop("SMF_DATA_DIR", None)


def test_setup_moves_into_the_checkout_above_the_working_directory(tmp_path, monkeypatch, no_model_install):
    checkout = fake_checkout(tmp_path / "repo")
    (checkout / "book").mkdir()
    monkeypatch.chdir(checkout / "book")
    assert colab.setup("https://github.com/org/repo") == checkout.resolve() == Path.cwd()
    assert os.environ["SMF_DATA_DIR"] == ""  # the loaders then fetch from the Hub


def test_setup_uses_the_local_checkout_named_by_the_install_spec(tmp_path, monkeypatch, no_model_install):
    checkout = fake_checkout(tmp_path / "repo")
    monkeypatch.setenv("SMF_INSTALL_SPEC", str(checkout))
    monkeypatch.chdir(tmp_path)
    assert colab.setup("https://github.com/org/repo") == checkout.resolve() == Path.cwd()


def test_setup_clones_the_repository_when_no_checkout_is_found(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(colab.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or fake_checkout(Path(cmd[-1])))
    monkeypatch.delenv("SMF_INSTALL_SPEC", raising=False)
    monkeypatch.setenv("SMF_DATA_DIR", "/data")
    monkeypatch.chdir(tmp_path)
    assert colab.setup("https://github.com/org/repo") == (tmp_path / "smf_lib").resolve()
    assert calls[-1] == ["git", "clone", "-q", "--depth", "1", "https://github.com/org/repo",
                         str((tmp_path / "smf_lib").resolve())]
    assert os.environ["SMF_DATA_DIR"] == "/data"  # a data folder already set is kept


def test_the_paper_setting_chapter_asks_colab_for_a_gpu():
    import json
    from pathlib import Path

    meta = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "05_paper_setting.ipynb").read_text())
    assert meta["metadata"]["accelerator"] == "GPU" and meta["metadata"]["colab"]["gpuType"]
