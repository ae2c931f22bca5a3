"""The memory as a peft-style adapter: ``save_memory`` writes only the memory (``memory_config.json`` +
``memory.safetensors``), ``load_memory`` adds it to a fresh base model and checks that it is the same base."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .files import atomic_write, file_sha256
from .fingerprints import object_hash, tensors_fingerprint
from .memory import (CONFIG_NAME, FORMAT, WEIGHTS_NAME, MemoryConfig, MemoryMLP, _memory_parameters, add_memory,
                     decoder_layers, memory_state_dict)


def base_fingerprint(model: nn.Module) -> dict:
    """Shape facts and a hash of the base weights outside the memory, to refuse a wrong base model."""
    cfg = model.config
    kept = [(name.replace(".mlp.mlp.", ".mlp."), p) for name, p in sorted(model.named_parameters())
            if not (".memory." in name or name.endswith("mlp.alpha") or "lora_" in name)]
    return {"model_type": cfg.model_type, "hidden_size": cfg.hidden_size,
            "num_hidden_layers": cfg.num_hidden_layers, "vocab_size": cfg.vocab_size,
            "weights_sha256": tensors_fingerprint(kept, stride=997)}


def save_memory(model: nn.Module, path: str | Path, reference: str | Path | None = None) -> Path:
    """Save only the memory, peft-style: ``memory_config.json`` + ``memory.safetensors``, each written atomically
    (the weights first, the config last: a folder with a config is complete).

    Args:
        model: a model with memory layers.
        path: output folder (created).
        reference: an earlier saved memory (e.g. the retrofit). When given, only the value rows that differ
            from it are stored (plus any other memory tensor that differs), with the reference's path relative
            to ``path`` and its hash, so a copied results folder still loads. ``path`` itself is refused.

    Returns:
        The folder written.
    """
    path = Path(path)
    if not hasattr(model, "smf_memory_config") or not _memory_parameters(model):
        raise ValueError(f"the model has no memory layers to save to {path}: call smf_lib.add_memory(model, config) "
                         "(or load_memory) first")
    state = memory_state_dict(model)
    meta = {"memory_config": dataclasses.asdict(model.smf_memory_config), "base": base_fingerprint(model),
            "format": FORMAT}
    tensors = state
    if reference is not None:
        reference = Path(reference)
        if reference.resolve() == path.resolve():
            raise ValueError(f"reference {reference} is the folder being written: a delta adapter cannot point at "
                             "itself; save the full memory (reference=None) or write to another folder")
        if not (reference / WEIGHTS_NAME).exists():
            raise FileNotFoundError(f"no {WEIGHTS_NAME} in reference {reference}: pass a folder written by "
                                    "save_memory")
        ref_state = load_file(str(reference / WEIGHTS_NAME))
        tensors = {}
        for k, v in state.items():
            r = ref_state.get(k)
            if r is None or r.shape != v.shape:
                raise ValueError(f"reference {reference} has no matching {k}: save without reference")
            if k.endswith("values.weight"):
                rows = (v != r.to(v.dtype)).any(dim=1).nonzero().flatten()
                tensors[k + ".rows"], tensors[k + ".data"] = rows, v[rows].contiguous()
            elif not torch.equal(v, r.to(v.dtype)):
                tensors[k] = v
        rel = os.path.relpath(reference.resolve(), path.resolve())
        meta["reference"] = {"path": Path(rel).as_posix(), "sha256": file_sha256(reference / WEIGHTS_NAME)}
    atomic_write(path / WEIGHTS_NAME, lambda tmp: save_file({k: t.contiguous() for k, t in tensors.items()}, str(tmp)))
    # the config (written last) names the weights' checksum and each layer's alpha, so a damaged or edited file is
    # refused on load rather than silently loaded
    meta["weights_sha256"] = file_sha256(path / WEIGHTS_NAME)
    meta["alphas"] = {k: float(v) for k, v in state.items() if k.endswith(".alpha")}
    meta["config_sha256"] = object_hash(meta["memory_config"])
    atomic_write(path / CONFIG_NAME, json.dumps(meta, indent=2))
    return path


def _read_adapter(path: Path) -> tuple[dict, dict]:
    """The adapter's metadata and tensors, checked for the damage a hand edit or a crash could leave."""
    if not (path / CONFIG_NAME).exists():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {path}: pass a folder written by smf_lib.save_memory")
    try:
        meta = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path / CONFIG_NAME} is damaged ({err}): save the memory again") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path / CONFIG_NAME}: format {meta.get('format') if isinstance(meta, dict) else None!r} "
                         f"is not {FORMAT!r}; this smf_lib reads only its own adapter format")
    for key in ("memory_config", "base"):
        if not isinstance(meta.get(key), dict):
            raise ValueError(f"{path / CONFIG_NAME} has no {key!r} entry: the file is incomplete; save it again")
    if "config_sha256" in meta and object_hash(meta["memory_config"]) != meta["config_sha256"]:
        raise ValueError(f"{path / CONFIG_NAME}: its memory_config was edited after saving (alpha, sizes or layers no "
                         f"longer match what {WEIGHTS_NAME} was trained with); restore it or save the memory again")
    want = meta.get("weights_sha256")
    if want is not None and (path / WEIGHTS_NAME).exists() and file_sha256(path / WEIGHTS_NAME) != want:
        raise ValueError(f"{path / WEIGHTS_NAME}: its bytes do not match the checksum in {CONFIG_NAME} ({want}); the "
                         "file was damaged or edited: restore it, save the memory again, or rerun its stage "
                         "(python -m smf_lib run --fresh)")
    try:
        saved = load_file(str(path / WEIGHTS_NAME))
    except FileNotFoundError:
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {path}: the adapter is incomplete; save it again") from None
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{path / WEIGHTS_NAME} is damaged ({err}): save the memory again") from err
    return meta, saved


