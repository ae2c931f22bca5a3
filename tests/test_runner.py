"""The experiment runner: presets as data, crash safety, refusal of mixed results, the lock, failed runs."""

import dataclasses
import json
from pathlib import Path

import pandas as pd
import torch
import pytest

import smf_lib.study.runner as R
from smf_lib import files, memory, selection, training
from smf_lib.study import evaluation, results
from smf_lib.study.cli import main
from smf_lib.study.records import is_report
from smf_lib.files import FolderLock, read_json
from smf_lib.study.arms import ARMS, ORDER, PALETTE
from smf_lib.study.paired_stats import mcnemar, paired_bootstrap
from smf_lib.study.presets import PRESETS, Preset, get_preset

SMOKE = ["run", "--preset", "smoke", "--no-progress"]


def test_presets_are_valid_data():
    for name in PRESETS:
        p = get_preset(name)
        for spec in R.plan(p):
            if ARMS[spec.method].train is not None:
                p.train_config(spec.method, spec.seed, spec.lr)  # every run's config validates
    with pytest.raises(ValueError, match="allowed: .*smoke"):
        get_preset("huge")
    with pytest.raises(ValueError, match="unknown method 'dora'"):
        Preset(name="x", model="tiny", methods=("dora",))
    with pytest.raises(ValueError, match="medmcqa_n must be an integer >= 1"):
        Preset(name="x", model="tiny", medmcqa_n=0)
    assert list(PALETTE) == list(ORDER) == list(ARMS)


def test_plan_runs_seeds_and_sweeps():
    p = get_preset("cpu-v1")
    names = [s.name for s in R.plan(p)]
    assert names[0] == "base" and names.count("base") == 1
    for m in p.multi_seed:
        assert {f"{m}-s0", f"{m}-s1"} <= set(names)
    assert "smf-kl-paper-s0" in names and "smf-kl-paper-s1" not in names
    sweeps = [s for s in R.plan(p) if s.lr is not None]
    assert {s.method for s in sweeps} == {"smf-kl", "lora", "full"}
    assert all(s.evaluation == "trajectory" for s in sweeps)
    assert R.plan(p)[-1].lr is not None  # swept rates after the grid


def test_sweep_first_runs_the_swept_rates_right_after_the_stages():
    p = get_preset("cpu-v2")
    specs = R.plan(p)
    names = [s.name for s in specs]
    assert names[:3] == ["base", "retrofit-s0", "retrofit-s1"]
    first_grid = next(i for i, s in enumerate(specs) if s.lr is None and s.method not in ("base", "retrofit"))
    assert all(s.lr is not None for s in specs[3:first_grid]) and all(s.lr is None for s in specs[first_grid:])
    assert {s.method for s in specs[3:first_grid]} == set(p.sweep)



def test_the_cpu_study_sweeps_every_same_start_arm_at_both_seeds_before_its_reported_runs():
    p = get_preset("cpu")
    specs = R.plan(p)
    swept = [s for s in specs if s.lr is not None]
    assert {s.method for s in swept} == {"smf-kl", "smf-tfidf", "lora-mem", "full-mem"}
    assert all(len(rates) >= 3 for rates in p.sweep.values()) and p.trajectory_points >= 8
    assert p.dev_subset["chat"] == p.chat_dev_n == 174  # every dev chat reply along every trajectory
    seeds = [s.seed for s in swept]
    assert seeds == sorted(seeds) and set(seeds) == {0, 1}  # all of seed 0's sweep first
    assert all(ARMS[m].memory == "additive" for m in p.sweep)  # every compared arm starts from the retrofit
    grid = [s for s in specs if s.lr is None and ARMS[s.method].train is not None]
    assert grid and all(p.rate_to_choose(s.method, s.seed) for s in grid)  # held back until the rates are chosen
    with pytest.raises(ValueError, match="sweep_seeds"):
        dataclasses.replace(p, sweep_seeds=(2,))

@pytest.fixture(scope="module")
def reference_grid(tmp_path_factory):
    """One uninterrupted smoke grid."""
    out = tmp_path_factory.mktemp("whole")
    assert main([*SMOKE, "--out", str(out)]) == 0
    return out


def _tables(out):
    return (out / "summary.csv").read_bytes(), (out / "trajectories.csv").read_bytes()


@pytest.mark.slow
def test_failure_before_any_write_then_rerun_gives_identical_results(reference_grid, tmp_path, monkeypatch):
    """Every write of the grid fails once (a crash or a full disk at that point, with a half-written temporary
    file left behind); each time the runner is started again. The final tables are bit-identical to an
    uninterrupted grid's, for every method (LoRA included)."""
    out = tmp_path / "grid"
    failed, counts = set(), {}
    real = files.atomic_write

    def flaky(path, data):
        rel = str(files.Path(path).resolve().relative_to(out.resolve()))
        counts[rel] = counts.get(rel, 0) + 1
        key = (rel, counts[rel])
        if key not in failed:
            failed.add(key)
            files.Path(path).parent.mkdir(parents=True, exist_ok=True)
            files.Path(path).with_name(f".{files.Path(path).name}.crash.tmp").write_bytes(b"half")
            raise OSError(28, "No space left on device (simulated)")
        return real(path, data)

    from smf_lib import adapter

    # every module that writes through atomic_write (write_json and write_checked in files call it there)
    for mod in (files, adapter, results):
        monkeypatch.setattr(mod, "atomic_write", flaky)
    writers = [m for m in (memory, selection, training, evaluation) if hasattr(m, "atomic_write")]
    assert not writers, f"patch these too: {writers}"
    attempts = 0
    while True:
        attempts += 1
        counts.clear()
        try:
            assert main([*SMOKE, "--out", str(out), "--debug"]) == 0  # --debug: the crash propagates, as a kill would
            break
        except OSError as err:
            assert "simulated" in str(err)
        assert attempts < 400
    assert attempts > 30  # many distinct write points were hit
    assert _tables(out) == _tables(reference_grid)
    names = sorted(p.name for p in (reference_grid / "runs").iterdir())
    assert sorted(p.name for p in (out / "runs").iterdir()) == names
    monkeypatch.undo()
    main([*SMOKE, "--out", str(out)])  # a last start finds everything done and drops killed writers' leftovers
    assert not list(out.rglob("*.tmp"))
    for name in ("smf-kl-s0", "lora-s0", "full-s0", "smf-kl-paper-s0"):
        a = json.loads((out / "runs" / f"{name}.json").read_text())
        b = json.loads((reference_grid / "runs" / f"{name}.json").read_text())
        assert a["items"] == b["items"] and a["trajectory"] == b["trajectory"]
        assert [e["loss"] for e in a["train_log"]] == [e["loss"] for e in b["train_log"]]


@pytest.mark.slow
def test_smoke_grid_tables(reference_grid):
    df = pd.read_csv(reference_grid / "summary.csv")
    assert list(df["method"]) == ["base", "retrofit", "smf-kl", "smf-tfidf", "smf-kl-paper", "lora", "full"]
    for col in ("medmcqa_acc", "acquisition_acc", "chat_drift_kl", "wikitext_drift_kl", "chat_loglik",
                "wikitext_ppl", "triviaqa_acc", "d_medmcqa_acc_lo", "d_chat_drift_kl_hi"):
        assert col in df.columns, col
    assert df.loc[df.method == "base", "chat_drift_kl"].item() == 0
    traj = pd.read_csv(reference_grid / "trajectories.csv")
    for m in ("smf-kl", "lora", "full"):
        steps = traj[traj.method == m]["step"].tolist()
        assert steps[0] == 0, steps
        assert len(steps) >= 3, steps
        assert steps == sorted(steps) and len(set(steps)) == len(steps), steps
    run = json.loads((reference_grid / "runs" / "smf-kl-s0.json").read_text())
    assert run["trajectory"][-1]["step"] == len(run["train_log"])
    for path in reference_grid.rglob("*.json"):
        json.loads(path.read_text(), parse_constant=pytest.fail)  # strict JSON: no NaN or Infinity
    assert not list(reference_grid.rglob("*.tmp"))


