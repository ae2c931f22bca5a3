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


def _swept(arms_slopes, seeds=(0, 1)):
    """Trajectory records of each arm at each (rate, slope), at every seed."""
    return [dict(_run(arm, seed, lr, slope, -0.3), method=arm, seed=seed)
            for arm, rates in arms_slopes.items() for lr, slope in rates for seed in seeds]


def test_the_reported_rates_are_chosen_on_the_sweep_with_added_rates_at_a_fixed_level(tmp_path):
    """Once every swept run is in, the level is fixed; an arm outside the margin gets a rate interpolated in
    log-rate (at both sweep seeds) and the choice is made again at the same level; LoRA and full finetuning from the
    base take the same-start arms' rates; the preset, the status and the log read the kept choice."""
    from smf_lib.study import frontier as C
    from smf_lib.study.plan import study_status
    from smf_lib.study.presets import get_preset

    p = get_preset("cpu")
    sweep = {"smf-kl": ((1e-2, 0.01), (3e-2, 0.03), (1e-1, 0.06)), "smf-tfidf": ((1e-2, 0.01), (3e-2, 0.035),
                                                                                 (1e-1, 0.06)),
             "lora-mem": ((2e-5, 0.005), (5e-5, 0.02), (2e-4, 0.08)), "full-mem": ((1e-5, 0.01), (3e-5, 0.03),
                                                                                  (1e-4, 0.06))}
    runs = _swept(sweep)
    assert C.choose_step(p, runs[:-1], tmp_path) is None and C.read_choice(tmp_path) is None  # a swept run missing
    kept = C.choose_step(p, runs, tmp_path, {"git_commit": "abc", "git_clean": True})
    assert kept["level"] == pytest.approx(0.14) and kept["rounds"] == 1 and kept["rates"] is None
    add = float(f"{math.exp(math.log(5e-5) + 0.25 * (math.log(2e-4) - math.log(5e-5))):.2g}")
    assert kept["added"] == {"lora-mem": [add]} and kept["code"]["git_commit"] == "abc"  # 0.08 is 0.06 off 0.14
    grown = C.apply_choice(p, tmp_path)
    assert grown.sweep["lora-mem"] == (2e-5, 5e-5, add, 2e-4) and grown.rates_to_choose == p.rates_to_choose
    status = study_status(grown, tmp_path)
    assert set(status.loc[status["state"] == "to do", "run"]) >= {f"lora-mem-lr{add:g}-s0", f"lora-mem-lr{add:g}-s1"}
    assert C.choose_step(p, runs, tmp_path) is None  # the added rate's runs are not in yet
    runs += _swept({"lora-mem": ((add, 0.034),)})  # ends at 0.136: within the margin of the same level
    kept = C.choose_step(p, runs, tmp_path)
    assert kept["level"] == pytest.approx(0.14) and kept["unmatched"] == []
    assert kept["rates"] == {"smf-kl": 3e-2, "smf-tfidf": 3e-2, "lora-mem": add, "full-mem": 3e-5, "lora": add,
                             "full": 3e-5}
    chosen = C.apply_choice(p, tmp_path)
    assert chosen.rates_to_choose == () and chosen.train_config("lora", 0).lr == add
    assert chosen.train_config("smf-tfidf", 1).lr == 3e-2 and chosen.rate_to_choose("full-mem", 0) is None
    assert any(line.startswith("reported rates: smf-kl 0.03") for line in C.choice_lines(p, tmp_path))
    assert C.choose_step(p, runs, tmp_path) == C.read_choice(tmp_path)  # chosen once: kept as it is


def test_arms_whose_ranges_do_not_overlap_get_wider_sweeps_and_an_arm_never_matched_says_so(tmp_path):
    """No overlap: the arm whose range ends first goes 3x above its top rate, the one that starts last 3x below its
    bottom; with no rounds left, an arm outside the margin takes its closest rate and the choice says so."""
    from smf_lib.study import frontier as C
    from smf_lib.study.presets import get_preset

    p = get_preset("cpu")
    sweep = {"smf-kl": ((1e-2, 0.001), (3e-2, 0.002), (1e-1, 0.003)), "smf-tfidf": ((1e-2, 0.01), (3e-2, 0.03),
                                                                                    (1e-1, 0.06)),
             "lora-mem": ((2e-5, 0.005), (5e-5, 0.02), (2e-4, 0.08)), "full-mem": ((1e-5, 0.012), (3e-5, 0.03),
                                                                                  (1e-4, 0.06))}
    kept = C.choose_step(p, _swept(sweep), tmp_path)
    assert kept["level"] is None and kept["added"] == {"smf-kl": [0.3], "full-mem": [3.3e-6]}  # 3x out each way
    kept["rounds"] = C.MAX_ROUNDS  # no rounds left: an arm outside the margin takes its closest rate, said so
    kept["level"] = 0.14
    (tmp_path / C.CHOSEN).write_text(__import__("json").dumps(kept))
    runs = _swept({**sweep, "smf-kl": (*sweep["smf-kl"], (0.3, 0.01)), "full-mem": ((3.3e-6, 0.005),
                                                                                    *sweep["full-mem"])})
    kept = C.choose_step(p, runs, tmp_path)
    assert kept["rates"]["smf-kl"] == 0.3 and "smf-kl" in kept["unmatched"]
    assert "outside the margin: smf-kl" in C.choice_lines(p, tmp_path)[-1]


