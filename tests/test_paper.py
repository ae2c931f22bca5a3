"""The paper's protocol as data (the departures table), its fidelity options, and the Qwen2 path at the paper's
insertion points (a tiny random Qwen2 with 24 layers and the paper's memory shape scaled down)."""

import copy

import pytest
import torch

import smf_lib as S
from smf_lib import data as D
from smf_lib import probes as P
from smf_lib.study.cli import main
from smf_lib.study.presets import PRESETS, get_preset
from smf_lib.study.protocol import PAPER_PROTOCOL, protocol_settings, protocol_table
from smf_lib.selection import select_rows
from smf_lib.training import lr_factor

from conftest import TEXTS, CharTokenizer


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_departure_has_a_reason_and_every_reason_a_departure(name):
    p = get_preset(name)
    table = protocol_table(p)
    assert set(table["setting"]) == set(p.departures), "update the preset's departures to match its settings"
    assert all(len(why) > 10 for why in table["why"])
    assert set(protocol_settings(p)) == set(PAPER_PROTOCOL)


def test_paper_preset_follows_the_paper_and_the_table_notices_a_change(capsys):
    p = get_preset("paper")
    assert protocol_table(p).empty
    assert main(["protocol", "--preset", "paper"]) == 0
    assert "follows the paper's protocol" in capsys.readouterr().out
    p.train = {**p.train, "deterministic_ties": True}
    assert list(protocol_table(p)["setting"]) == ["deterministic ties"]
    assert main(["protocol", "--preset", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| setting | paper's code | this preset | why |") and "| top-t | 512 | 128 |" in out


def test_paper_training_sample_differs_per_seed_and_repeats():
    rows = list(range(100))
    a, b = D.sample_rows(rows, 10, "shuffle", 0), D.sample_rows(rows, 10, "shuffle", 1)
    assert a != b and a == D.sample_rows(rows, 10, "shuffle", 0) and len(set(a)) == 10
    import numpy as np

    assert a == [rows[i] for i in np.random.default_rng(0).permutation(100)[:10]]  # datasets' shuffle(seed)
    assert D.sample_rows(rows, 10, "first", 5) == rows[:10]


def test_explanation_is_stripped():
    row = {"question": "q", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 0, "exp": "  because \n"}
    assert D.medmcqa_training_text(row).endswith("\nExplanation: because")


def test_non_raw_wikitext_is_not_offline(tmp_path):
    (tmp_path / "wikitext").mkdir()
    (tmp_path / "wikitext" / "wiki.test.raw").write_text("a line\n")
    with pytest.raises(ValueError, match="non-raw WikiText.*Hub"):
        D.load_wikitext_lines(root=tmp_path, raw=False)


def test_hub_preset_ignores_the_local_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("SMF_DATA_DIR", str(tmp_path))
    assert D.data_dir("hub") is None and D.data_dir() == tmp_path


def test_paper_schedule_starts_at_zero():
    assert lr_factor(0, 4, 20, "paper") == 0 and lr_factor(1, 4, 20, "paper") == 0.25
    assert lr_factor(0, 4, 20) == 0.25


def test_paper_first_window_counts_one_token_more():
    model, tok = S.tiny_model("llama", seed=3), CharTokenizer()
    text = "the quick brown fox jumps over the lazy dog " * 3
    exact = P.perplexity(model, tok, text, max_length=32, stride=16, progress=False)
    paper = P.perplexity(model, tok, text, max_length=32, stride=16, progress=False, first_window="paper")
    assert paper["tokens"] == exact["tokens"] + 1
    w0e, w0p = exact["windows"][0], paper["windows"][0]
    assert w0p["nll"] / w0p["tokens"] == pytest.approx(w0e["nll"] / w0e["tokens"])


def test_paper_ties_use_topk_and_project_ties_the_lowest_index():
    counts = torch.tensor([0, 3, 3, 3, 1])
    scores = torch.tensor([9.0, 1.0, 1.0, 1.0, 0.5], dtype=torch.float64)
    assert select_rows(counts, scores, 2).tolist() == [1, 2]
    assert set(select_rows(counts, scores, 2, deterministic=False).tolist()) <= {1, 2, 3}


def test_step_token_average_equals_one_batch_of_the_whole_step(tok):
    """With step-tokens averaging, two micro-batches of one step give the gradient of one batch of all texts."""
    texts = ["a short one", "a much longer training text here", "mid length text", "x"]

    def one_step(micro, accum, how):
        model = S.tiny_model("llama", seed=5)
        cfg = S.TrainConfig(method="full", lr=1e-3, micro_batch=micro, grad_accum=accum, max_steps=1, warmup_steps=0,
                            clip=0, loss_average=how, seed=0)
        return S.train(model, tok, texts, cfg, progress=False)

    whole = one_step(4, 1, "step-tokens")
    split = one_step(2, 2, "step-tokens")
    per_mb = one_step(2, 2, "micro-batch")
    assert split.log[0]["loss"] == pytest.approx(whole.log[0]["loss"], rel=1e-5)
    assert per_mb.log[0]["loss"] != pytest.approx(whole.log[0]["loss"], rel=1e-3)


# ---- Qwen2 at the paper's insertion points --------------------------------------------------------------------

PAPER_MEM = dict(layers=(6, 12, 18), n_keys=16, heads=4, knn=16, k_dim=32, init="paper", mode="additive")


def _qwen(dtype=torch.float32):
    return S.tiny_model("qwen2", layers=24, seed=0).to(dtype)


@pytest.mark.parametrize("init", ["zero", "paper"])
def test_qwen2_paper_layers_identity_and_perturbation(init):
    model = _qwen()
    ids = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        before = model(ids).logits
        S.add_memory(model, S.MemoryConfig(**{**PAPER_MEM, "init": init}))
        after = model(ids).logits
    assert [m.layer_idx for m in S.memory_layers(model)] == [6, 12, 18]
    assert torch.equal(before, after) if init == "zero" else not torch.equal(before, after)


def test_qwen2_bf16_model_with_float32_memory_step_save_load(tmp_path, tok):
    model = _qwen(torch.bfloat16)
    S.add_memory(model, S.MemoryConfig(**PAPER_MEM, dtype="float32"))
    mem = S.memory_layers(model)[0]
    assert mem.values.weight.dtype == torch.float32
    assert model.model.layers[0].mlp.gate_proj.weight.dtype == torch.bfloat16
    with torch.no_grad():
        assert model(torch.randint(0, 256, (1, 5))).logits.dtype == torch.bfloat16
    before = copy.deepcopy(S.memory_state_dict(model))
    stats = S.compute_background_stats(model, tok, TEXTS, progress=False)
    cfg = S.TrainConfig(method="smf", selector="kl", update="paper", lr=1e-2, micro_batch=2, grad_accum=2, max_steps=1,
                        warmup_steps=0, top_t=8, count_padding=True, select_per_microbatch=True)
    res = S.train(model, tok, TEXTS, cfg, background=stats, progress=False)
    after = S.memory_state_dict(res.model)
    changed = [k for k in after if not torch.equal(before[k], after[k])]
    assert changed and all(k.endswith("values.weight") for k in changed)
    S.save_memory(res.model, tmp_path / "a")
    fresh = S.load_memory(_qwen(torch.bfloat16), tmp_path / "a")
    ids = torch.randint(0, 256, (2, 7))
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, res.model(ids).logits)


def _tiny(preset_name, **over):
    """A preset on a tiny random Qwen2 and the packaged fixtures: the same runner code path, small sizes."""
    import dataclasses

    small = dict(model="tiny-qwen2", data="fixtures", memory={**get_preset(preset_name).memory, "layers": (1, 2),
                                                             "n_keys": 8, "knn": 4, "k_dim": 16, "heads": 2},
                 train_n=16, medmcqa_n=4, medmcqa_dev_n=3, triviaqa_n=2, triviaqa_dev_n=2, wikitext_lines=4,
                 wikitext_dev_lines=2, chat_n=2, chat_dev_n=2, acquisition_n=3, topk=8, retrofit_n=8, background_n=4,
                 dev_subset=dict(medmcqa=2, acquisition=2, chat=1, wikitext_windows=1), trajectory_points=3,
                 eval_batch=4)
    p = dataclasses.replace(get_preset(preset_name), **{**small, **over})
    p.train = {**p.train, "micro_batch": 4, "grad_accum": 2, "max_length": 64, "warmup_steps": 1, "epochs": 1,
               "top_t": 8, "checkpoint_every": 1}
    p.retrofit = {**p.retrofit, "micro_batch": 4, "grad_accum": 1, "max_length": 64, "warmup_steps": 1, "epochs": 1}
    return p


@pytest.mark.slow
def test_colab_preset_end_to_end_on_a_tiny_qwen2_as_on_a_t4(tmp_path, monkeypatch):
    """The colab preset's code path on a GPU without bfloat16: float32 master weights, float16 autocast in
    training and evaluation, loss scaling."""
    import json

    import smf_lib.study.runner as R

    monkeypatch.setattr(R, "auto_precision", lambda p, device: {"model": "float32", "memory": None,
                                                                "autocast": "float16"})
    monkeypatch.setitem(PRESETS, "colab", _tiny("colab"))
    assert main(["run", "--preset", "colab", "--out", str(tmp_path), "--no-progress"]) == 0
    runs = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")}
    assert set(runs) == {"base", "smf-kl-s0", "lora-mem-s0", "full-mem-s0"}  # the baselines from SMF's start
    assert runs["full-mem-s0"]["train_config"]["autocast"] == "float16"
    assert runs["smf-kl-s0"]["identity"]["precision"]["autocast"] == "float16"
    assert all(e["grad_norm"] is None or e["grad_norm"] >= 0 for e in runs["full-mem-s0"]["train_log"])


@pytest.mark.slow
def test_paper_preset_end_to_end_on_a_tiny_qwen2(tmp_path, monkeypatch):
    """bfloat16 model with float32 memory, bfloat16 evaluation, a per-seed training sample, the paper's update."""
    import json

    monkeypatch.setitem(PRESETS, "paper", _tiny("paper", methods=("base", "smf-kl-paper", "full"), seeds=(0, 1),
                                                 multi_seed=("smf-kl-paper",), wikitext_raw=True))
    assert main(["run", "--preset", "paper", "--out", str(tmp_path), "--no-progress"]) == 0
    r0 = json.loads((tmp_path / "runs" / "smf-kl-paper-s0.json").read_text())
    r1 = json.loads((tmp_path / "runs" / "smf-kl-paper-s1.json").read_text())
    assert r0["identity"]["precision"] == {"model": "bfloat16", "memory": "float32", "autocast": None,
                                           "eval": "bfloat16"}
    assert r0["train_config"]["update"] == "paper" and r0["train_config"]["schedule"] == "paper"
    assert r0["train_log"][0]["lr"] == 0  # transformers' warm-up starts at 0
    assert r0["train_log"] != r1["train_log"]


@pytest.mark.parametrize("name", ["paper", "colab", "cpu"])
def test_method_doc_shows_the_current_departures_tables(name):
    from pathlib import Path

    from smf_lib.study.cli import protocol_markdown, replace_block

    doc = (Path(__file__).resolve().parents[1] / "docs" / "METHOD.md").read_text()
    assert replace_block(doc, name, protocol_markdown(get_preset(name))) == doc, (
        f"run `python -m smf_lib protocol --preset {name} --update-doc docs/METHOD.md`")
