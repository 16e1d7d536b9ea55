"""Each loader reads a tiny dataset written in its exact on-disk layout (tests/fixtures.py) and returns
exactly what was written: counts per class/split/defect, masks on their images, metadata, semantic labels."""

from __future__ import annotations

import importlib
import json
import shutil

import numpy as np
import pytest
from fixtures import (
    BOX,
    SIZE,
    save,
    write_cifar10,
    write_cifar100,
    write_fashion_mnist,
    write_loco,
    write_mvtec,
    write_realiad,
    write_visa,
)

from adkit.data import (
    FORMATS,
    DataError,
    ImageDataset,
    cifar,
    digits,
    fashion_mnist,
    load_all,
    mvtec,
    mvtec_loco,
    realiad,
    semantic,
    visa,
)


def counts_of(records_by_split: dict) -> dict:
    out: dict = {}
    for split, recs in records_by_split.items():
        for r in recs:
            d = out.setdefault(r.cls, {}).setdefault(split, {})
            d[r.defect] = d.get(r.defect, 0) + 1
    return out


def assert_masks_on_defects(recs) -> None:
    """Every defect record's mask is exactly BOX, and its image is bright there and dark elsewhere."""
    batch = load_all(ImageDataset(recs, image_size=SIZE))
    expected = np.zeros((SIZE, SIZE), bool)
    expected[BOX] = True
    for img, m, label in zip(batch["image"], batch["mask"], batch["label"], strict=True):
        if label == 0:
            assert m.sum() == 0
            continue
        assert np.array_equal(m[0].numpy() > 0.5, expected)
        gray = img.mean(0).numpy()
        assert gray[expected].mean() > 0.85 and gray[~expected].mean() < 0.45


def test_registry_lists_every_format():
    for name in ("visa", "mvtec_loco", "realiad", "cifar", "fashion_mnist", "digits"):
        mod = importlib.import_module(FORMATS[name])
        assert callable(mod.records) and callable(mod.check)


# --- MVTec AD --------------------------------------------------------------------------------------------


def test_mvtec_counts_and_masks(tmp_path):
    expected = write_mvtec(tmp_path)
    recs = {s: mvtec.records(tmp_path, s) for s in ("train", "test")}
    assert counts_of(recs) == expected
    assert mvtec.check(tmp_path) == {"counts": expected, "problems": []}
    assert_masks_on_defects(recs["test"])
    assert len(mvtec.records(tmp_path, "test", classes=["cable"])) == 5


def test_mvtec_missing_mask_names_the_file(tmp_path):
    write_mvtec(tmp_path, classes=("bottle",))
    gone = tmp_path / "bottle" / "ground_truth" / "crack" / "001_mask.png"
    gone.unlink()
    with pytest.raises(DataError, match="001_mask.png"):
        mvtec.records(tmp_path, "test")


def test_mvtec_wrong_mask_size_is_an_error(tmp_path):
    write_mvtec(tmp_path, classes=("bottle",))
    bad = tmp_path / "bottle" / "ground_truth" / "scratch" / "000_mask.png"
    save(np.zeros((SIZE, SIZE * 2), np.uint8), bad)
    with pytest.raises(DataError, match="must have the size"):
        load_all(ImageDataset(mvtec.records(tmp_path, "test"), image_size=SIZE))
    assert any("000_mask.png" in p and "64x32" in p for p in mvtec.check(tmp_path)["problems"])


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_mvtec_grayscale_and_rgba_become_rgb(tmp_path, mode):
    write_mvtec(tmp_path, classes=("bottle",), mode=mode)
    batch = load_all(ImageDataset(mvtec.records(tmp_path, "test"), image_size=16))
    assert batch["image"].shape == (5, 3, 16, 16)


def test_mvtec_empty_class_is_an_error(tmp_path):
    write_mvtec(tmp_path, classes=("bottle",))
    (tmp_path / "empty" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match="empty"):
        mvtec.records(tmp_path, "train")


