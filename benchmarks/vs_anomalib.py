"""adkit's Reverse Distillation next to anomalib's, in one process: training and inference img/s and their ratio.

    pip install anomalib            # not an adkit dependency; a separate venv made with
                                    # --system-site-packages keeps adkit's environment as it is
    python benchmarks/vs_anomalib.py --backbone resnet18 --image-size 128 --batch-size 16 [--json]

anomalib's model is its torch module (ReverseDistillationModel), trained with the optimiser and loss of its
Lightning module but without a Lightning trainer. adkit's training is timed twice: with the teacher
features cached (adkit's default) and with the teacher in the step (what anomalib always does). Exits 2 with
one line when anomalib is not installed.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet18", help="a ResNet (anomalib's RD decoder mirrors ResNets)")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    from adkit.bench import bench_vs_anomalib, format_vs_anomalib

    try:
        res = bench_vs_anomalib(a.backbone, a.image_size, a.batch_size, a.steps, a.warmup)
    except ImportError as err:
        print(f"vs_anomalib: {err}", file=sys.stderr)
        return 2
    print(json.dumps(res, sort_keys=True) if a.json else format_vs_anomalib(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
