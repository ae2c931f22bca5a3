"""Write the README's "What the studies found" block from the result files, so that its sentences are computed,
never typed, and follow the studies as their runs come in.

    python scripts/readme_answers.py           # rewrite the block in README.md
    python scripts/readme_answers.py --check   # exit 1 if README.md's block differs from what would be written

The block lies between ``<!-- answers -->`` and ``<!-- /answers -->``. Each line is the answer the book's chapter
prints, from the same functions: chapter 3's (:func:`smf_lib.study.cpu_findings.study_state`), chapter 7's
(:func:`smf_lib.study.facts_findings.answer` on :func:`smf_lib.study.facts_frontier.answer_runs`) and the earlier
MedMCQA study's (:func:`smf_lib.study.findings.answer_cpu_v2`).
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- answers -->", "<!-- /answers -->"


def sentences(results: Path) -> list[str]:
    """The block's lines, each computed from the records under ``results``."""
    from smf_lib.study import cpu_findings as CF
    from smf_lib.study import facts_findings as FX
    from smf_lib.study import facts_frontier as FF
    from smf_lib.study.facts_presets import get_facts_preset
    from smf_lib.study.findings import answer_cpu_v2
    from smf_lib.study.results import load_runs

    eq = CF.study_state(results / "cpu")
    cpu = eq["answer"] or ("not finished, so there is no answer yet (`python -m smf_lib status --preset cpu` says "
                           "how far it has come).")  # no count here: the block changes only when an answer does
    plan = FF.answer_runs(get_facts_preset("facts"), results / "facts")
    facts = FX.answer(plan["runs"], plan["start"], plan["seeds"], split=plan["split"], level=plan["level"])
    if plan["split"] == "dev":
        facts = ("the reported facts' runs are not all in (`python -m smf_lib status --preset facts`); on the dev "
                 "facts alone, which chose the rates and cannot carry the verdict: "
                 + (facts[0].lower() + facts[1:] if facts else "no answer."))
    earlier = answer_cpu_v2(load_runs(results / "cpu-v2"))
    return [f"- **MedMCQA, every method from the same model** (chapter 3, `results/cpu`): {cpu}",
            f"- **New facts, one at a time** (chapter 7, `results/facts`): {facts}",
            f"- **The earlier MedMCQA study** (`results/cpu-v2`): {earlier}"]


def rewrite(readme: str, lines: list[str]) -> str:
    """``readme`` with the block between the markers replaced by ``lines``; an error if the markers are missing."""
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not pattern.search(readme):
        raise ValueError(f"README.md has no {START} ... {END} block: add the two markers where the answers go")
    return pattern.sub(lambda _: "\n".join([START, *lines, END]), readme, count=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md's block is not what would be written")
    args = ap.parse_args(argv)
    path = ROOT / "README.md"
    old = path.read_text()
    new = rewrite(old, sentences(ROOT / "results"))
    if args.check:
        if new != old:
            print("README.md's answers are stale: run python scripts/readme_answers.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
