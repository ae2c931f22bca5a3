"""Invariants that single mutations of the code would break (scripts/mutate.py applies them one at a time)."""

import pytest
import torch

import smf_lib as S
import smf_lib.probes as P
from smf_lib.selection import read_counts_of_texts

from conftest import MEM, TEXTS, CharTokenizer


def test_weight_decay_in_row_sparse_adam_moves_only_the_selected_rows(mem_model, tok):
    stats = S.compute_background_stats(mem_model, tok, TEXTS, progress=False)
    with torch.no_grad():
        for m in S.memory_layers(mem_model):
            m.values.weight.normal_()  # decay moves a non-zero row
    before = {m.layer_idx: m.values.weight.detach().clone() for m in S.memory_layers(mem_model)}
    cfg = S.TrainConfig(method="smf", lr=1e-2, weight_decay=0.5, max_steps=1, micro_batch=2, grad_accum=1,
                        warmup_steps=0, top_t=3)
    res = S.train(mem_model, tok, TEXTS, cfg, background=stats, progress=False)
    for m in S.memory_layers(res.model):
        moved = (m.values.weight != before[m.layer_idx]).any(dim=1).sum().item()
        assert 0 < moved <= 3, moved


def test_read_counts_of_a_padded_batch_are_the_sum_of_each_texts_counts(mem_model, tok):
    texts = ["a", "a much longer text that pads the short one"]
    together = read_counts_of_texts(mem_model, tok, texts, batch_size=2)
    alone = [read_counts_of_texts(mem_model, tok, [t], batch_size=1) for t in texts]
    for j, counts in enumerate(together):
        assert torch.equal(counts, alone[0][j] + alone[1][j])


class KeepEOSTokenizer(CharTokenizer):
    """Decodes every id, EOS (0) included, so an output that runs past EOS shows it."""

    def batch_decode(self, ids, skip_special_tokens=True):
        return [bytes(int(i) if int(i) else ord("#") for i in row).decode(errors="replace") for row in ids]


def test_triviaqa_cuts_each_answer_at_its_own_first_eos():
    model = S.tiny_model("llama", seed=3)
    tok = KeepEOSTokenizer()
    rows = [{"question": "one?", "aliases": ["zz"]}, {"question": "two, longer?", "aliases": ["zz"]}]

    def fake_generate(input_ids, **kw):
        n = input_ids.shape[1]
        new = torch.tensor([[ord("p"), 0, ord("z"), ord("z")], [ord("q"), ord("r"), 0, ord("z")]])
        return torch.cat([input_ids, new[:, :4]], 1)[:, : n + 4]

    model.generate = fake_generate
    res = P.triviaqa_accuracy(model, tok, rows, progress=False, batch_size=2)
    assert [i["output"] for i in res["items"]] == ["p", "qr"]
    assert [i["correct"] for i in res["items"]] == [0, 0]  # "zz" comes after EOS: not an answer


def test_a_delta_adapter_refuses_a_changed_reference(mem_model, tmp_path):
    ref = S.save_memory(mem_model, tmp_path / "ref")
    with torch.no_grad():
        S.memory_layers(mem_model)[0].values.weight[0] += 1.0
    delta = S.save_memory(mem_model, tmp_path / "delta", reference=ref)
    S.load_memory(S.tiny_model("llama"), delta)
    with torch.no_grad():
        S.memory_layers(mem_model)[1].values.weight[5] += 1.0
    S.save_memory(mem_model, tmp_path / "ref")  # the reference changes under the delta
    with pytest.raises(ValueError, match="has changed"):
        S.load_memory(S.tiny_model("llama"), delta)


def test_unselected_rows_stay_bit_identical_for_every_update_rule(tok):
    for update in S.UPDATES:
        model = S.add_memory(S.tiny_model("llama"), S.MemoryConfig(**MEM))
        stats = S.compute_background_stats(model, tok, TEXTS, progress=False)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        cfg = S.TrainConfig(method="smf", update=update, lr=1.0 if update == "sgd" else 1e-2, max_steps=2,
                            micro_batch=2, grad_accum=1, warmup_steps=0, top_t=2)
        res = S.train(model, tok, TEXTS, cfg, background=stats, progress=False)
        for n, p in res.model.named_parameters():
            if n.endswith("values.weight"):
                moved = int((p != before[n]).any(dim=1).sum())
                assert moved <= 2 * 2 + (2 * 2 if update == "paper" else 0), (update, n, moved)
            else:
                assert torch.equal(p, before[n]), (update, n)