def test_mvtec_check_lists_every_problem(tmp_path):
    write_mvtec(tmp_path, classes=("bottle", "cable"))
    (tmp_path / "bottle" / "ground_truth" / "crack" / "000_mask.png").unlink()
    (tmp_path / "cable" / "ground_truth" / "scratch" / "000_mask.png").unlink()
    (tmp_path / "cable" / "train" / "good" / "001.png").write_bytes(b"not a png")
    problems = mvtec.check(tmp_path)["problems"]
    assert len(problems) == 3
    for part in ("bottle/test/crack/000.png", "cable/test/scratch/000.png", "cable/train/good/001.png"):
        assert any(part in p for p in problems), part


# --- VisA ------------------------------------------------------------------------------------------------


def test_visa_counts_and_binarised_masks(tmp_path):
    expected = write_visa(tmp_path, mask_value=1)  # VisA masks hold small values: still defect
    recs = {s: visa.records(tmp_path, s) for s in ("train", "test")}
    assert counts_of(recs) == expected
    assert visa.check(tmp_path) == {"counts": expected, "problems": []}
    assert_masks_on_defects(recs["test"])
    assert {r.cls for r in visa.records(tmp_path, "test", classes=["pcb1"])} == {"pcb1"}


def test_visa_missing_split_file(tmp_path):
    write_visa(tmp_path)
    (tmp_path / "split_csv" / "1cls.csv").unlink()
    with pytest.raises(DataError, match="1cls.csv"):
        visa.records(tmp_path)


# --- MVTec LOCO AD --------------------------------------------------------------------------------------


def test_loco_counts_and_multi_mask_merge(tmp_path):
    expected = write_loco(tmp_path, n_masks=2)
    recs = {s: mvtec_loco.records(tmp_path, s) for s in ("train", "validation", "test")}
    assert counts_of(recs) == expected
    assert mvtec_loco.check(tmp_path) == {"counts": expected, "problems": []}
    anomalies = [r for r in recs["test"] if r.label == 1]
    assert all(len(r.mask_paths) == 2 for r in anomalies)
    assert {r.defect for r in anomalies} == {"logical_anomalies", "structural_anomalies"}
    assert_masks_on_defects(recs["test"])  # each file holds half of BOX; merged they are BOX


# --- Real-IAD --------------------------------------------------------------------------------------------


def test_realiad_counts_views_and_masks(tmp_path):
    expected = write_realiad(tmp_path, views=("C1", "C2"))
    recs = {s: realiad.records(tmp_path, s) for s in ("train", "test")}
    assert counts_of(recs) == expected
    assert realiad.check(tmp_path) == {"counts": expected, "problems": []}
    views = [dict(r.meta)["view"] for r in recs["test"]]
    assert views.count("C1") == views.count("C2") == len(views) // 2
    assert all(f"_{dict(r.meta)['view']}_" in r.path for r in recs["test"])
    assert_masks_on_defects(recs["test"])
    sv = realiad.records(tmp_path, "test", variant="sv")
    assert len(sv) == len(recs["test"]) // 2 and {dict(r.meta)["view"] for r in sv} == {"C1"}


def test_realiad_resolution_choice(tmp_path):
    write_realiad(tmp_path, resolution=256)
    shutil.copytree(tmp_path / "realiad_256", tmp_path / "realiad_1024")
    with pytest.raises(DataError, match="realiad_1024, realiad_256"):
        realiad.records(tmp_path)
    assert "realiad_1024" in realiad.records(tmp_path, resolution=1024)[0].path
    with pytest.raises(DataError, match="realiad_512"):
        realiad.records(tmp_path, resolution=512)


# --- check(): every problem, each by name -----------------------------------------------------------------


def _break_visa(root):
    (root / "candle" / "Data" / "Masks" / "Anomaly" / "001.png").unlink()
    (root / "candle" / "Data" / "Images" / "Normal" / "0001.JPG").write_bytes(b"junk")
    return visa, ["candle/Data/Images/Anomaly/001.JPG", "candle/Data/Images/Normal/0001.JPG"]


def _break_loco(root):
    shutil.rmtree(root / "juice_bottle" / "ground_truth" / "structural_anomalies" / "001")
    (root / "juice_bottle" / "validation" / "good" / "000.png").write_bytes(b"junk")
    return mvtec_loco, ["structural_anomalies/001.png", "validation/good/000.png"]


