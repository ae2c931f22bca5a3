import copy

import pytest
import torch

import smf_lib as S
from smf_lib.training import lr_factor, micro_batches

from conftest import MEM, TEXTS


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


def _rows_per_step(model, tok, stats, cfg):
    """Train with a probe after every step; returns the value rows changed by each step and the last result."""
    name = [f"model.layers.{i}.mlp.memory.values.weight" for i in (1, 2)]
    snaps = []

    def probe(m, step):
        snaps.append({n: p.detach().clone() for n, p in m.named_parameters()})
        return {}

    res = S.train(model, tok, TEXTS, cfg, background=stats, progress=False, probe=probe,
                  probe_steps=range(1, cfg.max_steps + 1))
    changed = [[_changed_rows(a, b, n) for n in name] for a, b in zip(snaps, snaps[1:])]
    return snaps, changed, res


@pytest.mark.parametrize("update,lr", [("sgd", 50.0), ("adam", 1e-2)])
def test_strict_updates_touch_only_selected_rows(mem_model, tok, stats, update, lr):
    cfg = _cfg(update=update, lr=lr, max_steps=3)
    snaps, changed, res = _rows_per_step(mem_model, tok, stats, cfg)
    assert len(changed) == 3
    for step, rows in enumerate(changed):
        assert 0 < sum(map(len, rows)) <= res.log[step]["rows"] <= 2 * cfg.top_t
    for n in snaps[0]:
        if not n.endswith("values.weight"):
            assert torch.equal(snaps[0][n], snaps[-1][n]), n  # every frozen parameter bit-identical


def test_paper_update_shows_the_adam_leak(mem_model, tok, stats):
    cfg = _cfg(update="paper", lr=1e-2, top_t=2, max_steps=2)
    _, changed, res = _rows_per_step(mem_model, tok, stats, cfg)
    # step 2 selected at most top_t rows per layer, yet rows selected only at step 1 keep moving (Adam moments)
    assert len(changed[1][0]) > cfg.top_t
    assert res.log[-1]["rows"] <= 2 * cfg.top_t


def test_per_microbatch_selection_updates_a_union(mem_model, tok, stats):
    per_step = copy.deepcopy(mem_model)
    before = _snapshot(mem_model)
    S.train(per_step, tok, TEXTS, _cfg(max_steps=1, grad_accum=4, micro_batch=2, top_t=2, lr=50.0), background=stats,
            progress=False)
    S.train(mem_model, tok, TEXTS, _cfg(max_steps=1, grad_accum=4, micro_batch=2, top_t=2, lr=50.0,
                                        select_per_microbatch=True), background=stats, progress=False)
    name = "model.layers.1.mlp.memory.values.weight"
    a = _changed_rows(before, _snapshot(per_step), name)
    b = _changed_rows(before, _snapshot(mem_model), name)
    assert len(a) <= 2  # one selection per optimizer step: at most t rows
    assert 2 < len(b) <= 4 * 2  # one per micro-batch: a union of up to accum * t rows


def test_padding_counts_change_with_option(mem_model, tok, stats):
    a, b = copy.deepcopy(mem_model), copy.deepcopy(mem_model)
    texts = ["a", "abc defg"]
    kw = dict(max_steps=1, grad_accum=1, micro_batch=2, top_t=1000, lr=50.0, selector="tf")
    ra = S.train(a, tok, texts, _cfg(**kw), progress=False)
    rb = S.train(b, tok, texts, _cfg(**kw, count_padding=True), progress=False)
    assert ra.log[0]["rows"] < rb.log[0]["rows"]  # padded positions read rows too


def _loss(model, tok, texts):
    batch = tok(texts, return_tensors="pt")
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    with torch.no_grad():
        return float(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels).loss)


@pytest.mark.parametrize("method,lr,update", [("smf", 2000.0, "sgd"), ("smf", 5e-2, "adam"), ("smf", 5e-2, "paper"),
                                               ("lora", 5e-3, "adam"), ("full", 2e-3, "adam"),
                                               ("retrofit", 5e-3, "adam")])
