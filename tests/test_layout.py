"""The package's three wings and its one import rule: the core imports neither the study nor the views, the study
does not import the views; no cycles, at most 6 floors of imports; `import smf_lib` stays light."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "smf_lib"
RANK = {"core": 0, "study": 1, "views": 2}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ("study", "views") else "core"


def runtime_nodes(tree):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            stack += node.orelse
            continue
        stack += list(ast.iter_child_nodes(node))


def package_imports() -> dict[str, set[str]]:
    """module -> the smf_lib modules it imports anywhere (module level or inside functions)."""
    graph = {}
    for path in PKG.rglob("*.py"):
        mod = module_name(path)
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        deps = set()
        for node in runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith("smf_lib"):
                    continue
                names = [f"{target}.{a.name}" for a in node.names]
                known = {module_name(p) for p in PKG.rglob("*.py")}
                deps |= {n for n in names if n in known} or {target}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("smf_lib")}
        graph[mod] = deps - {mod}
    return graph


def test_the_core_never_imports_the_study_or_the_views_and_the_study_never_the_views():
    graph = package_imports()
    bad = [(m, d) for m, deps in graph.items() for d in deps
           if m not in ("smf_lib", "smf_lib.__main__") and d != "smf_lib" and RANK[wing(d)] > RANK[wing(m)]]
    assert not bad, f"imports that run up a wing: {bad}"


def test_no_cycles_and_at_most_six_floors():
    graph = {m: {d for d in deps if d in package_imports_keys()} for m, deps in package_imports().items()
             if m not in ("smf_lib", "smf_lib.__main__")}
    floors: dict[str, int] = {}

    def floor(m, stack=()):
        if m in stack:
            raise AssertionError(f"import cycle: {' -> '.join((*stack, m))}")
        if m not in floors:
            floors[m] = 1 + max((floor(d, (*stack, m)) for d in graph.get(m, ()) if d in graph), default=0)
        return floors[m]

    for m in graph:
        floor(m)
    assert max(floors.values()) <= 6, sorted(floors.items(), key=lambda kv: -kv[1])[:5]


def package_imports_keys():
    return {module_name(p) for p in PKG.rglob("*.py")}


def test_the_rule_catches_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: a core module that imports the study is reported."""
    fake = tmp_path / "smf_lib"
    (fake / "study").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "study" / "__init__.py").write_text("")
    (fake / "study" / "runner.py").write_text("X = 1\n")
    (fake / "memory.py").write_text("from .study.runner import X\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", fake)
    with pytest.raises(AssertionError, match="run up a wing"):
        test_the_core_never_imports_the_study_or_the_views_and_the_study_never_the_views()