def _break_realiad(root):
    ng = sorted((root / "realiad_256" / "audiojack" / "NG").rglob("*.png"))[0]
    ng.unlink()
    ok = sorted((root / "realiad_256" / "audiojack" / "OK").rglob("*.jpg"))[0]
    ok.write_bytes(b"junk")
    return realiad, [ng.with_suffix(".jpg").name, ok.name]


@pytest.mark.parametrize(
    "writer, breaker, cls",
    [
        (write_visa, _break_visa, "candle"),
        (write_loco, _break_loco, "juice_bottle"),
        (write_realiad, _break_realiad, "audiojack"),
    ],
)
def test_check_reports_every_problem_by_name(tmp_path, writer, breaker, cls):
    writer(tmp_path)
    module, names = breaker(tmp_path)
    problems = module.check(tmp_path, classes=[cls, "nosuchclass"])["problems"]
    assert any("nosuchclass" in p for p in problems)
    for name in names:
        assert any(name in p for p in problems), (name, problems)
    assert len(module.check(tmp_path)["problems"]) == 2
    with pytest.raises(DataError, match="nosuchclass"):
        module.records(tmp_path, "train", classes=["nosuchclass"])


def test_realiad_split_file_item_without_mask(tmp_path):
    write_realiad(tmp_path)
    path = tmp_path / "realiad_jsons" / "realiad_jsons" / "audiojack.json"
    data = json.loads(path.read_text())
    data["test"][-1]["mask_path"] = None
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="mask_path empty"):
        realiad.records(tmp_path, "test")


# --- semantic sets ----------------------------------------------------------------------------------------


