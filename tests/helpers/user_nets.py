"""Networks as a user's own package would write them, named by import path in tests
(`--backbone tests.helpers.user_nets:<factory>`): some well formed, some broken on purpose."""

from __future__ import annotations

import torch
import torchvision
from torch import nn


class ListedStagesNet(nn.Module):
    """A small CNN that lists its stages the way timm models do (`feature_info`), with its
    classifier named `head`: found without any model.stages / model.classifier setting."""

    def __init__(self, num_classes: int, in_channels: int, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1), nn.BatchNorm2d(width), nn.ReLU())
        self.block1 = self._block(width, width, 1)
        self.block2 = self._block(width, 2 * width, 2)
        self.block3 = self._block(2 * width, 4 * width, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4 * width, num_classes)
        self.feature_info = [{"module": "block1", "num_chs": width}, {"module": "block2", "num_chs": 2 * width},
                             {"module": "block3", "num_chs": 4 * width}]

    @staticmethod
    def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.stem(x))))
        return self.head(torch.flatten(self.pool(x), 1))


def listed_stages_net(num_classes: int, in_channels: int) -> nn.Module:
    return ListedStagesNet(num_classes, in_channels)


def torchvision_resnet18(num_classes: int, in_channels: int) -> nn.Module:
    """torchvision's ResNet-18, unchanged but for its first convolution's input channels: its
    stages are named with model.stages=layer1,layer2,layer3,layer4; its classifier `fc` is found."""
    net = torchvision.models.resnet18(num_classes=num_classes)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    return net


def wrong_signature(classes: int) -> nn.Module:
    return nn.Linear(4, classes)


def not_a_module(num_classes: int, in_channels: int) -> str:
    return "a network"


class Unnamed(nn.Module):
    """Lists its stages but names its classifier nothing skd-ray can find."""

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.body = ListedStagesNet(num_classes, in_channels)
        self.feature_info = [{"module": f"body.block{i}"} for i in (1, 2, 3)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def no_classifier(num_classes: int, in_channels: int) -> nn.Module:
    return Unnamed(num_classes, in_channels)


class ScaledOutput(ListedStagesNet):
    """Its forward changes the classifier's output afterwards: the classifier is not the last layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


def classifier_not_last(num_classes: int, in_channels: int) -> nn.Module:
    return ScaledOutput(num_classes, in_channels)