@pytest.mark.slow
def test_results_from_other_settings_are_refused(reference_grid, tmp_path, monkeypatch, capsys):
    import shutil

    out = tmp_path / "grid"
    shutil.copytree(reference_grid, out)
    smoke = get_preset("smoke")
    smoke.train = {**smoke.train, "top_t": 4}
    monkeypatch.setitem(PRESETS, "smoke", smoke)
    state = R.study_status(smoke, out, ["base", "smf-kl"]).set_index("run")["state"]
    assert state.to_dict() == {"base": "finished", "smf-kl-s0": "other settings"}
    with pytest.raises(R.Mismatch, match=r"smf-kl-s0\.json \(finished run\).*train_config.*--fresh"):
        main([*SMOKE, "--out", str(out), "--methods", "base", "smf-kl", "--debug"])
    before = (out / "runs" / "base.json").read_bytes()
    assert main([*SMOKE, "--out", str(out), "--methods", "base", "smf-kl", "--fresh"]) == 0
    assert (out / "runs" / "base.json").read_bytes() == before  # unchanged settings: kept
    run = json.loads((out / "runs" / "smf-kl-s0.json").read_text())
    assert run["train_config"]["top_t"] == 4


@pytest.mark.slow
def test_a_change_in_the_training_data_is_refused(reference_grid, tmp_path):
    """Same settings, other training questions (the first 20 instead of 24): the finished SMF run is refused."""
    import shutil

    out = tmp_path / "grid"
    shutil.copytree(reference_grid, out)
    with pytest.raises(R.Mismatch, match=r"smf-kl-s0\.json \(finished run\).*data"):
        main([*SMOKE, "--out", str(out), "--methods", "smf-kl", "--set", "train_n=20", "--debug"])


