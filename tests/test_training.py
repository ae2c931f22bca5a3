import copy

import pytest
import torch

import smf_lib as S
from smf_lib.training import lr_factor, micro_batches

from conftest import TEXTS


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed_rows(before, after, name):
    return set((before[name] != after[name]).any(dim=1).nonzero().flatten().tolist())


@pytest.fixture
def stats(mem_model, tok):
    return S.compute_background_stats(mem_model, tok, TEXTS, progress=False)


def _cfg(**kw):
    base = dict(method="smf", micro_batch=2, grad_accum=2, max_steps=5, warmup_steps=1, top_t=3, epochs=10)
    return S.TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("optimizer,lr", [("sgd", 50.0), ("adam", 1e-2)])
def test_strict_mode_touches_only_selected_rows(mem_model, tok, stats, optimizer, lr, tmp_path):
    before = _snapshot(mem_model)
    cfg = _cfg(optimizer=optimizer, lr=lr, checkpoint_every=1)
    # one step at a time (resuming from the checkpoint) so each step's changed rows can be inspected
    for step in range(1, 4):
        prev = _snapshot(mem_model)
        res = S.train(mem_model, tok, TEXTS, cfg.__class__(**{**cfg.__dict__, "max_steps": step}), stats=stats,
                      checkpoint_dir=tmp_path, progress=False)
        now = _snapshot(mem_model)
        changed = sum(len(_changed_rows(prev, now, f"model.layers.{i}.mlp.memory.values.weight")) for i in (1, 2))
        assert 0 < changed <= res.log[-1]["rows"] <= 2 * cfg.top_t
        for n in now:
            if not n.endswith("values.weight"):
                assert torch.equal(now[n], before[n]), n  # every frozen parameter bit-identical
    assert len(res.log) == 3


def test_seed_mode_shows_the_adam_leak(mem_model, tok, stats, tmp_path):
    cfg = _cfg(update="seed", lr=1e-2, checkpoint_every=1, top_t=2)
    S.train(mem_model, tok, TEXTS, cfg.__class__(**{**cfg.__dict__, "max_steps": 1}), stats=stats,
            checkpoint_dir=tmp_path, progress=False)
    first = _snapshot(mem_model)
    res = S.train(mem_model, tok, TEXTS, cfg.__class__(**{**cfg.__dict__, "max_steps": 2}), stats=stats,
                  checkpoint_dir=tmp_path, progress=False)
    second = _snapshot(mem_model)
    name = "model.layers.1.mlp.memory.values.weight"
    moved = _changed_rows(first, second, name)
    # step 2 selected at most top_t rows here, yet rows selected only at step 1 keep moving (Adam moments)
    assert len(moved) > cfg.top_t
    assert res.log[-1]["rows"] <= 2 * cfg.top_t


def test_per_microbatch_selection_updates_a_union(mem_model, tok, stats):
    per_step = copy.deepcopy(mem_model)
    before = _snapshot(mem_model)
    S.train(per_step, tok, TEXTS, _cfg(max_steps=1, grad_accum=4, micro_batch=2, top_t=2, lr=50.0), stats=stats,
            progress=False)
    S.train(mem_model, tok, TEXTS, _cfg(max_steps=1, grad_accum=4, micro_batch=2, top_t=2, lr=50.0,
                                        select_per_microbatch=True), stats=stats, progress=False)
    name = "model.layers.1.mlp.memory.values.weight"
    a = _changed_rows(before, _snapshot(per_step), name)
    b = _changed_rows(before, _snapshot(mem_model), name)
    assert len(a) <= 2  # one selection per optimizer step: at most t rows
    assert 2 < len(b) <= 4 * 2  # one per micro-batch: a union of up to accum * t rows


