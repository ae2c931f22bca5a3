"""Shared test helpers: tiny in-test models and a character tokenizer (no network, no downloads)."""

import pytest
import torch

import smf_lib as S


class Encoding(dict):
    """A BatchEncoding look-alike: keys as attributes, ``.to(device)``."""

    __getattr__ = dict.__getitem__

    def to(self, device):
        return Encoding({k: v.to(device) for k, v in self.items()})


class CharTokenizer:
    """Bytes as tokens (vocab 256): enough of the HF tokenizer interface for the trainer and the probes."""

    pad_token, pad_token_id, eos_token, eos_token_id = "\0", 0, "\0", 0
    padding_side = "right"
    chat_template = "<u>...</u><a>...</a>"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        text = "".join(f"<{m['role'][0]}>{m['content']}</{m['role'][0]}>\n" for m in messages)
        return text + ("<a>" if add_generation_prompt else "")

    def __len__(self):
        return 256

    def __call__(self, texts, padding=True, truncation=False, max_length=64, return_tensors=None,
                 add_special_tokens=False):
        single = isinstance(texts, str)
        texts = [texts] if single else texts
        ids = [self.encode(t)[:max_length] if truncation else self.encode(t) for t in texts]
        if return_tensors is None:
            return Encoding(input_ids=ids[0] if single else ids)
        L = max(map(len, ids))
        out = torch.zeros(len(ids), L, dtype=torch.long)
        mask = torch.zeros_like(out)
        for i, row in enumerate(ids):
            sl = slice(L - len(row), L) if self.padding_side == "left" else slice(0, len(row))
            out[i, sl] = torch.tensor(row, dtype=torch.long)
            mask[i, sl] = 1
        return Encoding(input_ids=out, attention_mask=mask)

    def encode(self, text):
        return list(text.encode())

    def batch_decode(self, ids, skip_special_tokens=True):
        return [bytes(int(i) for i in row if i).decode(errors="replace") for row in ids]


TEXTS = ["the cat sat on the mat", "a dog ran in the park today", "birds fly south", "fish swim in water",
         "the sun is a star", "rain falls from clouds", "trees grow tall", "snow is cold and white"]
MEM = dict(layers=(1, 2), n_keys=8, heads=2, knn=4, k_dim=16)


@pytest.fixture
def tok():
    return CharTokenizer()


@pytest.fixture(params=["llama", "qwen2"])
def tiny(request):
    return S.tiny_model(request.param)


@pytest.fixture
def mem_model():
    model = S.tiny_model("llama")
    torch.manual_seed(1)
    return S.add_memory(model, S.MemoryConfig(**MEM))