def test_each_method_lowers_loss_on_repeated_batch(mem_model, tok, stats, method, lr, update):
    texts = TEXTS[:4]
    model = mem_model if method in ("smf", "retrofit") else S.tiny_model("llama")
    start = _loss(model, tok, texts)
    cfg = S.TrainConfig(method=method, lr=lr, micro_batch=4, grad_accum=1, max_steps=8, warmup_steps=1,
                        top_t=64, epochs=8, clip=0, update=update)
    res = S.train(model, tok, texts, cfg, background=stats, progress=False)
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
                                    (dict(lr=-1.0), "lr must be a finite number > 0"),
                                    (dict(update="sgd", lr=-5.0), "lr must be"),
                                    (dict(lr=float("nan")), "lr must be"), (dict(clip=-1.0), "clip"),
                                    (dict(epochs=0), "epochs"), (dict(epochs=-1), "epochs"),
                                    (dict(max_steps=0), "max_steps"), (dict(max_steps=-3), "max_steps"),
                                    (dict(max_length=0), "max_length"), (dict(micro_batch=2.5), "micro_batch"),
                                    (dict(lora=dict(dropout=1.0)), "lora.dropout"),
                                    (dict(weight_decay=-0.1), "weight_decay"),
                                    (dict(update="sgd"), "calibrate")])
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


def _first_step_gain(model, tok, scale, update, lr):
    """Loss decrease of one SMF step after the memory output weights (W2) are multiplied by ``scale``."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for mem in S.memory_layers(m):
            mem.w2.weight.mul_(scale)
    before = _loss(m, tok, TEXTS[:4])
    cfg = S.TrainConfig(method="smf", selector="tf", update=update, lr=lr, max_steps=1, micro_batch=4, grad_accum=1,
                        warmup_steps=0, top_t=64, clip=0)
    return before - _loss(S.train(m, tok, TEXTS[:4], cfg, progress=False).model, tok, TEXTS[:4])


def test_default_update_does_not_follow_the_gradient_scale(tok):
    """Multiplying W2 by c multiplies the value gradient by c. The default (row-sparse Adam) takes a step of the
    same size whatever the gradient's scale, so the first-step gain grows only as fast as c itself (the output's
    sensitivity to a fixed step); plain SGD's step also grows with the gradient, so its gain grows as c**2."""
    model = S.tiny_model("llama")
    torch.manual_seed(1)
    S.add_memory(model, S.MemoryConfig(**MEM, init="paper"))
    default = S.TrainConfig().update
    ref = _first_step_gain(model, tok, 1.0, default, None)
    assert ref > 0
    for c in (0.1, 10.0):
        ratio = _first_step_gain(model, tok, c, default, None) / ref
        assert c / 2 < ratio < 2 * c, (c, ratio)
    sgd_ref = _first_step_gain(model, tok, 1.0, "sgd", 1.0)
    sgd = _first_step_gain(model, tok, 10.0, "sgd", 1.0) / sgd_ref
    assert sgd > 2 * 10.0  # the control: plain SGD fails the same bound


def test_non_finite_loss_stops_with_the_step(mem_model, tok, stats):
    calls = {"n": 0}

    def nan_on_fifth_forward(module, args, out):
        calls["n"] += 1
        return out * float("nan") if calls["n"] == 5 else out

    mem_model.lm_head.register_forward_hook(nan_on_fifth_forward)
    cfg = _cfg(max_steps=6, grad_accum=2)  # forward 5 is the first micro-batch of step 3
    with pytest.raises(S.TrainingDiverged, match=r"loss is nan at step 3 of 6"):
        S.train(mem_model, tok, TEXTS, cfg, background=stats, progress=False)


@pytest.mark.parametrize("method", ["smf", "lora", "full"])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tok, tmp_path, method, monkeypatch):
    import smf_lib.training as T

    def fresh():
        model = S.tiny_model("llama")
        torch.manual_seed(1)
        if method == "smf":
            S.add_memory(model, S.MemoryConfig(**MEM))
        return model

    # the random selector draws from the selection stream, so the resume must restore it
    cfg = S.TrainConfig(method=method, selector="random", lr=1e-2, micro_batch=2, grad_accum=2, max_steps=4,
                        warmup_steps=1, top_t=4, checkpoint_every=1, lora=S.LoraSettings(dropout=0.3))
    whole = S.train(fresh(), tok, TEXTS, cfg, progress=False)
    real, calls = T._save_checkpoint, {"n": 0}

    def dying(*a, **kw):
        real(*a, **kw)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(T, "_save_checkpoint", dying)
    with pytest.raises(KeyboardInterrupt):
        S.train(fresh(), tok, TEXTS, cfg, checkpoint_dir=tmp_path, progress=False)
    monkeypatch.setattr(T, "_save_checkpoint", real)
    torch.manual_seed(12345)  # the caller's random state must not matter
    resumed = S.train(fresh(), tok, TEXTS, cfg, checkpoint_dir=tmp_path, progress=False)
    assert [e["loss"] for e in resumed.log] == [e["loss"] for e in whole.log]
    a, b = dict(whole.model.named_parameters()), dict(resumed.model.named_parameters())
    assert all(torch.equal(a[n], b[n]) for n in a)
    # the resumed training counts the killed process's time up to its last checkpoint (step 2)
    assert whole.resumed is None and resumed.resumed["step"] == 2 and resumed.resumed["earlier_seconds"] > 0