def test_the_status_line_says_how_long_the_runs_left_take_at_the_finished_runs_pace():
    import pandas as pd

    from smf_lib.study.plan import status_line

    table = pd.DataFrame([
        {"run": "base", "method": "base", "evaluation": "report", "state": "finished", "minutes": 18.0},
        {"run": "smf-kl-lr0.01-s0", "method": "smf-kl", "evaluation": "trajectory", "state": "finished",
         "minutes": 20.0},
        {"run": "smf-kl-lr0.03-s0", "method": "smf-kl", "evaluation": "trajectory", "state": "finished",
         "minutes": 30.0},
        {"run": "lora-mem-lr2e-05-s0", "method": "lora-mem", "evaluation": "trajectory", "state": "to do",
         "minutes": None},
        {"run": "lora-mem-lr5e-05-s0", "method": "lora-mem", "evaluation": "trajectory", "state": "started",
         "minutes": None}])
    line = " ".join(status_line(table).split())
    assert line.endswith("At the finished runs' pace: 2 trajectory run(s) at 25 minutes each, about 0.8 hours.")
    reported = pd.concat([table, pd.DataFrame([{"run": "smf-kl-s0", "method": "smf-kl", "evaluation": "report",
                                                "state": "rate to choose", "minutes": None}])])
    line = " ".join(status_line(reported.reset_index(drop=True)).split())
    assert line.endswith("about 0.8 hours, besides 1 report run(s) not timed yet.")


def test_the_choice_counts_diverged_runs_adds_no_rate_twice_keeps_rates_set_by_hand_and_goes_stale(tmp_path):
    """A diverged swept run does not hold the choice back (it is named); an interpolated rate that rounds onto a
    swept one is not added again (the closest rate is taken); a rate set by hand stays, and its follower takes it;
    a choice whose records changed is stale and made again."""
    import dataclasses
    import json

    from smf_lib.files import write_json
    from smf_lib.study import frontier as C
    from smf_lib.study.presets import get_preset

    p = get_preset("cpu")
    sweep = {"smf-kl": ((1e-2, 0.01), (3e-2, 0.03), (1e-1, 0.06)), "smf-tfidf": ((1e-2, 0.01), (3e-2, 0.035),
                                                                                 (1e-1, 0.06)),
             "lora-mem": ((2e-5, 0.005), (5e-5, 0.02), (2e-4, 0.08)),
             "full-mem": ((1e-5, 0.025), (1.04e-5, 0.05), (1e-4, 0.06))}  # level 0.15: halfway 1e-5 to 1.04e-5
    runs = [r for r in _swept(sweep) if not (r["method"] == "full-mem" and r["train_config"]["lr"] == 1e-4)]
    for seed in (0, 1):  # full-mem at 1e-4 diverged at both seeds
        write_json(tmp_path / "failed" / f"full-mem-lr0.0001-s{seed}.json", {"identity": {
            "method": "full-mem", "seed": seed, "train_config": {"lr": 1e-4}}, "error": "loss is nan"})
    p = dataclasses.replace(p, sweep={**p.sweep, "full-mem": (1e-5, 1.04e-5, 1e-4)})
    kept = C.choose_step(p, runs, tmp_path)
    assert kept["failed"] == ["full-mem-lr0.0001-s0", "full-mem-lr0.0001-s1"]
    assert kept["level"] == pytest.approx(0.15) and kept["added"]["lora-mem"]  # the others go on as before
    assert "full-mem" not in kept["added"]  # its interpolated rate, 1.02e-5, rounds onto 1e-5: swept already
    assert "diverged (left out of the choice): full-mem-lr0.0001-s0" in "\n".join(C.choice_lines(p, tmp_path))
    by_hand = dataclasses.replace(p, lr={**p.lr, "lora-mem": 2e-4},
                                  rates_to_choose=tuple(a for a in p.rates_to_choose if a != "lora-mem"))
    other = tmp_path / "by-hand"
    for seed in (0, 1):
        write_json(other / "failed" / f"full-mem-lr0.0001-s{seed}.json",
                   json.loads((tmp_path / "failed" / f"full-mem-lr0.0001-s{seed}.json").read_text()))
    write_json(other / C.CHOSEN, {"level": 0.15, "margin": 0.02, "rounds": C.MAX_ROUNDS, "added": {}, "rates": None})
    kept = C.choose_step(by_hand, runs, other)  # no rounds left: the rates are chosen now
    assert kept["rates"]["lora"] == 2e-4 and "lora-mem" not in kept["rates"]  # the lead set by hand, followed
    assert C.apply_choice(by_hand, other).train_config("lora-mem", 0).lr == 2e-4
    # a record the choice rests on, changed since: the choice is stale and not applied
    rec = {**runs[0], "identity_hash": "a", "metrics": {}, "items": {}}
    write_json(other / "runs" / "smf-kl-lr0.01-s0.json", rec)
    write_json(other / C.CHOSEN, {**kept, "records": {"smf-kl-lr0.01-s0": "a"}})
    assert C.stale_choice(C.read_choice(other), other) == [] and C.apply_choice(by_hand, other).rates_to_choose == ()
    write_json(other / "runs" / "smf-kl-lr0.01-s0.json", {**rec, "identity_hash": "b"})
    assert C.stale_choice(C.read_choice(other), other) == ["smf-kl-lr0.01-s0"]
    assert C.apply_choice(by_hand, other).rates_to_choose == by_hand.rates_to_choose
    assert "is stale" in C.choice_lines(by_hand, other)[0]