def test_status_reads_the_grid_from_its_files(reference_grid, tmp_path, capsys):
    import shutil

    out = tmp_path / "grid"
    shutil.copytree(reference_grid, out)
    planned = [s.name for s in R.plan(get_preset("smoke"))]
    (out / "runs" / "lora-s0.json").unlink()  # one run killed while training: its artifacts folder remains
    (out / "artifacts" / "lora-s0").mkdir(exist_ok=True)
    (out / "runs" / "full-s0.json").unlink()
    shutil.rmtree(out / "artifacts" / "full-s0", ignore_errors=True)
    (out / "failed").mkdir(exist_ok=True)
    (out / "failed" / "full-s0.json").write_text("{}")
    table = R.study_status(get_preset("smoke"), out)
    assert table["run"].tolist() == planned
    state = table.set_index("run")["state"]
    assert state["lora-s0"] == "started" and state["full-s0"] == "failed" and state["base"] == "finished"
    assert (state == "finished").sum() == len(planned) - 2
    assert table.set_index("run")["minutes"]["base"] > 0
    assert main(["status", "--preset", "smoke", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{len(planned) - 2} of {len(planned)} runs finished" in printed
    assert "lora-s0 (started), full-s0 (failed)" in " ".join(printed.split()) and "resumes the rest" in printed
    # the retrofit records its memory's spread before and after, and status says it in words
    spread = read_json(out / "runs" / "retrofit-s0.json")["retrofit"]["spread"]
    assert set(spread["before"]["layers"]) == set(spread["after"]["layers"]) == {"1", "2"}
    assert 0 < spread["after"]["layers"]["1"]["footprint"] <= 1
    along = read_json(out / "runs" / "retrofit-s0.json")["retrofit"]["heldout_oasst1"]["along"]
    assert len(along) >= 2 and all(p["spread"]["min_effective_rows"] > 0 for p in along)  # and along the way
    background = read_json(out / "artifacts" / "retrofit-additive-s0" / "background_meta.json")["spread"]
    assert set(background) == {"1", "2"} and 0 < background["1"]["usage"] <= 1  # and the background statistics'
    assert "effective rows, top 5% take" in printed and "a question reads" in printed


def test_a_second_runner_on_the_same_folder_is_refused(tmp_path):
    with FolderLock(tmp_path):
        with pytest.raises(RuntimeError, match="in use by process .*another --out"):
            R.Runner(get_preset("smoke"), tmp_path, progress=False).run(["base"])
    with FolderLock(tmp_path):  # released: taken again
        pass


@pytest.mark.slow
def test_a_diverging_run_writes_no_metrics_and_the_grid_goes_on(tmp_path, monkeypatch, capsys):
    real = training.train

    def diverging(model, tok, texts, cfg, **kw):
        if cfg.method == "lora":
            raise training.TrainingDiverged("the training loss is nan at step 2 of 3")
        return real(model, tok, texts, cfg, **kw)

    monkeypatch.setattr(R, "train", diverging)
    out = tmp_path / "grid"
    assert main([*SMOKE, "--out", str(out), "--methods", "base", "lora", "full"]) == 1
    assert "step 2 of 3" in capsys.readouterr().err
    assert not (out / "runs" / "lora-s0.json").exists() and (out / "failed" / "lora-s0.json").exists()
    assert (out / "runs" / "full-s0.json").exists()
    assert "lora" not in pd.read_csv(out / "summary.csv")["method"].tolist()


def test_damaged_run_file_names_itself(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "base.json").write_text('{"method": "ba')
    with pytest.raises(ValueError, match=r"base\.json:1: not valid JSON.*delete it"):
        results.load_runs(tmp_path)


def test_paired_bootstrap_and_mcnemar():
    base = {"medmcqa_correct": [0, 1, 0, 1, 0, 0, 1, 0]}
    other = {"medmcqa_correct": [1, 1, 1, 1, 0, 1, 1, 0]}
    ci = paired_bootstrap(base, other, "medmcqa_acc", n_boot=500)
    assert ci["delta"] == pytest.approx(3 / 8) and ci["lo"] <= ci["delta"] <= ci["hi"] and ci["lo"] >= 0
    assert mcnemar(base["medmcqa_correct"], other["medmcqa_correct"]) == {"gained": 3, "lost": 0, "p": 0.25}
    with pytest.raises(ValueError, match="different items"):
        paired_bootstrap(base, {"medmcqa_correct": [1, 0]}, "medmcqa_acc")
    with pytest.raises(ValueError, match="different items"):
        mcnemar(base["medmcqa_correct"], [1, 0])


@pytest.mark.slow
def test_claims_paths_and_frontier_from_the_smoke_grid(reference_grid):
    import matplotlib

    matplotlib.use("Agg")
    from smf_lib.views.plotting import plot_frontier, plot_paths

    runs = results.load_runs(reference_grid)
    claims = results.claims_table(runs)
    assert len(claims) == 9 and set(claims["verdict"]) <= {"agrees", "disagrees", "cannot tell"}
    assert claims["measured"].str.contains(r"\[").all()
    traj = pd.read_csv(reference_grid / "trajectories.csv")
    assert len(plot_paths(traj).get_lines()) >= 3 and len(plot_frontier(traj).get_lines()) >= 3
    assert results.claims_table([r for r in runs if r["method"] == "base"])["measured"].eq("not run yet").all()


def test_delta_table_rounds_to_what_the_interval_supports():
    summary = pd.DataFrame([
        {"method": "base", "seed": "", "lr": ""},
        {"method": "full", "seed": 0, "lr": 5e-5, "d_medmcqa_acc": 0.0312, "d_medmcqa_acc_lo": -0.0215,
         "d_medmcqa_acc_hi": 0.0871, "d_wikitext_ppl": -0.5614, "d_wikitext_ppl_lo": -0.7321,
         "d_wikitext_ppl_hi": -0.4102},
        {"method": "lora", "seed": 1, "lr": 2e-4, "d_medmcqa_acc": 0.01, "d_medmcqa_acc_lo": -0.05,
         "d_medmcqa_acc_hi": 0.07},
    ])
    table = results.delta_table(summary, ("medmcqa_acc", "wikitext_ppl", "chat_loglik")).set_index("method")
    assert "base" not in table.index and "chat loglik" not in table
    assert table.loc["full", "medmcqa acc"] == "+3 [-2, +9]"  # points; an interval 11 points wide: no decimals
    assert table.loc["full", "wikitext ppl"] == "-0.56 [-0.73, -0.41]"
    assert table.loc["full", "lr"] == "5e-05" and table.loc["lora", "seed"] == 1
    assert str(results.delta_table(summary.astype({"seed": object}).replace({"seed": {1: 1.0}}))
               .set_index("method").loc["lora", "seed"]) == "1"  # a seed read back from CSV as 1.0
    assert pd.isna(table.loc["lora", "wikitext ppl"])
    only_base = summary[summary["method"] == "base"]  # a grid that has finished only its base run so far
    for empty in (results.delta_table(only_base), results.verdicts(only_base)):
        assert len(empty) == 0 and {"method", "seed", "lr"} <= set(empty.columns)
    assert list(results.trajectory_table([]).columns) == ["method", "seed", "lr", "step", "steps"]


def test_verdicts_read_the_direction_of_each_metric():
    summary = pd.DataFrame([
        {"method": "base", "seed": "", "lr": ""},
        {"method": "full", "seed": 0, "lr": 1e-3,
         "d_wikitext_ppl": 0.8, "d_wikitext_ppl_lo": 0.3, "d_wikitext_ppl_hi": 1.2,      # up: worse
         "d_chat_loglik": 0.05, "d_chat_loglik_lo": 0.01, "d_chat_loglik_hi": 0.09,      # up: better
         "d_medmcqa_acc": 0.01, "d_medmcqa_acc_lo": -0.02, "d_medmcqa_acc_hi": 0.04},   # crosses zero
    ])
    row = results.verdicts(summary).iloc[0]
    assert (row["lr"], row["wikitext_ppl"], row["chat_loglik"], row["medmcqa_acc"]) == (
        "0.001", "worse", "better", "no clear change")
    assert "triviaqa_acc" not in row or pd.isna(row["triviaqa_acc"])


def test_the_gain_claim_is_judged_on_its_size():
    def verdict(gained):  # a tuned run that gets `gained` more of 100 questions right than base
        base = {"method": "base", "seed": 0, "items": {"medmcqa_correct": [0] * 100}}
        run = {"method": "smf-kl", "seed": 0, "items": {"medmcqa_correct": [1] * gained + [0] * (100 - gained)}}
        return results.claims_table([base, run]).iloc[0]["verdict"]

    assert verdict(0) == "disagrees"  # no change at all: the interval [0, 0] lies below half of +2.5 points
    assert verdict(2) == "cannot tell"  # +2 points with an interval from about 0 to about +5
    assert verdict(10) == "agrees"  # +10 points, the interval well above 0


def test_the_keep_claims_count_a_gain_as_kept_and_only_a_clear_loss_against_them():
    def verdict(right):  # SMF answers `right` of 100 TriviaQA questions, base 50
        base = {"method": "base", "seed": 0, "items": {"triviaqa_correct": [1] * 50 + [0] * 50}}
        run = {"method": "smf-kl", "seed": 0, "items": {"triviaqa_correct": [1] * right + [0] * (100 - right)}}
        table = results.claims_table([base, run])
        return table[table["claim"].str.contains("TriviaQA accuracy within")].iloc[0]["verdict"]

    assert verdict(60) == "agrees"  # +10 points: nothing was forgotten
    assert verdict(40) == "disagrees"  # -10 points, the whole interval below -1
    assert verdict(49) == "cannot tell"  # -1 point with an interval reaching well below -1


def test_mcnemar_lines_say_the_direction_in_words():
    from smf_lib.study.paired_stats import mcnemar, mcnemar_words

    worse = mcnemar([1] * 100 + [0] * 100, [0] * 100 + [1] * 60 + [0] * 40)
    assert (worse["gained"], worse["lost"]) == (60, 100)
    line = mcnemar_words(worse, "smf-kl (seed 0)", "the retrofit model")
    assert "60 answers newly right and 100 newly wrong" in line and line.endswith(f"worse at p = {worse['p']:.2g}")
    same = mcnemar([1, 0, 1, 0], [0, 1, 1, 0])
    assert "no difference" in mcnemar_words(same, "lora (seed 0)", "the base model")

def test_claims_compare_the_runs_of_one_seed():
    base = {"method": "base", "seed": 0, "items": {"medmcqa_correct": [0] * 100}}
    runs = [base] + [{"method": m, "seed": s, "items": {"medmcqa_correct": [1] * k + [0] * (100 - k)}}
                     for m, s, k in (("smf-kl", 1, 10), ("smf-kl", 0, 0), ("lora", 1, 30))]
    first, second = results.claims_table(runs), results.claims_table(runs, seed=1)
    assert first.iloc[0]["verdict"] == "disagrees" and second.iloc[0]["verdict"] == "agrees"
    lora = "lora gains more on MedMCQA than smf-kl"
    measured = {seed: results.claims_table(runs, seed=seed).set_index("claim").loc[lora, "measured"]
                for seed in (None, 0, 1)}
    assert measured[None].startswith("+30.00 [")  # each method's lowest seed
    assert measured[0] == "not run yet"  # lora has no seed 0
    assert measured[1].startswith("+20.00 [")
    assert second.set_index("claim").loc[lora, "compared"] == "lora - smf-kl, accuracy (points)"
    assert results.claims_table(runs, seed=2)["measured"].eq("not run yet").all()
    same = {**runs[-1], "method": "lora-mem", "items": {"triviaqa_correct": [1] * 40 + [0] * 60}}
    retro = {"method": "retrofit", "seed": 1, "items": {"triviaqa_correct": [1] * 40 + [0] * 60}}
    views = results.claims_table([*runs, same, retro], seed=1, baselines=("lora-mem", "lora")).set_index("claim")
    assert views.loc["lora-mem gains more on MedMCQA than smf-kl", "view"] == "same start"
    assert views.loc[lora, "view"] == "from base (paper's view)" and views.iloc[0]["view"] == "SMF against base"
    trivia = views.loc["lora-mem lowers TriviaQA accuracy clearly"]  # from its retrofit (base has no such items)
    assert trivia["compared"] == "lora-mem - retrofit, accuracy (points)" and trivia["measured"].startswith("+0.00")


def test_frontier_table_names_the_points_that_dominate():
    def end(method, lr, seed, gain, drift):
        return {"method": method, "lr": lr, "seed": seed, "step": 75, "steps": 75,
                "d_medmcqa_gold_loglik": gain, "d_medmcqa_gold_loglik_lo": gain - 0.05,
                "d_medmcqa_gold_loglik_hi": gain + 0.05, "d_chat_drift_kl": drift,
                "d_chat_drift_kl_lo": drift * 0.9, "d_chat_drift_kl_hi": drift * 1.1}
    traj = pd.DataFrame([end("smf-kl", 5e-2, 0, 0.5, 0.008), end("lora", 5e-5, 0, 0.65, 0.0078),
                         end("lora", 2e-4, 0, 0.70, 0.07), end("lora", 2e-4, 1, 0.72, 0.06),
                         end("full", 2e-4, 0, 0.74, 0.14),
                         {**end("full", 2e-4, 0, 0.0, 0.0), "step": 0}])  # a start point: not an end
    table = results.frontier_table(traj).set_index(["method", "lr"])
    assert table.loc[("smf-kl", 5e-2), "dominated by"] == "lora 5e-05"  # learned less and drifted more
    assert table.loc[("lora", 2e-4), "seeds"] == 2
    assert table.loc[("lora", 2e-4), "d_medmcqa_gold_loglik"] == pytest.approx(0.71)
    assert table.loc[("lora", 2e-4), "d_chat_drift_kl_lo"] == pytest.approx(0.054)  # the union of the seeds'
    assert table.loc[("lora", 2e-4), "d_chat_drift_kl_hi"] == pytest.approx(0.077)  # intervals
    assert table.loc[("full", 2e-4), "dominated by"] == ""  # the most learning: nothing dominates it
    assert table.loc[("lora", 5e-5), "dominated by"] == ""
    assert list(table.index.get_level_values("method")) == ["smf-kl", "lora", "lora", "full"]
    assert results.frontier_table(pd.DataFrame()).empty
    compact = results.frontier_table(traj, cells=True).set_index(["method", "lr"])
    assert compact.loc[("smf-kl", "0.05"), "medmcqa gold loglik"] == "+0.50 [+0.45, +0.55]"
    assert compact.loc[("smf-kl", "0.05"), "chat drift kl"] == "+0.0080 [+0.0072, +0.0088]"


@pytest.mark.slow
def test_the_snapshot_command_writes_what_chapter_4_reads(reference_grid, tmp_path):
    """``python -m smf_lib snapshot`` reuses the grid's retrofit stage and writes the read counts of the first task
    batches; a second call keeps the file; the book's loader reads it back."""
    import shutil

    from smf_lib.views.plotting import load_snapshot
    from smf_lib.views.snapshot import SNAPSHOT_COMMAND

    out = tmp_path / "grid"
    shutil.copytree(reference_grid, out)
    snap = ["snapshot", "--preset", "smoke", "--out", str(out), "--no-progress"]
    assert main(snap, commands=[SNAPSHOT_COMMAND]) == 0
    path = out / "selection_counts.json"
    first = path.read_bytes()
    counts, stats, meta = load_snapshot(path)
    smoke = get_preset("smoke")
    cfg = smoke.train_config("smf-kl", 0)
    assert meta["batch_texts"] == min(4 * cfg.micro_batch * cfg.grad_accum, smoke.train_n)
    assert len(counts) == len(meta["layers"]) and stats.df.shape[1] == meta["n_slots"]
    assert all(int(c.sum()) > 0 for c in counts)
    assert main(snap, commands=[SNAPSHOT_COMMAND]) == 0
    assert path.read_bytes() == first
    # the running example's reads: kept with the snapshot, added to one stored without them
    from smf_lib.views.notebook import RUNNING_EXAMPLE
    from smf_lib.views.plotting import example_selection

    assert meta["example"]["item"] == RUNNING_EXAMPLE
    example = [torch.tensor(c) for c in meta["example"]["counts"]]
    assert len(example) == len(counts) and all(int(c.sum()) > 0 for c in example)
    without = {k: v for k, v in json.loads(first).items() if k != "example"}
    path.write_text(json.dumps(without))
    assert main(snap, commands=[SNAPSHOT_COMMAND]) == 0
    again = json.loads(path.read_text())
    assert again["example"] == meta["example"] and {k: again[k] for k in without} == without
    picks = example_selection(example, counts, stats, 4, layers=meta["layers"])
    assert (picks["KL picks"] <= picks["rows read"]).all() and (picks["picked by both"] <= picks["KL picks"]).all()
    assert picks["KL share of its reads"].between(0, 1).all() and (picks["in KL's batch picks"] <= 4).all()


@pytest.mark.parametrize("name", ["cpu-v1", "cpu-v2", "cpu"])
def test_committed_records_keep_their_training_identity(name):
    """Every committed run record of a study still matches its preset's training config as the code builds it
    today (the flat ``TrainConfig.record()``, LoRA's settings included), so no finished run is refused or redone."""
    from pathlib import Path

    from smf_lib.study.plan import _same_training as same_training  # the runner's own check, tested directly
    from smf_lib.study.records import read_run

    out = Path(__file__).resolve().parents[1] / "results" / name / "runs"
    if not (out.parent.parent / "cpu-v1").exists():
        pytest.skip("no results/ beside the tests (a copy of the package alone)")
    specs = [s for s in R.plan(get_preset(name)) if (out / f"{s.name}.json").exists()]
    assert specs or name == "cpu", f"no committed records in {out}"
    for spec in specs:
        identity = read_run(out / f"{spec.name}.json")["identity"]
        assert same_training(identity, get_preset(name), spec), spec.name
    trained = [s for s in specs if ARMS[s.method].train is not None]
    if name in ("cpu-v1", "cpu-v2"):
        assert any(s.method == "lora" for s in trained)  # LoRA's settings are among those compared


def test_table_helpers_round_as_they_say():
    from smf_lib.study.tables import interval_cell, markdown_table, rate_label, seed_label, significant

    assert interval_cell(0.01234, 0.004, 0.021) == "+0.012 [+0.004, +0.021]"  # width 0.017: 3 decimals
    assert interval_cell(1.5, -2.0, 5.0) == "+1.5 [-2.0, +5.0]"  # width 7: 1 decimal
    assert interval_cell(15.0, -20.0, 50.0) == "+15 [-20, +50]"
    assert interval_cell(0.5, 0.25, 0.75, digits=1) == "+0.5 [+0.2, +0.8]"
    assert significant(0.0000369) == "3.69e-05" and significant(21.6317) == "21.6" and significant(0) == "0"
    assert significant(float("nan")) == "" and significant(1234.5) == "1,234"
    assert seed_label(1.0) == 1 and seed_label(float("nan")) == "" and rate_label(5e-5) == "5e-05"
    table = markdown_table(pd.DataFrame({"a": [1, 2], "b": ["x|y", "z"]}, index=[7, 8]))
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | x\\|y |", "| 2 | z |"]


def test_check_refuses_a_different_identity_or_redoes_it_with_fresh(tmp_path):
    """The identity check itself (fast): equal identities pass; a different one is refused naming the keys that
    differ and the remedy, or, with ``fresh``, reported as not done so the stage is recomputed."""
    from types import SimpleNamespace

    stored = {"lr": 0.001, "seed": 0, "data": {"n": 3}}
    assert R.Runner.check(SimpleNamespace(fresh=False), tmp_path, stored, dict(stored), "run")
    with pytest.raises(R.Mismatch, match=r"differs in \['lr'\].*--fresh"):
        R.Runner.check(SimpleNamespace(fresh=False), tmp_path, stored, {**stored, "lr": 0.002}, "run")
    assert R.Runner.check(SimpleNamespace(fresh=True), tmp_path, stored, {**stored, "lr": 0.002}, "run") is False
    assert R.Runner.check(SimpleNamespace(fresh=True), tmp_path, stored, {"lr": 0.001, "seed": 0, "data": {"n": 3}},
                          "run") is True


@pytest.mark.slow
def test_a_run_finished_in_another_folder_is_reused_not_repeated(reference_grid, tmp_path, capsys):
    """``--reuse DIR``: every run of the grid is finished in DIR with the same identity, so each is copied (noting
    its source) and nothing trains; the tables are the same. A run whose identity differs is not taken."""
    out = tmp_path / "again"
    assert main([*SMOKE, "--out", str(out), "--reuse", str(reference_grid)]) == 0
    said = capsys.readouterr().out
    names = sorted(p.name for p in (reference_grid / "runs").iterdir())
    assert sorted(p.name for p in (out / "runs").iterdir()) == names
    assert said.count("reused, not repeated") == len(names) and "texts, lr" not in said  # nothing trained
    rec = json.loads((out / "runs" / "smf-kl-s0.json").read_text())
    assert rec["reused_from"].endswith("smf-kl-s0.json")
    assert _tables(out)[0] == _tables(reference_grid)[0]
    other = tmp_path / "other"
    assert main([*SMOKE, "--out", str(other), "--methods", "base", "lora", "--lr", "lora=3e-3",
                 "--reuse", str(reference_grid)]) == 0
    assert "lora-s0: the same run" not in capsys.readouterr().out  # another rate: another run, trained anew


@pytest.mark.slow
def test_a_sweep_run_is_derived_from_a_full_run_of_the_same_training(reference_grid, tmp_path, capsys):
    """A swept (trajectory) run whose training equals a reported run's is the last point of that run's
    trajectory: reused from it, it matches the same sweep run computed anew, item by item."""
    sweep = ["--methods", "base", "lora", "--set", 'sweep={"lora": [0.001]}']
    assert get_preset("smoke").lr["lora"] == 1e-3  # the grid's LoRA rate: the swept run trains exactly as lora-s0
    derived, computed = tmp_path / "derived", tmp_path / "computed"
    assert main([*SMOKE, "--out", str(derived), *sweep, "--reuse", str(reference_grid)]) == 0
    assert "lora-lr0.001-s0: the same run is finished" in capsys.readouterr().out
    assert main([*SMOKE, "--out", str(computed), *sweep]) == 0
    a = json.loads((derived / "runs" / "lora-lr0.001-s0.json").read_text())
    b = json.loads((computed / "runs" / "lora-lr0.001-s0.json").read_text())
    assert a["reused_from"].endswith("lora-s0.json") and a["evaluation"] == b["evaluation"] == "trajectory"
    assert a["identity"] == b["identity"] and a["metrics"] == b["metrics"] and a["items"] == b["items"]
    assert a["trajectory"] == b["trajectory"] and a["flags"] == b["flags"]


@pytest.mark.slow
def test_a_reported_run_loads_the_memory_its_swept_run_trained(reference_grid, tmp_path, capsys):
    """With the sweep first, a swept SMF-KL run at the grid's own rate trains the memory; the grid's reported run of
    the same training loads it instead of training again, and its record matches the uninterrupted grid's run
    (which trained it), item by item."""
    out = tmp_path / "once"
    rate = get_preset("smoke").lr["smf-adam"]
    assert main([*SMOKE, "--out", str(out), "--methods", "base", "retrofit", "smf-kl",
                 "--set", f'sweep={{"smf-kl": [{rate}]}}', "sweep_first=true"]) == 0
    said = capsys.readouterr().out
    swept = f"smf-kl-lr{rate:g}-s0"
    assert said.count("texts, lr") == 1  # one training only: the swept run's
    assert f"smf-kl-s0: trained already by {swept}" in said
    a = json.loads((out / "runs" / "smf-kl-s0.json").read_text())
    b = json.loads((reference_grid / "runs" / "smf-kl-s0.json").read_text())
    assert a["trained_by"].endswith(f"{swept}.json") and "trained_by" not in b
    assert a["identity"] == b["identity"] and [e["loss"] for e in a["train_log"]] == [e["loss"] for e in b["train_log"]]
    assert a["metrics"] == b["metrics"] and a["items"] == b["items"]
    assert (out / "artifacts" / "smf-kl-s0" / "adapter" / "memory_config.json").exists()
    # a memory whose folder another run wrote (its identity differs from the record's) is not taken: it trains anew
    started = out / "artifacts" / swept / "identity.json"
    started.write_text(json.dumps({**json.loads(started.read_text()), "seed": 7}))
    (out / "runs" / "smf-kl-s0.json").unlink()
    assert main([*SMOKE, "--out", str(out), "--methods", "base", "retrofit", "smf-kl",
                 "--set", f'sweep={{"smf-kl": [{rate}]}}', "sweep_first=true"]) == 0
    said = capsys.readouterr().out
    assert "smf-kl-s0: 24 texts, lr" in said and "trained already" not in said


@pytest.mark.slow
def test_a_reported_lora_run_resumes_after_its_swept_runs_last_checkpoint(reference_grid, tmp_path, capsys):
    """With the sweep first, a swept LoRA run at the grid's own rate keeps its last checkpoint; the grid's reported
    run of the same training resumes after it (trains no step), and its record matches the uninterrupted grid's
    run, item by item, counting its evaluation only. A kept checkpoint of another training is not taken."""
    out = tmp_path / "once"
    rate = get_preset("smoke").lr["lora"]
    sweep = ["--methods", "base", "lora", "--set", f'sweep={{"lora": [{rate}]}}', "sweep_first=true"]
    assert main([*SMOKE, "--out", str(out), *sweep]) == 0
    said = capsys.readouterr().out
    swept = f"lora-lr{rate:g}-s0"
    assert f"lora-s0: trained already by {swept}" in said and "its last checkpoint is resumed" in said
    kept = out / "artifacts" / swept / "trained" / "checkpoint.pt"
    assert kept.exists() and not (out / "artifacts" / "lora-s0" / "ckpt").exists()  # the reported run's link went
    a = json.loads((out / "runs" / "lora-s0.json").read_text())
    b = json.loads((reference_grid / "runs" / "lora-s0.json").read_text())
    assert a["trained_by"].endswith(f"{swept}.json") and "trained_by" not in b and "resumed" not in a
    assert a["identity"] == b["identity"] and [e["loss"] for e in a["train_log"]] == [e["loss"] for e in b["train_log"]]
    assert [t["metrics"] for t in a["trajectory"]] == [t["metrics"] for t in b["trajectory"]]
    assert a["metrics"] == b["metrics"] and a["items"] == b["items"]
    swept_rec = json.loads((out / "runs" / f"{swept}.json").read_text())
    assert a["wall_seconds"] < swept_rec["wall_seconds"] + b["wall_seconds"]  # the swept training is not counted
    # a checkpoint kept by a folder another run wrote (its identity differs from the record's) is not taken
    started = out / "artifacts" / swept / "identity.json"
    started.write_text(json.dumps({**json.loads(started.read_text()), "seed": 7}))
    (out / "runs" / "lora-s0.json").unlink()
    assert main([*SMOKE, "--out", str(out), *sweep]) == 0
    assert "lora-s0: trained already" not in capsys.readouterr().out


def _as_older_versions_wrote_it(folder):
    """Rewrite a results folder with the names earlier versions used: evaluation kinds ``full``/``cheap``, the dev
    subset's sizes as ``cheap`` in identities and markers, an untrained model's dev scores as ``cheap``."""
    old_kind = {"report": "full", "trajectory": "cheap"}

    def old_identity(ident):
        out = {("cheap" if k == "dev_subset" else k): v for k, v in ident.items()}
        if "evaluation" in out:
            out["evaluation"] = old_kind[out["evaluation"]]
        return out

    for path in (folder / "runs").glob("*.json"):
        rec = json.loads(path.read_text())
        rec = {{"dev_items": "cheap", "dev_metrics": "cheap_metrics"}.get(k, k): v for k, v in rec.items()}
        rec["evaluation"], rec["identity"] = old_kind[rec["evaluation"]], old_identity(rec["identity"])
        path.write_text(json.dumps(rec))
    for path in [*(folder / "artifacts").glob("*/identity.json"), folder / "artifacts" / "reference" / "complete.json"]:
        path.write_text(json.dumps(old_identity(json.loads(path.read_text()))))


@pytest.mark.slow
def test_records_written_with_older_names_are_read_as_todays(reference_grid, tmp_path, capsys):
    """A results folder written with the names of earlier versions ("full"/"cheap") is finished as it is: every
    run is recognised as done (nothing trains or is scored again) and the tables are the same bytes."""
    import shutil

    out = tmp_path / "older"
    shutil.copytree(reference_grid, out)
    _as_older_versions_wrote_it(out)
    assert json.loads((out / "runs" / "base.json").read_text())["evaluation"] == "full"  # the rewrite took
    (out / "summary.csv").unlink()
    assert main([*SMOKE, "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert said.count("done already") == len(list((out / "runs").iterdir())) and "texts, lr" not in said
    assert "drift reference" not in said and _tables(out) == _tables(reference_grid)
    runs = results.load_runs(out)
    assert {r["evaluation"] for r in runs} <= {"report", "trajectory"} and all("cheap" not in r for r in runs)
    assert any(r.get("dev_items") for r in runs if r["method"] == "base")


def test_evaluation_kinds_and_their_older_names():
    from smf_lib.study.records import evaluation_kind, upgrade_identity, upgrade_record

    assert evaluation_kind("full") == evaluation_kind("report") == "report"
    assert evaluation_kind("cheap") == "trajectory"
    with pytest.raises(ValueError, match="allowed: report, trajectory"):
        evaluation_kind("quick")
    rec = upgrade_record({"evaluation": "cheap", "cheap": {"x": [1]}, "identity": {"cheap": {"chat": 2}, "seed": 0,
                                                                                  "evaluation": "cheap"}})
    assert rec == {"evaluation": "trajectory", "dev_items": {"x": [1]},
                   "identity": {"dev_subset": {"chat": 2}, "seed": 0, "evaluation": "trajectory"}}
    assert upgrade_identity(None) is None and is_report({}) and is_report({"evaluation": "full"})
    assert not is_report({"evaluation": "cheap"}) and not is_report({"evaluation": "trajectory"})


def test_a_swept_run_that_a_grid_run_repeats_counts_once():
    """The same training, once swept (trajectory) and once in the grid (report), is one point, not two seeds."""
    from smf_lib.study.records import without_repeats

    point = {"step": 2, "metrics": {"medmcqa_gold_margin": 0.1}, "items": {}}
    ident = {"method": "smf-kl", "seed": 0, "train_config": {"lr": 0.03}}
    grid = {"method": "smf-kl", "seed": 0, "evaluation": "report", "identity": {**ident, "evaluation": "report"},
            "train_config": {"lr": 0.03}, "trajectory": [point], "train_log": [{}, {}]}
    swept = {**grid, "evaluation": "cheap", "identity": {**ident, "evaluation": "cheap", "split": "dev"}}
    other = {**swept, "identity": {**swept["identity"], "train_config": {"lr": 0.01}}, "train_config": {"lr": 0.01}}
    assert without_repeats([swept, grid, other]) == [grid, other]
    table = results.trajectory_table([swept, grid, other])
    assert len(table) == 2 and sorted(table["lr"]) == [0.01, 0.03]


def test_a_grid_rate_still_to_choose_skips_its_runs_until_it_is_set(tmp_path, capsys):
    """A rate key in ``rates_to_choose`` holds back the grid's runs at that rate (and only those), says so in the
    log and the status, and ``--lr KEY=RATE`` releases them."""
    out = str(tmp_path / "grid")
    waiting = [*SMOKE, "--methods", "base", "lora", "smf-kl", "--out", out, "--set", 'rates_to_choose=["smf-adam"]']
    assert main(waiting) == 0
    runs = {p.stem for p in (tmp_path / "grid" / "runs").glob("*.json")}
    assert runs == {"base", "lora-s0"}
    assert "smf-kl-s0: waits: the 'smf-adam' rate is chosen from the sweep's dev results" in capsys.readouterr().out
    p = PRESETS["smoke"]
    table = R.study_status(Preset(**{**vars(p), "rates_to_choose": ("smf-adam",)}), out, ["base", "lora", "smf-kl"])
    assert dict(zip(table["run"], table["state"]))["smf-kl-s0"] == "rate to choose"
    assert main([*waiting, "--lr", "smf-adam=0.01"]) == 0
    assert (tmp_path / "grid" / "runs" / "smf-kl-s0.json").exists()
    with pytest.raises(ValueError, match="rates_to_choose"):
        Preset(**{**vars(p), "rates_to_choose": ("smf-fast",)})


@pytest.mark.slow
def test_a_grid_rate_to_choose_is_chosen_on_the_sweep_and_its_runs_follow_in_the_same_call(tmp_path, capsys,
                                                                                          monkeypatch):
    """A swept arm whose rate is to be chosen: once its swept runs are in, the runner chooses the rate on their dev
    results (adding rates if the rule asks), keeps the choice in the results folder and runs the grid's run at it;
    the status reads the same choice. (The tiny model's dev learning is below 0 at every rate, where the choice
    refuses: it is read 1 nat higher here.)"""
    from smf_lib.study import frontier
    from smf_lib.study.frontier import read_choice

    out = tmp_path / "grid"
    args = [*SMOKE, "--methods", "base", "lora", "--out", str(out), "--set", 'sweep={"lora": [0.001, 0.01]}',
            "sweep_first=true", 'rates_to_choose=["lora"]']
    assert main(args) == 1 and "not above 0" in capsys.readouterr().err  # nothing learned: no level to compare at
    learned = frontier.final_learning
    monkeypatch.setattr(frontier, "final_learning", lambda *a, **k: learned(*a, **k).assign(
        learning=lambda d: d["learning"] + 1.0))
    assert main(args) == 0
    said = capsys.readouterr().out
    kept = read_choice(out)
    rec = json.loads((out / "runs" / "lora-s0.json").read_text())
    assert "lora-s0: waits" in said and "reported rates: lora" in said
    assert rec["train_config"]["lr"] == kept["rates"]["lora"] and rec["evaluation"] == "report"
    assert kept["level"] is not None and list(kept["records"])[:2] == ["lora-lr0.001-s0", "lora-lr0.01-s0"]
    assert main([*args]) == 0 and "texts, lr" not in capsys.readouterr().out  # resumed: nothing left to train


def test_changes_are_read_from_the_model_each_run_started_from(reference_grid):
    """SMF runs are compared with the retrofit of their seed (so the retrofit's change is not theirs), LoRA and full
    finetuning with the base model; along training, every point with the run's own first point."""
    import matplotlib

    matplotlib.use("Agg")
    from smf_lib.study.findings import findings_cpu
    from smf_lib.views.plotting import plot_answer

    runs = results.load_runs(reference_grid)
    net = results.net_table(runs).set_index("method")
    assert net.loc["smf-kl", "start"] == "retrofit" and net.loc["lora", "start"] == "base"
    assert net.loc["retrofit", "start"] == "base" and "base" not in net.index
    by = {r["method"]: r for r in runs if is_report(r)}
    expected = paired_bootstrap(by["retrofit"]["items"], by["smf-kl"]["items"], "chat_loglik")["delta"]
    assert net.loc["smf-kl", "d_chat_loglik"] == pytest.approx(expected)
    from_base = paired_bootstrap(by["base"]["items"], by["smf-kl"]["items"], "chat_loglik")["delta"]
    assert net.loc["smf-kl", "d_chat_loglik"] != pytest.approx(from_base)  # the retrofit's own change is left out
    traj = results.trajectory_table(runs, against="start")
    assert (traj.loc[traj["step"] == 0, "d_medmcqa_gold_margin"] == 0).all()
    points = by["smf-kl"]["trajectory"]
    end = traj[(traj["method"] == "smf-kl") & (traj["step"] == traj["steps"])].iloc[0]
    assert end["d_chat_loglik"] == pytest.approx(
        paired_bootstrap({"items": points[0]["items"]}["items"], points[-1]["items"], "chat_loglik")["delta"])
    with pytest.raises(ValueError, match="against"):
        results.trajectory_table(runs, against="retrofit")
    sentences = findings_cpu(runs, planned=7, first_share=0.003)
    assert len(sentences) >= 3 and all(any(c.isdigit() for c in s) for s in sentences)
    ax = plot_answer(traj[traj["step"] == traj["steps"]])
    assert len(ax.get_legend().get_texts()) == traj["method"].nunique()
    summary = pd.read_csv(reference_grid / "summary.csv")
    res = results.resolution_table(summary, runs).set_index("metric")
    assert res.loc["held-out chat log-lik", "items"] == len(by["base"]["items"]["chat_loglik"])
    assert (res["half-width"] >= 0).all()


def test_matched_learning_picks_the_closest_rate_and_says_whether_intervals_overlap():
    def end(method, lr, gain, half):
        return {"method": method, "lr": lr, "seed": 0, "step": 75, "steps": 75, "d_medmcqa_gold_margin": gain,
                "d_medmcqa_gold_margin_lo": gain - half, "d_medmcqa_gold_margin_hi": gain + half}
    traj = pd.DataFrame([end("smf-kl", 3e-3, 0.06, 0.02), end("smf-kl", 1e-2, 0.10, 0.03),
                         end("smf-kl", 3e-2, 0.15, 0.03), end("lora", 5e-5, 0.20, 0.04),
                         end("full", 5e-5, 0.40, 0.05), {**end("lora", 5e-5, 0.0, 0.0), "step": 0}])
    m = results.matched_learning(traj).set_index("baseline")
    assert m.loc["lora", "smf lr"] == 3e-2 and bool(m.loc["lora", "matched"])  # 0.15 +- 0.03 meets 0.20 +- 0.04
    assert m.loc["full", "smf lr"] == 3e-2 and not m.loc["full", "matched"]  # the closest still falls short
    assert m.loc["lora", "rates tried"] == 3
    assert results.matched_learning(traj[traj["method"] == "smf-kl"]).empty


def test_reported_findings_say_what_the_intervals_show():
    """The reported answer compares learning and chat change by their intervals: an SMF run that learned less and
    ends below every baseline on chat is worse on both counts; one that ends above them while learning less cannot
    be ranked at equal learning; overlapping chat intervals cannot rank anything."""
    from smf_lib.study.findings import reported_findings

    def row(method, margin, chat, ppl=-0.5):
        return {"method": method, "seed": 0, "lr": 0.01, **{f"d_{m}{s}": v + d for m, v in (
            ("medmcqa_gold_margin", margin), ("chat_loglik", chat), ("wikitext_ppl", ppl), ("triviaqa_acc", 0.0))
            for s, d in (("", 0.0), ("_lo", -0.01), ("_hi", 0.01))}}

    base = [row("lora", 0.2, 0.02), row("full", 0.3, 0.03)]
    worse = reported_findings(pd.DataFrame([row("smf-kl", 0.1, -0.03), *base]))
    assert "less than LoRA and less than full finetuning" in worse[0] and "fell" in worse[1]
    assert "worse on both counts" in worse[1] and "no method got worse" in worse[2]
    better = reported_findings(pd.DataFrame([row("smf-kl", 0.1, 0.06), *base]))
    assert "rose" in better[1] and "not a comparison at equal learning" in better[1]
    tied = reported_findings(pd.DataFrame([row("smf-kl", 0.2, 0.02), *base]))
    assert "as much as LoRA" in tied[0] and "cannot rank" in tied[1]
    ppl_up = reported_findings(pd.DataFrame([row("smf-kl", 0.2, 0.02, ppl=2.0), *base]))
    assert "SMF-KL on WikiText perplexity (+2.00" in ppl_up[-1]
    assert reported_findings(pd.DataFrame(base)) == []  # no SMF run: nothing to answer yet


def test_an_arm_can_have_its_own_rate_and_wait_for_it():
    """``lr`` keyed by an arm's name sets that arm's rate alone; in ``rates_to_choose`` it holds back that arm's grid
    runs only; an unknown key is refused naming the allowed ones."""
    import dataclasses

    p = get_preset("cpu-v2")
    own = dataclasses.replace(p, lr={**p.lr, "smf-tfidf": 0.1}, rates_to_choose=())
    assert own.train_config("smf-tfidf", 0).lr == 0.1 and own.train_config("smf-kl", 0).lr == p.lr["smf-adam"]
    assert own.train_config("smf-tfidf", 0, lr=0.03).lr == 0.03  # a swept rate still wins
    waiting = dataclasses.replace(p, rates_to_choose=("smf-tfidf",))
    assert waiting.rate_to_choose("smf-tfidf", 1) == "smf-tfidf" and waiting.rate_to_choose("smf-kl", 1) is None
    assert waiting.rate_to_choose("smf-tfidf", 0, lr=0.1) is None  # swept runs are what choose it
    with pytest.raises(ValueError, match="unknown rate key 'smf-foo'.*smf-tfidf"):
        dataclasses.replace(p, lr={"smf-foo": 1.0})


def test_status_names_runs_made_from_a_tree_with_uncommitted_changes(tmp_path):
    from smf_lib.files import write_json
    from smf_lib.study.plan import dirty_lines

    (tmp_path / "runs").mkdir()
    write_json(tmp_path / "runs" / "a.json", {"method": "base", "versions": {"git_clean": True}})
    assert dirty_lines(tmp_path) == []
    write_json(tmp_path / "runs" / "b.json", {"method": "lora", "versions": {"git_clean": False}})
    assert dirty_lines(tmp_path) and dirty_lines(tmp_path)[0].endswith(": b")


def test_a_study_on_real_data_refuses_a_dirty_checkout_unless_allowed(tmp_path, monkeypatch):
    import dataclasses

    from smf_lib.study.presets import get_preset
    from smf_lib.files import check_clean
    from smf_lib.study import runner as R

    clean, dirty = {"git_commit": "abc", "git_clean": True}, {"git_commit": "abc", "git_clean": False}
    assert check_clean(clean, False, "x") == clean and check_clean({}, False, "x") == {}  # a wheel: nothing to pin
    with pytest.raises(RuntimeError, match="uncommitted changes.*--allow-dirty"):
        check_clean(dirty, False, "preset 'cpu'")
    assert check_clean(dirty, True, "x") == {**dirty, "allow_dirty": True}
    # the runner applies it to presets on the real data, before any work, and records the allowance
    monkeypatch.setattr(R, "_versions", lambda: dict(dirty))
    real = dataclasses.replace(get_preset("smoke"), name="smoke-real", model="smollm2-135m-instruct", train_n=None)
    monkeypatch.setattr(R.Runner, "task_questions_for", lambda self, seed: [])
    monkeypatch.setattr(R, "load_medmcqa", lambda *a, **k: [])
    monkeypatch.setattr(R, "build_suite", lambda *a, **k: None)
    monkeypatch.setattr(R, "check_corpora", lambda *a, **k: None)
    with pytest.raises(RuntimeError, match="--allow-dirty"):
        R.Runner(real, tmp_path, progress=False)
    assert R.Runner(real, tmp_path, progress=False, allow_dirty=True).versions["allow_dirty"] is True
    tiny = dataclasses.replace(get_preset("smoke"), train_n=None)
    assert "allow_dirty" not in R.Runner(tiny, tmp_path, progress=False).versions  # the tiny model: for tests


def test_the_baselines_can_start_from_the_retrofit_with_its_memory_frozen(reference_grid, tmp_path):
    """``lora-mem`` and ``full-mem`` train from SMF's own start: their changes are read against the retrofit, the
    base weights move and the memory they carry is the retrofit's, row for row."""
    import shutil

    from safetensors.torch import load_file

    out = tmp_path / "grid"
    shutil.copytree(reference_grid, out)
    assert main([*SMOKE, "--out", str(out), "--methods", "lora-mem", "full-mem"]) == 0
    runs = results.load_runs(out)
    net = results.net_table(runs).set_index("method")
    assert net.loc["lora-mem", "start"] == net.loc["full-mem", "start"] == "retrofit"
    for name in ("lora-mem-s0", "full-mem-s0"):
        stored = load_file(str(out / "artifacts" / name / "adapter" / "memory.safetensors"))
        assert stored and all(t.shape[0] == 0 for t in stored.values())  # no value row differs from the retrofit's
    by = {r["method"]: r for r in runs if is_report(r)}
    assert by["full-mem"]["items"]["chat_loglik"] != by["retrofit"]["items"]["chat_loglik"]  # the base moved


def test_one_training_row_changed_at_the_same_count_refuses_the_finished_run(tmp_path):
    """The run's identity fingerprints every training text: editing one question (the count unchanged) refuses a
    record made before the edit, naming the data."""
    import shutil

    from smf_lib.files import write_json
    from smf_lib.study.plan import RunSpec

    shutil.copytree(Path(R.__file__).parents[1] / "fixtures", tmp_path / "data")
    preset = dataclasses.replace(get_preset("smoke"), data=str(tmp_path / "data"))
    spec = RunSpec("smf-kl", 0)
    before = R.Runner(preset, tmp_path / "out", progress=False)
    write_json(before.run_path(spec), {"method": "smf-kl", "seed": 0, "identity": before.identity(spec)})
    assert before._finished(spec, before.identity(spec))  # the same data: the record counts as done
    rows = (tmp_path / "data" / "medmcqa" / "train.jsonl").read_text().splitlines()
    rows[3] = rows[3].replace('"question": "', '"question": "Briefly: ', 1)
    (tmp_path / "data" / "medmcqa" / "train.jsonl").write_text("\n".join(rows) + "\n")
    after = R.Runner(preset, tmp_path / "out", progress=False)
    assert len(after.task_texts) == len(before.task_texts) and after.task_texts != before.task_texts
    with pytest.raises(R.Mismatch, match=r"smf-kl-s0\.json \(finished run\).*data"):
        after._finished(spec, after.identity(spec))


def test_status_names_a_finished_runs_damaged_stage_files(reference_grid, tmp_path, capsys):
    import shutil

    out = tmp_path / "grid"
    shutil.copytree(reference_grid, out)
    assert main(["status", "--preset", "smoke", "--out", str(out)]) == 0
    assert "damaged" not in capsys.readouterr().out
    stage = out / "artifacts" / "retrofit-additive-s0"
    for path in (stage / "background.safetensors", stage / "adapter" / "memory.safetensors"):
        data = bytearray(path.read_bytes())
        data[-3] ^= 0x01  # one bit, same size
        path.write_bytes(bytes(data))
    assert main(["status", "--preset", "smoke", "--out", str(out)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("damaged"))
    assert "background.safetensors" in line and "memory.safetensors" in line and "--fresh" in line


def test_the_summary_gives_smf_minus_each_baseline_per_seed(reference_grid):
    from smf_lib.study.paired_stats import paired_bootstrap

    runs = results.load_runs(reference_grid)
    table = results.differences_table(runs)
    row = table[(table["smf"] == "smf-kl") & (table["baseline"] == "lora") & (table["metric"] == "chat_loglik")]
    by = {r["method"]: r for r in runs if is_report(r) and r["seed"] == 0}
    expected = paired_bootstrap(by["lora"]["items"], by["smf-kl"]["items"], "chat_loglik")
    assert row.iloc[0][["difference", "lo", "hi"]].tolist() == pytest.approx([expected[k] for k in ("delta", "lo",
                                                                                                       "hi")])
    written = pd.read_csv(reference_grid / "differences.csv")
    assert set(written["smf"]) <= {"smf-kl", "smf-tfidf"} and len(written) == len(table)


def test_the_differences_pool_the_seeds_and_a_verdict_needs_every_seed_to_agree():
    """Per seed, SMF minus the baseline with its item interval and verdict; over seeds, the seeds' differences
    averaged, one item interval, and better/worse only when every seed agrees. Lower perplexity is better."""
    import numpy as np

    rng = np.random.default_rng(0)
    base = rng.normal(-2.0, 0.3, 200)
    noise = rng.normal(0, 0.001, 200)

    def rec(method, seed, shift, nll_shift=0.0):
        return {"method": method, "seed": seed, "evaluation": "report", "split": "report",
                "items": {"chat_loglik": list(base + shift + noise * (seed + 1)),
                          "wikitext_window_nll": list(np.full(200, 300.0) + nll_shift),
                          "wikitext_window_tokens": list(np.full(200, 100.0))}}

    runs = [rec("lora-mem", 0, 0.0), rec("lora-mem", 1, 0.0), rec("smf-kl", 0, 0.05, -5.0),
            rec("smf-kl", 1, -0.01, 5.0)]
    table = results.differences_table(runs, smf=("smf-kl",), baselines=("lora-mem",)).set_index(["metric", "seed"])
    assert table.loc[("chat_loglik", 0), "verdict"] == "better" and table.loc[("chat_loglik", 1), "verdict"] == "worse"
    pooled = table.loc[("chat_loglik", "all")]
    assert pooled["difference"] == pytest.approx(0.02, abs=1e-3) and pooled["lo"] > 0  # the items say better ...
    assert pooled["verdict"] == "cannot tell"  # ... but seed 1 went the other way
    assert table.loc[("wikitext_ppl", 0), "verdict"] == "better"
    assert table.loc[("wikitext_ppl", 1), "verdict"] == "worse"
    same = results.differences_table([*runs[:3], rec("smf-kl", 1, 0.03)], smf=("smf-kl",), baselines=("lora-mem",))
    row = same[(same["metric"] == "chat_loglik") & (same["seed"] == "all")].iloc[0]
    assert row["verdict"] == "better" and row["difference"] == pytest.approx(0.04, abs=1e-3)


def test_the_running_example_sentence_reads_each_method_from_the_option_probabilities():
    from smf_lib.study.findings import example_sentence

    def rows(run, gold_p):
        return [{"run": run, "option": o, "probability": p, "gold": o == "B"}
                for o, p in zip("ABCD", (0.1, gold_p, 0.9 - gold_p - 0.05, 0.05))]

    probs = pd.DataFrame(rows("base", 0.30) + rows("smf-kl s0", 0.40) + rows("smf-kl s1", 0.44)
                         + rows("lora s0", 0.35))
    sentence = example_sentence(probs)
    assert sentence.startswith("The base model gives the gold answer (B) 30%; after training, SMF-KL 40-44%, LoRA 35%")
    assert sentence.endswith("every method raised it.")
    lowered = example_sentence(pd.DataFrame(rows("base", 0.30) + rows("full s0", 0.20)))
    assert "full finetuning 20%" in lowered and "none taught" in lowered
    assert example_sentence(pd.DataFrame(rows("lora s0", 0.2))) is None  # no base model to compare with


def test_the_selector_answer_names_the_overlap_the_hubs_and_which_selector_did_better_where():
    from smf_lib.study.findings import selector_answer, selectors_apart

    def row(method, seed, d, half):
        return {"method": method, "seed": seed, "d_chat_drift_kl": d, "d_chat_drift_kl_lo": d - half,
                "d_chat_drift_kl_hi": d + half, "d_wikitext_ppl": 0.1, "d_wikitext_ppl_lo": 0.0,
                "d_wikitext_ppl_hi": 0.2}
    table = pd.DataFrame([row("smf-kl", 0, 0.12, 0.01), row("smf-tfidf", 0, 0.08, 0.01),
                          row("smf-kl", 1, 0.12, 0.05), row("smf-tfidf", 1, 0.10, 0.05)])
    apart = selectors_apart(table, ("chat_drift_kl", "wikitext_ppl"))
    assert apart == {0: [("chat_drift_kl", "smf-tfidf")], 1: []}  # drift: lower is better
    overlap = pd.DataFrame({"top_t": [128, 128], "jaccard": [0.3, 0.5], "kl_hub_share": [0.6, 0.8],
                            "tfidf_hub_share": [0.2, 0.4]})
    sentence = selector_answer(overlap, apart)
    assert "share 40% of their rows" in sentence and "70% of KL's picks against 30% of TF-IDF's" in sentence
    assert "SMF-TF-IDF did better on drift on chat (KL) at seed 0" in sentence
    assert "could not be told apart on any probe" in selector_answer(overlap, {0: [], 1: []})


def test_a_short_finding_drops_its_intervals_and_keeps_its_estimates():
    from smf_lib.study.tables import without_intervals

    text = "chat +0.061 [+0.057, +0.065] nats, rate 3e-05 [1e-05, 5.2e-05], perplexity -1.13 [-1.33, -0.94])."
    assert without_intervals(text) == "chat +0.061 nats, rate 3e-05, perplexity -1.13)."
    assert without_intervals("a list [a, b] stays") == "a list [a, b] stays"
