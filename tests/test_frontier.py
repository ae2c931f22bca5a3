"""Comparisons at equal learning on constructed trajectories whose crossings, changes and rates are known."""

import math

import numpy as np
import pytest

from smf_lib.study import frontier as F


def _run(arm, seed, lr, slope, chat_per_learning, n=40, points=5, steps=40):
    """A run whose dev learning grows by ``slope`` per point on every item (gold margin) and whose chat
    log-likelihood changes by ``chat_per_learning`` per nat learned, item by item (item i: + i/1000 of noise)."""
    rng = np.arange(n) / 1000
    traj = []
    for k in range(points):
        learned = slope * k
        traj.append({"step": k * steps // (points - 1), "items": {
            "medmcqa_gold_margin": list(0.5 + rng + learned),
            "chat_loglik": list(-2.0 - rng + chat_per_learning * learned),
            "medmcqa_pred": ["A"] * n}})  # not numeric: left out of the interpolation
    return {"method": arm, "seed": seed, "evaluation": "trajectory", "train_config": {"lr": lr}, "trajectory": traj}


def test_the_crossing_interpolates_between_the_points_around_the_level():
    run = _run("smf-kl", 0, 1e-2, slope=0.04, chat_per_learning=-0.5)
    cross = F.crossing(run, 0.06)  # between point 1 (0.04) and point 2 (0.08), halfway
    assert cross["step"] == pytest.approx(15.0) and cross["lr"] == 1e-2 and "medmcqa_pred" not in cross["items"]
    change = F._item_change(cross, "chat_loglik")
    assert change == pytest.approx(np.full(40, -0.03))  # -0.5 per nat at 0.06 nats
    assert F.crossing(run, 0.5) is None and F.crossing(run, 0.0) is None  # never reached; no learning asked


def test_arms_are_compared_at_the_same_learning_whatever_their_rate():
    runs = []
    for seed in (0, 1):
        runs += [_run("smf-kl", seed, r, s, -0.2) for r, s in ((1e-2, 0.01), (3e-2, 0.03), (1e-1, 0.06))]
        runs += [_run("lora-mem", seed, r, s, -0.5) for r, s in ((2e-5, 0.005), (5e-5, 0.02), (2e-4, 0.08))]
    table = F.compare_at_level(runs, 0.06, smf=("smf-kl",), baselines=("lora-mem",), metrics=("chat_loglik",))
    row = table.iloc[0]
    # at 0.06 nats SMF lost 0.2 * 0.06 of chat, LoRA 0.5 * 0.06: SMF is better by 0.018, on every item
    assert row["difference"] == pytest.approx(0.018) and row["lo"] == pytest.approx(0.018)
    assert row["verdict"] == "better" and row["seeds"] == 2 and row["per seed"] == [0.018, 0.018]
    assert row["smf rates"] == [3e-2, 3e-2] and row["baseline rates"] == [5e-5, 5e-5]  # the smallest that reach it
    worse = F.compare_at_level(runs, 0.06, smf=("lora-mem",), baselines=("smf-kl",), metrics=("chat_loglik",))
    assert worse.iloc[0]["verdict"] == "worse"
    assert F.verdict(-0.01, 0.02, 1) == "cannot tell" and F.verdict(0.01, 0.02, -1) == "worse"


def test_the_common_level_lies_inside_every_arms_range_and_rates_are_chosen_within_the_margin():
    runs = [_run("smf-kl", 0, r, s, -0.2) for r, s in ((1e-2, 0.01), (3e-2, 0.03), (1e-1, 0.06))]
    runs += [_run("lora-mem", 0, r, s, -0.5) for r, s in ((2e-5, 0.005), (5e-5, 0.02), (2e-4, 0.08))]
    ends = F.final_learning(runs, ("smf-kl", "lora-mem"), seeds=(0,))
    assert list(ends["learning"].round(4)) == [0.04, 0.12, 0.24, 0.02, 0.08, 0.32]  # 4 steps of the slope
    level = F.common_level(ends)
    assert (level["lo"], level["hi"]) == pytest.approx((0.04, 0.24)) and level["level"] == pytest.approx(0.14)
    chosen = F.choose_rates(ends, level["level"], margin=0.02).set_index("arm")
    assert chosen.loc["smf-kl", "lr"] == 3e-2 and chosen.loc["smf-kl", "matched"]  # 0.12: within 0.02
    assert chosen.loc["lora-mem", "lr"] == 5e-5 and not chosen.loc["lora-mem", "matched"]  # 0.08: not within
    # the rate to add: log-linear between 5e-5 (0.08) and 2e-4 (0.32), a quarter of the way to 0.14
    expected = math.exp(math.log(5e-5) + 0.25 * (math.log(2e-4) - math.log(5e-5)))
    assert chosen.loc["lora-mem", "add rate"] == pytest.approx(expected)
    apart = F.common_level(ends.assign(learning=[0.01, 0.02, 0.03, 0.1, 0.2, 0.3]))
    assert apart["level"] is None  # the ranges do not overlap: no level to compare at


def test_the_frontier_command_says_what_to_run_when_nothing_is_there(tmp_path, capsys):
    from smf_lib.study.cli import main

    assert main(["frontier", "--preset", "cpu", "--out", str(tmp_path)]) == 0
    assert "python -m smf_lib run --preset cpu" in capsys.readouterr().out


def test_the_reachable_level_is_the_largest_round_level_every_arm_passes():
    import pandas as pd

    ends = pd.DataFrame({"arm": ["a", "a", "b"], "lr": [1, 2, 1], "learning": [0.06, 0.144, 0.125]})
    assert F.reachable_level(ends) == pytest.approx(0.10)  # b's best is 0.125: 0.10 is the largest multiple below
    assert F.reachable_level(ends.assign(learning=[0.01, 0.02, 0.3])) is None  # arm a never reaches 0.05


def test_the_report_names_the_level_the_rates_and_the_verdicts():
    from types import SimpleNamespace

    runs = []
    for seed in (0, 1):
        runs += [_run("smf-kl", seed, r, s, -0.2) for r, s in ((1e-2, 0.01), (3e-2, 0.03), (1e-1, 0.06))]
        runs += [_run("lora-mem", seed, r, s, -0.5) for r, s in ((2e-5, 0.005), (5e-5, 0.02), (2e-4, 0.08))]
    preset = SimpleNamespace(name="cpu", methods=("smf-kl", "lora-mem"), seeds=(0, 1))
    text = "\n".join(F.frontier_report(preset, runs))
    assert "common level: 0.1400" in text and "matched within 0.02 nats" in text
    assert "better" in text and "lora-mem" in text  # SMF loses 0.2 nats of chat per nat learned, LoRA 0.5


def test_a_verdict_over_seeds_needs_every_seed_to_agree():
    from smf_lib.study.paired_stats import seed_verdict

    assert seed_verdict(0.01, 0.03, +1, [0.02, 0.01]) == "better"
    assert seed_verdict(0.01, 0.03, -1, [0.02, 0.01]) == "worse"  # lower is better for this probe
    assert seed_verdict(0.01, 0.03, +1, [0.05, -0.01]) == "cannot tell"  # one seed points the other way
    assert seed_verdict(-0.01, 0.03, +1, [0.02, 0.01]) == "cannot tell"  # the interval reaches 0
