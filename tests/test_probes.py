import math

import pytest
import torch
import torch.nn.functional as F

import smf_lib as S
from smf_lib import probes as P
from smf_lib.data import medmcqa_options, medmcqa_prompt

from conftest import CharTokenizer

ROW = {"question": "Which?", "opa": "red", "opb": "green", "opc": "blue", "opd": "black", "cop": 2}


class LetterTokenizer(CharTokenizer):
    """Char tokenizer where ' A'..' D' are single tokens (ids 1..4), as with real BPE vocabularies."""

    def encode(self, text):
        return [" ABCD".index(text[1])] if text in (" A", " B", " C", " D") else super().encode(text)


@pytest.fixture
def model():
    return S.tiny_model("llama", seed=3)


def test_perplexity_single_window_equals_full_context(model):
    tok = CharTokenizer()
    text = "the quick brown fox jumps over the lazy dog " * 3
    ids = torch.tensor([list(text.encode())])
    with torch.no_grad():
        logits = model(ids).logits[0, :-1]
    nll = F.cross_entropy(logits, ids[0, 1:], reduction="sum")
    res = P.perplexity(model, tok, text, max_length=1024, stride=512, progress=False)
    assert res["tokens"] == ids.shape[1] - 1 and len(res["windows"]) == 1
    assert res["ppl"] == pytest.approx(math.exp(float(nll) / (ids.shape[1] - 1)), rel=1e-5)


def test_sliding_windows_score_every_token_once(model):
    tok = CharTokenizer()
    text = "abcdefghij" * 13  # 130 tokens
    res = P.perplexity(model, tok, text, max_length=32, stride=16, batch_size=3, progress=False)
    assert res["tokens"] == 129
    assert [w["tokens"] for w in res["windows"]][:3] == [31, 16, 16]
    one = P.perplexity(model, tok, text, max_length=32, stride=16, batch_size=1, progress=False)
    assert one["ppl"] == pytest.approx(res["ppl"], rel=1e-5)  # batching windows does not change the score


@pytest.mark.parametrize("raw,norm", [("The Beatles!", "beatles"), ("  a  Tale of   Two Cities ", "tale of two cities"),
                                      ("Paris, France.", "paris france."), ("AN apple-pie", "apple-pie"),
                                      ("thesis", "thesis"), ("Ünïcode", "n code")])
def test_normalize_answer(raw, norm):
    assert P.normalize_answer(raw) == norm


def test_first_answer_cut():
    assert P._first_answer(" Paris, the capital.\nQuestion") == "Paris"


def test_option_batching_matches_separate_scoring(model):
    ctx = list(medmcqa_prompt(ROW).encode())
    opts = [list(o.encode()) for o in medmcqa_options(ROW)]
    means, letters = P._option_scores(model, ctx, opts, [1, 2, 3, 4])
    sep = [float(lp.mean()) for lp in P.continuation_logprobs(model, [ctx] * 4, opts, batch_size=1)]
    assert means == pytest.approx(sep, abs=1e-5)
    with torch.no_grad():
        last = F.log_softmax(model(torch.tensor([ctx])).logits[0, -1], -1)
    assert letters == pytest.approx(last[[1, 2, 3, 4]].tolist(), abs=1e-5)


class ConstantHead(torch.nn.Module):
    """An output head that ignores the input: every position predicts softmax(bias)."""

    def __init__(self, bias):
        super().__init__()
        self.bias = bias

    def forward(self, h):
        return h[..., :1] * 0 + self.bias


@pytest.mark.parametrize("gold", [0, 2, 3])
def test_medmcqa_picks_planted_answer(model, gold):
    """Rig the model to favour the characters of the gold continuation: scoring must pick that option."""
    row = {**ROW, "cop": gold}
    bias = torch.zeros(256)
    bias[list(set(medmcqa_options(row)[gold].encode()))] = 10.0
    model.lm_head = ConstantHead(bias)
    res = P.medmcqa_accuracy(model, LetterTokenizer(), [row], progress=False)
    assert res["items"][0]["pred"] == gold and res["acc"] == 1.0 and res["n"] == 1
    assert res["always_a_acc"] == float(gold == 0)


def test_letter_must_be_one_token(model):
    with pytest.raises(ValueError, match="letter scoring needs 1"):
        P.medmcqa_accuracy(model, CharTokenizer(), [ROW], progress=False)


def test_triviaqa_scoring_on_rigged_output(model, monkeypatch):
    tok = CharTokenizer()
    rows = [{"question": "Capital of France?", "aliases": ["Paris", "City of Light"]},
            {"question": "Largest planet?", "aliases": ["Jupiter"]}]
    outs = iter([[" The answer is paris, France.\nQuestion:", " Saturn"]])
    monkeypatch.setattr(model, "generate", lambda **kw: torch.cat([kw["input_ids"], kw["input_ids"][:, :1]], 1))
    monkeypatch.setattr(tok, "batch_decode", lambda ids, skip_special_tokens=True: next(outs), raising=False)
    res = P.triviaqa_accuracy(model, tok, rows, progress=False)
    assert [it["correct"] for it in res["items"]] == [1, 0]
    assert [it["em"] for it in res["items"]] == [0, 0]  # "the answer is paris" is not an exact alias
    assert all(it["alias_loglik"] < 0 for it in res["items"])


