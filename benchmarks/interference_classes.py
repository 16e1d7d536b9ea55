"""Which classes interfere, and can a learner predict it before training? Notebook 1's recipe over seeds.

Notebook 1's runs (RD one-class vs multi-class on all 14 mini classes, 100 steps per class, batch 16, 128 px,
mini's default test split) for each seed, and per class:

- the gap: one-class minus multi-class image AUROC of that class (points);
- how alike the class looks to the frozen teacher: the cosine similarity of its mean pooled teacher features to
  the nearest other class and to the mean of the others (`adkit.features.class_similarity`, 20 training normals
  per class: computable before any student is trained);
- whether the class is a texture or an object (mini's `KINDS`: random crops of a texture photograph, or a few
  framings of one scene), which a learner also knows before training;
- per cross-class paste (a patch of class B on class A, the donor B recorded by mini): how much of its class's
  normals it outranks, one-class minus multi-class (its "drop"), against the teacher similarity of A and B.

Then, per seed, Spearman correlations (per-class gap vs similarity; paste drop vs donor similarity), and their
mean with a 95% Student-t interval over seeds. Trains what the run cache lacks (`$ADKIT_DATA/runs`, the
notebooks' cache: notebook 1's seed-0 run is shared).

    OMP_NUM_THREADS=1 python benchmarks/interference_classes.py --seeds 0,1,2 \
        --write docs/results/interference_classes.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adkit.data import mini  # noqa: E402

ORDER = mini.INTERFERENCE_ORDER  # notebook 1's classes, in the curve's order
RECIPE = dict(steps_per_class=100, batch_size=16, image_size=128, backbone="efficientnet_lite0")


def outranked(score: np.ndarray, label: np.ndarray) -> np.ndarray:
    """For each defective image, the fraction of its class's normals it outscores (ties count one half)."""
    pos, neg = score[label == 1], score[label == 0]
    return (pos[:, None] > neg[None, :]).mean(1) + 0.5 * (pos[:, None] == neg[None, :]).mean(1)


