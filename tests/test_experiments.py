import json

import pandas as pd
import pytest

import smf_lib.experiments as E
import smf_lib.training as T
from smf_lib.stats import mcnemar, paired_bootstrap


def test_presets_are_valid_data():
    for name in E.PRESETS:
        p = E.get_preset(name)
        assert set(p.methods) <= set(E.METHODS)
        for m in p.methods:
            if E.METHODS[m][0] is not None:
                E._train_config(p, m, 0)  # every method's config validates
    with pytest.raises(ValueError, match="allowed: .*smoke"):
        E.get_preset("huge")


@pytest.mark.slow
def test_smoke_preset_end_to_end_with_resume(tmp_path, monkeypatch):
    out = tmp_path / "smoke"
    # 1) an interrupted grid: base finishes, then smf-kl training dies after its second checkpoint
    real_save = T._save_checkpoint
    calls = {"n": 0}

    def dying_save(*a, **kw):
        real_save(*a, **kw)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated interruption")

    runner = E.Runner(E.get_preset("smoke"), out, progress=False)
    runner.run_one("base", 0)
    base_bytes = (out / "runs" / "base.json").read_bytes()
    monkeypatch.setattr(T, "_save_checkpoint", dying_save)
    calls["n"] = -10 ** 9  # the retrofit stage runs undisturbed
    runner.retrofit(0, "additive")
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        runner.run_one("smf-kl", 0)
    assert not (out / "runs" / "smf-kl-s0.json").exists()
    ckpt = out / "artifacts" / "smf-kl-s0" / "ckpt" / "checkpoint.pt"
    assert ckpt.exists()
    monkeypatch.setattr(T, "_save_checkpoint", real_save)

    # 2) the full grid resumes: finished runs are skipped, smf-kl continues from step 2
    summary = E.main(["run", "--preset", "smoke", "--out", str(out), "--no-progress"])
    assert summary == 0
    assert (out / "runs" / "base.json").read_bytes() == base_bytes  # earlier result untouched
    run = json.loads((out / "runs" / "smf-kl-s0.json").read_text())
    assert [r["step"] for r in run["train_log"]] == list(range(1, len(run["train_log"]) + 1))
    assert run["data"]["n_train"] == 24 and run["versions"]["torch"]
    df = pd.read_csv(out / "summary.csv")
    assert list(df["method"]) == list(E.GRID)
    for col in ("medmcqa_acc", "wikitext_ppl", "triviaqa_acc", "d_wikitext_ppl_lo", "d_medmcqa_acc_hi"):
        assert col in df.columns
    assert df.loc[df.method == "base", "d_wikitext_ppl"].item() == 0
    snap = json.loads((out / "selection_counts.json").read_text())
    assert len(snap["batch_counts"]) == 2 and len(snap["df"][0]) == 64
    assert not list(out.rglob("*.tmp"))


def test_paired_bootstrap_and_mcnemar():
    base = {"medmcqa_correct": [0, 1, 0, 1, 0, 0, 1, 0]}
    other = {"medmcqa_correct": [1, 1, 1, 1, 0, 1, 1, 0]}
    ci = paired_bootstrap(base, other, "medmcqa_acc", n_boot=500)
    assert ci["delta"] == pytest.approx(3 / 8) and ci["lo"] <= ci["delta"] <= ci["hi"] and ci["lo"] >= 0
    assert mcnemar(base["medmcqa_correct"], other["medmcqa_correct"]) == {"gained": 3, "lost": 0, "p": 0.25}
    with pytest.raises(ValueError, match="different items"):
        paired_bootstrap(base, {"medmcqa_correct": [1, 0]}, "medmcqa_acc")


def test_bad_method_is_refused(tmp_path):
    runner = E.Runner(E.get_preset("smoke"), tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown method 'dora'"):
        runner.run_one("dora", 0)
