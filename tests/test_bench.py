"""`adkit.bench`: every throughput the CLI promises, measured and printed; the anomalib comparison says how to
install anomalib when it is missing."""

from __future__ import annotations

import math
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from adkit import bench

KEYS = (
    "train_img_s_cached",
    "train_img_s_uncached",
    "infer_img_s",
    "teacher_img_s",
    "infer_over_teacher",
    "peak_rss_mb",
)
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "vs_anomalib.py"


def test_bench_reports_every_throughput():
    res = bench.bench("rd", image_size=32, batch_size=2, steps=2, warmup=1)
    assert all(res[k] > 0 for k in KEYS)
    text = bench.format_bench(res)
    assert "cached teacher features" in text and "teacher in the step" in text and "slower than the teacher" in text
    assert math.isfinite(res["rss_growth_mb"])


def test_vs_anomalib_without_anomalib_exits_2_with_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "anomalib", None)  # importing it now raises ImportError
    with pytest.raises(ImportError, match="pip install anomalib"):
        bench.bench_vs_anomalib(image_size=32, batch_size=2, steps=1, warmup=0)
    monkeypatch.setattr(sys, "argv", [str(SCRIPT)])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install anomalib" in err[0]


@pytest.mark.slow
def test_vs_anomalib_runs_when_installed():
    pytest.importorskip("anomalib")
    r = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--image-size",
            "32",
            "--batch-size",
            "2",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    import json

    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["train_ratio_cached"] > 0 and res["infer_ratio"] > 0