def test_padding_counts_change_with_option(mem_model, tok, stats):
    a, b = copy.deepcopy(mem_model), copy.deepcopy(mem_model)
    texts = ["a", "a much longer text with many more tokens in it"]
    kw = dict(max_steps=1, grad_accum=1, micro_batch=2, top_t=1000, lr=50.0, selector="tf")
    ra = S.train(a, tok, texts, _cfg(**kw), progress=False)
    rb = S.train(b, tok, texts, _cfg(**kw, count_padding=True), progress=False)
    assert ra.log[0]["rows"] <= rb.log[0]["rows"]


def _loss(model, tok, texts):
    batch = tok(texts, return_tensors="pt")
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    with torch.no_grad():
        return float(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels).loss)


@pytest.mark.parametrize("method,lr", [("smf", 2000.0), ("lora", 5e-3), ("full", 2e-3), ("retrofit", 5e-3)])
def test_each_method_lowers_loss_on_repeated_batch(mem_model, tok, stats, method, lr):
    texts = TEXTS[:4]
    model = mem_model if method in ("smf", "retrofit") else S.tiny_model("llama")
    start = _loss(model, tok, texts)
    cfg = S.TrainConfig(method=method, lr=lr, micro_batch=4, grad_accum=1, max_steps=8, warmup_steps=1,
                        top_t=64, epochs=8, clip=0)
    res = S.train(model, tok, texts, cfg, stats=stats, progress=False)
    assert _loss(res.model, tok, texts) < start - 1e-3
    assert len(res.log) == 8 and all(k in res.log[0] for k in ("loss", "lr", "grad_norm"))
    if method == "lora":
        assert not any("lora_" in n for n, _ in res.model.named_parameters())  # merged


def test_retrofit_freezes_the_base(mem_model, tok):
    before = _snapshot(mem_model)
    S.train(mem_model, tok, TEXTS, S.TrainConfig(method="retrofit", lr=1e-2, max_steps=2, micro_batch=4,
                                                 grad_accum=1, warmup_steps=1), progress=False)
    after = _snapshot(mem_model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(".memory." in n or n.endswith("mlp.alpha") for n in changed)


def test_smf_without_stats_or_memory_fails_clearly(tok):
    model = S.tiny_model("llama")
    with pytest.raises(ValueError, match="needs background statistics"):
        S.train(model, tok, TEXTS, _cfg(selector="kl"), progress=False)
    with pytest.raises(ValueError, match="add_memory"):
        S.train(model, tok, TEXTS, _cfg(selector="tf"), progress=False)


@pytest.mark.parametrize("kw,msg", [(dict(top_t=0), "top_t"), (dict(selector="bm25"), "selector"),
                                    (dict(update="lazy"), "update"), (dict(method="prefix"), "method"),
                                    (dict(optimizer="lion"), "optimizer")])
def test_invalid_train_config(kw, msg):
    with pytest.raises(ValueError, match=msg):
        S.TrainConfig(**kw)


def test_schedule_and_data_order():
    assert lr_factor(0, 4, 20) == 0.25 and lr_factor(3, 4, 20) == 1.0
    assert lr_factor(20, 4, 20) == pytest.approx(0.0)
    plan = micro_batches(10, S.TrainConfig(micro_batch=3, grad_accum=2, epochs=2))
    assert len(plan) == 4 and sorted(i for mb in plan[0] + plan[1] for i in mb) == list(range(10))
    assert plan == micro_batches(10, S.TrainConfig(micro_batch=3, grad_accum=2, epochs=2))  # deterministic


def test_row_sparse_adam_matches_dense_adam_on_touched_rows():
    torch.manual_seed(0)
    table = torch.randn(6, 3)
    ref = table.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=0.1)
    ours = S.RowSparseAdam(table)
    rows = torch.tensor([1, 4])
    for _ in range(3):
        g = torch.randn(2, 3)
        dense = torch.zeros(6, 3)
        dense[rows] = g
        ref.grad = dense
        opt.step()
        ours.step(rows, g, lr=0.1)
    assert torch.allclose(table[rows], ref.detach()[rows], atol=1e-6)
    untouched = torch.tensor([0, 2, 3, 5])
    assert torch.equal(table[untouched], ref.detach()[untouched])
