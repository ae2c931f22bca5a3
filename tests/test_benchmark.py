import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_benchmark_script_runs_on_tiny_target(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_steps.py"), "--target", "tiny", "--out",
                    str(tmp_path), "--methods", "base-forward", "smf-floor", "smf-kl", "lora"], check=True,
                   capture_output=True)
    df = pd.read_csv(tmp_path / "tiny_steps.csv")
    assert list(df["method"]) == ["base-forward", "smf-floor", "smf-kl", "lora"]
    assert (df["median_step_s"] > 0).all()
    assert df.loc[df.method == "lora", "optimizer_state_mb"].item() > 0
    slots = pd.read_csv(tmp_path / "tiny_slots.csv")
    assert len(slots) == 6 and set(slots["allocator"]) == {"glibc default", "tuned"}
    control = slots[slots["unused_tensor_mb"] > 0]
    assert list(control["n_slots"]) == [64, 64] and (slots["page_faults_per_step"] >= 0).all()


@pytest.mark.slow
def test_the_retrofit_benchmark_runs_both_modes_at_each_size(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_retrofit.py"), "--quick", "--out", str(tmp_path)],
                   check=True, capture_output=True)
    df = pd.read_csv(tmp_path / "tiny_retrofit.csv")
    assert list(df["slots"]) == [64, 64, 1024, 1024]
    assert list(df["mode"]) == ["dense AdamW", "row-sparse values"] * 2 and (df["seconds_per_step"] > 0).all()


def test_benchmark_targets_say_which_hold():
    from smf_lib.study.cost import benchmark_targets

    steps = pd.DataFrame({"method": ["base-forward", "memory-forward", "smf-floor", "smf-kl", "lora"],
                          "median_step_s": [1.0, 1.2, 3.0, 3.3, 5.0], "peak_mem_mb": [1, 1, 1, 2000, 3000]})
    slots = pd.DataFrame({"n_slots": [4096, 65536, 1048576, 4096] * 2, "allocator": ["a"] * 4 + ["b"] * 4,
                          "unused_tensor_mb": [0, 0, 0, 2304] * 2,
                          "median_step_s": [2.0, 2.1, 2.6, 9.0, 2.0, 2.0, 2.3, 9.0]})  # controls are left out
    t = benchmark_targets(steps, slots).set_index("target")["holds"]
    assert t["smf-kl (SGD) step / LoRA step"] == "yes" and t["smf-kl (SGD) step / SMF floor"] == "yes"
    assert t["smf-kl peak memory / LoRA peak"] == "yes"
    assert t["smf-tfidf (SGD) step / LoRA step"] == "not measured"
    assert t["smf-kl-adam (row-sparse Adam) step / LoRA step"] == "not measured"
    flat = t[t.index.str.startswith("slot scaling")]
    assert list(flat) == ["no", "yes"]  # 2.6 / 2.0 = 1.3 > 1.2; 2.3 / 2.0 = 1.15
    assert t["memory forward / base forward"] == "reported (goal is for GPU)"
    gpu = benchmark_targets(steps.assign(median_step_s=[1.0, 1.2, 3.0, 3.6, 3.2]), gpu=True).set_index("target")
    assert gpu.loc["smf-kl (SGD) step / LoRA step", "holds"] == "no"
    assert gpu.loc["smf-kl (SGD) step / SMF floor", "holds"] == "no"
    assert gpu.loc["memory forward / base forward", "holds"] == "no"  # 1.2 > 1.10
    two = benchmark_targets(steps, pd.concat([slots.assign(run="first"), slots.assign(run="second")]))
    flat = two[two["target"].str.startswith("slot scaling")]
    assert len(flat) == 4 and flat["target"].str.contains("second, b").any()


def test_medmcqa_scoring_target():
    import pandas as pd

    from smf_lib.study.cost import benchmark_targets

    steps = pd.DataFrame({"method": ["lora"], "median_step_s": [1.0], "peak_mem_mb": [1.0]})
    probes = [{"probe": "base forward", "tokens_per_s": 600.0},
              {"probe": "medmcqa, 16", "tokens_per_s": 540.0, "vs_base_forward": 0.9}]
    t = benchmark_targets(steps, probes=probes).set_index("target")["holds"]
    assert t["MedMCQA scoring tokens/s / base forward tokens/s"] == "yes"
    probes[1]["vs_base_forward"] = 0.5
    t = benchmark_targets(steps, probes=probes).set_index("target")["holds"]
    assert t["MedMCQA scoring tokens/s / base forward tokens/s"] == "no"


def test_the_performance_answer_reads_the_smf_step_against_the_baselines_and_the_tuned_scaling():
    from smf_lib.study.cost import performance_answer

    steps = pd.DataFrame({"method": ["smf-kl", "smf-kl-adam", "lora", "full"], "median_step_s": [3.0, 3.2, 4.0, 6.4],
                          "peak_mem_mb": [2000, 2400, 3000, 4800]})
    slots = pd.DataFrame({"n_slots": [4096, 1048576, 4096, 4096, 1048576], "allocator": ["default"] * 2 + ["tuned"] * 3,
                          "unused_tensor_mb": [0, 0, 2304, 0, 0], "median_step_s": [3.4, 3.7, 9.0, 2.7, 2.6]})
    sentence = performance_answer(steps, slots)
    assert sentence.startswith("On 2 CPU cores, an SMF step (row-sparse Adam) takes 0.80x LoRA's time and 0.50x full")
    assert "80% of LoRA's peak memory and 50% of full finetuning's" in sentence
    assert sentence.endswith("from 4,096 to 1,048,576 slots per layer a sparse step's time goes from 2.70 s to 2.60 s.")
    assert "(SGD)" in performance_answer(steps[steps["method"] != "smf-kl-adam"])