def test_triviaqa_generation_stops_at_eos(model):
    """A model whose first new token is EOS answers nothing, even if it would go on after it."""
    tok = CharTokenizer()
    steps = {"n": 0}

    def eos_then_paris(module, args, out):
        steps["n"] += 1
        out = out.clone()
        out[..., tok.eos_token_id] += 1e4 if steps["n"] == 1 else -1e4  # EOS first, then anything
        return out

    model.lm_head.register_forward_hook(eos_then_paris)
    res = P.triviaqa_accuracy(model, tok, [{"question": "Capital?", "aliases": ["x", "e", "a", "o", " "]}],
                              progress=False)
    assert res["items"][0]["output"] == "" and res["items"][0]["correct"] == 0


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_batched_medmcqa_equals_one_question_at_a_time(model, attention):
    """Several questions per forward (left-padded prompts, each question's options packed in one row behind a
    block-diagonal mask) score as each option does alone after its prompt, with either attention kernel."""
    model.set_attn_implementation(attention)
    rows = [dict(ROW, question="Which colour " + "is it " * k + "?", cop=k % 4, opa="red" * (k + 1))
            for k in range(5)]
    one = P.medmcqa_accuracy(model, LetterTokenizer(), rows, progress=False, batch_size=1)
    many = P.medmcqa_accuracy(model, LetterTokenizer(), rows, progress=False, batch_size=3)
    assert [i["pred"] for i in one["items"]] == [i["pred"] for i in many["items"]]
    tok = LetterTokenizer()
    for row, a, b in zip(rows, one["items"], many["items"]):
        ctx, gold = tok.encode(medmcqa_prompt(row)), tok.encode(medmcqa_options(row)[row["cop"]])
        alone = float(P.continuation_logprobs(model, [ctx], [gold], batch_size=1)[0].mean())
        assert a["gold_loglik"] == pytest.approx(b["gold_loglik"], abs=1e-4)
        assert b["gold_loglik"] == pytest.approx(alone, abs=1e-4)


def test_empty_evaluation_sets_are_refused(model):
    with pytest.raises(ValueError, match="no MedMCQA rows"):
        P.medmcqa_accuracy(model, LetterTokenizer(), [], progress=False)
    with pytest.raises(ValueError, match="no TriviaQA rows"):
        P.triviaqa_accuracy(model, CharTokenizer(), [], progress=False)
    with pytest.raises(ValueError, match="fewer than 2 tokens"):
        P.perplexity(model, CharTokenizer(), "", progress=False)
    with pytest.raises(ValueError, match="no items"):
        P.reference_topk(model, [], progress=False)


def test_chat_items_score_the_reply_only():
    tok = CharTokenizer()
    (ids, first, end), = P.chat_items(tok, [("hi?", "hello there")])
    assert bytes(ids[first:end]).decode() == "hello there</a>"
    assert bytes(ids[:first]).decode() == "<u>hi?</u>\n<a>"


def test_drift_is_zero_for_the_same_model_and_exact_with_the_whole_vocabulary(model):
    tok = CharTokenizer()
    items = P.text_windows(tok, "the quick brown fox jumps over the lazy dog " * 4, max_length=64, stride=32)
    other = S.tiny_model("llama", seed=4)
    same = P.drift(model, items, P.reference_topk(model, items, k=8, progress=False), progress=False)
    assert same["kl"] == pytest.approx(0, abs=1e-6)
    full = P.drift(other, items, P.reference_topk(model, items, k=256, progress=False), exact_reference=model,
                   progress=False)
    for it in full["items"]:
        assert it["kl"] == pytest.approx(it["kl_exact"], rel=1e-4)
    small = P.drift(other, items, P.reference_topk(model, items, k=4, progress=False), exact_reference=model,
                    progress=False)
    for it in small["items"]:
        assert 0 < it["kl"] <= it["kl_exact"] + 1e-6  # coarsening only lowers the KL


def test_a_new_probe_is_one_scorer_and_one_registry_entry(monkeypatch):
    """A toy probe added to PROBES is compared by the paired statistics, labelled in figures and costed."""
    import numpy as np

    from smf_lib.study.cost import estimate_runtime
    from smf_lib.study.paired_stats import METRICS, paired_bootstrap
    from smf_lib.study.presets import get_preset
    from smf_lib.views.plotting import LABELS

    smoke = get_preset("smoke")
    before = estimate_runtime(smoke, 1e12)["tflops"].iloc[-1]
    toy = P.Probe(lambda s: None, cost=2.0, size=1000, metrics={
        "toy_hits": P.Metric(("toy_hit",), lambda a: a[0].mean(axis=-1), 1, "retention", "toy hit rate", 100)})
    monkeypatch.setitem(P.PROBES, "toy", toy)
    assert "toy_hits" in METRICS and LABELS["toy_hits"] == "toy hit rate"
    ci = paired_bootstrap({"toy_hit": [0, 0, 1, 0]}, {"toy_hit": [1, 1, 1, 0]}, "toy_hits", n_boot=200)
    assert ci["delta"] == 0.5 and ci["lo"] <= 0.5 <= ci["hi"]
    after = estimate_runtime(smoke, 1e12)
    assert np.isfinite(after["minutes"].iloc[-1]) and after["tflops"].iloc[-1] > before  # its cost is counted


