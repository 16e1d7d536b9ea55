"""Fault injection: what an attacker or a careless user can hand adkit, and what must come out.

Every case asserts the outcome a user sees — one line `adkit: error: <file>: <what> — <fix>` with the right
exit code (2: a bad argument, 1: anything else), no traceback — and what must not happen: code run from a
data file, a file written by a refused command, results lost or silently mixed.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import image, save, write_cifar10, write_mvtec, write_realiad, write_visa
from PIL import Image

from adkit import checkpoint, runs
from adkit.cli import main
from adkit.config import MODEL_NAMES

TINY = ["--image-size", "32", "--iters", "4", "--batch-size", "2", "--save-every", "2", "--quiet"]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run `adkit ARGS` in this process: (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str, *needles: str) -> str:
    """The one error line; fails if there is a traceback or the line lacks a needle."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("adkit: error: ")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def train_args(root, out, *extra) -> list[str]:
    return [
        "train",
        "--data",
        "mvtec",
        "--root",
        root,
        "--setting",
        "multi-class",
        "--model",
        "rd",
        *TINY,
        "--out",
        out,
        *extra,
    ]


@pytest.fixture()
def run(tmp_path, mvtec_root, capsys) -> Path:
    out = tmp_path / "run"
    code, _, err = cli(capsys, *train_args(mvtec_root, out))
    assert code == 0, err
    return out


class Evil:
    """Unpickling this runs a command that leaves a marker file: the attack the readers must refuse."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# -- security ------------------------------------------------------------------------------------------
def test_cifar_batches_never_run_code(tmp_path, capsys):
    root = tmp_path / "cifar"
    write_cifar10(root, n_train=2, n_test=1)
    marker = tmp_path / "pwned"
    evil = root / "cifar-10-batches-py" / "test_batch"
    evil.write_bytes(pickle.dumps({b"data": Evil(marker), b"labels": [0]}, protocol=2))
    code, out, err = cli(capsys, "data", "check", "--data", "cifar10", "--root", root, "--json")
    probs = json.loads(out)["problems"]
    assert code == 1 and not marker.exists()
    assert any("test_batch" in p and ("posix.system" in p or "os.system" in p) for p in probs), probs
    # the official files (Python 2 pickles of numpy arrays) still load, and so do numpy 2 pickles at protocol 5
    from adkit.data import cifar

    arr = np.arange(12, dtype=np.uint8).reshape(2, 6)
    (tmp_path / "p5").write_bytes(pickle.dumps({b"data": arr, b"labels": [1, 2]}, protocol=5))
    assert np.array_equal(cifar.safe_load(tmp_path / "p5")[b"data"], arr)
    (tmp_path / "obj").write_bytes(pickle.dumps({b"data": np.array([1, "x"], dtype=object)}, protocol=2))
    with pytest.raises(pickle.UnpicklingError):
        cifar.safe_load(tmp_path / "obj")


def test_a_crafted_run_folder_cannot_make_eval_unpickle(tmp_path, capsys):
    """settings.json pointing eval at an attacker's CIFAR root: the batch is refused, nothing runs."""
    root = tmp_path / "cifar"
    write_cifar10(root, n_train=2, n_test=1)
    out = tmp_path / "run"
    code, _, err = cli(
        capsys, "train", "--data", "cifar10", "--root", root, "--classes", "cat", "--model", "fd", *TINY, "--out", out
    )
    assert code == 0, err
    marker = tmp_path / "pwned"
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(Evil(marker), protocol=2))
    code, _, err = cli(capsys, "eval", out)
    error_line(err, "test_batch")
    assert code == 1 and not marker.exists()


@pytest.mark.parametrize("bad", [["..", "etc"], ["../../etc/passwd"], ["/etc"], ["a\x00b"], [""], [3]])
def test_run_settings_are_validated_before_use(run, capsys, bad):
    meta = json.loads((run / "settings.json").read_text())
    meta["classes"] = bad
    (run / "settings.json").write_text(json.dumps(meta))
    code, _, err = cli(capsys, "eval", run)
    assert code == 1
    error_line(err, "settings.json")


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["train"].update(model="evil"),
        lambda m: m["train"].update(data="pickle"),
        lambda m: m["train"].update(iters="6"),  # a TypeError today, one line here
        lambda m: m["train"].update(surprise=1),
        lambda m: m.update(extra=1),
        lambda m: m.update(train=[1, 2]),
    ],
)
def test_run_settings_schema(run, capsys, edit):
    meta = json.loads((run / "settings.json").read_text())
    edit(meta)
    (run / "settings.json").write_text(json.dumps(meta))
    code, _, err = cli(capsys, "eval", run)
    assert code == 1
    error_line(err, "settings.json")


