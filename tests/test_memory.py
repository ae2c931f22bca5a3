import json

import pytest
import torch

import smf_lib as S
from smf_lib.memory import ProductKeyMemory

from conftest import MEM


def test_zero_init_logits_bit_identical(tiny):
    ids = torch.randint(0, 256, (2, 17))
    with torch.no_grad():
        before = tiny(ids).logits
        S.add_memory(tiny, S.MemoryConfig(**MEM))
        after = tiny(ids).logits
    assert len(S.memory_layers(tiny)) == 2
    assert torch.equal(before, after)


def test_zero_init_still_has_value_gradient(mem_model):
    ids = torch.randint(0, 256, (2, 9))
    mem_model(ids, labels=ids).loss.backward()
    assert all(m.values.weight.grad.abs().sum() > 0 for m in S.memory_layers(mem_model))


def test_seed_init_perturbs_the_model(tiny):
    ids = torch.randint(0, 256, (1, 9))
    with torch.no_grad():
        before = tiny(ids).logits
        S.add_memory(tiny, S.MemoryConfig(**MEM, init="paper"))
        after = tiny(ids).logits
    assert not torch.equal(before, after)
    assert S.memory_layers(tiny)[0].query.bias is not None
    assert tiny.model.layers[1].mlp.alpha.item() == pytest.approx(0.01)


@pytest.mark.parametrize("heads,knn", [(1, 3), (3, 5)])
def test_product_key_topk_equals_brute_force(heads, knn):
    torch.manual_seed(0)
    cfg = S.MemoryConfig(layers=(0,), n_keys=10, heads=heads, knn=knn, k_dim=12)
    mem = ProductKeyMemory(16, cfg, 0)
    x = torch.randn(3, 5, 16)
    idx, w = mem.lookup(x)
    q = mem.query(x).unflatten(-1, (heads, 2, 6))
    s1 = torch.einsum("bthd,hnd->bthn", q[..., 0, :], mem.keys[:, 0])
    s2 = torch.einsum("bthd,hnd->bthn", q[..., 1, :], mem.keys[:, 1])
    full = (s1.unsqueeze(-1) + s2.unsqueeze(-2)).flatten(-2)  # slot a*n + b
    scores, brute = full.topk(knn, dim=-1)
    assert torch.equal(idx.sort(-1).values, brute.sort(-1).values)
    assert torch.allclose(w, scores.softmax(-1), atol=1e-6)


def test_read_is_weighted_sum_of_shared_table():
    torch.manual_seed(0)
    cfg = S.MemoryConfig(layers=(0,), n_keys=4, heads=2, knn=2, k_dim=4, init="paper")
    mem = ProductKeyMemory(8, cfg, 0)
    x = torch.randn(1, 3, 8)
    with torch.no_grad():
        idx, w = mem.lookup(x)
    y = mem.read(idx, w)
    manual = (w.unsqueeze(-1) * mem.values.weight[idx]).sum(dim=(-3, -2))
    assert torch.allclose(y, manual, atol=1e-6)
    mem.sparse_grad = True  # the row-sparse backward gives the same gradient as the dense one
    mem.read(idx, w).square().sum().backward()
    sparse = mem.values.weight.grad.to_dense()
    mem.values.weight.grad = None
    mem.sparse_grad = False
    mem.read(idx, w).square().sum().backward()
    assert torch.allclose(sparse, mem.values.weight.grad, atol=1e-6)


def test_recording_without_hooks(mem_model):
    ids = torch.randint(0, 256, (2, 7))
    S.set_recording(mem_model, True)
    mem_model(ids)
    for m in S.memory_layers(mem_model):
        assert m.last_indices.shape == (2, 7, 2, 4)
        assert m.last_weights.shape == (2, 7, 2, 4)
        assert torch.allclose(m.last_weights.sum(-1), torch.ones(2, 7, 2))
        assert not m._forward_hooks and not m._forward_pre_hooks
    S.set_recording(mem_model, False)
    assert S.memory_layers(mem_model)[0].last_indices is None


