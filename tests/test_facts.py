"""The fact stream: invented facts, held-out questions, one fact per step, and the recall probe."""

import os

import pytest
import torch

import smf_lib as S
from smf_lib import data
from smf_lib.facts import RELATIONS, fact_order, facts_probe, make_facts
from smf_lib.training import micro_batches

from conftest import MEM


def test_the_stream_is_deterministic_and_each_fact_has_enough_phrasings():
    a, b, c = make_facts(200, seed=0), make_facts(200, seed=0), make_facts(200, seed=1)
    assert a == b and a != c
    assert len({f.entity for f in a}) == 200
    assert {f.relation for f in a} == set(RELATIONS)
    for f in a:
        assert len(set(f.statements)) >= 8 and len(set(f.questions)) >= 2
        assert all(f.entity in t and f.answer in t for t in f.statements)
        assert all(f.entity in q and f.answer not in q for q in f.questions)


def test_no_question_is_ever_a_training_text():
    facts = make_facts(120)
    texts, _ = fact_order(facts)
    seen = set(texts)
    for f in facts:
        for q in f.questions:
            assert q not in seen
            stem = q.split("\n")[0].removeprefix("Question: ")
            assert not any(stem in t for t in texts)  # not even as part of a statement


@pytest.mark.skipif(not os.environ.get("SMF_DATA_DIR"), reason="needs the local data folder (SMF_DATA_DIR)")
def test_facts_are_disjoint_from_the_probes_items():
    facts = make_facts(300)
    items = [r["question"] for r in data.load_triviaqa(1000)] + data.load_oasst1_replies("validation") + \
        [data.medmcqa_prompt(r) for r in data.load_medmcqa("validation", 1400)]
    text = "\n".join(items).lower()
    assert not [f.entity for f in facts if f.entity.lower() in text]