def test_broken_settings_json_is_named(run, capsys):
    (run / "settings.json").write_text('{"train": ')
    code, _, err = cli(capsys, "eval", run)
    assert code == 1
    error_line(err, "settings.json", "not valid JSON")


def test_visa_split_file_cannot_point_outside_the_root(tmp_path, capsys):
    root = tmp_path / "visa"
    write_visa(root)
    secret = tmp_path / "secret.png"
    save(image(), secret)
    csv = root / "split_csv" / "1cls.csv"
    for bad in ("../secret.png", str(secret)):
        lines = csv.read_text().splitlines()
        lines[1] = lines[1].replace(lines[1].split(",")[3], bad)
        csv.write_text("\n".join(lines) + "\n")
        code, out, _ = cli(capsys, "data", "check", "--data", "visa", "--root", root, "--json")
        probs = json.loads(out)["problems"]
        assert code == 1 and any("1cls.csv line 2" in p and "outside the dataset root" in p for p in probs), probs
        code, _, err = cli(capsys, "train", "--data", "visa", "--root", root, *TINY, "--out", tmp_path / "r")
        assert code == 1 and not (tmp_path / "r").exists()
        error_line(err, "1cls.csv line 2", "outside")


def test_realiad_split_file_cannot_point_outside_the_root(tmp_path, capsys):
    root = tmp_path / "realiad"
    write_realiad(root)
    path = root / "realiad_jsons" / "realiad_jsons" / "audiojack.json"
    data = json.loads(path.read_text())
    data["train"][0]["image_path"] = "../../../../secret.jpg"
    path.write_text(json.dumps(data))
    code, out, _ = cli(capsys, "data", "check", "--data", "realiad", "--root", root, "--json")
    assert code == 1 and any("outside the dataset root" in p for p in json.loads(out)["problems"])
    data["train"][0]["image_path"] = "x.jpg"
    data["meta"]["prefix"] = "/etc"
    path.write_text(json.dumps(data))
    code, out, _ = cli(capsys, "data", "check", "--data", "realiad", "--root", root, "--json")
    assert code == 1 and any("'realiad_256/etc'" in p or "outside" in p for p in json.loads(out)["problems"])


def test_weights_pickles_are_never_executed(tmp_path, mvtec_root, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"conv.weight": Evil(marker)}, evil)  # torch.save pickles whatever it is given
    code, _, err = cli(capsys, *train_args(mvtec_root, tmp_path / "r", "--weights", evil))
    assert code == 1 and not marker.exists() and not (tmp_path / "r").exists()
    error_line(err, "evil.pth", "not a weights file")


# -- no silent corruption ------------------------------------------------------------------------------
def test_a_checkpoint_from_another_run_is_refused_by_name(tmp_path, mvtec_root, run, capsys):
    other = tmp_path / "other"
    assert cli(capsys, *train_args(mvtec_root, other, "--seed", "1"))[0] == 0
    ck = runs.checkpoint_path(run, "all")
    ck.write_bytes(runs.checkpoint_path(other, "all").read_bytes())
    code, _, err = cli(capsys, "eval", run)
    assert code == 1
    error_line(err, str(ck), "seed")


def test_a_checkpoint_missing_a_tensor_is_an_error_not_a_fresh_layer(tmp_path, mvtec_root, capsys):
    out = tmp_path / "r"
    args = train_args(mvtec_root, out)
    args[args.index("--iters") + 1] = "3"
    assert cli(capsys, *args)[0] == 0
    # the same checkpoint as if training had stopped at step 2, with one tensor lost
    ck = checkpoint.load(runs.checkpoint_path(out, "all"))
    state = dict(ck.model_state)
    state.pop(sorted(state)[0])
    info = dict(ck.info, done=False, step=2)
    checkpoint.save(runs.checkpoint_path(out, "all"), state, info, None, ck.rng)
    code, _, err = cli(capsys, *args)  # resume
    assert code == 1
    error_line(err, "all.safetensors", "missing")
    code, _, err = cli(capsys, "eval", out)
    assert code == 1


def test_a_damaged_checkpoint_is_named(run, capsys):
    ck = runs.checkpoint_path(run, "all")
    ck.write_bytes(ck.read_bytes()[:100])
    code, _, err = cli(capsys, "eval", run)
    assert code == 1
    error_line(err, "all.safetensors")


