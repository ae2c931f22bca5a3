"""The memory's health (share of the MLP's output, held-out loss per text), the zero-W2 init, and the learning
measures without the letter prior."""

import math
import warnings

import pytest
import torch

import smf_lib as S
from smf_lib.health import check_health, loss_change, memory_health

from conftest import MEM, TEXTS


def test_a_zero_init_memory_has_zero_share_and_a_grown_one_has_its_true_share(tok):
    model = S.add_memory(S.tiny_model("llama"), S.MemoryConfig(**MEM))
    h = memory_health(model, tok, TEXTS, max_length=32)
    assert set(h["share_by_layer"]) == {"1", "2"}
    assert h["share"] == 0 and h["min_share"] == 0
    assert len(h["text_losses"]) == len(TEXTS)
    # make layer 2's memory exactly the MLP's output: share 1 there, 0 at layer 1
    mlp2 = model.model.layers[2].mlp
    mlp2.memory.forward = lambda x: mlp2.mlp(x)
    h = memory_health(model, tok, TEXTS, max_length=32)
    assert h["share_by_layer"]["2"] == pytest.approx(1.0, rel=1e-5)
    assert h["share_by_layer"]["1"] == 0 and h["min_share"] == 0
    assert h["share"] == pytest.approx(0.5, rel=1e-5)


def test_text_losses_average_to_the_models_loss(tok):
    model = S.add_memory(S.tiny_model("llama"), S.MemoryConfig(**MEM))
    h = memory_health(model, tok, TEXTS[:1], max_length=32)
    batch = tok(TEXTS[:1], return_tensors="pt")
    ids = batch.input_ids
    with torch.no_grad():
        loss = float(model(input_ids=ids, labels=ids).loss)
    assert h["text_losses"][0] == pytest.approx(loss, rel=1e-5)
    assert h["loss"] == pytest.approx(loss, rel=1e-5)


def test_loss_change_is_paired_and_signed():
    before = {"text_losses": [2.0, 3.0, 4.0, 5.0]}
    after = {"text_losses": [1.9, 2.9, 3.9, 4.9]}
    d = loss_change(before, after)
    assert d["delta"] == pytest.approx(-0.1) and d["lo"] == pytest.approx(-0.1) and d["hi"] == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="same"):
        loss_change(before, {"text_losses": [1.0]})


def test_check_health_warns_below_the_threshold_and_names_the_layer():
    with pytest.warns(S.MemoryHealthWarning, match="layer 22: 3.0%"):
        assert not check_health({"share_by_layer": {"7": 0.2, "22": 0.03}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_health({"share_by_layer": {"7": 0.2, "22": 0.11}})


def test_zero_w2_init_leaves_logits_unchanged_and_trains_w2_first(tok):
    base = S.tiny_model("llama")
    ids = torch.tensor([list(b"hello world")])
    with torch.no_grad():
        ref = base(input_ids=ids).logits.clone()
    model = S.add_memory(base, S.MemoryConfig(**{**MEM, "init": "zero-w2"}))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, ref)
    m = S.memory_layers(model)[0]
    assert m.w2.weight.abs().sum() == 0 and m.values.weight.abs().sum() > 0
    assert model.model.layers[1].mlp.alpha.item() == 1.0
    for p in model.parameters():
        p.requires_grad_(False)
    for p in m.parameters():
        p.requires_grad_(True)
    model(input_ids=ids, labels=ids).loss.backward()
    assert m.w2.weight.grad.abs().sum() > 0  # every token reaches the dense W2 at once
    assert m.values.weight.grad is None or m.values.weight.grad.abs().sum() == 0  # the values follow later


def test_medmcqa_items_keep_all_four_scores_and_a_prior_free_margin():
    from smf_lib.probes import medmcqa_accuracy

    rows = [{"question": "q?", "opa": "alpha", "opb": "beta", "opc": "gamma", "opd": "delta", "cop": c}
            for c in range(4)]
    from test_probes import LetterTokenizer

    res = medmcqa_accuracy(S.tiny_model("llama"), LetterTokenizer(), rows, progress=False)
    for it in res["items"]:
        scores = it["option_loglik"]
        assert len(scores) == 4
        others = max(s for i, s in enumerate(scores) if i != it["gold"])
        assert it["gold_margin"] == pytest.approx(scores[it["gold"]] - others)
        assert (it["gold_margin"] > 0) == bool(it["correct"]) or it["gold_margin"] == 0
        z = sum(math.exp(s) for s in scores)
        assert it["gold_prob"] == pytest.approx(math.exp(scores[it["gold"]]) / z)
    # the same question with each option as gold: the renormalised probabilities sum to 1
    assert sum(it["gold_prob"] for it in res["items"]) == pytest.approx(1.0)


def test_the_retrofit_pilot_records_health_along_the_way_and_resumes(tmp_path):
    """A two-recipe pilot on a tiny model and the packaged fixtures: one record per recipe, a trajectory from step 0
    with per-layer shares and paired loss intervals, and a rerun that reads the records back."""
    from pathlib import Path

    import smf_lib.study.pilot as PL

    data = Path(PL.__file__).parents[1] / "fixtures"
    s = PL.PilotSettings(model="tiny", memory=dict(MEM, layers=(1, 2)), steps=3, probe_steps=(1, 3),
                         texts_per_step=2, micro_batch=2, max_length=32, warmup_steps=1, heldout_n=4, data=str(data))
    recs = [PL.run_recipe(init, 1e-2, tmp_path, s, save_adapters=True, progress=False) for init in ("zero", "zero-w2")]
    for rec in recs:
        assert [p["step"] for p in rec["trajectory"]] == [0, 1, 3]
        assert rec["trajectory"][0]["share"] == 0  # both inits leave the model unchanged at insertion
        last = rec["trajectory"][-1]
        assert set(last["share_by_layer"]) == {"1", "2"} and last["loss_change"]["lo"] <= last["loss_change"]["hi"]
        assert (tmp_path / "artifacts" / rec["recipe"] / "step3" / "memory.safetensors").exists()
    assert PL.run_recipe("zero", 1e-2, tmp_path, s, progress=False) == recs[0]  # read back, not retrained
    table = PL.pilot_table(tmp_path)
    assert len(table) == 6 and {"share_L1", "share_L2", "loss_lo"} <= set(table.columns)
    with pytest.raises(ValueError, match="other settings"):
        PL.run_recipe("zero", 1e-2, tmp_path, PL.PilotSettings(**{**s.__dict__, "steps": 4}), progress=False)
    ls = PL.LearningSettings(steps=2, texts_per_step=2, micro_batch=2, max_length=64, dev_offset=0, dev_n=4,
                             background_n=4, top_t=4)
    rec = PL.smf_learning("zero-lr0.01", 3, tmp_path, s, ls, progress=False)
    assert rec["retrofit_step"] == 3 and rec["dev_items"] == 4 and len(rec["loss_log"]) == 2
    d = rec["deltas"]["medmcqa_gold_margin"]
    assert d["lo"] <= d["delta"] <= d["hi"]
    table = PL.learning_table(tmp_path)
    assert list(table["retrofit_step"]) == [3] and {"d_gold_margin", "d_acc_lo", "share"} <= set(table.columns)
    with pytest.raises(FileNotFoundError, match="save-adapters"):
        PL.smf_learning("zero-lr0.01", 2, tmp_path, s, ls, progress=False)
