import pytest
import torch

import smf_lib as S
import smf_lib.models  # noqa: F401


@pytest.fixture(scope="module")
def smollm():
    return S.load_model()


def test_offline_default_loads_and_answers(smollm):
    model, tok = smollm
    assert model.config.model_type == "llama" and model.config.hidden_size == 576
    assert model.config.num_hidden_layers == 30 and len(tok) == 49152 and tok.pad_token is not None
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.input_ids.shape[1]:])


def test_offline_default_unchanged_by_zero_memory(smollm):
    model, tok = smollm
    ids = tok("Sparse memory finetuning keeps what the model knew.", return_tensors="pt").input_ids
    with torch.no_grad():
        before = model(ids).logits
        S.add_memory(model, S.MemoryConfig(layers=(7, 15, 22), n_keys=16, heads=4, knn=8))
        after = model(ids).logits
    assert torch.equal(before, after)


def test_unreachable_hub_model_names_both_remedies(monkeypatch):
    def offline(*a, **kw):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(S.models.AutoModelForCausalLM, "from_pretrained", offline)
    with pytest.raises(OSError, match="go online.*offline default 'smollm2-135m-instruct'"):
        S.load_model("no-such-org/no-such-model-xyz")