def test_an_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    checkpoint.save(path, {"w": torch.ones(3)}, {"step": 1})
    import safetensors.torch as st

    def dies_half_way(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(st, "save_file", dies_half_way)
    with pytest.raises(OSError):
        checkpoint.save(path, {"w": torch.zeros(3)}, {"step": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left behind
    ck = checkpoint.load(path)
    assert ck.info == {"step": 1} and torch.equal(ck.model_state["w"], torch.ones(3))


def test_class_names_with_dots_get_their_own_checkpoints(tmp_path, capsys):
    root = tmp_path / "data"
    write_mvtec(root, classes=("part.v1", "part.v2", "Ünïcode ✓"), n_train=3)
    out = tmp_path / "r"
    code, _, err = cli(
        capsys, "train", "--data", "mvtec", "--root", root, "--setting", "one-class", *TINY, "--out", out
    )
    assert code == 0, err
    files = sorted(p.name for p in (out / "models").iterdir())
    assert len(files) == 3 and len(set(files)) == 3, files
    for name in ("part.v1", "part.v2", "Ünïcode ✓"):
        assert checkpoint.read_info(runs.checkpoint_path(out, name))["name"] == name
    code, out_json, _ = cli(capsys, "eval", out, "--json")
    assert code == 0 and set(json.loads(out_json)["classes"]) == {"part.v1", "part.v2", "Ünïcode ✓"}


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_resume_is_bit_identical_for_every_model(tmp_path, mvtec_root, monkeypatch, model):
    """Interrupted after a checkpoint, resumed: the same weights to the bit as an uninterrupted run (dropout,
    k-means init and optimizer state included)."""
    import adkit.training as T
    from adkit.config import TrainConfig
    from adkit.training import train

    cfg = TrainConfig(
        data="mvtec", root=str(mvtec_root), model=model, image_size=32, iters=6, batch_size=2, save_every=2, seed=3
    )
    straight = train(cfg, tmp_path / "a", progress=False)
    real_fit = T.fit

    def interrupted(*args, **kwargs):
        def stop(step, row):
            if step == 3:  # after the checkpoint at step 2; steps 3 and 4 are lost and redone
                raise KeyboardInterrupt

        return real_fit(*args, **dict(kwargs, callback=stop))

    monkeypatch.setattr(T, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "b", progress=False)
    torch.manual_seed(12345)  # whatever the global RNG holds now must not matter
    monkeypatch.setattr(T, "fit", real_fit)
    train(cfg, tmp_path / "b", progress=False)
    a = checkpoint.load(runs.checkpoint_path(straight, "all"))
    b = checkpoint.load(runs.checkpoint_path(tmp_path / "b", "all"))
    assert a.model_state.keys() == b.model_state.keys()
    for k in a.model_state:  # NaN where a buffer records "not measured" (the dual's calibration choice)
        assert torch.allclose(a.model_state[k], b.model_state[k], rtol=0, atol=0, equal_nan=True), k
    assert [r["loss"] for r in a.info["history"]] == [r["loss"] for r in b.info["history"]]


def test_two_trainers_on_one_run_folder(tmp_path, mvtec_root, capsys):
    out = tmp_path / "r"
    with runs.RunLock(out):
        code, _, err = cli(capsys, *train_args(mvtec_root, out))
    assert code == 1
    error_line(err, "in use by pid", str(os.getpid()))
    assert not runs.checkpoint_path(out, "all").exists()
    assert cli(capsys, *train_args(mvtec_root, out))[0] == 0  # released: the run trains


def test_a_waiter_let_through_for_an_instant_does_not_make_a_trainer_fail(tmp_path):
    """`wait_while_locked` holds a shared lock for an instant; a trainer that arrives then retries for half a
    second instead of calling the run taken. A lock held longer than that still refuses it."""
    import fcntl
    import threading
    import time

    run = tmp_path / "r"
    run.mkdir()
    (run / runs.LOCK_FILE).touch()
    fd = os.open(run / runs.LOCK_FILE, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        threading.Timer(0.15, lambda: fcntl.flock(fd, fcntl.LOCK_UN)).start()
        with runs.RunLock(run):  # acquired once the shared lock is gone
            pass
        fcntl.flock(fd, fcntl.LOCK_SH)
        t0 = time.monotonic()
        with pytest.raises(runs.RunLocked, match="in use by"):
            with runs.RunLock(run):
                pass
        assert time.monotonic() - t0 >= 0.05 * (runs.LOCK_TRIES - 1)  # it did retry before giving up
    finally:
        os.close(fd)


def test_cached_run_waits_for_the_process_that_trains_it(tmp_path, mvtec_root, capsys):
    """Two notebooks (or two test workers) that need the same cached run: the second waits for the first's
    lock instead of failing, then goes on (here it trains, as the holder wrote nothing)."""
    import threading

    from adkit.config import TrainConfig
    from adkit.training import cached_run, run_key

    cfg = TrainConfig(data="mvtec", root=str(mvtec_root), model="rd", image_size=32, iters=2, batch_size=4)
    cache = tmp_path / "runs"
    run = cache / f"rd-{cfg.setting}-{run_key(cfg)}"
    assert runs.wait_while_locked(run) is False  # no lock file: nothing to wait for
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from adkit import runs\nwith runs.RunLock({str(run)!r}):\n print('held', flush=True)\n input()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    released = []
    try:
        assert holder.stdout.readline().strip() == "held"

        def release():
            released.append(True)
            holder.stdin.write("\n")
            holder.stdin.flush()

        timer = threading.Timer(1.0, release)
        timer.start()
        out = cached_run(cfg, cache, progress=True)
        assert released, "cached_run went on while another process held the run"
        timer.join()
    finally:
        holder.kill() if holder.poll() is None else None
        holder.wait()
    err = capsys.readouterr().err
    assert f"being trained by pid {holder.pid}" in err and "waiting" in err, err
    assert out == run and checkpoint.read_info(runs.checkpoint_path(run, "all"))["done"]
    assert runs.wait_while_locked(run) is False  # released: no wait


def test_eval_on_a_full_disk_prints_results_and_keeps_the_old_file(run, capsys, monkeypatch):
    assert cli(capsys, "eval", run, "--json")[0] == 0
    before = (run / "eval.json").read_bytes()

    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    real = checkpoint.atomic_write
    monkeypatch.setattr(checkpoint, "atomic_write", lambda path, write: real(path, full))
    code, out, err = cli(capsys, "eval", run, "--json")
    assert code == 1 and json.loads(out)["mean"]["image_auroc"] is not None  # the results were printed
    error_line(err, "eval.json", "no space left")
    assert (run / "eval.json").read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


# -- bad input: one clear line, nothing written ---------------------------------------------------------
@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--model", "nope"], "invalid choice"),
        (["--backbone", "no_such_net"], "--backbone"),
        (["--opt", "no_such_option=1"], "--opt"),
        (["--opt", "novalue"], "--opt"),
        (["--image-size", "0"], "--image-size"),
        (["--image-size", "37"], "multiple of 32"),
        (["--save-every", "0"], "--save-every"),
        (["--iters", "0"], "--iters"),
        (["--batch-size", "-1"], "--batch-size"),
        (["--seeds", "0,x"], "--seeds"),
        (["--classes", "nope"], "unknown class"),
    ],
)
def test_bad_arguments_write_nothing(tmp_path, mvtec_root, capsys, extra, needle):
    out = tmp_path / "r"
    code, _, err = cli(capsys, *train_args(mvtec_root, out, *extra))
    assert not out.exists(), "a refused command created its --out folder"
    if needle == "invalid choice":  # argparse's own message
        assert code == 2 and needle in err
        return
    assert code == (1 if needle == "unknown class" else 2), err
    error_line(err, needle)
    assert cli(capsys, *train_args(mvtec_root, out))[0] == 0  # the corrected command is not poisoned


def test_a_bad_weights_file_writes_nothing(tmp_path, mvtec_root, capsys):
    for content in (b"", b"not weights at all", b"\x80\x02}q\x00."):
        bad = tmp_path / "w.safetensors"
        bad.write_bytes(content)
        code, _, err = cli(capsys, *train_args(mvtec_root, tmp_path / "r", "--weights", bad))
        assert code == 1 and not (tmp_path / "r").exists()
        error_line(err, "w.safetensors")


def test_sixteen_bit_grayscale_keeps_its_values(tmp_path):
    from adkit.data.core import read_image

    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    got = read_image(tmp_path / "g16.png")
    assert got.shape == (8, 64, 3) and got[0, 0, 0] == 0 and got[0, -1, 0] == 255
    assert abs(int(got[0, 32, 0]) - round(65535 * 32 / 63 / 257)) <= 1  # mid-grey stays mid-grey


def test_a_decompression_bomb_is_reported_by_file_and_the_check_goes_on(tmp_path, mvtec_root, capsys, monkeypatch):
    monkeypatch.setenv("ADKIT_MAX_IMAGE_PIXELS", "500")  # 32x32 images pass, a bigger one is a "bomb"
    Image.new("RGB", (64, 64)).save(mvtec_root / "bottle" / "train" / "good" / "bomb.png")
    code, out, err = cli(capsys, "data", "check", "--data", "mvtec", "--root", mvtec_root, "--json")
    res = json.loads(out)
    assert code == 1 and "Traceback" not in err
    assert [p for p in res["problems"] if "bomb.png" in p and "too large" in p]
    assert res["counts"]["cable"]["train"]["good"] == 4  # the rest was still checked
    Image.MAX_IMAGE_PIXELS = 89478485  # PIL's default, for the tests that follow


@pytest.mark.parametrize("case", ["missing", "empty", "zero-byte", "text-as-png", "symlink-loop"])
def test_broken_data_roots_and_files_name_the_file(tmp_path, mvtec_root, capsys, case):
    root = mvtec_root
    target = "mvtec"
    if case == "missing":
        root = tmp_path / "nowhere"
    elif case == "empty":
        root = tmp_path / "empty"
        root.mkdir()
    elif case == "zero-byte":
        (mvtec_root / "bottle" / "train" / "good" / "000.png").write_bytes(b"")
        target = "000.png"
    elif case == "text-as-png":
        (mvtec_root / "bottle" / "train" / "good" / "000.png").write_text("hello")
        target = "000.png"
    else:
        (mvtec_root / "bottle" / "train" / "good" / "loop.png").symlink_to(
            mvtec_root / "bottle" / "train" / "good" / "loop.png"
        )
        target = "loop.png"
    code, _, err = cli(capsys, *train_args(root, tmp_path / "r"))
    assert code in (1, 2) and not (tmp_path / "r").exists()
    error_line(err, target if case in ("zero-byte", "text-as-png", "symlink-loop") else str(root))


def test_probe_and_eval_refuse_classes_the_run_never_saw(tmp_path, capsys):
    root = tmp_path / "data"
    write_mvtec(root, classes=("bottle", "cable", "screw"), n_train=3)
    out = tmp_path / "r"
    code, _, err = cli(
        capsys, "train", "--data", "mvtec", "--root", root, "--classes", "bottle,cable", *TINY, "--out", out
    )
    assert code == 0, err
    for args in (
        ["eval", out, "--classes", "screw"],
        ["probe", "mixup", out, "--classes", "bottle,screw"],
        ["probe", "cutpaste", out, "--classes", "bottle,screw"],
    ):
        code, _, err = cli(capsys, *args)
        assert code == 2
        error_line(err, "screw", "bottle, cable")


def test_the_data_root_is_stored_absolute(tmp_path, capsys, monkeypatch):
    write_mvtec(tmp_path / "here" / "data", classes=("bottle",), n_train=3)
    monkeypatch.chdir(tmp_path / "here")
    assert cli(capsys, "train", "--data", "mvtec", "--root", "data", *TINY, "--out", "run")[0] == 0
    stored = json.loads((tmp_path / "here" / "run" / "settings.json").read_text())["train"]["root"]
    assert Path(stored).is_absolute() and Path(stored) == (tmp_path / "here" / "data").resolve()
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "eval", "here/run", "--json")
    assert code == 0, err


def test_debug_shows_the_traceback(run, capsys, monkeypatch):
    (run / "settings.json").write_text("{")
    code, _, err = cli(capsys, "--debug", "eval", run)
    assert code == 1 and "Traceback" in err and "adkit: error:" in err
    monkeypatch.setenv("ADKIT_DEBUG", "1")
    assert "Traceback" in cli(capsys, "eval", run)[2]


def test_no_traceback_from_a_real_process(tmp_path, mvtec_root):
    """The console script as a user runs it: bad arguments and bad files give one line and the right code."""
    exe = [sys.executable, "-m", "adkit.cli"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    usage = subprocess.run(
        exe + train_args(mvtec_root, tmp_path / "r", "--image-size", "40"),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert usage.returncode == 2 and "Traceback" not in usage.stderr and not (tmp_path / "r").exists()
    assert usage.stderr.strip().splitlines()[-1].startswith("adkit: error: --image-size 40")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "settings.json").write_text("[1, 2")
    bad = subprocess.run(exe + ["eval", str(tmp_path / "bad")], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "settings.json" in bad.stderr