def test_cifar10_one_vs_rest_and_multi_class(tmp_path):
    write_cifar10(tmp_path, n_train=2, n_test=1)
    train = cifar.records(tmp_path, "train", classes=["cat"])
    assert len(train) == 2 and {r.label for r in train} == {0} and {r.cls for r in train} == {"cat"}
    assert all(r.array.shape == (32, 32, 3) and r.array.dtype == np.uint8 for r in train)
    # the fixture's CHW rows must come out HWC: red = label * 10, blue = 200
    assert all((r.array[..., 0] == 30).all() and (r.array[..., 2] == 200).all() for r in train)
    test = cifar.records(tmp_path, "test", classes=["cat"])
    assert len(test) == 10 and sum(r.label for r in test) == 9
    assert {r.defect for r in test if r.label} == set(semantic.CLASS_NAMES["cifar10"]) - {"cat"}
    assert all(dict(r.meta)["true_class"] == semantic.CLASS_NAMES["cifar10"][r.array[0, 0, 0] // 10] for r in test)
    assert all(r.mask_paths == () for r in test)

    split = semantic.UNIAD_CIFAR10_SPLITS[2]  # even classes normal
    assert split == ["airplane", "bird", "deer", "frog", "ship"]
    test = cifar.records(tmp_path, "test", classes=split)
    assert {r.cls for r in test} == {"airplane+bird+deer+frog+ship"}
    assert [r.label for r in test] == [int(r.array[0, 0, 0] // 10 % 2) for r in test]
    assert len(cifar.records(tmp_path, "train", classes=[0, 2, 4, 6, 8])) == 10
    assert cifar.records(tmp_path, "train", classes=["3"]) == cifar.records(tmp_path, "train", classes="cat")
    assert cifar.records(tmp_path, "train") == cifar.records(tmp_path, "train", classes=["airplane"])


def test_cifar100_uses_coarse_classes(tmp_path):
    write_cifar100(tmp_path, n_train=1, n_test=1)
    names = semantic.CLASS_NAMES["cifar100"]
    train = cifar.records(tmp_path, "train", classes=["fish"])
    assert len(train) == 5 and {dict(r.meta)["true_class"] for r in train} == {"fish"}
    test = cifar.records(tmp_path, "test", classes=["fish"])
    assert len(test) == 100 and sum(r.label == 0 for r in test) == 5
    assert all(dict(r.meta)["true_class"] == names[r.array[0, 0, 0] // 10] for r in test)
    assert [len(t) for t in semantic.one_vs_rest("cifar100")] == [1] * 20


def test_cifar_both_sets_under_one_root(tmp_path):
    write_cifar10(tmp_path)
    write_cifar100(tmp_path)
    assert cifar.which(tmp_path, ["fish"]) == "cifar100"
    assert cifar.which(tmp_path, ["cat"]) == "cifar10"
    with pytest.raises(DataError, match="both"):
        cifar.records(tmp_path)
    assert len(cifar.records(tmp_path, dataset="cifar100")) == 5


def test_cifar_check(tmp_path):
    write_cifar10(tmp_path, n_train=2, n_test=1)
    report = cifar.check(tmp_path, classes=["cat", "dog"])
    test_counts = {"good": 2, **{n: 1 for n in semantic.CLASS_NAMES["cifar10"] if n not in ("cat", "dog")}}
    assert report == {"counts": {"cat+dog": {"train": {"good": 4}, "test": test_counts}}, "problems": []}
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"junk")
    problems = cifar.check(tmp_path, classes=["cat", "unicorn"])["problems"]
    assert len(problems) == 3 and "unicorn" in problems[0]
    assert "data_batch_3" in problems[1] and "test_batch" in problems[2]


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist(tmp_path, gz):
    write_fashion_mnist(tmp_path, n_train=2, n_test=1, gz=gz)
    train = fashion_mnist.records(tmp_path, "train", classes=["trouser"])
    assert len(train) == 2 and all(r.array.shape == (28, 28) and r.array[0, 0] // 20 == 1 for r in train)
    test = fashion_mnist.records(tmp_path, "test", classes=["trouser"])
    assert [r.label for r in test] == [0 if r.array[0, 0] // 20 == 1 else 1 for r in test]
    assert sum(r.label == 0 for r in test) == 1 and len(test) == 10
    assert load_all(ImageDataset(test, image_size=32))["image"].shape == (10, 3, 32, 32)
    assert fashion_mnist.check(tmp_path)["counts"]["t-shirt_top"]["train"] == {"good": 2}


def test_fashion_mnist_bad_files(tmp_path):
    write_fashion_mnist(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    images = tmp_path / "t10k-images-idx3-ubyte.gz"
    labels.write_bytes((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())  # images where labels belong
    images.write_bytes(images.read_bytes()[:40])  # truncated gzip
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: magic number 2051 is not 2049"):
        fashion_mnist.records(tmp_path, "train")
    problems = fashion_mnist.check(tmp_path)["problems"]
    assert len(problems) == 2 and "train-labels" in problems[0] and "t10k-images" in problems[1]


def test_digits_embedded_split():
    train = digits.records(split="train", classes=["3"])
    test = digits.records(split="test", classes=["3"])
    assert {r.label for r in train} == {0} and 85 <= len(train) <= 95  # ~half of the 183 threes
    assert (
        len(digits.records(split="train", classes=list(range(10))))
        + len(digits.records(split="test", classes=list(range(10))))
        == 1797
    )
    assert train == digits.records(split="train", classes=[3])  # deterministic, indices accepted
    assert {r.path for r in train}.isdisjoint(r.path for r in test)
    assert test[0].array.shape == (32, 32, 3) and test[0].array.dtype == np.uint8
    assert {r.defect for r in test if r.label} == set("012456789")
    assert digits.records(split="train", seed=1) != digits.records(split="train", seed=0)
    with pytest.raises(DataError, match="unknown class"):
        digits.records(classes=["x"])


def test_cifar10_and_cifar100_names_pick_their_dataset(tmp_path):
    from fixtures import write_cifar10, write_cifar100

    from adkit import data

    write_cifar10(tmp_path)
    write_cifar100(tmp_path)
    r10 = data.load_records("cifar10", tmp_path, "test", ["airplane"])
    r100 = data.load_records("cifar100", tmp_path, "test", None)
    assert r10 and r100
    assert {r.defect for r in r10} <= {
        "good",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    }
    assert not ({r.defect for r in r100} & {"automobile", "truck", "ship"})