def test_fact_order_gives_each_step_one_facts_batch_in_arrival_order():
    facts = make_facts(5)
    texts, order = fact_order(facts, steps_per_fact=3, micro_batch=4)
    assert len(order) == 15
    for k, step in enumerate(order):
        f = facts[k // 3]
        got = [texts[i] for mb in step for i in mb]
        assert sorted(got) == sorted(f.statements)
        assert all(len(mb) <= 4 for mb in step)
    with pytest.raises(ValueError, match="steps_per_fact"):
        fact_order(facts, steps_per_fact=0)


def test_train_follows_an_explicit_order_and_refuses_a_bad_one(tok):
    texts = [f"text number {i} about things" for i in range(8)]
    cfg = S.TrainConfig(method="full", lr=1e-3, max_steps=3, micro_batch=2, grad_accum=2, max_length=16,
                        warmup_steps=1)
    a, b = S.tiny_model("llama"), S.tiny_model("llama")
    S.train(a, tok, texts, cfg, progress=False)
    S.train(b, tok, texts, cfg, progress=False, order=micro_batches(len(texts), cfg))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    with pytest.raises(ValueError, match="names text 9"):
        S.train(S.tiny_model("llama"), tok, texts, cfg, progress=False, order=[[[0, 9]]])


def test_the_constant_schedule_holds_the_peak_rate_after_warm_up():
    from smf_lib.training import lr_factor

    assert [lr_factor(s, 2, 10, "constant") for s in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 1.0]


def test_smf_learns_a_fact_one_step_at_a_time_through_its_rows(tok):
    torch.manual_seed(0)
    model = S.add_memory(S.tiny_model("llama"), S.MemoryConfig(**MEM))
    facts = make_facts(2)
    texts, order = fact_order(facts, steps_per_fact=4)
    before = facts_probe(model, tok, facts, max_new_tokens=2)
    assert before["n"] == sum(len(f.questions) for f in facts) and len(before["items"]) == before["n"]
    cfg = S.TrainConfig(method="smf", selector="tf", top_t=16, lr=0.05, max_length=96, warmup_steps=0,
                        schedule="constant")
    S.train(model, tok, texts, cfg, progress=False, order=order)
    after = facts_probe(model, tok, facts, max_new_tokens=2)
    assert after["answer_loglik"] > before["answer_loglik"]


@pytest.mark.skipif(not os.environ.get("SMF_DATA_DIR"), reason="needs the local data folder (SMF_DATA_DIR)")
def test_the_facts_smoke_preset_runs_from_one_start_and_resumes(tmp_path):
    from smf_lib.files import read_json
    from smf_lib.study.cli import main
    from smf_lib.study.facts_study import FactsRunner, get_facts_preset

    out = tmp_path / "facts"
    with pytest.raises(ValueError, match="2 dev run.s. are not finished"):  # reported rates come from the dev runs
        FactsRunner(get_facts_preset("facts-smoke"), out, progress=False).report_rates()
    assert main(["run", "--preset", "facts-smoke", "--out", str(out), "--no-progress"]) == 0
    runs = sorted((out / "runs").glob("*.json"))
    assert [r.stem for r in runs] == ["lora-lr0.001-s0-dev", "smf-tfidf-lr0.01-s0-dev"]
    rec = read_json(runs[1])
    assert rec["steps"] == 2 and rec["code"].get("git_commit")
    assert set(rec["changes"]) >= {"facts_em", "facts_loglik", "first_facts_loglik", "chat_loglik", "wikitext_nll",
                                   "triviaqa_gold_loglik", "medmcqa_gold_margin"}
    rows = read_json(out / "fact_rows.json")  # the snapshot of the first facts' rows, for the chapter's picture
    assert rows["layer"] == 2 and len(rows["df"]) == rows["n_slots"] == 64 and rows["facts"]
    first = rows["facts"][0]
    assert len(first["rows"]) == len(first["reads"]) and min(first["reads"]) > 0 and first["statement"]
    stamp = [r.stat().st_mtime_ns for r in [*runs, out / "fact_rows.json"]]
    assert main(["run", "--preset", "facts-smoke", "--out", str(out), "--no-progress"]) == 0
    assert [r.stat().st_mtime_ns for r in [*runs, out / "fact_rows.json"]] == stamp  # read back, not rerun


def test_full_finetuning_trains_the_base_weights_and_leaves_a_memory_in_place(tok):
    model = S.add_memory(S.tiny_model("llama"), S.MemoryConfig(**MEM, init="zero-w2"))
    mem_before = S.memory_state_dict(model)
    base_before = model.model.embed_tokens.weight.detach().clone()
    cfg = S.TrainConfig(method="full", lr=1e-3, max_steps=2, micro_batch=4, grad_accum=1, max_length=16,
                        warmup_steps=0)
    S.train(model, tok, ["a b c d e f", "g h i j k l"], cfg, progress=False)
    assert all(torch.equal(v, S.memory_state_dict(model)[k]) for k, v in mem_before.items())
    assert not torch.equal(base_before, model.model.embed_tokens.weight)


@pytest.mark.skipif(not os.environ.get("SMF_DATA_DIR"), reason="needs the local data folder (SMF_DATA_DIR)")
def test_the_start_is_copied_from_a_spread_pilot_that_made_the_same_memory(tmp_path):
    import dataclasses

    from smf_lib.study.facts_study import FactsRunner
    from smf_lib.study.facts_presets import get_facts_preset
    from smf_lib.study.spread_pilot import run_recipe

    smoke = get_facts_preset("facts-smoke")
    preset = dataclasses.replace(smoke, start={**smoke.start, "reuse": str(tmp_path / "pilot")})
    runner = FactsRunner(preset, tmp_path / "facts", progress=False)
    other = dataclasses.replace(runner.start_settings(), lr=1e-3)  # another retrofit rate: not the same memory
    run_recipe("frozen", tmp_path / "pilot", other, progress=False)
    runner._copy_start()
    assert not (tmp_path / "facts" / "start" / "frozen.json").exists()
    (tmp_path / "pilot" / "frozen.json").unlink()
    made = run_recipe("frozen", tmp_path / "pilot", runner.start_settings(), progress=False)
    runner._copy_start()
    start = tmp_path / "facts" / "start"
    assert (start / "frozen.json").read_bytes() == (tmp_path / "pilot" / "frozen.json").read_bytes()
    assert run_recipe("frozen", start, runner.start_settings(), progress=False) == made  # read back, not retrofitted
    assert (start / "artifacts" / "frozen" / "final").exists()


def test_a_start_whose_memory_is_gone_is_made_again_and_kept_only_if_it_trains_the_same(tmp_path):
    import json
    import shutil

    from smf_lib.study.facts_study import FactsRunner, get_facts_preset

    runner = FactsRunner(get_facts_preset("facts-smoke"), tmp_path / "facts", progress=False)
    runner.starting_model()
    start = tmp_path / "facts" / "start"
    record = start / f"{runner.start_recipe}.json"
    final = start / "artifacts" / runner.start_recipe / "final"
    written, weights = record.read_bytes(), (final / "memory.safetensors").read_bytes()
    shutil.rmtree(start / "artifacts")  # a fresh clone: the record, not the memory
    runner.starting_model()
    assert (final / "memory.safetensors").read_bytes() == weights and record.read_bytes() == written
    assert not (start / "again").exists()
    remade = json.loads((start / "made-again.json").read_text())["remakes"]
    assert len(remade) == 1 and remade[0]["max_loss_difference"] <= remade[0]["tolerance"]
    note = runner.start_note("dev")  # what the runs made on it record: the remake and its scores' offsets
    assert note["made_again"] == 1 and set(note["offsets"]) >= {"chat_loglik", "facts_loglik"}
    assert all(abs(v) < 1e-3 for v in note["offsets"].values())
    rec = json.loads(written)
    rec["loss_log"][-1] += 0.5  # a record of another retrofit
    record.write_text(json.dumps(rec))
    shutil.rmtree(start / "artifacts")
    with pytest.raises(RuntimeError, match="trained differently"):
        runner.starting_model()
    assert not final.exists()


def _facts_run(arm, lr, seed, loglik, chat):
    return {"arm": arm, "lr": lr, "seed": seed, "scores": {"facts_loglik": [loglik, loglik], "chat_loglik": chat}}


def test_the_facts_frontier_reads_every_arm_at_the_same_learning():
    """Constructed runs with known crossings: learning is the answer log-likelihood's change, the level the middle
    of the arms' overlap, and each probe's per-item change is interpolated between the rates around it."""
    from smf_lib.study import facts_findings as FX
    from smf_lib.study import facts_frontier as FF

    start = {"facts_loglik": [-10.0, -10.0], "chat_loglik": [-2.0, -2.0]}
    runs = [_facts_run("smf-tfidf", 1e-2, 0, -9.0, [-2.0, -2.0]), _facts_run("smf-tfidf", 3e-2, 0, -7.0, [-2.2, -2.0]),
            _facts_run("lora", 1e-4, 0, -8.0, [-2.4, -2.2]), _facts_run("lora", 3e-4, 0, -6.0, [-3.0, -3.0])]
    level = FF.level_of(runs, start)
    assert level["level"] == pytest.approx(2.5) and level["ranges"]["smf-tfidf"] == (1.0, 3.0)
    smf = FF.at_level(runs, start, "smf-tfidf", 0, 2.5)  # gains 1 and 3 around it: three quarters of the way
    assert smf["lr"] == (1e-2, 3e-2) and smf["chat_loglik"] == pytest.approx([-0.15, 0.0])
    lora = FF.at_level(runs, start, "lora", 0, 2.5)  # gains 2 and 4: a quarter of the way
    assert lora["chat_loglik"] == pytest.approx([-0.55, -0.4])
    assert FF.at_level(runs, start, "lora", 0, 5.0) is None and FF.at_level(runs, start, "lora", 1, 2.5) is None
    table = FF.compare(runs, start, 2.5, smf=("smf-tfidf",), baselines=("lora",), seeds=(0,), probes=("chat_loglik",))
    (row,) = table.to_dict("records")
    assert row["difference"] == pytest.approx(0.4) and row["lo"] > 0 and row["verdict"] == "better"
    sentence = FX.answer(runs, start, seeds=(0,))
    assert "at equal learning (+2.50 nats" in sentence
    assert "SMF-TF-IDF did better on held-out chat than LoRA" in sentence
    assert FX.answer(runs[:2], start) is None  # one arm: nothing to compare
    assert FF.rates_around(runs, start, 2.5) == {"smf-tfidf": (1e-2, 3e-2), "lora": (1e-4, 3e-4)}
    assert FF.rates_around(runs, start, 0.5) == {"smf-tfidf": (1e-2,), "lora": (1e-4,)}
    ends = FF.learning_ends(runs, start)
    assert ends.set_index(["arm", "lr"])["learning"].to_dict() == {("smf-tfidf", 1e-2): 1.0, ("smf-tfidf", 3e-2): 3.0,
                                                                   ("lora", 1e-4): 2.0, ("lora", 3e-4): 4.0}


def test_the_facts_answer_names_the_probe_once_and_joins_baselines_with_the_same_verdict():
    """Two baselines: the same verdict is said once for both ("... than LoRA (...) and full finetuning (...)",
    "... from LoRA (...) or full finetuning (...)"); an interval that excludes 0 while the seeds disagree says so."""
    from smf_lib.study import facts_findings as FX
    from smf_lib.study import facts_frontier as FF
    from smf_lib.study.tables import verdict_cell

    start = {"facts_loglik": [-10.0, -10.0], "chat_loglik": [-2.0, -2.0]}
    smf = [_facts_run("smf-tfidf", 3e-2, 0, -7.0, [-2.2, -2.0]), _facts_run("smf-tfidf", 1e-2, 0, -9.0, [-2.0, -2.0])]
    base = [_facts_run(arm, lr, 0, ll, chat) for arm in ("lora", "full")
            for lr, ll, chat in ((1e-4, -8.0, [-2.4, -2.2]), (3e-4, -6.0, [-3.0, -3.0]))]
    said = FX.answer(smf + base, start, seeds=(0,))
    assert "SMF-TF-IDF did better on held-out chat than LoRA (+0.400 [" in said
    assert "nats) and full finetuning (+0.400 [" in said and said.count("held-out chat") == 1
    same = [dict(r, arm=arm) for arm in ("smf-tfidf", "lora", "full") for r in base[:2]]
    said = FX.answer(same, start, seeds=(0,))
    assert "told apart on held-out chat from LoRA (+0.000 [+0.000, +0.000] nats) or full finetuning" in said
    assert list(FF.frontier_table(smf, start)["lr"]) == [1e-2, 3e-2]  # by rate, whatever the records' order
    row = {"difference": 0.01, "lo": 0.002, "hi": 0.02, "verdict": "cannot tell"}
    assert verdict_cell(row, unit="nats") == "+0.010 [+0.002, +0.020] nats; the seeds disagree"
    assert verdict_cell(dict(row, verdict="better")) == "+0.010 [+0.002, +0.020]"


def test_a_finished_facts_run_survives_a_new_rate_in_its_preset_but_not_another_setting():
    from smf_lib.study.facts_study import same_run

    ident = {"preset": {"name": "facts", "rates": {"lora": [1e-4]}, "seeds": [0, 1], "top_t": 128}, "arm": "lora"}
    more_rates = {**ident, "preset": {**ident["preset"], "rates": {"lora": [1e-4, 1e-5]}, "seeds": [0]}}
    other_top_t = {**ident, "preset": {**ident["preset"], "top_t": 64}}
    assert same_run(ident, more_rates) and not same_run(ident, other_top_t) and not same_run(None, ident)
    assert not same_run(ident, {**ident, "arm": "full"})


def test_a_dev_run_ignores_the_number_of_reported_facts_and_a_reported_run_does_not():
    from smf_lib.study.facts_study import same_run

    dev = {"preset": {"name": "facts", "n_facts": 200, "dev_facts": 40}, "arm": "lora", "split": "dev"}
    fewer = {**dev, "preset": {**dev["preset"], "n_facts": 100}}
    assert same_run(dev, fewer) and not same_run(dev, {**dev, "preset": {**dev["preset"], "dev_facts": 20}})
    report = {**dev, "split": "report"}
    assert not same_run(report, {**fewer, "split": "report"})


def test_the_facts_status_lists_the_dev_runs_left_in_order_then_the_reported_ones(tmp_path):
    from smf_lib.files import write_json
    from smf_lib.study.facts_status import status_lines
    from smf_lib.study.facts_presets import FactsPreset

    p = FactsPreset(name="t", rates={"smf-tfidf": (1e-2, 3e-2), "lora": (1e-4, 3e-4)}, seeds=(0, 1), dev_seeds=(0,))
    start = {"facts_loglik": [-10.0, -10.0], "chat_loglik": [-2.0, -2.0]}
    write_json(tmp_path / "start-dev.json", {"scores": start})
    gains = {("smf-tfidf", 1e-2): 1.0, ("smf-tfidf", 3e-2): 3.0, ("lora", 1e-4): 2.0, ("lora", 3e-4): 4.0}
    for (arm, lr), g in list(gains.items())[:1]:
        write_json(tmp_path / "runs" / f"{arm}-lr{lr:g}-s0-dev.json", {**_facts_run(arm, lr, 0, -10.0 + g, [-2.0] * 2),
                                                                        "run": f"{arm}-lr{lr:g}-s0-dev"})
    lines = status_lines(p, tmp_path)
    assert lines[0].endswith("1 of 4 runs finished")
    assert lines[1].endswith("smf-tfidf-lr0.03-s0-dev, lora-lr0.0001-s0-dev, lora-lr0.0003-s0-dev")
    for (arm, lr), g in gains.items():
        write_json(tmp_path / "runs" / f"{arm}-lr{lr:g}-s0-dev.json", {**_facts_run(arm, lr, 0, -10.0 + g, [-2.0] * 2),
                                                                        "run": f"{arm}-lr{lr:g}-s0-dev"})
    lines = status_lines(p, tmp_path)  # level 2.5 (overlap 2 to 3): SMF 1e-2 and 3e-2, LoRA 1e-4 and 3e-4
    assert lines[1] == "reported facts, read at the dev level +2.50: 0 of 8 runs finished"
    assert lines[2].startswith("then, for an arm whose lowest planned rate learned more than the level at some seed")
    assert lines[3].startswith("reported runs to do, in order: smf-tfidf-lr0.01-s0-report, smf-tfidf-lr0.03-s0-report")
    assert lines[4] == "time left: unknown until a reported run has finished"
    write_json(tmp_path / "runs" / "smf-tfidf-lr0.01-s0-report.json", {"arm": "smf-tfidf", "seconds": 600.0})
    write_json(tmp_path / "runs" / "lora-lr0.0001-s0-report.json", {"arm": "lora", "seconds": 1800.0})
    lines = status_lines(p, tmp_path)  # 3 SMF runs at 10 minutes and 3 LoRA runs at 30 left: 2 hours
    assert lines[1].endswith("2 of 8 runs finished")
    assert lines[4] == ("time left: about 2.0 hours at the finished reported runs' pace (per arm: lora 30 min, "
                        "smf-tfidf 10 min)")


def test_the_facts_findings_answer_in_at_most_five_sentences_from_the_records():
    from smf_lib.study import facts_findings as FX

    start = {"facts_loglik": [-10.0, -10.0], "facts_em": [0, 0], "chat_loglik": [-2.0, -2.0]}
    runs = [_facts_run("smf-tfidf", 1e-2, 0, -9.0, [-2.0, -2.0]), _facts_run("smf-tfidf", 3e-2, 0, -7.0, [-2.2, -2.0]),
            _facts_run("lora", 1e-4, 0, -8.0, [-2.4, -2.2]), _facts_run("lora", 3e-4, 0, -6.0, [-3.0, -3.0])]
    found = FX.findings(runs + [_facts_run("full", 1e-6, 0, -9.5, [-2.0, -2.0])], start, seeds=(0,))
    assert "full finetuning ran at fewer than 2 rates" in found[1]  # one rate: a point, left out of the level
    assert 3 <= len(found) <= 5 and "answers 0% of the 2 held-out questions" in found[0]
    assert "LoRA +1.00 to +4.00" not in found[1] and "LoRA +2.00 to +4.00" in found[1]
    assert "SMF-TF-IDF against LoRA: better (+0.400" in found[2]
    far = [_facts_run("smf-tfidf", 1e-2, 0, -9.9, [-2.0, -2.0]), _facts_run("lora", 1e-4, 0, -5.0, [-3.0, -3.0])]
    assert "do not overlap" in FX.findings(far, start)[-1]
    one = FX.findings([_facts_run("smf-tfidf", 1e-2, 0, -9.0, [-2.0, -2.0])], start)
    assert "by arm over its rates: SMF-TF-IDF +1.00; the most" in one[1]


def test_the_findings_give_every_verdict_against_smf_including_the_sgd_arms():
    """A plain-SGD arm that lost more chat than LoRA at the level is named with its interval, though the headline
    sentences speak of SMF-TF-IDF and SMF-KL only; with no such verdict, the findings say that none went so."""
    from smf_lib.study import facts_findings as FX

    start = {"facts_loglik": [-10.0, -10.0], "facts_em": [0, 0], "chat_loglik": [-2.0, -2.0]}
    runs = [_facts_run("smf-tfidf", 1e-2, 0, -9.0, [-2.0, -2.0]), _facts_run("smf-tfidf", 3e-2, 0, -7.0, [-2.2, -2.0]),
            _facts_run("lora", 1e-4, 0, -8.0, [-2.4, -2.2]), _facts_run("lora", 3e-4, 0, -6.0, [-3.0, -3.0])]
    sgd = [_facts_run("smf-tfidf-sgd", 1e2, 0, -9.0, [-2.5, -2.6]),
           _facts_run("smf-tfidf-sgd", 1e3, 0, -7.0, [-3.5, -3.6])]
    found = FX.findings(runs + sgd, start, seeds=(0,))
    assert found[-1].startswith("Also against SMF at that level: SMF-TF-IDF, SGD did worse than LoRA on held-out "
                                "chat log-lik (-0.825 [")  # at +2.50: (-1.25, -1.35) against LoRA's (-0.55, -0.40)
    calm = [dict(r, scores={**r["scores"], "chat_loglik": [-2.0, -2.0]}) for r in sgd]
    assert FX.findings(runs + calm, start, seeds=(0,))[-1].startswith("Nothing else at that level went against SMF")


def test_the_answer_rests_on_the_reported_facts_only_once_every_planned_run_is_in(tmp_path):
    """The reported facts answer once every arm has run at each of its planned rates and seeds; a stray record at a
    rate no longer planned is left out; the level is the dev sweep's."""
    from smf_lib.files import write_json
    from smf_lib.study import facts_frontier as FF
    from smf_lib.study.facts_presets import FactsPreset

    gains = {"smf-tfidf": {1e-2: 1.0, 3e-2: 3.0}, "lora": {1e-5: 0.5, 1e-4: 1.5, 3e-4: 4.0}}
    p = FactsPreset(name="t", rates={arm: tuple(by) for arm, by in gains.items()}, seeds=(0, 1), dev_seeds=(0,))
    start = {"facts_loglik": [-10.0, -10.0], "chat_loglik": [-2.0, -2.0]}
    write_json(tmp_path / "start-dev.json", {"scores": start})
    for arm, by in gains.items():
        for lr, g in by.items():
            write_json(tmp_path / "runs" / f"{arm}-lr{lr:g}-s0-dev.json",
                       {**_facts_run(arm, lr, 0, -10.0 + g, [-2.0, -2.0]), "run": f"{arm}-lr{lr:g}-s0-dev"})
    plan = FF.report_plan(p, tmp_path)
    assert plan["level"] == pytest.approx(2.0) and plan["rates"] == {"smf-tfidf": (1e-2, 3e-2), "lora": (1e-4, 3e-4)}
    assert FF.answer_runs(p, tmp_path)["split"] == "dev"
    write_json(tmp_path / "start-report.json", {"scores": start})
    todo = [(arm, lr, seed) for arm, rates in plan["rates"].items() for lr in rates for seed in (0, 1)]
    for arm, lr, seed in [*todo[:-1], ("lora", 1e-5, 1)]:  # one planned run missing, one stray
        write_json(tmp_path / "runs" / f"{arm}-lr{lr:g}-s{seed}-report.json",
                   _facts_run(arm, lr, seed, -8.0, [-2.0, -2.0]))
    assert FF.answer_runs(p, tmp_path)["split"] == "dev"
    arm, lr, seed = todo[-1]
    write_json(tmp_path / "runs" / f"{arm}-lr{lr:g}-s{seed}-report.json", _facts_run(arm, lr, seed, -8.0, [-2.0, -2.0]))
    got = FF.answer_runs(p, tmp_path)
    assert got["split"] == "report" and len(got["runs"]) == 8 and got["seeds"] == (0, 1)
    assert got["level"] == pytest.approx(2.0) and 1e-5 not in {r["lr"] for r in got["runs"]}


def test_an_arm_whose_reported_runs_all_learned_more_than_the_level_gets_its_next_lower_dev_rate(tmp_path,
                                                                                               monkeypatch):
    """On the longer reported stream LoRA's planned rates both overshoot the dev level: once every planned run is in,
    the next lower rate of its dev sweep is added (every seed), the answer waits for it and then reads LoRA between
    two of its own runs; SMF, which straddles the level, gets nothing; an arm short of it gets its next higher rate."""
    from smf_lib.files import write_json
    from smf_lib.study import facts_frontier as FF
    from smf_lib.study.facts_presets import FactsPreset
    from smf_lib.study.facts_status import status_lines
    from smf_lib.study.facts_study import FactsRunner

    dev = {"smf-tfidf": {1e-2: 1.0, 3e-2: 3.0}, "lora": {1e-6: 0.2, 1e-5: 0.5, 1e-4: 1.5, 3e-4: 4.0},
           "full": {1e-7: 0.3, 1e-6: 2.5, 1e-5: 6.0, 1e-4: 9.0}}  # full: the next higher rate, not the farthest
    p = FactsPreset(name="t", model="tiny", rates={arm: tuple(by) for arm, by in dev.items()}, seeds=(0, 1),
                    dev_seeds=(0,))
    start = {"facts_loglik": [-10.0, -10.0], "chat_loglik": [-2.0, -2.0]}
    for split in ("dev", "report"):
        write_json(tmp_path / f"start-{split}.json", {"scores": start})
    for arm, by in dev.items():
        for lr, g in by.items():
            write_json(tmp_path / "runs" / f"{arm}-lr{lr:g}-s0-dev.json",
                       {**_facts_run(arm, lr, 0, -10.0 + g, [-2.0, -2.0]), "run": f"{arm}-lr{lr:g}-s0-dev"})
    plan = FF.report_plan(p, tmp_path)  # level 2.0: SMF (1e-2, 3e-2), LoRA (1e-4, 3e-4), full (1e-7, 1e-6)
    assert plan["level"] == pytest.approx(2.0) and plan["rates"]["lora"] == (1e-4, 3e-4)
    reported = {"smf-tfidf": {1e-2: 1.0, 3e-2: 3.0}, "lora": {1e-4: 2.5, 3e-4: 5.0}, "full": {1e-7: 0.2, 1e-6: 1.0}}
    names = FF.run_names(plan["rates"], p.seeds)
    for name in names[:-1]:
        arm, lr, seed = name.rsplit("-lr", 1)[0], float(name.split("-lr")[1].split("-s")[0]), int(name[-8])
        write_json(tmp_path / "runs" / f"{name}.json", _facts_run(arm, lr, seed, -10.0 + reported[arm][lr], [-2.0] * 2))
    assert FF.bracket_rates(p, tmp_path) is None  # one planned run missing: nothing is decided yet
    assert FF.bracket_rates_so_far(p, tmp_path) == {"lora": (1e-5,), "full": (1e-5,)}  # but seed 0 already decides
    assert status_lines(p, tmp_path)[2].endswith(
        "(decided once the planned runs are in; already certain from the finished runs: lora at 1e-05, full at 1e-05, "
        "4 runs)")
    write_json(tmp_path / "runs" / f"{names[-1]}.json", _facts_run("full", 1e-6, 1, -9.0, [-2.0] * 2))
    assert FF.bracket_rates(p, tmp_path) == {"lora": (1e-5,), "full": (1e-5,)}
    assert FF.answer_runs(p, tmp_path)["split"] == "dev"  # waits for the added runs
    lines = status_lines(p, tmp_path)
    assert lines[1].endswith("12 of 16 runs finished")
    assert lines[2].endswith("lora at 1e-05 (below its planned rates), full at 1e-05 (above its planned rates)")
    assert lines[3].endswith("lora-lr1e-05-s0-report, full-lr1e-05-s0-report, lora-lr1e-05-s1-report, "
                             "full-lr1e-05-s1-report")
    calls = []
    monkeypatch.setattr(FactsRunner, "fact_rows", lambda self, split="dev": None)
    monkeypatch.setattr(FactsRunner, "run", lambda self, arm, lr, seed, split: calls.append((arm, lr, seed)))
    FactsRunner(p, tmp_path, progress=False).run_all("report")
    assert calls[-4:] == [("lora", 1e-5, 0), ("full", 1e-5, 0), ("lora", 1e-5, 1), ("full", 1e-5, 1)]
    for arm, lr, seed in calls[-4:]:
        write_json(tmp_path / "runs" / f"{arm}-lr{lr:g}-s{seed}-report.json",
                   _facts_run(arm, lr, seed, -9.0 if arm == "lora" else -6.0, [-2.0] * 2))
    got = FF.answer_runs(p, tmp_path)
    assert got["split"] == "report" and len(got["runs"]) == 16 and got["added"] == {"lora": (1e-5,), "full": (1e-5,)}
    reads = FF.reads_table(got["runs"], got["start"], got["level"], seeds=(0, 1))
    assert set(reads.loc[reads["arm"] == "lora", "below"]) == {1e-5} and not reads["from start"].any()


def test_the_common_level_is_the_compared_arms_and_the_reported_rates_bracket_it(tmp_path, monkeypatch):
    """SMF with plain SGD does not move the level (it is read at it where it reaches it); the reported facts run
    each arm at the dev rates just below and above the level, every seed, seed by seed."""
    from smf_lib.files import write_json
    from smf_lib.study import facts_frontier as FF
    from smf_lib.study.facts_presets import FactsPreset
    from smf_lib.study.facts_study import FactsRunner

    start = {"facts_loglik": [-10.0, -10.0], "chat_loglik": [-2.0, -2.0]}
    gains = {"smf-tfidf": {1e-2: 1.0, 3e-2: 3.0}, "lora": {1e-5: 0.5, 1e-4: 1.5, 3e-4: 4.0},
             "smf-tfidf-sgd": {1.0: 0.1, 3.0: 0.2}}  # SGD never reaches the others' overlap
    runs = [_facts_run(arm, lr, 0, -10.0 + g, [-2.0, -2.0]) for arm, by in gains.items() for lr, g in by.items()]
    found = FF.level_of(runs, start)
    assert found["level"] == pytest.approx(2.0) and found["ranges"]["smf-tfidf-sgd"] == pytest.approx((0.1, 0.2))
    write_json(tmp_path / "start-dev.json", {"scores": start})
    for r in runs:
        name = f"{r['arm']}-lr{r['lr']:g}-s0-dev"
        write_json(tmp_path / "runs" / f"{name}.json", {**r, "run": name})
    p = FactsPreset(name="t", model="tiny", rates={arm: tuple(by) for arm, by in gains.items()}, seeds=(0, 1),
                    dev_seeds=(0,))
    runner = FactsRunner(p, tmp_path, progress=False)
    assert runner.report_rates() == {"smf-tfidf": (1e-2, 3e-2), "lora": (1e-4, 3e-4), "smf-tfidf-sgd": (3.0,)}
    calls = []
    monkeypatch.setattr(runner, "fact_rows", lambda split="dev": calls.append(("rows", split)))
    monkeypatch.setattr(runner, "run", lambda arm, lr, seed, split: calls.append((arm, lr, seed, split)))
    runner.run_all("report")
    assert calls[0] == ("rows", "dev") and len(calls) == 1 + 2 * 5
    assert [c[2] for c in calls[1:]] == [0] * 5 + [1] * 5 and {c[3] for c in calls[1:]} == {"report"}


def test_the_facts_example_sentence_reads_one_reported_medmcqa_item_per_arm():
    from smf_lib.study import facts_findings as FX

    start = {"medmcqa_gold_margin": [0.5, -0.2]}
    runs = [{"arm": "smf-tfidf", "split": "report", "scores": {"medmcqa_gold_margin": [0.5, -0.1]}},
            {"arm": "smf-tfidf", "split": "report", "scores": {"medmcqa_gold_margin": [0.5, -0.15]}},
            {"arm": "lora", "split": "report", "scores": {"medmcqa_gold_margin": [0.4, -0.3]}}]
    sentence = FX.example_sentence(runs, start, 1)
    assert "starts at -0.200 nats" in sentence
    assert "+0.050 to +0.100 under SMF-TF-IDF, -0.100 under LoRA" in sentence
    assert FX.example_sentence([{**r, "split": "dev"} for r in runs], start, 1) is None


def test_rates_around_follow_the_first_crossing_and_verdicts_need_every_seed_to_agree():
    from smf_lib.study import facts_frontier as FF

    start = {"facts_loglik": [-10.0, -10.0], "wikitext_nll": [3.0, 3.0], "chat_loglik": [-2.0, -2.0]}
    bumpy = [_facts_run("lora", 1e-5, 0, -9.0, [-2.0, -2.0]), _facts_run("lora", 3e-5, 0, -7.0, [-2.0, -2.0]),
             _facts_run("lora", 1e-4, 0, -9.5, [-2.0, -2.0])]  # learning 1, 3, then 0.5: not monotone
    assert FF.rates_around(bumpy, start, 2.0) == {"lora": (1e-5, 3e-5)}
    assert FF.rates_around(bumpy, start, 0.5) == {"lora": (1e-5,)}  # between the start and the lowest rate
    assert FF.rates_around(bumpy, start, 5.0) == {"lora": (1e-4,)}  # never reached: the highest rate
    at = FF.at_level(bumpy, start, "lora", 0, 3.0)  # exactly at a measured point: that point
    assert at["lr"] == (1e-5, 3e-5) and at["chat_loglik"] == pytest.approx([0.0, 0.0])

    def run(arm, seed, nll):
        return {"arm": arm, "lr": 1e-2, "seed": seed, "scores": {"facts_loglik": [-8.0, -8.0], "wikitext_nll": nll}}
    agree = [run("smf-tfidf", 0, [2.9, 2.9]), run("smf-tfidf", 1, [2.9, 2.9]),
             run("lora", 0, [3.1, 3.1]), run("lora", 1, [3.1, 3.1])]
    row = FF.compare(agree, start, 1.0, smf=("smf-tfidf",), baselines=("lora",), probes=("wikitext_nll",)).iloc[0]
    assert row["difference"] == pytest.approx(-0.1) and row["verdict"] == "better"  # lower NLL is better (half way)
    split = [run("smf-tfidf", 0, [2.0, 2.0]), run("smf-tfidf", 1, [3.3, 3.3]),
             run("lora", 0, [3.1, 3.1]), run("lora", 1, [3.1, 3.1])]  # seed 0 far better, seed 1 worse
    row = FF.compare(split, start, 1.0, smf=("smf-tfidf",), baselines=("lora",), probes=("wikitext_nll",)).iloc[0]
    assert row["per seed"] == [-0.55, 0.1] and row["verdict"] == "cannot tell"


def test_the_findings_say_which_arm_falls_short_of_a_given_level():
    from smf_lib.study import facts_findings as FX

    start = {"facts_loglik": [-10.0, -10.0], "facts_em": [0, 0], "chat_loglik": [-2.0, -2.0]}
    runs = [_facts_run("smf-tfidf", 1e-2, 0, -9.0, [-2.0, -2.0]), _facts_run("lora", 1e-4, 0, -6.0, [-2.4, -2.2])]
    found = FX.findings(runs, start, seeds=(0,), level=2.0)  # the level fixed beforehand: SMF reaches only 1.0
    assert found[-1].endswith("no pair to compare (SMF-TF-IDF did not reach that level).")


def test_overwriting_compares_the_first_facts_with_every_fact_at_the_level():
    from smf_lib.study import facts_frontier as FF

    start = {"facts_loglik": [-10.0, -10.0], "first_facts_loglik": [-10.0]}

    def run(arm, lr, every, first):
        return {"arm": arm, "lr": lr, "seed": 0,
                "scores": {"facts_loglik": [-10.0 + every] * 2, "first_facts_loglik": [-10.0 + first]}}
    runs = [run("smf-tfidf", 1e-2, 2.0, 2.0), run("lora", 1e-4, 2.0, 0.5)]  # LoRA's oldest facts faded
    table = FF.overwriting(runs, start, 1.0, seeds=(0,)).set_index("arm")
    assert table.loc["SMF-TF-IDF", "first / every"] == pytest.approx(1.0)
    assert table.loc["LoRA", "every fact"] == pytest.approx(1.0)
    assert table.loc["LoRA", "first facts"] == pytest.approx(0.25)


def test_a_diverged_facts_run_is_recorded_skipped_and_counted_as_finished(tmp_path, monkeypatch):
    from smf_lib.study import facts_study
    from smf_lib.study.facts_frontier import dev_runs_left
    from smf_lib.study.facts_status import status_lines
    from smf_lib.study.facts_presets import FactsPreset
    from smf_lib.training import TrainingDiverged

    p = FactsPreset(name="t", model="tiny", rates={"smf-tfidf": (1e4,)}, dev_facts=2, seeds=(0,), dev_seeds=(0,))
    runner = facts_study.FactsRunner(p, tmp_path, progress=False)
    monkeypatch.setattr(runner, "baseline", lambda split: {})
    monkeypatch.setattr(runner, "starting_model", lambda: (None, None))
    monkeypatch.setattr(runner, "background", lambda model, tok: None)
    monkeypatch.setattr(runner, "fact_rows", lambda split="dev": None)

    def diverge(*args, **kwargs):
        raise TrainingDiverged("the training loss is nan at step 3")
    monkeypatch.setattr(facts_study, "train", diverge)
    assert runner.run_all("dev") == [] and (tmp_path / "failed" / "smf-tfidf-lr10000-s0-dev.json").exists()

    def never(*args, **kwargs):
        raise AssertionError("a diverged run is not trained again with the same settings")
    monkeypatch.setattr(facts_study, "train", never)
    assert runner.run("smf-tfidf", 1e4, 0, "dev") is None
    assert dev_runs_left(p, tmp_path) == []
    assert status_lines(p, tmp_path)[1] == "diverged (no metrics): smf-tfidf-lr10000-s0-dev"


def test_the_reads_say_which_arms_lie_on_the_line_from_the_start_and_which_never_reach_the_level():
    """An arm whose lowest reported rate already learned more than the level is read between the starting model
    and that run, and the chapter says so; an arm that never reaches the level is named as not compared."""
    from smf_lib.study import facts_findings as FX
    from smf_lib.study import facts_frontier as FF

    start = {"facts_loglik": [-10.0, -10.0], "chat_loglik": [-2.0, -2.0]}
    runs = []
    for seed in (0, 1):
        runs += [_facts_run("smf-tfidf", 3e-2, seed, -9.7, [-2.0] * 2), _facts_run("smf-tfidf", 1e-1, seed, -9.2,
                                                                                      [-2.0] * 2),
                 _facts_run("lora", 1e-5, seed, -9.2 + 0.1 * seed, [-2.0] * 2),
                 _facts_run("lora", 3e-5, seed, -7.7, [-2.0] * 2),
                 _facts_run("full", 1e-6, seed, -9.9, [-2.0] * 2)]
    table = FF.reads_table(runs, start, 0.43)
    rows = table.set_index(["arm", "seed"])
    assert rows.loc[("smf-tfidf", 0), "below"] == 3e-2 and not rows.loc[("smf-tfidf", 0), "from start"]
    assert rows.loc[("lora", 1), "below"] == 0.0 and rows.loc[("lora", 1), "from start"]
    said = FX.reads_sentence(table, 0.43)
    assert said.startswith("At the level (+0.43 nats): LoRA's lowest rate, 1e-05, already learned +0.80, +0.90 nats "
                           "(seeds 0, 1), more than the level, so it is read on the straight line")
    assert "full finetuning never reaches the level (at most +0.10 nats) and is not compared" in said
    assert FX.reads_sentence(table[table["arm"] == "smf-tfidf"], 0.43) is None


def test_the_answer_says_when_a_baseline_is_read_on_the_line_from_the_start():
    from smf_lib.study import facts_findings as FX

    start = {"facts_loglik": [-10.0, -10.0], "chat_loglik": [-2.0, -2.0]}
    runs = []
    for seed in (0, 1):
        runs += [_facts_run("smf-tfidf", 3e-2, seed, -9.7, [-2.0, -2.0]),
                 _facts_run("smf-tfidf", 1e-1, seed, -9.2, [-2.01, -2.01]),
                 _facts_run("lora", 1e-5, seed, -9.2, [-1.99, -1.99]),
                 _facts_run("lora", 3e-5, seed, -7.7, [-2.2, -2.2])]
    said = FX.answer(runs, start, (0, 1), split="report", level=0.43)
    assert said.endswith("(LoRA read on the line from the starting model: its lowest rate already learned more).")
    bracketed = [r for r in runs if r["arm"] == "smf-tfidf"] + [
        {**r, "lr": 3e-6, "scores": {**r["scores"], "facts_loglik": [-9.8, -9.8]}} for r in runs
        if r["arm"] == "lora" and r["lr"] == 1e-5] + [r for r in runs if r["arm"] == "lora"]
    assert "line from the starting model" not in FX.answer(bracketed, start, (0, 1), split="report", level=0.43)


def test_a_facts_run_resumed_from_a_checkpoint_counts_the_earlier_processes_time(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from smf_lib.study import facts_study
    from smf_lib.study.facts_presets import FactsPreset

    p = FactsPreset(name="t", model="tiny", rates={"lora": (1e-4,)}, dev_facts=2, seeds=(0,), dev_seeds=(0,))
    runner = facts_study.FactsRunner(p, tmp_path, progress=False)
    monkeypatch.setattr(runner, "baseline", lambda split: {})
    monkeypatch.setattr(runner, "starting_model", lambda: (None, None))
    monkeypatch.setattr(facts_study, "probe_items", lambda *a: {})
    monkeypatch.setattr(facts_study, "score", lambda *a: {})
    resumed = {"step": 8, "earlier_seconds": 600.0}  # the process that trained steps 1 to 8 took 10 minutes
    monkeypatch.setattr(facts_study, "train", lambda *a, **k: SimpleNamespace(model=None, seconds=620.0,
                                                                               resumed=resumed))
    ckpt = tmp_path / "artifacts" / "lora-lr0.0001-s0-dev"
    ckpt.mkdir(parents=True)
    (ckpt / "checkpoint.pt").write_bytes(b"0" * 16)
    rec = runner.run("lora", 1e-4, 0, "dev")
    assert rec["resumed"] == resumed and 600.0 <= rec["seconds"] < 660.0
    assert not ckpt.exists()  # once the record is written, the checkpoint goes (a full-finetuning one is 1.6 GB)
    assert "arrival" not in rec["identity"]  # seed 0: the stream as built, as every earlier record


def test_a_rate_is_added_where_one_seed_alone_misses_the_level_and_a_diverged_run_counts_as_finished(tmp_path):
    """The added rate is decided seed by seed (each seed is read on its own); a reported run that diverged is
    finished, so it does not hold the decision back; a rate that diverged on the dev facts is never added."""
    from smf_lib.files import write_json
    from smf_lib.study import facts_frontier as FF
    from smf_lib.study.facts_presets import FactsPreset
    from smf_lib.study.facts_status import status_lines

    dev = {"smf-tfidf": {1e-2: 1.0, 3e-2: 3.0}, "lora": {1e-6: 0.1, 3e-6: 0.2, 1e-5: 0.5, 1e-4: 1.5, 3e-4: 4.0}}
    p = FactsPreset(name="t", rates={arm: tuple(by) for arm, by in dev.items()}, seeds=(0, 1), dev_seeds=(0,))
    start = {"facts_loglik": [-10.0, -10.0], "chat_loglik": [-2.0, -2.0]}
    for split in ("dev", "report"):
        write_json(tmp_path / f"start-{split}.json", {"scores": start})
    for arm, by in dev.items():
        for lr, g in by.items():
            name = f"{arm}-lr{lr:g}-s0-dev"
            if (arm, lr) == ("lora", 1e-5):  # diverged on the dev facts: no record, never added
                write_json(tmp_path / "failed" / f"{name}.json", {"run": name})
                continue
            write_json(tmp_path / "runs" / f"{name}.json", {**_facts_run(arm, lr, 0, -10.0 + g, [-2.0] * 2),
                                                            "run": name})
    plan = FF.report_plan(p, tmp_path)
    assert plan["level"] == pytest.approx(2.0) and plan["rates"]["lora"] == (1e-4, 3e-4)
    reported = {("smf-tfidf", 1e-2): 1.0, ("smf-tfidf", 3e-2): 3.0, ("lora", 1e-4): 1.5, ("lora", 3e-4): 4.0}
    for name in FF.run_names(plan["rates"], p.seeds):
        arm, rest = name.split("-lr")
        lr, seed = float(rest.split("-s")[0]), int(rest.split("-s")[1][0])
        # LoRA's seed 1 alone overshoots at 1e-4 (mean over seeds 1.9, below the level)
        gain = 2.3 if (arm, lr, seed) == ("lora", 1e-4, 1) else reported[(arm, lr)]
        if (arm, lr, seed) == ("smf-tfidf", 3e-2, 1):
            write_json(tmp_path / "failed" / f"{name}.json", {"run": name})  # diverged: finished, no metrics
            continue
        write_json(tmp_path / "runs" / f"{name}.json", _facts_run(arm, lr, seed, -10.0 + gain, [-2.0] * 2))
    assert FF.bracket_rates(p, tmp_path) == {"lora": (3e-6,)}  # not 1e-5: it diverged on the dev facts
    lines = status_lines(p, tmp_path)
    assert lines[1] == "diverged (no metrics): lora-lr1e-05-s0-dev"
    assert lines[2].endswith("8 of 10 runs finished") and lines[3].endswith("smf-tfidf-lr0.03-s1-report")
    assert lines[4].startswith("added, one step along the dev sweep: lora at 3e-06 (below")
    assert "smf-tfidf-lr0.03-s1-report" not in lines[5]  # not to do again


def test_a_seed_shuffles_the_arrival_of_the_facts_after_the_first_ones():
    """Seed 0 is the stream as built; another seed keeps the first facts first (the ones scored apart for
    overwriting) and reorders the rest, deterministically, so a seed changes an SMF run."""
    from smf_lib.facts import arrival_order

    facts = make_facts(30)
    assert arrival_order(facts, 0, 5) == facts
    one, again, two = arrival_order(facts, 1, 5), arrival_order(facts, 1, 5), arrival_order(facts, 2, 5)
    assert one == again and one[:5] == facts[:5] and one[5:] != facts[5:] and one[5:] != two[5:]
    assert sorted(f.index for f in one) == [f.index for f in facts]


def test_a_facts_run_trains_on_its_seeds_arrival_order(tmp_path, monkeypatch):
    from smf_lib.study import facts_study
    from smf_lib.study.facts_presets import FactsPreset

    p = FactsPreset(name="t", model="tiny", rates={"smf-tfidf": (1e-2,)}, n_facts=6, first_facts=2, seeds=(0, 1))
    runner = facts_study.FactsRunner(p, tmp_path, progress=False)
    monkeypatch.setattr(runner, "baseline", lambda split: {})
    monkeypatch.setattr(runner, "starting_model", lambda: (None, None))
    monkeypatch.setattr(runner, "background", lambda model, tok: None)
    trained = {}

    def record(model, tok, texts, config, order, **kwargs):
        trained[config.seed] = [texts[step[0][0]] for step in order[::p.steps_per_fact]]
        raise facts_study.TrainingDiverged("stop here")
    monkeypatch.setattr(facts_study, "train", record)
    for seed in (0, 1):
        runner.run("smf-tfidf", 1e-2, seed, "report")
    facts = facts_study.facts_of(p, "report")
    assert trained[0] == [f.statements[0] for f in facts]
    assert trained[1][:2] == trained[0][:2] and sorted(trained[1]) == sorted(trained[0]) and trained[1] != trained[0]
    from smf_lib.files import read_json

    identity = {s: read_json(tmp_path / "failed" / f"smf-tfidf-lr0.01-s{s}-report.json")["identity"] for s in (0, 1)}
    assert "arrival" in identity[1] and "arrival" not in identity[0]  # a seed-1 record of the old order is not reused


def test_the_resolution_is_the_median_half_width_of_the_runs_intervals():
    from smf_lib.study import facts_frontier as FF

    runs = [{"changes": {"chat_loglik": {"delta": 0.0, "lo": -w, "hi": w, "n": 174}}} for w in (0.002, 0.004, 0.010)]
    table = FF.resolution(runs).set_index("measure")
    assert table.loc["held-out chat log-lik (nats)", "half-width"] == pytest.approx(0.004)
    assert table.loc["held-out chat log-lik (nats)", "items"] == 174 and len(table) == 1  # only measures runs have


def test_each_arms_change_at_the_level_is_read_between_its_rates_and_averaged_over_seeds():
    from smf_lib.study import facts_frontier as FF

    start = {"facts_loglik": [-10.0, -10.0], "chat_loglik": [-2.0, -2.0]}
    runs = [_facts_run("lora", 1e-4, sd, -8.0, [-2.4, -2.2]) for sd in (0, 1)]
    runs += [_facts_run("lora", 3e-4, 0, -6.0, [-3.0, -3.0]), _facts_run("lora", 3e-4, 1, -6.0, [-2.0, -2.0])]
    table = FF.changes_at_level(runs, start, 2.5, seeds=(0, 1), probes=("chat_loglik",))
    (row,) = table.to_dict("records")  # a quarter of the way from gain 2 to 4: seed 0 -0.475, seed 1 -0.225
    assert row["arm"] == "lora" and row["seeds"] == 2 and row["change"] == pytest.approx(-0.35)
    assert FF.changes_at_level(runs, start, 9.0, probes=("chat_loglik",)).empty  # no rate reaches it


def test_the_paper_sentence_sets_the_study_beside_lin_et_al_on_the_nearest_probe():
    """World knowledge at the level for SMF-TF-IDF, LoRA and full finetuning, with what the probe resolves; it says
    when neither baseline lost any measurably (the paper's contrast cannot show) and when one did."""
    from smf_lib.study import facts_findings as FX

    start = {"facts_loglik": [-10.0] * 2, "triviaqa_gold_loglik": [-3.0, -3.0]}

    def run(arm, lr, gain, tqa):
        change = {"n": 2, "lo": -0.01, "hi": 0.01}  # half-width 0.01
        return {"arm": arm, "lr": lr, "seed": 0, "changes": {"triviaqa_gold_loglik": change},
                "scores": {"facts_loglik": [-10.0 + gain] * 2, "triviaqa_gold_loglik": tqa}}

    calm = [run(a, lr, g, [-3.0, -3.0]) for a in ("smf-tfidf", "lora", "full") for lr, g in ((1.0, 1.0), (2.0, 3.0))]
    said = FX.paper_sentence(calm, start, 2.0, seeds=(0,))
    assert "89% under full finetuning, 71% under LoRA, 11% under SMF" in said
    assert "changed by +0.000 nats under SMF-TF-IDF" in said and "resolves about 0.010" in said
    assert said.endswith("it needs a level of learning at which the baselines forget.")
    hit = calm[:2] + [run("lora", 1.0, 1.0, [-3.2, -3.1]), run("lora", 2.0, 3.0, [-3.4, -3.3])] + calm[4:]
    said = FX.paper_sentence(hit, start, 2.0, seeds=(0,))
    assert "-0.250 under LoRA" in said and "SMF-TF-IDF kept more than LoRA (+0.250 [" in said
    assert said.endswith("LoRA lost world knowledge measurably, the setting in which the paper's contrast can show.")
    assert FX.paper_sentence(calm[:4], start, 2.0, seeds=(0,)) is None  # full finetuning did not run


def test_the_provenance_sentence_counts_clean_trees_and_names_runs_on_a_remade_start():
    from smf_lib.study.facts_findings import provenance_sentence

    change = {"chat_loglik": {"delta": 0.0, "lo": -0.01, "hi": 0.01, "n": 10}}
    runs = [{"run": f"lora-lr1e-05-s{s}-report", "code": {"git_commit": "abc", "git_clean": True}, "changes": change}
            for s in (0, 1)]
    said = provenance_sentence(runs)
    assert said.startswith("2 of 2 runs started from a commit with a clean tree (1 commit in all")
    assert "made again" not in said
    runs.append({"run": "full-lr3e-07-s1-report", "code": {"git_commit": "def", "git_clean": False},
                 "changes": change, "start_made_again": {"max_loss_difference": 3e-5,
                                                         "offsets": {"chat_loglik": -0.002}}})
    said = provenance_sentence(runs)
    assert said.startswith("2 of 3 runs") and "(2 commits in all" in said
    assert "1 of them (full-lr3e-07-s1-report) started from the starting memory made again" in said
    assert "within 3e-05 nats" in said and "at most 20% of the half-width" in said
