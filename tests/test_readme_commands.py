"""Every command of the README's command-line block works as written: each runs, in order, in an empty
temporary folder (so `./data` and `runs/` start empty), through the `adkit` entry point in this process.

To keep it fast the test sets a few flags to small values — training steps and image size for `adkit train`,
image size and steps for `adkit bench` — replacing the README's value where it gives one; nothing else changes.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SMALL = {  # command -> {flag: value} set on it (the README's value, if any, is replaced)
    "train": {"--iters": "2", "--image-size": "64"},
    "bench": {"--image-size": "64", "--steps": "1", "--warmup": "1"},
}


def readme_commands(text: str) -> list[str]:
    """The commands of the first ```bash block under the heading '## The command line'."""
    section = text.split("\n## The command line", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = block.replace("\\\n", " ").splitlines()
    return [" ".join(shlex.split(line, comments=True)) for line in lines if shlex.split(line, comments=True)]


def shrink(argv: list[str]) -> list[str]:
    """`argv` with the flags of SMALL for its subcommand set to their small values."""
    argv = list(argv)
    for flag, value in SMALL.get(argv[0], {}).items():
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


def test_the_block_is_found_and_every_line_is_an_adkit_command():
    commands = readme_commands(README.read_text(encoding="utf-8"))
    assert len(commands) >= 8
    assert all(c.startswith("adkit ") for c in commands), commands
    names = [shlex.split(c)[1] for c in commands]
    assert {"data", "train", "eval", "probe", "report", "bench"} <= set(names)
    assert shrink(["train", "--iters", "400", "--out", "r"]) == [
        "train",
        "--iters",
        "2",
        "--out",
        "r",
        "--image-size",
        "64",
    ]


def test_every_readme_command_runs_as_written(tmp_path, monkeypatch, capsys):
    from adkit.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ADKIT_DATA", raising=False)  # as for a user: ./data
    for command in readme_commands(README.read_text(encoding="utf-8")):
        argv = shrink(shlex.split(command)[1:])
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 0, f"`{command}` failed (ran as `adkit {' '.join(argv)}`):\n{err[-3000:]}"
        if "--json" in argv:
            res = json.loads(out.strip().splitlines()[-1])  # one JSON object on stdout
            if argv[0] == "report":
                for where in (res["mean"], *res["classes"].values(), *res["defects"].values()):
                    assert set(where["image_auroc"]) == {"mean", "ci_low", "ci_high", "n"}
    assert (tmp_path / "data" / "mini").is_dir() and (tmp_path / "runs").is_dir()
