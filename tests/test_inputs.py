"""Nothing silent: every method's random draws come from its seed, inputs are checked where they enter, and errors
name their file."""

import dataclasses
import errno
import json

import pytest
import torch

import smf_lib as S
import smf_lib.data as D
from smf_lib.files import atomic_write, read_json, read_record
from smf_lib.study.presets import get_preset

from conftest import MEM, TEXTS


def _train_twice(method, tok, global_seeds=(123, 987), **kw):
    """The same train() call from two different global random states; returns both results' losses and weights."""
    out = []
    for g in global_seeds:
        torch.manual_seed(g)
        model = S.tiny_model("llama")
        if method in ("smf", "retrofit"):
            model = S.add_memory(model, S.MemoryConfig(**MEM))
        torch.manual_seed(g + 1)  # disturb the global stream once more between model and train()
        stats = S.compute_background_stats(model, tok, TEXTS, progress=False) if method == "smf" else None
        cfg = S.TrainConfig(method=method, lr=1e-2, max_steps=3, micro_batch=2, grad_accum=1, warmup_steps=1,
                            top_t=3, selector="random" if method == "smf" else "kl", **kw)
        res = S.train(model, tok, TEXTS, cfg, background=stats, progress=False)
        out.append(([r["loss"] for r in res.log], {k: v.clone() for k, v in res.model.state_dict().items()}))
    return out


@pytest.mark.parametrize("method", ["lora", "smf", "retrofit", "full"])
def test_every_method_draws_only_from_its_seed(method, tok):
    (loss_a, w_a), (loss_b, w_b) = _train_twice(method, tok)
    assert loss_a == loss_b
    assert w_a.keys() == w_b.keys()
    assert all(torch.equal(w_a[k], w_b[k]) for k in w_a), [k for k in w_a if not torch.equal(w_a[k], w_b[k])][:3]


def test_lora_seed_changes_lora():
    (loss_a, _), = _train_twice("lora", _tok(), global_seeds=(5,), seed=0)
    (loss_b, _), = _train_twice("lora", _tok(), global_seeds=(5,), seed=1)
    assert loss_a != loss_b


def _tok():
    from conftest import CharTokenizer

    return CharTokenizer()


@pytest.mark.parametrize("kw, match", [
    (dict(lora=dict(alpha=-5)), "lora.alpha"),
    (dict(lora=dict(alpha=float("nan"))), "lora.alpha"),
    (dict(lora=dict(alpha=True)), "lora.alpha"),
    (dict(lora=dict(targets="q_proj")), "lora.targets"),
    (dict(lora=dict(targets=("q_proj", ""))), "lora.targets"),
    (dict(lora=dict(r=0)), "lora.r"),
    (dict(lora=dict(rank=8)), "rank"),
    (dict(lora="r=8"), "LoraSettings"),
    (dict(lr=-1.0), "lr"),
    (dict(micro_batch=0), "micro_batch"),
    (dict(max_length=1), "max_length"),
    (dict(top_t=0), "top_t"),
    (dict(lora=dict(dropout=1.0)), "lora.dropout"),
    (dict(selector="nope"), "selector"),
])
def test_train_config_refuses_bad_fields(kw, match):
    with pytest.raises(ValueError, match=match):
        S.TrainConfig(**kw)


@pytest.mark.parametrize("kw, match", [
    (dict(alpha=True), "alpha"),
    (dict(alpha="1.0"), "alpha"),
    (dict(alpha=float("inf")), "alpha"),
    (dict(layers="12"), "layers"),
    (dict(n_keys=1), "n_keys"),
    (dict(init="random"), "init"),
])
def test_memory_config_refuses_bad_fields(kw, match):
    with pytest.raises(ValueError, match=match):
        S.MemoryConfig(**kw)


def test_top_t_above_the_table_is_said(mem_model, tok):
    stats = S.compute_background_stats(mem_model, tok, TEXTS, progress=False)
    with pytest.warns(UserWarning, match="more rows than a memory layer has"):
        S.train(mem_model, tok, TEXTS, S.TrainConfig(top_t=10**6, max_steps=1, micro_batch=2, grad_accum=1),
                background=stats, progress=False)


