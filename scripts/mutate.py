"""Do the tests guard the invariants they claim to? Apply single mutations of key lines, one at a time, run the
relevant fast tests after each, and report how many mutations the tests kill.

    python scripts/mutate.py            # every mutation (about 15-25 minutes on 2 CPU cores)
    python scripts/mutate.py --only ties eos-cut

A mutation is killed when its tests fail. Mutations are applied to a copy of the package and its tests in a
temporary folder, never to the working tree, so a run can go on beside a study that imports smf_lib. The kill rate
must be at least 95% (exit status 1 otherwise). Not part of `make test`: `make mutate` runs it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


M = Mutation
MUTATIONS = [
    M("identity at insertion", "smf_lib/memory.py", "            nn.init.zeros_(self.values.weight)\n",
      "            nn.init.normal_(self.values.weight, std=1e-3)\n", ("tests/test_memory.py",)),
    M("exact top-k", "smf_lib/memory.py", "scores, best = cand.topk(c.knn, dim=-1)",
      "scores, best = cand[..., : c.knn].topk(c.knn, dim=-1)", ("tests/test_memory.py",)),
    M("strict rows (SGD)", "smf_lib/updates.py",
      "self.table.index_add_(0, rows, grads.to(self.table.dtype), alpha=-lr)",
      "self.table.sub_(lr * 1e-3)\n        self.table.index_add_(0, rows, grads.to(self.table.dtype), alpha=-lr)",
      ("tests/test_invariants.py", "tests/test_training.py")),
    M("decay on touched rows only", "smf_lib/updates.py",
      "            update = update + self.wd * self.table[rows].float()\n",
      "            update = update + self.wd * self.table[rows].float()\n"
      "            self.table.mul_(1 - lr * self.wd)\n",
      ("tests/test_invariants.py",)),
    M("TF-IDF formula", "smf_lib/selection.py", "return p * torch.log((n_docs + 1) / (df.double() + 1))",
      "return p * torch.log((n_docs + 1) / (df.double() + 2))", ("tests/test_selection.py",)),
    M("KL formula", "smf_lib/selection.py", "q = (totals.double() + 1) / (totals.double() + 1).sum()",
      "q = (totals.double() + 1) / (totals.double() + 1).sum() * 2", ("tests/test_selection.py",)),
    M("padding not counted", "smf_lib/selection.py", "        indices = indices[attention_mask.bool()]\n",
      "        indices = indices.flatten(0, 1)\n", ("tests/test_selection.py", "tests/test_invariants.py")),
    M("deterministic ties", "smf_lib/selection.py",
      "order = torch.sort(scores[read], descending=True, stable=True).indices",
      "order = torch.sort(scores[read].flip(0), descending=True, stable=True).indices.flip(0)",
      ("tests/test_selection.py",)),
    M("option scoring by mean", "smf_lib/probes.py", "            means.append(float(lp.mean()))",
      "            means.append(float(lp.sum()))", ("tests/test_probes.py",)),
    M("perplexity windows", "smf_lib/probes.py", "        spans.append((begin, end, max(prev_end, begin + 1)))",
      "        spans.append((begin, end, begin + 1))", ("tests/test_probes.py",)),
    M("EOS cut", "smf_lib/probes.py",
      "new = [row[: row.index(eos)] if eos in row else row for row in new]", "new = new",
      ("tests/test_probes.py", "tests/test_invariants.py")),
    M("paired bootstrap", "smf_lib/study/paired_stats.py",
      "deltas = fn([y[idx] for y in b]) - fn([x[idx] for x in a])",
      "deltas = fn([y[idx] for y in b]) - fn([x[idx[::-1]] for x in a])", ("tests/test_runner.py",)),
    M("McNemar", "smf_lib/study/paired_stats.py", "    k = min(n01, n10)\n", "    k = max(n01, n10)\n",
      ("tests/test_runner.py",)),
    M("atomic writes", "smf_lib/files.py", '    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")',
      "    tmp = path", ("tests/test_inputs.py",)),
    M("folder lock", "smf_lib/files.py", "fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)", "pass",
      ("tests/test_runner.py",)),
    M("identity checks", "smf_lib/study/runner.py", "        if stored == current:\n            return True\n",
      "        if True:\n            return True\n", ("tests/test_runner.py",)),
    M("adapter hashes", "smf_lib/adapter.py",
      'file_sha256(ref / WEIGHTS_NAME) != meta["reference"].get("sha256")', "False",
      ("tests/test_invariants.py", "tests/test_memory.py")),
    M("divergence check", "smf_lib/training.py", "        if not torch.isfinite(loss):",
      "        if False:", ("tests/test_training.py", "tests/test_inputs.py")),
    M("LoRA merge", "smf_lib/training.py", 'finish=lambda m: m.merge_and_unload()', "finish=lambda m: m",
      ("tests/test_training.py",)),
    M("resume restores the selection stream", "smf_lib/selection.py",
      '        self.rand.set_state(state["rand"])\n', "", ("tests/test_training.py",)),
    M("value gradients out of other optimizers' reach", "smf_lib/selection.py", "g, param.grad = param.grad, None",
      "g = param.grad", ("tests/test_sparse.py",)),
    M("frozen addressing", "smf_lib/training.py", "                mod.memory.keys.requires_grad_(False)\n", "",
      ("tests/test_spread.py",)),
    M("effective rows", "smf_lib/spread.py", '"effective_rows": math.exp(h)}', '"effective_rows": math.exp(h) / 2}',
      ("tests/test_spread.py",)),
    M("held-out questions", "smf_lib/facts.py", '"{e} was born and raised in {a}.",',
      '"In which city was {e} born? {a}.",', ("tests/test_facts.py",)),
    M("LoRA drawn from the seed", "smf_lib/training.py",
      "    torch.manual_seed(c.seed)  # every random draw of the method comes from its seed: LoRA's layers first\n", "",
      ("tests/test_inputs.py",)),
    M("strict JSON on read", "smf_lib/files.py", "return json.loads(text, parse_constant=refuse)",
      "return json.loads(text)", ("tests/test_inputs.py",)),
]


def copy_project(to: Path) -> Path:
    """The package, its tests and what the tests read, copied to ``to`` (the mutations' sandbox)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "_build", ".venv", "artifacts")
    for name in ("smf_lib", "tests", "scripts"):
        shutil.copytree(ROOT / name, to / name, ignore=ignore)
    for name in ("pyproject.toml", "CONTRIBUTING.md", "README.md"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, to / name)
    return to


def run(mutation: Mutation, timeout: int, root: Path) -> tuple[bool, float, str]:
    path = root / mutation.file
    source = path.read_text(encoding="utf-8")
    if source.count(mutation.old) != 1:
        return False, 0.0, f"the line to mutate is not found once in {mutation.file}: update scripts/mutate.py"
    path.write_text(source.replace(mutation.old, mutation.new), encoding="utf-8")
    t0 = time.perf_counter()
    try:
        env = {**os.environ, "PYTHONPATH": str(root)}  # the copy's smf_lib comes before the installed one
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow", "-p", "no:cacheprovider",
                               *mutation.tests], cwd=root, capture_output=True, text=True, timeout=timeout, env=env)
        killed = proc.returncode != 0
        note = "" if killed else "survived"
    except subprocess.TimeoutExpired:
        killed, note = True, "timeout (counted as killed)"
    finally:
        path.write_text(source, encoding="utf-8")
    return killed, time.perf_counter() - t0, note


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", help="names (or parts of names) of the mutations to run")
    ap.add_argument("--timeout", type=int, default=600)
    args = ap.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or any(o in m.name for o in args.only)]
    killed = 0
    root = copy_project(Path(tempfile.mkdtemp(prefix="smf-mutate-")))
    check = subprocess.run([sys.executable, "-c", "import smf_lib; print(smf_lib.__file__)"], cwd=root,
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)})
    if not check.stdout.strip().startswith(str(root)):
        print(f"the copy's smf_lib is not the one imported ({check.stdout.strip()}); refusing to run", file=sys.stderr)
        return 2
    # the tests must pass on the unmutated copy, or a "kill" means nothing
    files = sorted({t for m in chosen for t in m.tests})
    base = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider", *files],
                          cwd=root, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)})
    if base.returncode != 0:
        print(f"the tests fail without any mutation; fix them first:\n{base.stdout[-2000:]}", file=sys.stderr)
        return 2
    for m in chosen:
        ok, seconds, note = run(m, args.timeout, root)
        killed += ok
        print(f"{'killed  ' if ok else 'SURVIVED'}  {m.name:40s} {seconds:6.0f} s  {note}", flush=True)
    rate = killed / max(len(chosen), 1)
    print(f"kill rate: {killed} of {len(chosen)} = {rate:.0%} (required: 95%)")
    shutil.rmtree(root, ignore_errors=True)
    return 0 if rate >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