def seed_row(seed: int, sim: np.ndarray, donors: dict[str, str]) -> dict:
    from scipy.stats import spearmanr

    from adkit.evaluation import evaluate
    from adkit.training import cached_run, protocol_configs

    common = dict(
        data="mini",
        root=None,
        backbone=RECIPE["backbone"],
        image_size=RECIPE["image_size"],
        batch_size=RECIPE["batch_size"],
        seed=seed,
    )
    preds = {}
    for setting, cfg in protocol_configs("rd", RECIPE["steps_per_class"], ORDER, **common).items():
        _, preds[setting] = evaluate(cached_run(cfg, progress=False), progress=False, save=False, return_preds=True)
    idx = {c: i for i, c in enumerate(ORDER)}
    gaps, drops, pair_sim = {}, [], []
    for c in ORDER:
        one, multi = preds["one-class"][c], preds["multi-class"][c]
        assert list(one["path"]) == list(multi["path"])
        r_one, r_multi = outranked(one["score"], one["label"]), outranked(multi["score"], multi["label"])
        gaps[c] = 100 * float(r_one.mean() - r_multi.mean())  # = the class's image AUROC gap
        defective = [p for p, y in zip(one["path"], one["label"], strict=True) if y == 1]
        for p, a, b in zip(defective, r_one, r_multi, strict=True):
            key = "/".join(Path(p).parts[-3:])  # test/cut_paste_cross/000.png
            donor = donors.get(c, {}).get(key)
            if donor is not None:
                drops.append(100 * float(a - b))
                pair_sim.append(float(sim[idx[c], idx[donor]]))
    g = np.array([gaps[c] for c in ORDER])
    by_kind = {k: float(np.mean([gaps[c] for c in ORDER if mini.KINDS[c] == k])) for k in ("object", "texture")}
    off = sim - np.eye(len(ORDER)) * 2  # exclude the diagonal from max
    nearest = off.max(1)
    mean_other = (sim.sum(1) - 1) / (len(ORDER) - 1)
    return {
        "seed": seed,
        "gap_mean": float(g.mean()),
        "gap_per_class": {c: round(gaps[c], 2) for c in ORDER},
        "gap_objects": by_kind["object"],
        "gap_textures": by_kind["texture"],
        "gap_objects_minus_textures": by_kind["object"] - by_kind["texture"],
        "spearman_gap_nearest": float(spearmanr(g, nearest).statistic),
        "spearman_gap_mean_other": float(spearmanr(g, mean_other).statistic),
        "pastes": len(drops),
        "paste_drop_mean": float(np.mean(drops)),
        "spearman_drop_donor_similarity": float(spearmanr(drops, pair_sim).statistic),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--write", help="write the summary JSON here")
    a = ap.parse_args()

    from adkit import backbones, data, probes
    from adkit.features import class_similarity
    from adkit.report import summarize as interval

    data.load_records("mini", None, "train", list(ORDER))  # builds mini if missing
    root = data.default_root("mini", None)
    prov = json.loads((Path(root) / "provenance.json").read_text())
    donors = {c: {f: v["donor"] for f, v in files.items() if "donor" in v} for c, files in prov.items()}
    teacher = backbones.create(RECIPE["backbone"])
    imgs = {
        c: probes.to_tensor(probes.load_images("mini", None, c, RECIPE["image_size"], split="train", n=20))
        for c in ORDER
    }
    _, sim = class_similarity(teacher, imgs)
    rows = []
    for s in (int(x) for x in a.seeds.split(",")):
        rows.append(seed_row(s, sim, donors))
        print(json.dumps(rows[-1]), flush=True)

    def over_seeds(key: str) -> dict:
        return interval([r[key] for r in rows])

    per_class = {c: interval([r["gap_per_class"][c] for r in rows]) for c in ORDER}
    off = sim - np.eye(len(ORDER)) * 2
    summary = {
        "what": "notebook 1's recipe per class: which classes lose most when one RD student is shared, and whether"
        " teacher-space similarity (computable before training) predicts it",
        "made_by": "OMP_NUM_THREADS=1 python benchmarks/interference_classes.py --seeds "
        + a.seeds
        + " --write docs/results/interference_classes.json",
        "recipe": {"model": "rd", "classes": list(ORDER), **RECIPE, "test_split": "mini default (20 + 20 per class)"},
        "seeds": [r["seed"] for r in rows],
        "gap": over_seeds("gap_mean"),
        "gap_per_class": per_class,
        "gap_objects": over_seeds("gap_objects"),
        "gap_textures": over_seeds("gap_textures"),
        "gap_objects_minus_textures": over_seeds("gap_objects_minus_textures"),
        "kinds": {c: mini.KINDS[c] for c in ORDER},
        "nearest_class": {c: ORDER[int(off[i].argmax())] for i, c in enumerate(ORDER)},
        "nearest_similarity": {c: round(float(off[i].max()), 3) for i, c in enumerate(ORDER)},
        "spearman_gap_nearest": over_seeds("spearman_gap_nearest"),
        "spearman_gap_mean_other": over_seeds("spearman_gap_mean_other"),
        "paste_drop_mean": over_seeds("paste_drop_mean"),
        "spearman_drop_donor_similarity": over_seeds("spearman_drop_donor_similarity"),
        "similarity": {"classes": list(ORDER), "matrix": np.round(sim, 3).tolist()},
        "rows": rows,
    }
    if a.write:
        Path(a.write).write_text(json.dumps(summary, indent=1) + "\n")
    for k in (
        "gap",
        "gap_objects",
        "gap_textures",
        "gap_objects_minus_textures",
        "spearman_gap_nearest",
        "spearman_gap_mean_other",
        "paste_drop_mean",
    ):
        print(k, summary[k])
    print("spearman_drop_donor_similarity", summary["spearman_drop_donor_similarity"])


if __name__ == "__main__":
    main()
