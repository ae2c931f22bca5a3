"""The spread meter, the collapse warning, the retrofit's addressing settings and the row-sparse retrofit."""

import math
import warnings

import pytest
import torch

import smf_lib as S
from smf_lib.memory import memory_layers, usage_imbalance
from smf_lib.spread import MemorySpreadWarning, check_spread, memory_spread, rows_read, spread_stats

from conftest import MEM, TEXTS


def test_spread_stats_on_a_constructed_table():
    # 100 rows: 10 rows take 91 reads (9.1 each), 9 rows read once, 81 never
    counts = torch.tensor([91] * 10 + [10] * 9 + [0] * 81)  # scaled by 10 to keep integers
    s = spread_stats(counts)
    assert s["usage"] == pytest.approx(0.19)
    p = counts.double() / counts.sum()
    h = float(-(p[p > 0] * p[p > 0].log()).sum())
    assert s["effective_rows"] == pytest.approx(math.exp(h))
    assert s["kl_uniform"] == pytest.approx(math.log(100) - h)
    assert s["top1_share"] == pytest.approx(91 / 1000)  # 1% of 100 rows = 1 row
    assert s["top5_share"] == pytest.approx(5 * 91 / 1000)
    assert s["rows_50"] == 6 and s["rows_90"] == 10 and s["rows_99"] == 18  # 910 + 8 x 10 = 990
    uniform, one = spread_stats(torch.ones(50)), spread_stats(torch.tensor([7] + [0] * 49))
    assert uniform["kl_uniform"] == pytest.approx(0) and uniform["effective_rows"] == pytest.approx(50)
    assert uniform["gini"] == pytest.approx(0, abs=1e-12) and one["gini"] == pytest.approx(49 / 50)
    assert one["effective_rows"] == pytest.approx(1) and one["usage"] == pytest.approx(1 / 50)
    with pytest.raises(ValueError, match="no reads"):
        spread_stats(torch.zeros(10))


def test_footprint_and_overlap_count_each_texts_own_rows(mem_model, tok):
    sp = memory_spread(mem_model, tok, TEXTS, TEXTS[:3], max_length=32, top_t=4)
    got = rows_read(mem_model, [tok(t).input_ids for t in TEXTS[:3]])
    n = mem_model.smf_memory_config.n_slots
    for j, m in enumerate(memory_layers(mem_model)):
        row = sp["layers"][str(m.layer_idx)]
        assert row["footprint"] == pytest.approx(sum(len(r) for r in got["rows"][j]) / (3 * n))
        # each task text is paired with the general text of its index cut to its length: here itself
        assert row["overlap"] == pytest.approx(1.0)
        assert 0 <= row["hub_share_kl"] <= 1 and 0 <= row["hub_reads"] <= 1
    with pytest.raises(ValueError, match="blank"):
        memory_spread(mem_model, tok, TEXTS + ["  "])


