"""The command line shared by the resumable studies (`cram_ablation.py`, `dual_validation.py`): `run` trains and
measures what the cache folder lacks, appending one JSON row per run to `<cache>/rows.jsonl`; `summary` reads
those rows and prints the table (and writes it as JSON with `--json`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def main(doc: str, run, summary) -> int:
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("what", choices=("run", "summary"))
    ap.add_argument("--cache", required=True, help="folder of the trained runs and of rows.jsonl")
    ap.add_argument("--json", help="summary: also write the table here")
    a = ap.parse_args()
    Path(a.cache).mkdir(parents=True, exist_ok=True)
    if a.what == "run":
        run(a.cache)
    else:
        summary(a.cache, a.json)
    return 0
