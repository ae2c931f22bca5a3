"""Nothing silent: every method's random draws come from its seed, inputs are checked where they enter, and errors
name their file."""

import errno
import json

import pytest
import torch

import smf_lib as S
from smf_lib.files import atomic_write, read_json, read_record

from conftest import MEM, TEXTS


def _train_twice(method, tok, global_seeds=(123, 987), **kw):
    """The same train() call from two different global random states; returns both results' losses and weights."""
    out = []
    for g in global_seeds:
        torch.manual_seed(g)
        model = S.tiny_model("llama")
        if method in ("smf", "retrofit"):
            model = S.add_memory(model, S.MemoryConfig(**MEM))
        torch.manual_seed(g + 1)  # disturb the global stream once more between model and train()
        stats = S.compute_background_stats(model, tok, TEXTS, progress=False) if method == "smf" else None
        cfg = S.TrainConfig(method=method, lr=1e-2, max_steps=3, micro_batch=2, grad_accum=1, warmup_steps=1,
                            top_t=3, selector="random" if method == "smf" else "kl", **kw)
        res = S.train(model, tok, TEXTS, cfg, background=stats, progress=False)
        out.append(([r["loss"] for r in res.log], {k: v.clone() for k, v in res.model.state_dict().items()}))
    return out


@pytest.mark.parametrize("method", ["lora", "smf", "retrofit", "full"])
def test_every_method_draws_only_from_its_seed(method, tok):
    (loss_a, w_a), (loss_b, w_b) = _train_twice(method, tok)
    assert loss_a == loss_b
    assert w_a.keys() == w_b.keys()
    assert all(torch.equal(w_a[k], w_b[k]) for k in w_a), [k for k in w_a if not torch.equal(w_a[k], w_b[k])][:3]


def test_lora_seed_changes_lora():
    (loss_a, _), = _train_twice("lora", _tok(), global_seeds=(5,), seed=0)
    (loss_b, _), = _train_twice("lora", _tok(), global_seeds=(5,), seed=1)
    assert loss_a != loss_b


def _tok():
    from conftest import CharTokenizer

    return CharTokenizer()


@pytest.mark.parametrize("kw, match", [
    (dict(lora_alpha=-5), "lora_alpha"),
    (dict(lora_alpha=float("nan")), "lora_alpha"),
    (dict(lora_alpha=True), "lora_alpha"),
    (dict(lora_targets="q_proj"), "lora_targets"),
    (dict(lora_targets=("q_proj", "")), "lora_targets"),
    (dict(lr=-1.0), "lr"),
    (dict(micro_batch=0), "micro_batch"),
    (dict(max_length=1), "max_length"),
    (dict(top_t=0), "top_t"),
    (dict(lora_dropout=1.0), "lora_dropout"),
    (dict(selector="nope"), "selector"),
])
def test_train_config_refuses_bad_fields(kw, match):
    with pytest.raises(ValueError, match=match):
        S.TrainConfig(**kw)


@pytest.mark.parametrize("kw, match", [
    (dict(alpha=True), "alpha"),
    (dict(alpha="1.0"), "alpha"),
    (dict(alpha=float("inf")), "alpha"),
    (dict(layers="12"), "layers"),
    (dict(n_keys=1), "n_keys"),
    (dict(init="random"), "init"),
])
def test_memory_config_refuses_bad_fields(kw, match):
    with pytest.raises(ValueError, match=match):
        S.MemoryConfig(**kw)


def test_top_t_above_the_table_is_said(mem_model, tok):
    stats = S.compute_background_stats(mem_model, tok, TEXTS, progress=False)
    with pytest.warns(UserWarning, match="more rows than a memory layer has"):
        S.train(mem_model, tok, TEXTS, S.TrainConfig(top_t=10**6, max_steps=1, micro_batch=2, grad_accum=1),
                background=stats, progress=False)


def test_background_statistics_need_documents(mem_model, tok):
    with pytest.raises(ValueError, match="no background documents"):
        S.compute_background_stats(mem_model, tok, [], progress=False)


def test_save_memory_without_memory_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="add_memory"):
        S.save_memory(S.tiny_model("llama"), tmp_path / "a")


def test_divergence_on_the_last_step_is_divergence(tok):
    model = S.tiny_model("llama")
    cfg = S.TrainConfig(method="full", lr=1e30, max_steps=1, micro_batch=2, grad_accum=1, warmup_steps=0, clip=0)
    with pytest.raises(S.TrainingDiverged, match="step 1"):
        S.train(model, tok, TEXTS, cfg, progress=False)


@pytest.mark.parametrize("text, match", [
    ('{"a": NaN}', "non-finite"),
    ('{"a": Infinity}', "non-finite"),
    ('{"a": 1', "not valid JSON"),
])
def test_reading_is_as_strict_as_writing(tmp_path, text, match):
    p = tmp_path / "run.json"
    p.write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        read_json(p)
    assert str(p) in str(err.value)


def test_records_need_an_object_with_their_keys(tmp_path):
    p = tmp_path / "run.json"
    p.write_text("[]")
    with pytest.raises(ValueError, match="expected a JSON object") as err:
        read_record(p)
    assert str(p) in str(err.value)
    p.write_text(json.dumps({"metrics": {}}))
    with pytest.raises(ValueError, match="missing"):
        read_record(p, ("metrics", "items"))


def test_atomic_write_keeps_the_old_file_when_a_write_fails_half_way(tmp_path):
    p = tmp_path / "a.json"
    atomic_write(p, "old")

    def half(tmp):
        tmp.write_text("partial")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError, match="crash"):
        atomic_write(p, half)
    assert p.read_text() == "old"
    assert not list(tmp_path.glob("*.tmp"))


def test_a_full_disk_says_so_and_names_the_folder(tmp_path):
    p = tmp_path / "ckpt.pt"

    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=f"no space left on {tmp_path}"):
        atomic_write(p, full)

    def torch_full(tmp):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 123 vs 456")

    with pytest.raises(OSError, match="no space left on"):
        atomic_write(p, torch_full)
    assert not p.exists()
