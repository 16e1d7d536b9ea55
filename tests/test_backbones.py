"""Teachers: real embedded weights, feature shapes from feature_info, fast and clear failure offline."""

from __future__ import annotations

import time

import numpy as np
import pytest
import skimage.data
import timm
import torch
from PIL import Image

from adkit import backbones


def _classify(model, img: np.ndarray) -> list[int]:
    x = torch.from_numpy(np.array(Image.fromarray(img).resize((224, 224)))).permute(2, 0, 1).float()[None] / 255
    x = (x - torch.tensor(backbones.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(backbones.IMAGENET_STD).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        return model(x).topk(5).indices[0].tolist()


def test_embedded_weights_are_real_imagenet_weights():
    model = backbones.embedded_classifier()
    top_cat = _classify(model, skimage.data.chelsea())
    top_coffee = _classify(model, skimage.data.coffee())
    assert 281 <= top_cat[0] <= 285  # a cat class (tabby .. Egyptian cat)
    assert top_coffee[0] == 967  # espresso
    rand = timm.create_model(backbones.EMBEDDED, pretrained=False).eval()
    assert not (
        281 <= _classify(rand, skimage.data.chelsea())[0] <= 285 and _classify(rand, skimage.data.coffee())[0] == 967
    )


def test_teacher_stages_strides_and_frozen(teacher):
    assert teacher.strides == [4, 8, 16]
    assert teacher.channels == [24, 40, 112]  # efficientnet_lite0's stages 1-3 (timm's feature_info says so too)
    x = torch.rand(2, 3, 64, 64)
    feats = teacher(x)
    assert [tuple(f.shape) for f in feats] == [
        (2, c, 64 // s, 64 // s) for c, s in zip(teacher.channels, teacher.strides)
    ]
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training  # stays frozen, BN included


def test_teacher_applies_imagenet_normalisation_inside(teacher):
    x = torch.rand(1, 3, 64, 64)
    direct = teacher.model((x - teacher.mean) / teacher.std)
    assert torch.allclose(teacher(x)[0], direct[0])


def test_hub_backbone_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(backbones, "_cached_hub_file", lambda name: None)
    t0 = time.perf_counter()
    with pytest.raises(backbones.BackboneUnavailable) as err:
        backbones.create("resnet18")
    assert time.perf_counter() - t0 < 20
    assert "efficientnet_lite0" in str(err.value) and "--weights" in str(err.value)


def test_unreachable_hub_detected_quickly(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(backbones, "HUB_HOST", ("127.0.0.1", 9))  # discard port: closed here
    t0 = time.perf_counter()
    assert backbones.hub_reachable(timeout=2.0) is False
    assert time.perf_counter() - t0 < 5


def test_local_weights_file_is_loaded(tmp_path):
    from safetensors.torch import save_file

    src = timm.create_model("resnet18", pretrained=False)
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(sd, str(tmp_path / "r18.safetensors"))
    torch.save(sd, tmp_path / "r18.pth")
    for path in (tmp_path / "r18.safetensors", tmp_path / "r18.pth"):
        t = backbones.create("resnet18", weights=path)
        assert torch.equal(t.model.state_dict()["conv1.weight"], sd["conv1.weight"])
        assert t.channels == [64, 128, 256] and t.strides == [4, 8, 16]


def test_local_weights_of_another_model_fail_clearly(tmp_path):
    from safetensors.torch import save_file

    save_file({"foo": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(backbones.BackboneUnavailable, match="missing"):
        backbones.create("resnet18", weights=tmp_path / "bad.safetensors")
    with pytest.raises(backbones.BackboneUnavailable, match="not found"):
        backbones.create("resnet18", weights=tmp_path / "nope.safetensors")


def test_vit_teacher_gives_patch_maps_from_intermediate_blocks():
    t = backbones.create("vit_small_patch14_dinov2", pretrained=False)
    feats = t(torch.rand(1, 3, 56, 56))
    assert t.kind == "vit" and t.strides == [14] * 4
    assert [tuple(f.shape) for f in feats] == [(1, 384, 4, 4)] * 4  # class/register tokens dropped


def test_cli_train_with_hub_backbone_offline_fails_fast_and_clearly(tmp_path, mvtec_root):
    import os
    import subprocess
    import sys

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    t0 = time.perf_counter()  # what loading the code alone costs on this machine now (a busy one is slower)
    subprocess.run([sys.executable, "-c", "import adkit.training"], check=True, timeout=300, env=env)
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "adkit.cli",
            "train",
            "--data",
            "mvtec",
            "--root",
            str(mvtec_root),
            "--backbone",
            "wide_resnet50_2",
            "--iters",
            "1",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode != 0
    assert time.perf_counter() - t0 < startup + 10  # no network timeouts or retries on top of start-up
    assert "efficientnet_lite0" in r.stderr and "--weights" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_train_with_local_weights_file(tmp_path, mvtec_root):
    from safetensors.torch import save_file

    from adkit.cli import main

    sd = {k: v.contiguous() for k, v in timm.create_model("resnet18", pretrained=False).state_dict().items()}
    save_file(sd, str(tmp_path / "r18.safetensors"))
    assert (
        main(
            [
                "train",
                "--data",
                "mvtec",
                "--root",
                str(mvtec_root),
                "--backbone",
                "resnet18",
                "--weights",
                str(tmp_path / "r18.safetensors"),
                "--image-size",
                "32",
                "--iters",
                "2",
                "--batch-size",
                "2",
                "--out",
                str(tmp_path / "run"),
                "--quiet",
            ]
        )
        == 0
    )
