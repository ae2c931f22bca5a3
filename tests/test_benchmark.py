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
    assert len(pd.read_csv(tmp_path / "tiny_slots.csv")) == 2