def test_check_spread_warns_on_a_collapsed_memory_and_names_the_layer():
    spread = {"layers": {"7": {"general_top5_share": 0.96, "general_effective_rows": 163.0},
                         "15": {"general_top5_share": 0.20, "general_effective_rows": 1900.0}}}
    with pytest.warns(MemorySpreadWarning, match="layer 7: top 5% of rows take 96%.*frozen"):
        assert not check_spread(spread)
    ref = {"layers": {"15": {"general_effective_rows": 4000.0}}}
    with pytest.warns(MemorySpreadWarning, match="layer 15: 1,900 effective rows against 4,000"):
        check_spread({"layers": {"15": spread["layers"]["15"]}}, reference=ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_spread({"layers": {"15": spread["layers"]["15"]}})


def _retrofit(model, tok, **retrofit):
    cfg = S.TrainConfig(method="retrofit", lr=1e-2, max_steps=3, micro_batch=4, grad_accum=1, max_length=32,
                        warmup_steps=1, retrofit=retrofit)
    return S.train(model, tok, TEXTS, cfg, progress=False)


def test_frozen_addressing_moves_values_w1_w2_alpha_and_never_the_query_or_keys(tok):
    model = S.add_memory(S.tiny_model("llama"), S.MemoryConfig(**MEM))
    before = S.memory_state_dict(model)
    _retrofit(model, tok, addressing="frozen")
    after = S.memory_state_dict(model)
    for k in before:
        same = torch.equal(before[k], after[k])
        assert same == (k.endswith(("query.weight", "keys"))), k
    # the background statistics' fingerprint holds across a frozen retrofit
    with pytest.raises(ValueError, match="unknown retrofit addressing"):
        S.TrainConfig(method="retrofit", retrofit={"addressing": "loose"})


def test_the_normalised_query_reads_the_same_rows_at_any_query_scale_and_keeps_logits_at_insertion(tok):
    base = S.tiny_model("llama")
    ids = torch.tensor([tok.encode("the cat sat on the mat")])
    ref = base(input_ids=ids).logits
    model = S.add_memory(base, S.MemoryConfig(**MEM, query_norm="half"))
    assert torch.equal(model(input_ids=ids).logits, ref)
    mem = memory_layers(model)[0]
    x = torch.randn(5, model.config.hidden_size)
    i1, _ = mem.lookup(x)
    with torch.no_grad():
        mem.query.weight.mul_(7.0)
    i2, _ = mem.lookup(x)
    assert torch.equal(i1, i2)
    with pytest.raises(ValueError, match="query_norm"):
        S.MemoryConfig(query_norm="batch")


def test_the_usage_term_is_zero_for_even_use_and_one_for_a_single_sub_key():
    even = torch.zeros(10, 2, 2, 8)
    single = torch.full((10, 2, 2, 8), -1e4)
    single[..., 3] = 0
    assert usage_imbalance(even) == pytest.approx(0, abs=1e-6)
    assert usage_imbalance(single) == pytest.approx(1, abs=1e-4)


def test_the_usage_term_reaches_the_addressing_and_spreads_it(tok):
    torch.manual_seed(0)
    a = S.add_memory(S.tiny_model("llama"), S.MemoryConfig(**MEM))
    b = S.add_memory(S.tiny_model("llama"), S.MemoryConfig(**MEM))
    b.load_state_dict(a.state_dict())
    _retrofit(a, tok)
    _retrofit(b, tok, balance=1.0)
    qa, qb = memory_layers(a)[0].query.weight, memory_layers(b)[0].query.weight
    assert not torch.equal(qa, qb)  # the term has a gradient on the query
    assert all(m.aux_loss is None and not m.balance for m in memory_layers(b))  # off after training


def test_the_row_sparse_retrofit_never_moves_unread_rows_and_follows_the_dense_one(tok):
    torch.manual_seed(0)
    cfg = dict(MEM, n_keys=16)
    dense = S.add_memory(S.tiny_model("llama"), S.MemoryConfig(**cfg, init="zero-w2"))
    sparse = S.add_memory(S.tiny_model("llama"), S.MemoryConfig(**cfg, init="zero-w2"))
    sparse.load_state_dict(dense.state_dict())
    before = {m.layer_idx: m.values.weight.detach().clone() for m in memory_layers(sparse)}
    counts = S.selection.read_counts_of_texts(sparse, tok, TEXTS, max_length=32)
    rd = _retrofit(dense, tok, addressing="frozen")
    rs = _retrofit(sparse, tok, addressing="frozen", sparse_values=True)
    # the first memory layer's input does not depend on the memory, so with frozen addressing it reads during
    # training exactly the rows counted here
    m = memory_layers(sparse)[0]
    unread = counts[0] == 0
    assert unread.any() and not torch.equal(m.values.weight, before[m.layer_idx])
    assert torch.equal(m.values.weight[unread], before[m.layer_idx][unread])
    # tolerance: lazy Adam differs from dense Adam only in rows not read in a step (their moments keep moving there)
    for a, b in zip(rd.log, rs.log):
        assert b["loss"] == pytest.approx(a["loss"], rel=0.02)


@pytest.mark.skipif(not __import__("os").environ.get("SMF_DATA_DIR"), reason="needs the local data folder")
def test_the_spread_pilot_and_the_memory_effect_run_resume_and_record_the_code(tmp_path):
    from smf_lib.study import memory_effect, spread_pilot

    s = spread_pilot.SpreadSettings(model="tiny", memory=dict(MEM, init="zero"), steps=2, texts_per_step=4,
                                    micro_batch=2, max_length=32, warmup_steps=1, probe_steps=(2,), heldout_n=4,
                                    general_n=4, task_n=4, top_t=4, checkpoint_every=1)
    rec = spread_pilot.run_recipe("frozen", tmp_path, s, progress=False)
    assert [p["step"] for p in rec["trajectory"]] == [0, 2] and set(rec["verdict"]) >= {"alive", "spread"}
    assert rec["code"].get("git_commit") and (tmp_path / "artifacts" / "frozen" / "final").exists()
    assert spread_pilot.run_recipe("frozen", tmp_path, s, progress=False) == rec  # read back, not rerun
    es = memory_effect.EffectSettings(model="tiny", steps=2, texts_per_step=4, micro_batch=2, max_length=32,
                                      top_t=4, dev_n=4, chat_n=3, background_n=4)
    eff = memory_effect.run_effect("frozen", "kl", 1e-2, tmp_path, es, progress=False)
    assert eff["dev_items"] == 4 and eff["chat_items"] == 3 and eff["learning"]["lo"] <= eff["learning"]["hi"]
    assert len(memory_effect.effect_table(tmp_path)) == 1
    before = tmp_path / "effect" / "start" / "frozen-before.json"
    stamp = before.stat().st_mtime_ns
    memory_effect.run_effect("frozen", "tfidf", 1e-1, tmp_path, es, progress=False)  # the shared start, read back
    assert before.stat().st_mtime_ns == stamp and len(memory_effect.effect_table(tmp_path)) == 2
    lines = memory_effect.effect_lines(memory_effect.effect_table(tmp_path))
    assert [line.split(":")[0] for line in lines] == ["SMF-KL at 0.01", "SMF-TF-IDF at 0.1"]
    assert all("frozen (" in line and "learned" in line for line in lines)
    with pytest.raises(FileNotFoundError, match="spread-pilot"):
        memory_effect.run_effect("nothing", "kl", 1e-2, tmp_path, es, progress=False)


def test_the_spread_answer_contrasts_the_collapsed_and_the_spread_memory_and_describes_the_chosen_one():
    import pandas as pd

    from smf_lib.study.spread_pilot import spread_answer

    def rows(recipe, slots, ratio, share, footprint, overlap):
        return [{"recipe": recipe, "layer": k, "slots": slots, "effective_ratio": ratio + 0.01 * k, "share": share,
                 "footprint": footprint, "overlap": overlap + 0.01 * k} for k in (0, 1)]
    after = pd.DataFrame(rows("trained", 4096, 0.05, 0.3, 0.07, 0.8) + rows("frozen", 4096, 0.98, 0.3, 0.4, 0.5)
                         + rows("frozen-n256", 65536, 1.0, 0.13, 0.045, 0.12))
    sentence = spread_answer(after)
    assert "at most 6% of random addressing's effective rows" in sentence and "(98% or more)" in sentence
    assert "at 65,536 slots per layer" in sentence and "at most 4.5% of a layer's rows, 12% to 13%" in sentence
    assert "carries 13.0% or more" in sentence
