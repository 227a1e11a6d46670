"""A small CNN image classifier (digits): served by Classify, and the export step's judge.

Read top to bottom: config, the model (two conv stages, a feature layer, the class head),
then the spec. The serving graph returns logits; the worker turns them into probabilities.
`features` (the penultimate layer) is what generation metrics compare (the FID recipe with
an MNIST classifier instead of Inception).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genserve.export.core.layers import example_images
from genserve.export.core.spec import GraphSpec, ModelSpec
from genserve.protocol import Loop


@dataclass
class CNNConfig:
    num_classes: int = 10
    widths: tuple[int, ...] = (32, 64)  # channels of the conv stages; each stage halves H and W
    features: int = 128  # width of the feature layer the generation metrics use
    channels: int = 1
    height: int = 28
    width: int = 28

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)  # a config read back from JSON has a list


class CNNClassifier(nn.Module):
    """image (B, C, H, W) in [0, 1] -> logits (B, K); conv3x3 + ReLU + 2x2 max-pool per stage."""

    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        fan_in, height, width = config.channels, config.height, config.width
        for fan_out in config.widths:
            layers += [nn.Conv2d(fan_in, fan_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            fan_in, height, width = fan_out, height // 2, width // 2
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.feature = nn.Linear(fan_in * height * width, config.features)
        self.head = nn.Linear(config.features, config.num_classes)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        return F.relu(self.feature(self.body(image)))  # (B, features)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image))  # (B, K) logits

    def loss(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self(image), label)  # nats per image


def cnn_graphs(model: nn.Module) -> dict[str, GraphSpec]:
    """Serving graph "model": image -> logits (softmax happens in the worker)."""
    return {"model": GraphSpec(model, example_images(model.config), ("logits",))}


CNN_SPEC = ModelSpec(
    kind="cnn_classifier",
    loop=Loop.IMAGE_CLASSIFIER.value,
    config_class=CNNConfig,
    build=CNNClassifier,
    graphs=cnn_graphs,
    description="small CNN image classifier; serves image -> logits (the worker applies softmax)",
)
