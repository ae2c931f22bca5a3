"""smf_lib installed the way its users install it, each into a fresh virtual environment: by a chapter's own
install cell in a Colab-like runtime, and from the built wheel.

The heavy dependencies are not reinstalled: the fresh environment sees this environment's packages through a
.pth file that points at a view of its site-packages without smf_lib (no editable finder, no metadata), so
smf_lib can be imported only once it has really been installed there. Offline: pip runs with --no-index.
"""

import json
import os
import shutil
import subprocess
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def fresh_venv(where: Path) -> tuple[Path, dict]:
    """A venv at ``where/venv`` that sees this environment's packages except smf_lib; its python and env."""
    site = Path(sysconfig.get_paths()["purelib"])
    deps = where / "deps"
    deps.mkdir(parents=True)
    for entry in site.iterdir():
        if not entry.name.lower().replace("-", "_").lstrip("_").startswith(("smf_lib", "editable__")):
            (deps / entry.name).symlink_to(entry)
    venv.EnvBuilder(with_pip=False).create(where / "venv")
    python = where / "venv" / "bin" / "python"
    fresh_site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                capture_output=True, text=True, check=True).stdout.strip()
    Path(fresh_site, "deps.pth").write_text(f"{deps}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "JUPYTER", "VIRTUAL_ENV"))}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_BUILD_ISOLATION="0",
               PATH=f"{python.parent}{os.pathsep}{env['PATH']}")
    return python, env


def imports_smf_lib(python: Path, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-c", "import smf_lib; print(smf_lib.__file__)"], cwd=cwd, env=env,
                          capture_output=True, text=True)


def checkout_copy(dest: Path) -> Path:
    """The working tree's files (no .git, venv or build output), so that pip builds outside the checkout."""
    skip = shutil.ignore_patterns(".git", ".venv", "_build", "build", "dist", "*.egg-info", "__pycache__",
                                  ".pytest_cache", ".ruff_cache", ".jupyter_cache")
    return Path(shutil.copytree(ROOT, dest, ignore=skip, symlinks=True))


# run a notebook as Jupyter does, in a kernel of the same environment; a cell that raises fails the run
EXECUTE = """import sys, nbclient, nbformat
nb = nbformat.read(sys.argv[1], as_version=4)
nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": "."}}).execute()
nbformat.write(nb, sys.argv[2])"""


def test_a_chapter_runs_as_in_colab_from_its_own_install_cell(tmp_path):
    python, env = fresh_venv(tmp_path)
    work = tmp_path / "content"
    work.mkdir()
    assert imports_smf_lib(python, env, work).returncode != 0, "smf_lib must not be importable before the cell"
    # a kernel of the fresh venv, found first
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3", "language": "python"}))
    # the cheapest chapter that imports smf_lib: no model, no results
    notebook = shutil.copy(ROOT / "notebooks" / "05_paper_setting.ipynb", work)
    env.update(COLAB_RELEASE_TAG="smf-test", SMF_INSTALL_SPEC=str(checkout_copy(tmp_path / "checkout")),
               JUPYTER_PATH=str(tmp_path / "jupyter"))
    run = subprocess.run([python, "-c", EXECUTE, notebook, "executed.ipynb"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    executed = json.loads((work / "executed.ipynb").read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    printed = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "smf_lib set up for Colab" in printed and "parameters per memory layer" in printed
    installed = imports_smf_lib(python, env, work)
    assert installed.returncode == 0 and installed.stdout.startswith(str(tmp_path / "venv")), installed


def test_the_wheel_carries_the_fixtures_and_runs_the_smoke_grid_outside_the_checkout(tmp_path):
    source = checkout_copy(tmp_path / "checkout")
    python, env = fresh_venv(tmp_path)
    subprocess.run([python, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "dist", source], env=env,
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("smf_lib-*.whl")
    fixtures = {p.relative_to(ROOT).as_posix() for p in (ROOT / "smf_lib" / "fixtures").rglob("*") if p.is_file()}
    with zipfile.ZipFile(wheel) as zf:
        assert fixtures and fixtures <= set(zf.namelist()), sorted(fixtures - set(zf.namelist()))
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", wheel], env=env, check=True,
                   capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert imports_smf_lib(python, env, elsewhere).stdout.startswith(str(tmp_path / "venv"))
    env.pop("SMF_DATA_DIR", None)  # the smoke preset reads the packaged fixtures only
    run = subprocess.run([python, "-m", "smf_lib", "run", "--preset", "smoke", "--out", tmp_path / "smoke",
                          "--no-progress"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    assert (tmp_path / "smoke" / "summary.csv").is_file()