def test_import_smf_lib_is_light_and_the_public_api_works():
    code = ("import sys, smf_lib; heavy = [m for m in ('pandas', 'matplotlib', 'seaborn', 'ipywidgets') "
            "if m in sys.modules]; assert not heavy, heavy; "
            "assert all(hasattr(smf_lib, n) for n in smf_lib.__all__), 'missing public name'; "
            "assert not hasattr(smf_lib, 'setup_notebook'); "  # the views' set-up stays in the views
            "from smf_lib.views.notebook import setup_notebook; assert callable(setup_notebook)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_contributing_recipe_for_a_selector_works():
    """CONTRIBUTING.md's selector recipe, as written there, adds a working selector."""
    import re

    import torch

    from smf_lib import selection

    text = (Path(__file__).resolve().parents[1] / "CONTRIBUTING.md").read_text(encoding="utf-8")
    code = re.search(r"\*\*A selector\*\*.*?```python\n(.*?)```", text, re.S).group(1)
    ns = {"SELECTORS": dict(selection.SELECTORS), "Selector": selection.Selector}
    exec(code, ns)
    counts = torch.tensor([0, 4, 1, 0, 9])
    p = counts.double() / counts.sum()
    scores = ns["SELECTORS"]["sqrt"].score(p, counts, None, None, None, None)
    assert not ns["SELECTORS"]["sqrt"].needs_background
    assert scores.argsort(descending=True)[:2].tolist() == [4, 1]


#: The house's room sizes: lines per file, lines per function, lines of the runner class.
MAX_FILE_LINES, MAX_FUNCTION_LINES, MAX_RUNNER_LINES = 500, 60, 250


def test_every_room_fits_the_house_limits():
    """Files of at most 500 lines, functions of at most 60, the experiment runner at most 250."""
    too_big = []
    for path in PKG.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_FILE_LINES:
            too_big.append(f"{path.relative_to(PKG)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            size = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and size > MAX_FUNCTION_LINES:
                too_big.append(f"{path.relative_to(PKG)}: {node.name}() {size} lines")
            if isinstance(node, ast.ClassDef) and node.name == "Runner" and size > MAX_RUNNER_LINES:
                too_big.append(f"{path.relative_to(PKG)}: class Runner {size} lines")
    assert not too_big, "split these: " + "; ".join(sorted(too_big))


def test_stage_functions_take_what_they_need_not_the_runner():
    """No function of the study's stages takes the whole runner: each gets its data and, where it loads models or
    writes files, a ``StageHost``."""
    whole = []
    for name in ("stages.py", "facts_study.py", "evaluation.py"):
        tree = ast.parse((PKG / "study" / name).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                params = [a.arg for a in node.args.args + node.args.kwonlyargs]
                if "runner" in params:
                    whole.append(f"{name}: {node.name}()")
    assert not whole, "give these what they need instead of the runner: " + ", ".join(whole)


def _recipe(title: str) -> str:
    import re

    text = (Path(__file__).resolve().parents[1] / "CONTRIBUTING.md").read_text(encoding="utf-8")
    return re.search(rf"\*\*{title}\*\*.*?```python\n(.*?)```", text, re.S).group(1)


def test_contributing_recipe_for_a_training_method_works(monkeypatch):
    """CONTRIBUTING.md's method recipe, as written there, trains only what its prepare() opens, in the one loop."""
    import torch

    from smf_lib import methods
    from smf_lib.models import load_tokenizer, tiny_model
    from smf_lib.training import TrainConfig, train

    monkeypatch.setattr(methods, "METHODS", dict(methods.METHODS))
    monkeypatch.setitem(sys.modules["smf_lib.training"].__dict__, "METHODS", methods.METHODS)
    exec(_recipe("A training method"), {"METHODS": methods.METHODS, "Method": methods.Method})
    model, tok = tiny_model("llama", vocab=49152, hidden=64, layers=2, seed=0), load_tokenizer()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = train(model, tok, ["a short text about hearts"] * 4, TrainConfig(method="norms", max_steps=2, micro_batch=2,
                                                                             grad_accum=1, max_length=16,
                                                                             warmup_steps=0), progress=False)
    moved = {n for n, p in res.model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all("norm" in n for n in moved)


def test_contributing_recipe_for_an_update_rule_works(monkeypatch):
    """CONTRIBUTING.md's update-rule recipe, as written there, moves the selected rows and no other."""
    import torch

    from smf_lib import updates
    from smf_lib.memory import MemoryConfig, add_memory, memory_layers
    from smf_lib.models import load_tokenizer, tiny_model
    from smf_lib.training import TrainConfig, train

    monkeypatch.setattr(updates, "UPDATES", dict(updates.UPDATES))
    for module in ("smf_lib.training", "smf_lib.selection", "smf_lib.methods"):
        if "UPDATES" in sys.modules[module].__dict__:
            monkeypatch.setitem(sys.modules[module].__dict__, "UPDATES", updates.UPDATES)
    exec(_recipe("An update rule"), {"UPDATES": updates.UPDATES, "UpdateRule": updates.UpdateRule, "torch": torch})
    model, tok = tiny_model("llama", vocab=49152, hidden=64, layers=2, seed=0), load_tokenizer()
    add_memory(model, MemoryConfig(layers=(1,), n_keys=8, heads=2, knn=4, k_dim=16))
    table = memory_layers(model)[0].values.weight
    before = table.detach().clone()
    cfg = TrainConfig(method="smf", selector="random", update="sign", top_t=3, max_steps=1, micro_batch=2,
                      grad_accum=1, max_length=16, warmup_steps=0)
    res = train(model, tok, ["a short text about hearts"] * 2, cfg, progress=False)
    changed = (memory_layers(res.model)[0].values.weight != before).any(dim=1)
    assert 0 < int(changed.sum()) <= 3 and res.log[0]["rows"] == 3
    step = (memory_layers(res.model)[0].values.weight - before)[changed].abs()
    assert torch.allclose(step[step > 0], torch.full_like(step[step > 0], 1e-3))  # lr * sign, nothing else
