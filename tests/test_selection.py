import math

import pytest
import torch

import smf_lib as S
from smf_lib.selection import memory_fingerprint

from conftest import TEXTS


def test_counts_match_hand_bincount_with_and_without_padding():
    idx = torch.tensor([[[[0, 1]], [[1, 2]], [[3, 3]]],
                        [[[2, 2]], [[0, 3]], [[1, 1]]]])  # (B=2, T=3, H=1, knn=2)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert S.read_counts(idx, 5).tolist() == [2, 4, 3, 3, 0]
    # real tokens only: (0,1) (1,2) from row 0; (2,2) from row 1
    assert S.read_counts(idx, 5, mask).tolist() == [1, 2, 3, 0, 0]


def test_tfidf_worked_example():
    counts = torch.tensor([3, 1, 0, 4])  # C = 8
    df = torch.tensor([9, 0, 2, 4])
    s = S.score_rows(counts, "tfidf", df=df, n_docs=9)
    expect = [3 / 8 * math.log(10 / 10), 1 / 8 * math.log(10 / 1), 0.0, 4 / 8 * math.log(10 / 5)]
    assert s.tolist() == pytest.approx(expect)


def test_kl_worked_example():
    counts = torch.tensor([2, 0, 2])  # p = (.5, 0, .5)
    totals = torch.tensor([7, 3, 0])  # A + 1 = (8, 4, 1), q = (8/13, 4/13, 1/13)
    s = S.score_rows(counts, "kl", totals=totals)
    expect = [0.5 * math.log((0.5 + 1e-8) / (8 / 13 + 1e-8)), 0.0, 0.5 * math.log((0.5 + 1e-8) / (1 / 13 + 1e-8))]
    assert s.tolist() == pytest.approx(expect, abs=1e-9)
    # the scores of a batch sum to KL(p || q)
    assert float(s.sum()) == pytest.approx(0.5 * math.log(0.5 * 13 / 8) + 0.5 * math.log(0.5 * 13), rel=1e-6)


def test_tf_and_random():
    counts = torch.tensor([1, 3, 0])
    assert S.score_rows(counts, "tf").tolist() == [0.25, 0.75, 0.0]
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(S.score_rows(counts, "random", generator=g1), S.score_rows(counts, "random", generator=g2))


def test_select_never_unread_clips_t_and_breaks_ties_low_index():
    counts = torch.tensor([0, 2, 0, 2, 5, 0])
    scores = torch.tensor([9.0, 1.0, 9.0, 1.0, 0.5, 9.0])  # unread rows score high but must not be chosen
    assert S.select_rows(counts, scores, 2).tolist() == [1, 3]
    assert S.select_rows(counts, scores, 100).tolist() == [1, 3, 4]  # t' = min(t, read rows)
    with pytest.raises(ValueError, match="top_t"):
        S.select_rows(counts, scores, 0)


def test_unknown_selector_and_missing_stats():
    c = torch.tensor([1, 2])
    with pytest.raises(ValueError, match="allowed: kl, tfidf, tf, random"):
        S.score_rows(c, "bm25")
    with pytest.raises(ValueError, match="background statistics"):
        S.score_rows(c, "kl")


def test_background_stats_by_hand(mem_model, tok, tmp_path):
    stats = S.compute_background_stats(mem_model, tok, TEXTS[:3], progress=False)
    S.set_recording(mem_model, True)
    df = torch.zeros_like(stats.df)
    totals = torch.zeros_like(stats.totals)
    with torch.no_grad():
        for t in TEXTS[:3]:
            mem_model(tok([t], return_tensors="pt").input_ids)
            for j, m in enumerate(S.memory_layers(mem_model)):
                c = torch.bincount(m.last_indices.flatten(), minlength=64)
                totals[j] += c
                df[j] += (c > 0).long()
    assert torch.equal(df, stats.df) and torch.equal(totals, stats.totals) and stats.n_docs == 3
    assert int(stats.totals[0].sum()) == sum(len(t) for t in TEXTS[:3]) * 2 * 4  # tokens * heads * knn
    stats.save(tmp_path / "bg.safetensors")
    again = S.BackgroundStats.load(tmp_path / "bg.safetensors", mem_model)
    assert torch.equal(again.df, stats.df) and again.fingerprint == memory_fingerprint(mem_model)


def test_background_stats_refused_after_keys_change(mem_model, tok, tmp_path):
    stats = S.compute_background_stats(mem_model, tok, TEXTS[:2], progress=False)
    stats.save(tmp_path / "bg.safetensors")
    with torch.no_grad():
        S.memory_layers(mem_model)[0].keys.add_(0.1)
    with pytest.raises(ValueError, match="keys or query weights changed"):
        S.BackgroundStats.load(tmp_path / "bg.safetensors", mem_model)