def test_bf16_forward_and_backward():
    model = S.tiny_model("qwen2").to(torch.bfloat16)
    S.add_memory(model, S.MemoryConfig(**MEM, init="paper"))
    ids = torch.randint(0, 256, (2, 6))
    out = model(ids, labels=ids)
    out.loss.backward()
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    assert S.memory_layers(model)[0].values.weight.dtype == torch.bfloat16


def test_replacement_mode_bypasses_mlp():
    model = S.tiny_model("llama")
    S.add_memory(model, S.MemoryConfig(**MEM, mode="replacement"))
    layer = model.model.layers[1].mlp
    x = torch.randn(1, 3, 64)
    assert torch.equal(layer(x), layer.memory(x))


@pytest.mark.parametrize("kwargs,msg", [
    (dict(k_dim=15), "k_dim"), (dict(knn=9), "knn"), (dict(mode="mixed"), "mode"), (dict(init="ones"), "init"),
    (dict(layers=()), "layers"), (dict(layers=(1, 1)), "layers"), (dict(heads=0), "heads"), (dict(n_keys=1), "n_keys"),
    (dict(layers="12"), "sequence of decoder indices"), (dict(alpha=float("nan")), "alpha must be a finite"),
    (dict(alpha=float("inf")), "alpha must be a finite"), (dict(n_keys=8.0), "n_keys must be an integer"),
])
def test_invalid_config(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        S.MemoryConfig(**{**MEM, **kwargs})


def test_layer_out_of_range(tiny):
    with pytest.raises(ValueError, match="out of range.*allowed 0..3"):
        S.add_memory(tiny, S.MemoryConfig(**{**MEM, "layers": (1, 4)}))


def test_adding_twice_refused(mem_model):
    with pytest.raises(ValueError, match="already has memory"):
        S.add_memory(mem_model, S.MemoryConfig(**MEM))


def _perturb_rows(model, rows):
    with torch.no_grad():
        for m in S.memory_layers(model):
            m.values.weight[rows] += torch.randn(len(rows), m.values.weight.shape[1])


def test_save_load_round_trip(mem_model, tmp_path):
    _perturb_rows(mem_model, [0, 5, 9])
    S.save_memory(mem_model, tmp_path / "a")
    meta = json.loads((tmp_path / "a" / "memory_config.json").read_text())
    assert meta["memory_config"]["n_keys"] == 8
    fresh = S.tiny_model("llama")
    S.load_memory(fresh, tmp_path / "a")
    ids = torch.randint(0, 256, (2, 11))
    with torch.no_grad():
        assert torch.equal(mem_model(ids).logits, fresh(ids).logits)


def test_save_changed_rows_only(mem_model, tmp_path):
    S.save_memory(mem_model, tmp_path / "ref")
    _perturb_rows(mem_model, [3, 7])
    S.save_memory(mem_model, tmp_path / "delta", reference=tmp_path / "ref")
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "delta" / "memory.safetensors"))
    assert saved["layers.1.values.weight.rows"].tolist() == [3, 7]
    assert "layers.1.query.weight" not in saved  # unchanged tensors are not stored
    fresh = S.tiny_model("llama")
    S.load_memory(fresh, tmp_path / "delta")
    for a, b in zip(S.memory_layers(mem_model), S.memory_layers(fresh)):
        assert torch.equal(a.values.weight, b.values.weight)


def test_delta_adapter_moves_with_its_folder_and_refuses_itself(mem_model, tmp_path):
    import shutil

    S.save_memory(mem_model, tmp_path / "run" / "ref")
    _perturb_rows(mem_model, [2])
    S.save_memory(mem_model, tmp_path / "run" / "delta", reference=tmp_path / "run" / "ref")
    meta = json.loads((tmp_path / "run" / "delta" / "memory_config.json").read_text())
    assert meta["reference"]["path"] == "../ref" and len(meta["reference"]["sha256"]) == 16
    shutil.move(tmp_path / "run", tmp_path / "copied")  # a results folder copied elsewhere still loads
    fresh = S.load_memory(S.tiny_model("llama"), tmp_path / "copied" / "delta")
    assert torch.equal(S.memory_layers(fresh)[0].values.weight, S.memory_layers(mem_model)[0].values.weight)
    before = (tmp_path / "copied" / "delta" / "memory.safetensors").read_bytes()
    with pytest.raises(ValueError, match="cannot point at itself"):
        S.save_memory(mem_model, tmp_path / "copied" / "delta", reference=tmp_path / "copied" / "delta")
    assert (tmp_path / "copied" / "delta" / "memory.safetensors").read_bytes() == before  # nothing overwritten


