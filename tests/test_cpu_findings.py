"""The cpu study's answer on constructed records whose differences, seeds and verdicts are known."""

import numpy as np
import pytest

from smf_lib.study import cpu_findings as CF

N = 300
RNG = np.random.default_rng(0)
BASE = {"chat_loglik": RNG.normal(-2.0, 0.5, N), "medmcqa_gold_margin": RNG.normal(0.0, 0.5, N),
        "triviaqa_alias_loglik": RNG.normal(-5.0, 1.0, N)}


def _rec(method, seed, chat=0.0, margin=0.0, trivia=0.0):
    """A reported run whose items are the common ones shifted by fixed amounts (seed-dependent noise of 1e-3)."""
    noise = np.random.default_rng(seed + 7).normal(0, 1e-3, N)
    items = {"chat_loglik": BASE["chat_loglik"] + chat + noise, "medmcqa_gold_margin": BASE["medmcqa_gold_margin"]
             + margin + noise, "triviaqa_alias_loglik": BASE["triviaqa_alias_loglik"] + trivia + noise}
    return {"method": method, "seed": seed, "evaluation": "report", "split": "report",
            "train_config": {"lr": 1e-2}, "items": {k: list(v) for k, v in items.items()}}


def _study(kl_chat=(0.02, 0.03), tfidf_chat=(0.001, -0.001), kl_margin=0.005, tfidf_trivia=-0.05):
    runs = []
    for seed in (0, 1):
        runs += [_rec("lora-mem", seed), _rec("full-mem", seed, chat=-0.01), _rec("lora", seed, chat=0.05),
                 _rec("smf-kl", seed, chat=kl_chat[seed], margin=kl_margin),
                 _rec("smf-tfidf", seed, chat=tfidf_chat[seed], margin=0.1, trivia=tfidf_trivia)]
    return runs


def test_the_verdicts_pool_the_seeds_and_say_cannot_tell_when_they_disagree():
    table = CF.verdict_table(_study()).set_index(["smf", "baseline", "metric"])
    kl = table.loc[("smf-kl", "lora-mem", "chat_loglik")]
    assert kl["difference"] == pytest.approx(0.025, abs=2e-4) and kl["verdict"] == "better" and kl["seeds"] == 2
    assert kl["per seed"] == pytest.approx([0.02, 0.03], abs=2e-4)
    assert table.loc[("smf-kl", "full-mem", "chat_loglik"), "verdict"] == "better"  # full-mem lost 0.01
    assert table.loc[("smf-tfidf", "lora-mem", "chat_loglik"), "verdict"] == "cannot tell"  # the seeds disagree
    assert table.loc[("smf-tfidf", "lora-mem", "triviaqa_alias_loglik"), "verdict"] == "worse"
    assert list(CF.verdict_table(_study())["smf"].unique()) == ["smf-kl", "smf-tfidf"]  # the book's order


def test_the_answer_and_findings_say_what_was_measured_including_what_goes_against_smf():
    runs = _study()
    said = CF.answer(runs, 0.14)
    assert said.startswith("Trained on MedMCQA, with every method started from the same model and brought to "
                           "the same learning (+0.140 nats of gold margin on dev questions), SMF-KL kept more held-out "
                           "chat than LoRA (+0.025")
    assert "nats) and full finetuning (+0.035" in said and said.count("held-out chat") == 2  # once per selector
    assert "SMF-TF-IDF could not be told apart on held-out chat from LoRA" in said
    # SMF-TF-IDF learned 0.1 more gold margin on the reported items: the sentence says its pairs are not matched
    assert said.endswith("; there the forgetting is compared at unequal learning.")
    assert "margin: SMF-TF-IDF learned more than LoRA (+0.100 [" in said and "SMF-KL learned" not in said
    assert "(+0.140 nats of gold margin on dev questions; SMF-TF-IDF outside the 0.02-nat margin)" in CF.answer(
        runs, 0.14, ["smf-tfidf"])
    one = CF.answer([r for r in runs if r["seed"] == 0], 0.14)
    assert "; one seed)" in one and "nats)" not in one
    choice = {"level": 0.14, "margin": 0.02, "rates": {"smf-kl": 0.03, "smf-tfidf": 0.1, "lora-mem": 5e-5,
                                                       "full-mem": 3e-5, "lora": 5e-5, "full": 3e-5},
              "unmatched": ["smf-tfidf"]}
    found = CF.findings(runs, choice)
    assert len(found) <= 4
    assert found[0].startswith("The rates were chosen on dev items where each method's learning came to +0.140 nats")
    assert "(SMF-TF-IDF outside the 0.02-nat margin)" in found[0] and "LoRA 5e-05" in found[0]
    assert "stayed matched" in found[1] and "SMF-KL against LoRA" in found[1]
    assert "not where SMF-TF-IDF learned more than LoRA (+0.100" in found[1] and "unequal learning" in found[1]
    assert "SMF-TF-IDF was worse than LoRA on TriviaQA gold-answer log-likelihood (-0.050" in found[2]
    assert found[3].startswith("Counted from the base model, as the paper does, SMF-KL lost more held-out chat than "
                               "LoRA from the base model")


def test_nothing_is_said_before_the_reported_runs_are_in():
    assert CF.answer([], 0.1) is None and CF.findings([], None) == []
    runs = [r for r in _study(tfidf_trivia=0.0) if r["method"] != "lora"]
    assert "No retention probe found a selector worse" in CF.findings(runs, None)[1]


def test_an_interval_that_excludes_zero_with_seeds_that_disagree_says_so_and_no_matched_pair_reads_plainly():
    runs = _study(kl_chat=(0.06, -0.01), kl_margin=0.1)
    table = CF.verdict_table(runs)
    kl = table[(table["smf"] == "smf-kl") & (table["baseline"] == "lora-mem") & (table["metric"] == "chat_loglik")]
    assert kl.iloc[0]["lo"] > 0 and kl.iloc[0]["verdict"] == "cannot tell"
    assert "could not be told apart on held-out chat from LoRA (+0.025 [" in CF.answer(runs, 0.1)
    assert "; the seeds disagree)" in CF.answer(runs, 0.1)
    said = CF.learning_sentence(table)
    assert said.startswith("On the reported items the learning did not stay matched (SMF minus the baseline in gold "
                           "margin, its whole interval within 0.02 nats) for any pair: SMF-KL learned more than LoRA "
                           "(+0.100")