def test_checkpoint_from_another_config_or_damaged_is_refused(mem_model, tok, stats, tmp_path):
    cfg = _cfg(max_steps=2, checkpoint_every=1, selector="tf")
    S.train(copy.deepcopy(mem_model), tok, TEXTS, cfg, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"other config fields \['top_t'\].*delete it"):
        S.train(copy.deepcopy(mem_model), tok, TEXTS, _cfg(max_steps=2, checkpoint_every=1, selector="tf", top_t=5),
                checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="other training texts"):
        S.train(copy.deepcopy(mem_model), tok, TEXTS[:6], cfg, checkpoint_dir=tmp_path, progress=False)
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"checkpoint\.pt.*damaged"):
        S.train(copy.deepcopy(mem_model), tok, TEXTS, cfg, checkpoint_dir=tmp_path, progress=False)


def test_probe_trajectory_has_step_zero_and_the_end(mem_model, tok, stats):
    seen = []
    res = S.train(mem_model, tok, TEXTS, _cfg(max_steps=4), background=stats, progress=False,
                  probe=lambda m, step: seen.append(m.training) or {"x": step}, probe_steps=[2, 4])
    assert [p["step"] for p in res.trajectory] == [0, 2, 4] and not any(seen)


def test_row_sparse_adam_grows_its_moments_geometrically_and_keeps_its_state_format():
    table = torch.zeros(4096, 8)
    rule = S.RowSparseAdam(table)
    buffers = set()
    for step in range(200):  # 10 new rows per step: 2,000 rows touched
        rows = torch.arange(step * 10, step * 10 + 10)
        rule.step(rows, torch.ones(10, 8), 1e-3)
        buffers.add(rule._m.data_ptr())
    assert rule.used == 2000 and len(buffers) <= 7, len(buffers)  # doublings, not one copy per step
    state = rule.state_dict()
    assert state["m"].shape == (2000, 8) and state["steps"].shape == (2000,)
    again = S.RowSparseAdam(torch.zeros(4096, 8))
    again.load_state_dict(state)
    rows = torch.arange(1995, 2005)
    rule.step(rows, torch.ones(10, 8), 1e-3)
    again.step(rows, torch.ones(10, 8), 1e-3)
    assert torch.equal(rule.m, again.m) and torch.equal(rule.steps, again.steps)


def test_smf_settings_live_in_one_place_beside_lora_settings():
    """SMF's settings are TrainConfig.smf (a SmfSettings, as LoRA's are TrainConfig.lora): given by name or as a
    dict they land there, their defaults are SmfSettings' own, a bad one is refused by SmfSettings, and the run
    record stays flat (top_t, selector, ...) so finished runs keep their identity."""
    import dataclasses

    from smf_lib.selection import SmfSettings

    by_name = S.TrainConfig(selector="tfidf", top_t=64)
    assert by_name.smf == SmfSettings(selector="tfidf", top_t=64) and by_name.top_t == 64
    assert S.TrainConfig(smf={"selector": "tfidf", "top_t": 64}) == by_name
    assert dataclasses.replace(by_name, top_t=8).smf == SmfSettings(selector="tfidf", top_t=8)
    assert S.TrainConfig().smf == SmfSettings()  # the defaults are written once, in SmfSettings
    record = by_name.record()
    assert record["top_t"] == 64 and record["selector"] == "tfidf" and "smf" not in record
    with pytest.raises(ValueError, match="unknown selector 'nope'"):
        S.TrainConfig(selector="nope")
    with pytest.raises(ValueError, match="top_t must be an integer >= 1"):
        S.TrainConfig(smf={"top_t": 0})
