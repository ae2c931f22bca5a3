"""SMF in the user's own loop (SparseMemory) and in a stock transformers.Trainer (SmfCallback): one implementation,
the same rows and values as smf_lib.train."""

import pytest
import torch

import smf_lib as S
from smf_lib.batches import collate_batch
from smf_lib.memory import memory_layers

from conftest import MEM, TEXTS

LR, STEPS = 5e-2, 3


def _model():
    torch.manual_seed(1)
    return S.add_memory(S.tiny_model("llama"), S.MemoryConfig(**MEM))


def _by_train(tok, selector="kl", background=None):
    model = _model()
    cfg = S.TrainConfig(method="smf", selector=selector, top_t=6, lr=LR, max_steps=STEPS, micro_batch=len(TEXTS),
                        grad_accum=1, max_length=32, warmup_steps=0, schedule="constant")
    S.train(model, tok, TEXTS, cfg, background=background, progress=False)
    return model


def _values(model):
    return [m.values.weight.detach().clone() for m in memory_layers(model)]


def test_the_step_level_api_in_a_users_loop_matches_train(tok):
    ref = _model()
    stats = S.compute_background_stats(ref, tok, TEXTS[:4], max_length=32, progress=False)
    trained = _by_train(tok, background=stats)
    model = _model().requires_grad_(False)  # SMF trains the value rows alone
    before = _values(model)
    smf = S.SparseMemory(model, S.SmfSettings(selector="kl", top_t=6), background=stats)
    # the user's own optimizer over every trainable parameter: it must never move the value tables
    other = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1.0, weight_decay=0.5)
    model.train()
    chosen = []
    for _ in range(STEPS):
        batch = collate_batch(tok, TEXTS, 32, "cpu")
        model(**batch).loss.backward()
        assert all(m.values.weight.grad is None for m in memory_layers(model))  # taken off the parameter
        smf.record(batch["attention_mask"])
        chosen.append(smf.select())
        smf.clip_(1.0)
        other.step()
        smf.step(LR)
    smf.close()
    for j, (a, b, start) in enumerate(zip(_values(model), _values(trained), before)):
        moved = (a != start).any(dim=1).nonzero().flatten()
        assert set(moved.tolist()) <= set(torch.cat([c[j] for c in chosen]).tolist())
        assert torch.allclose(a, b, atol=1e-7)
    assert all(len(c[0]) <= 6 for c in chosen)


def test_the_trainer_callback_moves_only_selected_rows_and_matches_train(tok, tmp_path):
    transformers = pytest.importorskip("transformers")
    from smf_lib.hf import SmfCallback

    trained = _by_train(tok, selector="tf")
    model = _model().requires_grad_(False)
    before = _values(model)
    smf = S.SparseMemory(model, S.SmfSettings(selector="tf", top_t=6))
    picked = []
    select = smf.select
    smf.select = lambda: picked.append(select()) or picked[-1]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=len(TEXTS), max_steps=STEPS, learning_rate=LR,
        lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, report_to=[], use_cpu=True,
        save_strategy="no", logging_strategy="no", remove_unused_columns=False, seed=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=[{"text": t} for t in TEXTS],
                                   data_collator=lambda rows: collate_batch(tok, [r["text"] for r in rows], 32, "cpu"),
                                   callbacks=[SmfCallback(smf)])
    trainer.train()
    smf.close()
    assert len(picked) == STEPS
    for j, (a, b, start) in enumerate(zip(_values(model), _values(trained), before)):
        moved = set((a != start).any(dim=1).nonzero().flatten().tolist())
        assert moved and moved <= set(torch.cat([p[j] for p in picked]).tolist())
        assert moved == set((b != start).any(dim=1).nonzero().flatten().tolist())
        assert torch.allclose(a, b, atol=1e-5)
