"""Backbone families behind the stage contract: layouts, tapping, MAC prefixes, weights and the
one-line errors for networks that cannot work."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from skd_ray.errors import ConfigError
from skd_ray.models import StagedResNet, TappedBackbone, backbone_layout, build_backbone
from skd_ray.models.flops import count_macs, stage_prefix_macs

USER = "tests.helpers.user_nets"
TV_STAGES = ["layer1", "layer2", "layer3", "layer4"]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name,blocks,params", [("resnet20", 3, 272_474), ("resnet56", 9, 855_770),
                                                 ("resnet110", 18, 1_730_714)])
def test_cifar_resnets_are_three_stages_of_6n_plus_2(name: str, blocks: int, params: int) -> None:
    net = build_backbone(name, None, 3, 10, image_size=32)
    assert isinstance(net, StagedResNet) and [len(s) for s in net.stages] == [blocks] * 3
    assert net.layout.channels == (16, 32, 64) and net.layout.sizes == ((32, 32), (16, 16), (8, 8))
    assert n_params(net) == params  # He et al.'s 0.27M / 0.85M / 1.7M, plus 1x1 projection shortcuts


@pytest.mark.parametrize("name,channels,millions", [("wrn_16_2", (32, 64, 128), 0.69), ("wrn_28_10", (160, 320, 640),
                                                                                          36.48)])
def test_wide_resnets_match_the_published_sizes(name: str, channels: tuple[int, ...], millions: float) -> None:
    net = build_backbone(name, None, 3, 100 if name == "wrn_28_10" else 10, image_size=32)
    assert net.layout.channels == channels and net.layout.strides == (1, 2, 2)
    assert abs(n_params(net) / 1e6 - millions) < 0.02 + (0.06 if name == "wrn_28_10" else 0)
    out = net.forward_stages(torch.randn(2, 3, 32, 32))
    assert bool((out.maps[-1] >= 0).all())  # the last stage ends with the final BN-ReLU


def test_wide_resnet_name_must_be_6n_plus_4() -> None:
    with pytest.raises(ConfigError, match="wrn_15_2 is not a Wide ResNet"):
        build_backbone("wrn_15_2", None, 3, 10)


@pytest.mark.parametrize("model,channels,pooled", [
    ("resnet18", (64, 64, 128, 256, 512), 512),
    ("convnext_atto", (40, 80, 160, 320), 320),
    ("efficientnet_b0", (16, 24, 40, 112, 320), 1280),  # conv_head after the last stage
    ("mobilenetv3_small_100", (16, 16, 24, 48, 576), 1024),  # conv_head after pooling
])
def test_timm_layouts_come_from_feature_info(model: str, channels: tuple[int, ...], pooled: int) -> None:
    net = build_backbone(f"timm:{model}", None, 3, 7, image_size=64)
    assert net.layout.channels == channels and net.layout.pooled_dim == pooled
    assert net.layout.sizes[-1] == (2, 2) and net.layout.strides[1:] == (2,) * (len(channels) - 1)


def test_tapped_timm_model_gives_timm_own_intermediates_and_logits() -> None:
    torch.manual_seed(0)
    net = build_backbone("timm:resnet18", None, 3, 7, image_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = net.forward_stages(x)
        final, inters = net.module.forward_intermediates(x)
        assert all(torch.equal(a, b) for a, b in zip(out.maps, inters))
        assert torch.allclose(out.logits, net.module(x)) and torch.allclose(out.logits, net(x))
        assert torch.allclose(out.pooled, net.module.forward_head(final, pre_logits=True))
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())  # nothing left behind


def test_torchvision_resnet_is_tapped_by_stage_names() -> None:
    torch.manual_seed(0)
    net = build_backbone(f"{USER}:torchvision_resnet18", None, 1, 4, image_size=32, stages=TV_STAGES).eval()
    tv = net.module
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        out = net.forward_stages(x)
        h = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        for layer, got in zip((tv.layer1, tv.layer2, tv.layer3, tv.layer4), out.maps):
            h = layer(h)
            assert torch.equal(h, got)
        assert torch.allclose(out.pooled, torch.flatten(tv.avgpool(h), 1)) and torch.allclose(out.logits, tv(x))
    assert net.classifier_name == "fc" and net.layout.channels == (64, 128, 256, 512)


def test_a_tapped_backbone_copies_and_trains_as_its_own_module() -> None:
    net = build_backbone(f"{USER}:listed_stages_net", None, 3, 4, image_size=16)
    assert isinstance(net, TappedBackbone) and net.stage_names == ["block1", "block2", "block3"]
    assert net.classifier_name == "head"
    twin = copy.deepcopy(net)  # SRDL's snapshot: the copy taps its own modules
    x = torch.randn(3, 3, 16, 16)
    twin.forward_stages(x).logits.sum().backward()
    assert all(p.grad is None for p in net.parameters()) and any(p.grad is not None for p in twin.parameters())


def test_stage_prefix_macs_are_the_cumulative_cost_of_the_stages() -> None:
    torch.manual_seed(0)
    net = StagedResNet([1, 1, 1, 1], 4, 1, 10).eval()
    x = torch.randn(1, 1, 8, 8)
    prefix, total = stage_prefix_macs(net, list(net.stages), x)
    expected, h = count_macs(net.stem, x), net.stem(x)
    for stage, got in zip(net.stages, prefix):
        expected += count_macs(stage, h)
        h = stage(h)
        assert got == expected
    assert total == count_macs(net, x) == expected + 32 * 10


def test_linear_layers_count_every_position() -> None:
    # a token-wise MLP (ConvNeXt's blocks): 16 positions x 8 inputs x 3 outputs
    assert count_macs(nn.Linear(8, 3), torch.randn(1, 4, 4, 8)) == 16 * 8 * 3


def test_weights_from_a_local_file_load_where_names_and_shapes_match(tmp_path, capsys) -> None:
    source = build_backbone("timm:resnet18", None, 3, 1000)
    path = tmp_path / "imagenet_like.pth"
    torch.save(source.module.state_dict(), path)
    net = build_backbone("timm:resnet18", None, 3, 10, image_size=32, weights=str(path))
    assert torch.equal(net.module.conv1.weight, source.module.conv1.weight)
    assert not torch.equal(net.module.fc.bias, source.module.fc.bias[:10])  # 1000 classes: left as initialised
    assert "left at initialisation: fc.bias, fc.weight" in capsys.readouterr().out
    torch.save({"state_dict": source.module.state_dict()}, tmp_path / "wrapped.pt")  # Lightning-style checkpoint
    build_backbone("timm:resnet18", None, 3, 10, weights=str(tmp_path / "wrapped.pt"))


@pytest.mark.parametrize("kwargs,message", [
    ({"weights": "/nowhere/w.pt"}, "model.weights file /nowhere/w.pt does not exist"),
    ({"weights": "{tmp}/other.pt"}, "no tensor of model.weights file"),
    ({"weights": "{tmp}/text.pt"}, "cannot be read"),
])
def test_unusable_weight_files_are_one_error(tmp_path, kwargs: dict[str, str], message: str) -> None:
    torch.save(nn.Linear(3, 3).state_dict(), tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ConfigError, match=message):
        build_backbone("resnet_small", None, 3, 10, weights=kwargs["weights"].format(tmp=tmp_path))


@pytest.mark.parametrize("name,kwargs,message", [
    ("timm:no_such_net", {}, "unknown timm model 'no_such_net'"),
    ("no_such_pkg.nets:build", {}, r"no_such_pkg.nets \(from no_such_pkg.nets:build\) does not import"),
    (f"{USER}:missing", {}, f"{USER} has no 'missing'"),
    (f"{USER}:wrong_signature", {}, r"cannot be called as .*\(num_classes=..., in_channels=...\)"),
    (f"{USER}:not_a_module", {}, "returned str, not a torch nn.Module"),
    (f"{USER}:torchvision_resnet18", {}, "does not say where its stages are"),
    (f"{USER}:torchvision_resnet18", {"stages": ["layer1", "layer9"]}, "stage 'layer9' does not exist"),
    (f"{USER}:torchvision_resnet18", {"stages": ["layer1", "layer1.1"]}, r"stage 2 of backbone .* does not shrink"),
    (f"{USER}:torchvision_resnet18", {"stages": ["layer2", "layer1"]}, "does not shrink"),
    (f"{USER}:torchvision_resnet18", {"stages": TV_STAGES, "classifier": "avgpool"}, "not the network.s last layer"),
    (f"{USER}:no_classifier", {}, "no classifier found"),
    (f"{USER}:classifier_not_last", {}, "is not the network's last layer"),
    ("timm:resnet18", {"image_size": 8}, "too deep for 8x8 images"),
    ("resnet20", {"image_size": 2}, "too deep for 2x2 images"),
])
def test_networks_that_cannot_work_are_one_error(name: str, kwargs: dict, message: str) -> None:
    kwargs = {"image_size": 32, **kwargs}
    with pytest.raises(ConfigError, match=message):
        build_backbone(name, None, 3, 10, **kwargs)


def test_width_applies_only_to_the_resnets_written_here() -> None:
    assert build_backbone("resnet20", 8, 3, 10).layout.channels == (8, 16, 32)
    with pytest.raises(ConfigError, match="model.width does not apply to backbone timm:resnet18"):
        build_backbone("timm:resnet18", 8, 3, 10)


def test_layouts_are_probed_once_per_shape() -> None:
    backbone_layout.cache_clear()
    first = backbone_layout("wrn_16_2", None, 3, 10, 32)
    assert backbone_layout("wrn_16_2", None, 3, 10, 32) is first
    assert backbone_layout.cache_info().hits == 1
