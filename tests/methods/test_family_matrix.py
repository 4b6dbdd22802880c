"""Every registered method on every family of backbone: one training step and one prediction.

The families: the 4-stage ResNet written here, a 3-stage CIFAR ResNet, a Wide ResNet, a timm
ResNet (5 stages, stem included), a timm ConvNeXt (4 stages, LayerNorm and token-wise MLPs),
a user module that lists its own stages, and torchvision's ResNet-18 with its stages named.
Parametrised over the method registry, so a new method is covered by being registered.
"""

from __future__ import annotations

import math

import pytest
import torch

from skd_ray.methods import METHODS, MethodContext, build_method
from skd_ray.models import build_backbone
from skd_ray.training.resolve import resolve_config

IMAGE = 32
CLASSES = 5
FAMILIES = {  # name -> (model.backbone, model.stages)
    "resnet_small": ("resnet_small", []),
    "resnet20": ("resnet20", []),
    "wrn_16_2": ("wrn_16_2", []),
    "timm_resnet18": ("timm:resnet18", []),
    "timm_convnext_atto": ("timm:convnext_atto", []),
    "user_listed_stages": ("tests.helpers.user_nets:listed_stages_net", []),
    "user_torchvision": ("tests.helpers.user_nets:torchvision_resnet18", ["layer1", "layer2", "layer3", "layer4"]),
}


def method_params(method: str, backbone: str, stages: list[str]) -> object:
    """The method's defaults for this backbone, as a search would resolve them (stage-count
    defaults included), on a 3-channel 32x32 dataset."""
    flat = {"method": method, "model.backbone": backbone, "model.stages": stages, "data.name": "cifar10"}
    return resolve_config(flat).method_params


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_one_step_and_every_exit(method: str, family: str) -> None:
    backbone_name, stages = FAMILIES[family]
    torch.manual_seed(0)
    backbone = build_backbone(backbone_name, None, 3, CLASSES, image_size=IMAGE, stages=stages)
    model = build_method(method, backbone, method_params(method, backbone_name, stages),
                         MethodContext(num_train_samples=8))
    x, y, index = torch.randn(4, 3, IMAGE, IMAGE), torch.tensor([0, 1, 2, 3]), torch.arange(4)
    model.train()
    model.on_epoch_start(0, 2)
    out = model(x, y, index)
    assert math.isfinite(float(out.loss.detach())), (method, family, out.terms)
    assert all(math.isfinite(float(t.detach())) for t in out.terms.values())
    out.loss.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads), "no gradient reached the backbone"
    model.on_train_batch_end(out)
    model.eval()
    with torch.no_grad():
        answers = model.predict(x)
        costs = model.exit_costs(x)
    assert list(answers)[-1] == "final" and set(costs) == set(answers)
    for name, logits in answers.items():
        assert logits.shape == (4, CLASSES) and bool(torch.isfinite(logits).all()), name
    if METHODS[method].cls.multi_exit:
        assert len(answers) == backbone.layout.num_stages  # an exit after every non-final stage by default
        standalone = [costs[n].standalone for n in answers]
        assert all(0 < c for c in standalone) and costs["final"].standalone == 1.0
    with torch.no_grad():  # the deployable network answers on its own, as exported
        assert torch.allclose(model.deployable()(x), answers["final"], atol=1e-5)
