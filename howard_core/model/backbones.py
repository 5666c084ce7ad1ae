"""Encoders of the BGMv2 base network, written without torchvision.

Each encoder takes the 6-channel input `cat([src, bgr])` (B, 6, H, W) and
returns the five taps `(x4, x3, x2, x1, x0)` at 1/16, 1/8, 1/4, 1/2 and full
resolution. Module and parameter names reproduce the official checkpoints'
state_dict keys exactly (`backbone.conv1.weight`, `backbone.features.3.conv.1.0.weight`, ...),
which is why the structure below mirrors torchvision's layout rather than
something shorter.
"""

from __future__ import annotations

import torch
from torch import nn

# ---------------------------------------------------------------------------
# ResNet-50 / ResNet-101 (v1.5: stride on the 3x3 conv of each bottleneck)
# ---------------------------------------------------------------------------


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetEncoder(nn.Module):
    """ResNet-50/101 with output stride 16: `layer4` dilates (2) instead of striding."""

    BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
    channels = (2048, 512, 256, 64, 6)  # x4, x3, x2, x1, x0

    def __init__(self, variant: str = "resnet50", in_channels: int = 6):
        super().__init__()
        blocks = self.BLOCKS[variant]
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, blocks[0], stride=1, dilation=1)
        self.layer2 = self._make_layer(128, blocks[1], stride=2, dilation=1)
        self.layer3 = self._make_layer(256, blocks[2], stride=2, dilation=1)
        # Output stride 16: the first block of layer4 keeps dilation 1 and stride 1,
        # the following ones dilate by 2 to keep the receptive field of a stride-2 stage.
        self.layer4 = self._make_layer(512, blocks[3], stride=1, dilation=2)
        del self.inplanes

    def _make_layer(self, planes: int, count: int, stride: int, dilation: int) -> nn.Sequential:
        out_planes = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != out_planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, 1, downsample)]
        self.inplanes = out_planes
        layers += [Bottleneck(out_planes, planes, 1, dilation) for _ in range(1, count)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor):
        x0 = x
        x = self.relu(self.bn1(self.conv1(x)))
        x1 = x
        x = self.layer1(self.maxpool(x))
        x2 = x
        x = self.layer2(x)
        x3 = x
        x4 = self.layer4(self.layer3(x))
        return x4, x3, x2, x1, x0


# ---------------------------------------------------------------------------
# MobileNetV2 (width 1.0, ReLU6), output stride 16
# ---------------------------------------------------------------------------


class ConvBNReLU6(nn.Sequential):
    """conv -> BN -> ReLU6, indexed 0/1/2 like the checkpoint keys expect."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU6(cin, hidden, kernel=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2 features 0..17 with the last stage dilated for output stride 16."""

    # (expansion t, channels c, repeats n, first stride s)
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))
    channels = (320, 32, 24, 16, 6)  # x4, x3, x2, x1, x0

    def __init__(self, in_channels: int = 6):
        super().__init__()
        layers: list[nn.Module] = [ConvBNReLU6(in_channels, 32, stride=2)]
        cin = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.features = nn.Sequential(*layers)
        # Output stride 16 instead of 32: block 14 stops striding and the blocks after it
        # dilate their depthwise conv so the receptive field matches the strided network.
        self.features[14].conv[1][0].stride = (1, 1)
        for block in self.features[15:]:
            block.conv[1][0].dilation = (2, 2)
            block.conv[1][0].padding = (2, 2)

    def forward(self, x: torch.Tensor):
        x0 = x
        x1 = x2 = x3 = x  # reassigned at the taps; initialised so TorchScript sees them defined
        # A flat loop with taps (rather than slicing `features`) keeps the module scriptable.
        for i, block in enumerate(self.features):
            x = block(x)
            if i == 1:
                x1 = x
            elif i == 3:
                x2 = x
            elif i == 6:
                x3 = x
        return x, x3, x2, x1, x0


BACKBONES = ("mobilenetv2", "resnet50", "resnet101")


def make_backbone(name: str) -> nn.Module:
    if name == "mobilenetv2":
        return MobileNetV2Encoder()
    if name in ResNetEncoder.BLOCKS:
        return ResNetEncoder(name)
    raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")
