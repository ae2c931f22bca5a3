"""A results folder whose artifacts are gone (a fresh clone holds the run records, not the retrofitted memory):
the runner makes the retrofit again and goes on only when the new memory is the one the records started from (the
same bytes, or the same training loss within a tolerance)."""

import json
import shutil

import pytest

from smf_lib.study.cli import main

SMOKE = ["run", "--preset", "smoke", "--no-progress", "--debug", "--methods", "base", "retrofit", "smf-kl"]


@pytest.mark.slow
def test_a_retrofit_made_again_must_match_the_one_the_records_started_from(tmp_path, capsys):
    out = tmp_path / "grid"
    assert main([*SMOKE, "--out", str(out)]) == 0
    first = json.loads((out / "runs" / "smf-kl-s0.json").read_text())
    made = first["retrofit"]["weights_sha256"]
    assert len(made) >= 16 and json.loads((out / "runs" / "retrofit-s0.json").read_text())["retrofit"][
        "weights_sha256"] == made
    # a fresh clone: the records, no artifacts; one run left to do
    shutil.rmtree(out / "artifacts")
    (out / "runs" / "smf-kl-s0.json").unlink()
    capsys.readouterr()
    assert main([*SMOKE, "--out", str(out)]) == 0
    assert "retrofit (additive, seed 0) on" in capsys.readouterr().out  # made again, and the same: the run went on
    again = json.loads((out / "runs" / "smf-kl-s0.json").read_text())
    assert again["retrofit"]["weights_sha256"] == made and again["items"] == first["items"]
    # other bytes but the recorded training (CPU sums need not repeat bit for bit): kept, and the runs say so
    record = out / "runs" / "retrofit-s0.json"
    rec = json.loads(record.read_text())
    rec["retrofit"]["weights_sha256"] = "0" * len(made)
    record.write_text(json.dumps(rec))
    shutil.rmtree(out / "artifacts")
    (out / "runs" / "smf-kl-s0.json").unlink()
    assert main([*SMOKE, "--out", str(out)]) == 0
    note = json.loads((out / "runs" / "smf-kl-s0.json").read_text())["retrofit"]["made_again"]
    assert note["max_loss_difference"] <= note["tolerance"] and note["recorded_in"] == "retrofit-s0.json"
    # records that started from a retrofit that trained otherwise: the new one is refused, set aside, nothing written
    rec["retrofit"]["log"][-1]["loss"] += 0.5
    record.write_text(json.dumps(rec))
    shutil.rmtree(out / "artifacts")
    (out / "runs" / "smf-kl-s0.json").unlink()
    with pytest.raises(RuntimeError, match="differs from the one retrofit-s0.json started from"):
        main([*SMOKE, "--out", str(out)])
    assert not (out / "runs" / "smf-kl-s0.json").exists()
    assert list((out / "artifacts").glob("retrofit-*.differs"))


def test_loss_gap_is_the_largest_step_difference_and_none_for_another_length():
    from smf_lib.study.stages import loss_gap

    assert loss_gap([2.0, 1.5, 1.25], [2.0, 1.50003, 1.2499]) == pytest.approx(1e-4)
    assert loss_gap([], []) == 0.0
    assert loss_gap([2.0, 1.5], [2.0]) is None