def test_background_statistics_need_documents(mem_model, tok):
    with pytest.raises(ValueError, match="no background documents"):
        S.compute_background_stats(mem_model, tok, [], progress=False)


def test_save_memory_without_memory_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="add_memory"):
        S.save_memory(S.tiny_model("llama"), tmp_path / "a")


def test_divergence_on_the_last_step_is_divergence(tok):
    model = S.tiny_model("llama")
    cfg = S.TrainConfig(method="full", lr=1e30, max_steps=1, micro_batch=2, grad_accum=1, warmup_steps=0, clip=0)
    with pytest.raises(S.TrainingDiverged, match="step 1"):
        S.train(model, tok, TEXTS, cfg, progress=False)


@pytest.mark.parametrize("text, match", [
    ('{"a": NaN}', "non-finite"),
    ('{"a": Infinity}', "non-finite"),
    ('{"a": 1', "not valid JSON"),
])
def test_reading_is_as_strict_as_writing(tmp_path, text, match):
    p = tmp_path / "run.json"
    p.write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        read_json(p)
    assert str(p) in str(err.value)


def test_records_need_an_object_with_their_keys(tmp_path):
    p = tmp_path / "run.json"
    p.write_text("[]")
    with pytest.raises(ValueError, match="expected a JSON object") as err:
        read_record(p)
    assert str(p) in str(err.value)
    p.write_text(json.dumps({"metrics": {}}))
    with pytest.raises(ValueError, match="missing"):
        read_record(p, ("metrics", "items"))


def test_atomic_write_keeps_the_old_file_when_a_write_fails_half_way(tmp_path):
    p = tmp_path / "a.json"
    atomic_write(p, "old")

    def half(tmp):
        tmp.write_text("partial")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError, match="crash"):
        atomic_write(p, half)
    assert p.read_text() == "old"
    assert not list(tmp_path.glob("*.tmp"))


def test_a_full_disk_says_so_and_names_the_folder(tmp_path):
    p = tmp_path / "ckpt.pt"

    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=f"no space left on {tmp_path}"):
        atomic_write(p, full)

    def torch_full(tmp):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 123 vs 456")

    with pytest.raises(OSError, match="no space left on"):
        atomic_write(p, torch_full)
    assert not p.exists()