def _edit(folder, fn):
    from safetensors.torch import load_file, save_file

    t = load_file(str(folder / "memory.safetensors"))
    fn(t)
    save_file(t, str(folder / "memory.safetensors"))


@pytest.mark.parametrize("damage,msg", [
    (lambda d, m: (d / "memory_config.json").write_text(""), "memory_config.json is damaged"),
    (lambda d, m: (d / "memory_config.json").write_text(json.dumps({**m, "format": "smf_lib.memory/9"})),
     "format 'smf_lib.memory/9'"),
    (lambda d, m: (d / "memory_config.json").write_text(json.dumps(
        {**m, "memory_config": {**m["memory_config"], "layers": [1, 3]}})), "lacks tensors"),
    (lambda d, m: (d / "memory_config.json").write_text(json.dumps(
        {**m, "memory_config": {**m["memory_config"], "n_keys": 4, "knn": 2}})), "has shape"),
    (lambda d, m: (d / "memory.safetensors").write_bytes(b"xx"), "memory.safetensors is damaged"),
    (lambda d, m: _edit(d, lambda t: t.__setitem__("layers.1.values.weight.rows", torch.tensor([3, 99]))),
     "bad row indices"),
    (lambda d, m: _edit(d, lambda t: t.__setitem__("layers.1.values.weight.rows", torch.tensor([3, 3]))),
     "bad row indices"),
])
def test_edited_or_damaged_adapters_fail_clearly(mem_model, tmp_path, damage, msg):
    S.save_memory(mem_model, tmp_path / "ref")
    _perturb_rows(mem_model, [3, 7])
    S.save_memory(mem_model, tmp_path / "delta", reference=tmp_path / "ref")
    meta = json.loads((tmp_path / "delta" / "memory_config.json").read_text())
    damage(tmp_path / "delta", meta)
    fresh = S.tiny_model("llama")
    # the checksums in the config catch any edit first, naming the file ...
    with pytest.raises(ValueError, match=f"{msg}|was edited after saving|do not match the checksum"):
        S.load_memory(fresh, tmp_path / "delta")
    assert not S.memory_layers(fresh)  # the model is left as it was
    # ... and without them (an adapter written before checksums), the deeper checks still say what is wrong
    config = tmp_path / "delta" / "memory_config.json"
    try:
        edited = json.loads(config.read_text())
    except json.JSONDecodeError:
        edited = None
    if isinstance(edited, dict):
        for key in ("weights_sha256", "config_sha256", "alphas"):
            edited.pop(key, None)
        config.write_text(json.dumps(edited))
    with pytest.raises(ValueError, match=msg):
        S.load_memory(fresh, tmp_path / "delta")
    assert not S.memory_layers(fresh)


def test_wrong_base_refused(mem_model, tmp_path):
    S.save_memory(mem_model, tmp_path / "a")
    other = S.tiny_model("llama", seed=123)
    with pytest.raises(ValueError, match="different base model"):
        S.load_memory(other, tmp_path / "a")
    with pytest.raises(ValueError, match="different base model"):
        S.load_memory(S.tiny_model("qwen2"), tmp_path / "a")


def test_print_trainable_parameters(mem_model, capsys):
    mem_model.requires_grad_(False)
    S.memory_layers(mem_model)[0].values.weight.requires_grad_(True)
    msg = S.print_trainable_parameters(mem_model)
    assert "trainable params: 4,096 ||" in msg and msg in capsys.readouterr().out
