"""Model shapes: every model returns ``(logits, embedding)``."""

from __future__ import annotations

import pytest
import torch
import torchvision.models._api

from models import CNN, MODELS, DownloadError, ResNet18, ResNet50, build_model


def test_cnn_shapes():
    torch.manual_seed(0)
    model = CNN()
    logits, emb = model(torch.rand(7, 1, 28, 28))
    assert logits.shape == (7, 10)
    assert emb.shape == (7, 256)
    assert logits.dtype == emb.dtype == torch.float32


def test_cnn_logits_are_the_head_of_the_embedding():
    torch.manual_seed(0)
    model = CNN(num_classes=4)
    with torch.no_grad():
        logits, emb = model(torch.rand(3, 1, 28, 28))
        assert logits.shape == (3, 4)
        torch.testing.assert_close(model.head(emb), logits)
    # the embedding is taken before any activation: it has negative entries
    assert (emb < 0).any()


def test_resnet18_shapes():
    torch.manual_seed(0)
    model = ResNet18(num_classes=100).eval()
    with torch.no_grad():
        logits, emb = model(torch.rand(2, 3, 64, 64))
    assert logits.shape == (2, 100)
    assert emb.shape == (2, 512)
    torch.testing.assert_close(model.fc(emb), logits)


def test_build_model():
    torch.manual_seed(0)
    assert isinstance(build_model("cnn", 10), CNN)
    model = build_model("resnet18", 7)
    assert isinstance(model, ResNet18)
    assert model.fc.out_features == 7
    assert set(MODELS) == {"cnn", "resnet18", "resnet50"}
    wide = build_model("resnet50", 3)
    assert isinstance(wide, ResNet50) and wide.fc.in_features == 2048 and wide.fc.out_features == 3


def test_pretrained_weights_offline_is_one_clear_error(tmp_path, monkeypatch):
    """No weights in the hub cache and no network: DownloadError naming the weights, not a urllib traceback."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(DownloadError, match="IMAGENET1K.*pretrained=false"):
        build_model("resnet18", 10, pretrained=True)


def test_build_model_unknown_name():
    with pytest.raises(ValueError, match="vgg"):
        build_model("vgg", 10)


def test_build_model_is_seeded_by_the_global_rng():
    torch.manual_seed(3)
    a = build_model("cnn", 10).state_dict()
    torch.manual_seed(3)
    b = build_model("cnn", 10).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
