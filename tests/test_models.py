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


_FAULTS = """
import resource, sys, torch, smf_lib as S
tuned = S.tune_cpu_allocator() if sys.argv[1] == "tune" else None
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.ones(25_000_000); del x  # 100 MB, above glibc's default mmap threshold
f0 = faults()
for _ in range(10):
    x = torch.ones(25_000_000); del x
print(tuned, faults() - f0)
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="glibc malloc only")
def test_tune_cpu_allocator_reuses_freed_blocks():
    import subprocess
    import sys

    def run(mode):
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
        tuned, faults = out.stdout.split()
        return tuned, int(faults)

    _, plain = run("plain")
    tuned, after = run("tune")
    assert plain > 10 * 20_000  # each fresh 100 MB block faults in its ~24k pages again
    assert tuned == "True" and after < plain / 4  # reused (now and then one block is faulted in once more)


def test_tune_cpu_allocator_refuses_a_bad_size():
    with pytest.raises(ValueError, match="keep_below"):
        S.tune_cpu_allocator(-1)
