"""Two gloo processes on the CPU (as `accelerate launch` would start them): read counts are all-reduced,
so both ranks select the same rows and end with identical value tables."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

import smf_lib as S

from conftest import MEM, TEXTS, CharTokenizer


def _worker(rank, world, port, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    tok = CharTokenizer()
    model = S.tiny_model("llama", seed=0)
    torch.manual_seed(1)
    S.add_memory(model, S.MemoryConfig(**MEM))
    stats = S.compute_background_stats(model, tok, TEXTS[:4], progress=False)
    before = [m.values.weight.detach().clone() for m in S.memory_layers(model)]
    cfg = S.TrainConfig(method="smf", selector="kl", lr=500.0, micro_batch=4, grad_accum=2, max_steps=3,
                        warmup_steps=1, top_t=5, epochs=10)
    res = S.train(model, tok, TEXTS, cfg, background=stats, progress=False)
    rank_, world_ = S.training.distributed()
    changed = [sorted((b != m.values.weight).any(1).nonzero().flatten().tolist())
               for b, m in zip(before, S.memory_layers(model))]
    torch.save({"values": [m.values.weight.detach() for m in S.memory_layers(model)], "log": res.log,
                "changed": changed, "world": world_, "rank": rank_}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_select_the_same_rows(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in (0, 1))
    assert (r0["world"], r0["rank"], r1["rank"]) == (2, 0, 1)
    assert r0["changed"] == r1["changed"] and any(r0["changed"])
    assert all(torch.equal(a, b) for a, b in zip(r0["values"], r1["values"]))
    assert [x["rows"] for x in r0["log"]] == [x["rows"] for x in r1["log"]]
    assert [x["loss"] for x in r0["log"]] == pytest.approx([x["loss"] for x in r1["log"]])


def _runner_worker(rank, world, port, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from smf_lib.study.cli import main

    main(["run", "--preset", "smoke", "--out", out, "--no-progress", "--methods", "base", "smf-kl", "lora"])
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_runner_under_two_processes(tmp_path, capfd):
    """The experiment runner as `accelerate launch -m smf_lib run` would start it: both processes train, process
    0 alone evaluates and writes; a second launch finds everything done."""
    import json

    out = tmp_path / "grid"
    mp.spawn(_runner_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["base.json", "lora-s0.json", "smf-kl-s0.json"]
    smf = json.loads((out / "runs" / "smf-kl-s0.json").read_text())
    assert smf["processes"] == 2 and smf["train_log"] and "medmcqa_acc" in smf["metrics"]
    assert json.loads((out / "artifacts" / "retrofit-additive-s0" / "train_log.json").read_text())["processes"] == 2
    assert (out / "summary.csv").exists()
    first = capfd.readouterr().out
    assert first.count("smf-kl-s0: evaluating") == 1  # once, by process 0
    before = {p.name: p.read_bytes() for p in (out / "runs").iterdir()}
    mp.spawn(_runner_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    assert {p.name: p.read_bytes() for p in (out / "runs").iterdir()} == before
    assert capfd.readouterr().out.count("done already, skipped") == 3