def load_memory(model: nn.Module, path: str | Path) -> nn.Module:
    """Add the saved memory to a fresh base model and load its weights (safetensors only, no pickle).

    Args:
        model: the base model the memory was trained on, without memory.
        path: a folder written by :func:`save_memory`.

    Returns:
        The model with memory, weights restored.
    """
    path = Path(path)
    meta, saved = _read_adapter(path)
    want, have = meta["base"], base_fingerprint(model)
    diff = {k: (want[k], have.get(k)) for k in want if want[k] != have.get(k)}
    if diff:
        raise ValueError(f"memory at {path} was saved from a different base model (saved vs given: {diff}); "
                         "load the same base model (name, revision and dtype) it was trained on")
    try:
        config = MemoryConfig(**meta["memory_config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path / CONFIG_NAME}: invalid memory_config ({err}); save the memory again") from err
    state = _with_reference(path, meta, saved) if "reference" in meta else saved
    add_memory(model, config)
    own = _memory_parameters(model)
    problem = _mismatch(path, config, meta, own, state)
    if problem:
        _remove_memory(model)
        raise ValueError(problem)
    with torch.no_grad():
        for k, p in own.items():
            p.copy_(state[k].to(p.dtype))
    return model


def _with_reference(path: Path, meta: dict, saved: dict) -> dict:
    """The full memory state of an adapter that stores only the rows that differ from its reference adapter."""
    ref = (path / meta["reference"]["path"]).resolve()
    if ref == path.resolve():
        raise ValueError(f"memory at {path} names itself as its reference: it cannot be loaded; save it again "
                         "without reference")
    if not (ref / WEIGHTS_NAME).exists() or file_sha256(ref / WEIGHTS_NAME) != meta["reference"].get("sha256"):
        raise ValueError(f"memory at {path} stores only changed rows on top of {ref}, which is missing or "
                         "has changed; restore that reference adapter or save the memory without reference")
    _, state = _read_adapter(ref)
    for k in list(saved):
        if k.endswith(".rows"):
            base_k = k[: -len(".rows")]
            rows, data = saved[k], saved.get(base_k + ".data")
            if base_k not in state or data is None:
                raise ValueError(f"{path / WEIGHTS_NAME}: {k} has no matching table or data; save it again")
            n = state[base_k].shape[0]
            ok = rows.dtype == torch.long and rows.dim() == 1 and len(torch.unique(rows)) == len(rows)
            ok = ok and (not len(rows) or (rows.min() >= 0 and rows.max() < n))
            if not ok or tuple(data.shape) != (len(rows), state[base_k].shape[1]):
                raise ValueError(f"{path / WEIGHTS_NAME}: {k} holds bad row indices or data (rows must be "
                                 f"distinct in 0..{n - 1}, one data row each); the file was edited or damaged")
            state[base_k] = state[base_k].clone()
            state[base_k][rows] = data.to(state[base_k].dtype)
        elif not k.endswith(".data"):
            state[k] = saved[k]
    return state


def _mismatch(path: Path, config, meta: dict, own: dict, state: dict) -> str | None:
    """What is wrong with a loaded state against the memory its config builds (missing tensors, wrong shapes, an
    alpha edited in one file only), or None."""
    missing = sorted(set(own) - set(state))
    if missing:
        return (f"memory at {path} lacks tensors {missing[:3]}...: its layers do not match its config "
                f"(layers {list(config.layers)}); the file is incomplete or was edited")
    bad = [k for k, p in own.items() if tuple(state[k].shape) != tuple(p.shape)]
    if bad:
        return (f"memory at {path}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, its config asks for "
                f"{tuple(own[bad[0]].shape)}; the file was edited or damaged")
    recorded = meta.get("alphas") or {}
    edited = [k for k, v in recorded.items() if k in state and float(state[k]) != v]
    if edited:
        return (f"memory at {path}: {CONFIG_NAME} records {edited[0]} = {recorded[edited[0]]}, "
                f"{WEIGHTS_NAME} holds {float(state[edited[0]])}; one of them was edited: save the memory again")
    return None


def _remove_memory(model: nn.Module) -> None:
    """Undo :func:`add_memory` (used when loading fails half-way, so the caller's model is left as it was)."""
    for layer in decoder_layers(model):
        if isinstance(layer.mlp, MemoryMLP):
            layer.mlp = layer.mlp.mlp
    if hasattr(model, "smf_memory_config"):
        del model.smf_memory_config