def _flip(path, at=-40):
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_flipped_adapter_is_refused_and_so_is_an_edited_alpha(mem_model, tmp_path):
    folder = S.save_memory(mem_model, tmp_path / "adapter")
    S.load_memory(S.tiny_model("llama"), folder)  # intact: loads
    cfg = json.loads((folder / "memory_config.json").read_text())
    cfg["memory_config"]["alpha"] = 5.0
    (folder / "memory_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="memory_config was edited"):
        S.load_memory(S.tiny_model("llama"), folder)
    folder = S.save_memory(mem_model, tmp_path / "adapter2")
    _flip(folder / "memory.safetensors")
    with pytest.raises(ValueError, match="do not match the checksum") as err:
        S.load_memory(S.tiny_model("llama"), folder)
    assert "memory.safetensors" in str(err.value)


def test_flipped_background_statistics_are_refused(mem_model, tok, tmp_path):
    stats = S.compute_background_stats(mem_model, tok, TEXTS, progress=False)
    path = tmp_path / "background.safetensors"
    stats.save(path)
    S.BackgroundStats.load(path, mem_model)
    _flip(path)
    with pytest.raises(ValueError, match="do not match the checksum") as err:
        S.BackgroundStats.load(path, mem_model)
    assert str(path) in str(err.value)


def test_a_flipped_checkpoint_is_refused(tok, tmp_path):
    cfg = S.TrainConfig(method="full", lr=1e-3, max_steps=2, micro_batch=2, grad_accum=1, warmup_steps=0,
                        checkpoint_every=1)
    S.train(S.tiny_model("llama"), tok, TEXTS, cfg, checkpoint_dir=tmp_path, progress=False)
    _flip(tmp_path / "checkpoint.pt", at=-200)
    with pytest.raises(ValueError, match="checkpoint.pt: its bytes do not match"):
        S.train(S.tiny_model("llama"), tok, TEXTS, cfg, checkpoint_dir=tmp_path, progress=False)


def test_a_flipped_reference_cache_is_refused(tok, tmp_path):
    from smf_lib.probes import text_windows
    from smf_lib.study.evaluation import Reference

    model = S.tiny_model("llama")
    spans = text_windows(tok, " ".join(TEXTS))[:1]
    Reference(tmp_path, topk=4).get("wiki", model, spans)
    path = next(tmp_path.glob("reference-*.safetensors"))
    _flip(path)
    with pytest.raises(ValueError, match="do not match the checksum"):
        Reference(tmp_path, topk=4).get("wiki", model, spans)


@pytest.mark.parametrize("fields, match", [
    (dict(train_n=0), "train_n"), (dict(train_n=-5), "train_n"), (dict(retrofit_n=-1), "retrofit_n"),
    (dict(background_n=0), "background_n"), (dict(dev_subset=dict(medmcqa=0)), "dev_subset size"),
    (dict(retrofit_corpus="oasst2"), "retrofit_corpus"), (dict(lr={"lora": -1.0}), "learning rate"),
    (dict(train=dict(max_length=0)), "max_length"), (dict(memory=dict(layers="12")), "layers"),
    (dict(chat_pool="everything"), "chat_pool"),
    (dict(chat_pool="all", retrofit_corpus="oasst1-both"), "validation"),
])
def test_presets_refuse_bad_fields(fields, match):
    from smf_lib.study.presets import Preset

    with pytest.raises(ValueError, match=match):
        Preset(name="x", model="tiny", **fields)


def test_the_command_line_sets_rates_fields_and_the_data_folder():
    from smf_lib.study.cli import customise
    from smf_lib.study.presets import get_preset

    memory = '{"layers": [1], "n_keys": 8, "heads": 2, "knn": 4, "k_dim": 16}'
    p = customise(get_preset("smoke"), ["lora=5e-5"], ["train_n=12", f"memory={memory}"], "/data")
    assert p.lr["lora"] == 5e-5 and p.train_n == 12 and p.memory["layers"] == [1] and p.data == "/data"
    assert p.train_config("lora", 0).lr == 5e-5
    for bad in (["lora=-1"], ["lora"], ["nope=1e-3"]):
        with pytest.raises(ValueError):
            customise(get_preset("smoke"), bad)
    with pytest.raises(ValueError, match="--set"):
        customise(get_preset("smoke"), fields=["no_such_field=1"])
    with pytest.raises(ValueError, match="train_n"):
        customise(get_preset("smoke"), fields=["train_n=-5"])


def test_set_on_a_dict_field_merges_into_the_presets_dict_and_refuses_unknown_keys():
    from smf_lib.study.cli import customise, show_settings
    from smf_lib.study.presets import get_preset

    cpu = get_preset("cpu")
    p = customise(cpu, fields=['train={"top_t": 64}', 'memory={"n_keys": 128}'])
    assert p.train["top_t"] == 64
    for key in ("micro_batch", "grad_accum", "max_length", "warmup_steps"):  # the preset's, not TrainConfig's
        assert p.train[key] == cpu.train[key]
    assert p.memory == {**cpu.memory, "n_keys": 128}
    assert "top_t" in show_settings(p) and '"max_length": 256' in show_settings(p)
    with pytest.raises(ValueError, match="unknown training setting 'topt'"):
        customise(cpu, fields=['train={"topt": 64}'])
    with pytest.raises(ValueError, match="unknown memory setting 'nkeys'"):
        customise(cpu, fields=['memory={"nkeys": 64}'])


def test_command_line_refusals_print_one_line_without_a_traceback(capsys, tmp_path):
    from smf_lib.study.cli import main

    assert main(["retrofit-pilot", "--learning", "nope@1", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and "--debug" in err
    with pytest.raises((ValueError, OSError)):
        main(["retrofit-pilot", "--learning", "nope@1", "--out", str(tmp_path), "--debug"])


@pytest.mark.parametrize("text, match", [("[]", "expected a JSON object"), ('{"method": "base"}', "missing"),
                                         ('{"method": "base", "metrics": {"a": NaN}, "items": {}}', "non-finite")])
def test_a_damaged_run_record_is_an_error_naming_its_file(tmp_path, text, match):
    from smf_lib.study.results import load_runs

    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "base.json").write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        load_runs(tmp_path)
    assert "base.json" in str(err.value)


def _write(root, rel, text, gz=False):
    import gzip

    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


MCQ = json.dumps({"question": "Q?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 1}) + "\n"


@pytest.mark.parametrize("load, rel, one_row", [
    (lambda root, n: D.load_medmcqa("train", n, root=root), "medmcqa/train.jsonl", MCQ),
    (lambda root, n: D.load_triviaqa(n, root), "triviaqa/validation.jsonl",
     '{"question": "Q?", "answer": {"aliases": ["A"]}}\n'),
    (lambda root, n: D.load_wikitext_lines(n, root), "wikitext/wiki.test.raw", " = Title = \n"),
    (lambda root, n: D.load_background(n, root), "background/wikipedia_vital_leads.txt", "A lead paragraph.\n"),
    (lambda root, n: D.load_oasst1_replies("validation", n, root), "oasst1/validation_assistant.jsonl",
     json.dumps({"text": "x" * 60, "parent_id": "p"}) + "\n"),
])
def test_loaders_refuse_empty_files_and_short_ones_naming_the_file_and_the_counts(tmp_path, load, rel, one_row):
    path = _write(tmp_path, rel, "")
    with pytest.raises(ValueError, match=f"{path}.*no usable rows.*smf_lib data"):
        load(tmp_path, None)
    _write(tmp_path, rel, one_row)
    assert len(load(tmp_path, 1)) == 1
    with pytest.raises(ValueError, match=f"{path} has 1 usable rows but 5 were asked"):
        load(tmp_path, 5)
    with pytest.raises(ValueError, match="n must be a whole number"):
        load(tmp_path, -5)


def test_a_cut_short_gzip_names_its_file(tmp_path):
    import gzip

    rows = "".join(json.dumps({"text": f"reply {i} " * 20}) + "\n" for i in range(200))
    path = _write(tmp_path, "oasst1/train_assistant_inferred.jsonl.gz", "")
    path.write_bytes(gzip.compress(rows.encode())[:-40])
    with pytest.raises(ValueError, match=f"{path}: the compressed file is damaged or cut short"):
        D.load_oasst1_replies("train", root=tmp_path)


def test_a_runner_reports_a_short_corpus_before_any_run(tmp_path, monkeypatch):
    """The retrofit corpus is read when the runner starts, so a damaged file stops it before the base run."""
    import shutil

    from smf_lib.study.runner import Runner

    from smf_lib.study.evaluation import data_root

    shutil.copytree(data_root(get_preset("smoke")), tmp_path / "data")
    smoke = dataclasses.replace(get_preset("smoke"), data=str(tmp_path / "data"), retrofit_corpus="oasst1-train")
    (tmp_path / "data" / "oasst1" / "train_assistant_inferred.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00broken")
    with pytest.raises(ValueError, match="train_assistant_inferred.jsonl.gz: the compressed file is damaged"):
        Runner(smoke, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "runs").exists()


def test_blank_background_texts_and_a_file_for_the_data_folder_are_refused_by_name(mem_model, tok, tmp_path):
    import smf_lib as S
    from smf_lib import data

    with pytest.raises(ValueError, match="background document 1 .* is blank"):
        S.compute_background_stats(mem_model, tok, ["some text", "   "], progress=False)
    f = tmp_path / "data.txt"
    f.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        data.data_dir(f)


def test_a_study_command_without_the_study_extra_says_what_to_install(tmp_path, monkeypatch, capsys):
    import sys

    from smf_lib.study.cli import main

    monkeypatch.setitem(sys.modules, "pandas", None)  # as in an install without smf_lib[study]
    assert main(["status", "--preset", "smoke", "--out", str(tmp_path)]) == 1
    assert 'pip install "smf_lib[study]"' in capsys.readouterr().err