def test_every_metric_names_the_arrays_the_evaluation_writes(tmp_path):
    """The registry's item keys and the keys evaluate() writes are the same strings (a smoke grid's base run)."""
    import json

    from smf_lib.study.cli import main

    assert main(["run", "--preset", "smoke", "--out", str(tmp_path), "--methods", "base", "--no-progress"]) == 0
    items = json.loads((tmp_path / "runs" / "base.json").read_text())["items"]
    missing = {name: m.items for name, m in P.metrics().items() if not set(m.items) <= set(items)}
    assert not missing, missing


def test_a_probe_with_its_own_evaluate_function_is_scored_by_the_study(tmp_path, monkeypatch):
    """A probe added as one registry entry is scored in every run record, next to the built-in probes, with the
    split and subset the study asks for; its own items join the run's identity; a path that does not import is
    refused by name."""
    import json

    import numpy as np

    from smf_lib.study.cli import main

    calls = []

    def toy_evaluate(s):
        calls.append((s.split, s.dev_subset))
        hits = [1, 0, 1] if s.dev_subset is None else [1]
        return {"metrics": {"toy_hits": float(np.mean(hits))}, "items": {"toy_hit": hits}}

    items = {"report": ["a", "b", "c"], "dev": ["d"]}
    toy = P.Probe(toy_evaluate, cost=0.0, items=items.get, metrics={
        "toy_hits": P.Metric(("toy_hit",), lambda a: a[0].mean(axis=-1), 1, "retention", "toy hit rate", 100)})
    monkeypatch.setitem(P.PROBES, "toy", toy)
    assert main(["run", "--preset", "smoke", "--out", str(tmp_path), "--methods", "base", "--no-progress"]) == 0
    record = json.loads((tmp_path / "runs" / "base.json").read_text())
    assert record["items"]["toy_hit"] == [1, 0, 1] and record["metrics"]["toy_hits"] == pytest.approx(2 / 3)
    assert "medmcqa_correct" in record["items"]  # the built-in probes are still scored
    assert ("report", None) in calls and any(c is not None for _, c in calls)  # every item, and the dev subset
    probes = record["identity"]["data"]["probes"]
    assert probes["toy_report"] != probes["toy_dev"] and "medmcqa_report" in probes  # its items are in the identity
    monkeypatch.setitem(P.PROBES, "toy", P.Probe("smf_lib.study.evaluation:no_such_step", cost=0.0,
                                                 metrics=toy.metrics))
    with pytest.raises(ValueError, match="probe 'toy': cannot import its evaluate function"):
        main(["run", "--preset", "smoke", "--out", str(tmp_path / "again"), "--methods", "base", "--no-progress",
              "--debug"])


def test_contributing_recipe_for_a_probe_works(tmp_path, monkeypatch):
    """CONTRIBUTING.md's probe recipe, as written there, adds a probe the study scores, pairs and labels."""
    import json
    import re
    from pathlib import Path

    from smf_lib.study.cli import main
    from smf_lib.study.paired_stats import METRICS
    from smf_lib.views.plotting import LABELS

    text = (Path(__file__).resolve().parents[1] / "CONTRIBUTING.md").read_text(encoding="utf-8")
    recipe = re.search(r"\*\*A probe\*\*.*?```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.setitem(P.PROBES, "known", None)  # restored (removed) after the test
    exec(recipe, {"PROBES": P.PROBES, "Probe": P.Probe, "Metric": P.Metric, "span_logliks": P.span_logliks})
    assert "known_loglik" in METRICS and LABELS["known_loglik"] == "known facts: log-lik"
    assert main(["run", "--preset", "smoke", "--out", str(tmp_path), "--methods", "base", "--no-progress"]) == 0
    record = json.loads((tmp_path / "runs" / "base.json").read_text())
    assert len(record["items"]["known_loglik"]) == 2 and record["metrics"]["known_loglik"] < 0
    assert "known_report" in record["identity"]["data"]["probes"]


def test_the_probes_build_no_autograd_graph_even_when_parameters_train(model):
    """Scoring runs under no_grad: a model whose parameters require grad (mid-training, or a loaded memory) is
    scored without recording a graph (no 'requires_grad' warning, no graph memory)."""
    import warnings

    model.requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Converting a tensor with requires_grad=True to a scalar" would raise
        P.medmcqa_accuracy(model, LetterTokenizer(), [ROW], progress=False)
        P.span_logliks(model, [([5, 6, 7, 8, 9], 2, 5)])
