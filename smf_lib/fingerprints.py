"""Short sha256 fingerprints of what a result depends on: texts, items, settings and tensors (files: files.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

LENGTH = 16  # hex digits kept


def texts_fingerprint(texts: Iterable[str]) -> str:
    """Of a list of texts (order matters); kept in checkpoints so a resume on other data is refused."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()[:LENGTH]


def items_fingerprint(items) -> str:
    """Of a list of JSON-able items (probe rows, texts), recorded with results."""
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps(it, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()[:LENGTH]


def object_hash(obj) -> str:
    """Of one JSON-able object (keys sorted; non-JSON values by their ``str``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:LENGTH]


def tensors_fingerprint(tensors: Iterable, stride: int = 1) -> str:
    """Of tensors' values (every ``stride``-th element, as float32), in order."""
    h = hashlib.sha256()
    for t in tensors:
        if isinstance(t, tuple):  # (name, tensor)
            h.update(t[0].encode())
            t = t[1]
        h.update(t.detach().reshape(-1)[::stride].float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:LENGTH]
