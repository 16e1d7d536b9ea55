"""The `adkit` command on tiny data: every subcommand runs, `--json` prints one parseable object."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from adkit.cli import main


def _json(capsys) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return json.loads(out[0])


def test_console_script_is_installed():
    exe = shutil.which("adkit")
    cmd = [exe] if exe else [sys.executable, "-m", "adkit.cli"]
    r = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "demo" in r.stdout and "bench" in r.stdout


def test_data_check_lists_every_problem_and_fails(mvtec_root, capsys):
    assert main(["data", "check", "--data", "mvtec", "--root", str(mvtec_root), "--json"]) == 0
    ok = _json(capsys)
    assert ok["problems"] == [] and ok["counts"]["bottle"]["test"] == {"crack": 2, "good": 2, "scratch": 1}
    (mvtec_root / "bottle" / "ground_truth" / "crack" / "000_mask.png").unlink()
    (mvtec_root / "cable" / "train" / "good" / "001.png").write_bytes(b"not a png")
    assert main(["data", "check", "--data", "mvtec", "--root", str(mvtec_root), "--json"]) == 1
    probs = _json(capsys)["problems"]
    assert any("000_mask.png" in p for p in probs) and any("001.png" in p for p in probs)


def test_train_eval_probe_on_a_tiny_dataset(tmp_path, mvtec_root, capsys):
    run = tmp_path / "run"
    args = [
        "train",
        "--data",
        "mvtec",
        "--root",
        str(mvtec_root),
        "--setting",
        "one-class",
        "--model",
        "fd",
        "--image-size",
        "32",
        "--iters",
        "3",
        "--batch-size",
        "2",
        "--out",
        str(run),
        "--quiet",
        "--opt",
        "map_fusion=sum",
    ]
    assert main(args) == 0
    assert main(["eval", str(run), "--json"]) == 0
    res = _json(capsys)
    assert set(res) >= {"mean", "classes", "defects"}
    assert set(res["mean"]) >= {"image_auroc", "pixel_auroc", "aupro"}
    assert main(["probe", "mixup", str(run), "--classes", "bottle,cable", "--json"]) == 0
    mix = _json(capsys)
    assert len(mix["lambda"]) == len(mix["auroc"]) == 5
    assert main(["probe", "cutpaste", str(run), "--classes", "bottle,cable", "--json"]) == 0
    cp = _json(capsys)
    assert {"image_auroc", "pixel_auroc", "aupro"} <= set(cp)


def test_bad_input_gives_a_clear_error_not_a_traceback(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nowhere")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["data", "check", "--data", "mvtec", "--root", str(tmp_path / "nothing"), "--json"]) == 1
    assert "data root not found" in _json(capsys)["problems"][0]


def test_bench_json(capsys):
    assert (
        main(
            [
                "bench",
                "--model",
                "rd",
                "--image-size",
                "32",
                "--batch-size",
                "2",
                "--steps",
                "1",
                "--warmup",
                "1",
                "--json",
            ]
        )
        == 0
    )
    res = _json(capsys)
    assert res["train_img_per_s"] > 0 and res["infer_img_per_s"] > 0 and res["peak_rss_mb"] > 0


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADKIT_DATA", str(tmp_path / "data"))
    assert main(["demo", "--quick", "--snl", "--out", str(tmp_path / "demo"), "--json"]) == 0
    res = _json(capsys)
    assert set(res["results"]) == {"rd one-class", "rd multi-class", "rd+snl multi-class"}  # --snl adds RD+SNL
    assert res["iters_multi"] == res["iters_one"] * len(res["classes"])  # equal compute (quick: 4 × 2 classes)
    assert (tmp_path / "demo" / "metrics.json").is_file() and (tmp_path / "demo" / "table.md").is_file()
    assert len(list((tmp_path / "demo").glob("heatmaps_*.png"))) == 4


@pytest.mark.parametrize(
    "env, load, want",
    [
        ({}, 0.4, None),  # a quiet 2-CPU machine: libgomp's own spin (the short one costs time alone)
        ({}, 2.3, None),  # one busy process (or its lagging average): not yet shared
        ({}, 3.2, "1000"),  # oversubscribed already: spin briefly, then sleep
        ({"ADKIT_SHARED": "1"}, 0.0, "1000"),  # asked for
        ({"ADKIT_SHARED": "0"}, 5.0, None),  # refused
        ({"GOMP_SPINCOUNT": "300000"}, 5.0, None),  # the user's value is kept
        ({"OMP_WAIT_POLICY": "ACTIVE", "ADKIT_SHARED": "1"}, 5.0, None),  # a wait policy the user chose wins
    ],
)
def test_a_short_openmp_spin_only_on_a_shared_machine_and_never_over_the_users_choice(env, load, want):
    from adkit.runtime import spin_setting

    assert spin_setting(env, load, cpus=2) == want


def test_importing_adkit_sets_the_spin_before_torch_loads_and_not_after():
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    show = "import os, adkit; print(os.environ.get('GOMP_SPINCOUNT'))"
    run = lambda code, env: subprocess.run(  # noqa: E731
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert run(show, {**base, "ADKIT_SHARED": "1"}) == "1000"
    assert run(show, {**base, "ADKIT_SHARED": "0"}) == "None"
    assert run("import torch; " + show, {**base, "ADKIT_SHARED": "1"}) == "None"  # too late once torch is loaded
