"""The difficulty router: a tiny MobileNet-style CNN predicting, per level, "this level is right".

Input is the same preprocessed tensor the levels get (``[B, 3, S, S]``); the router average-
pools it to ``input_size`` itself, so the runtime preprocesses each image once. Output is
``[B, levels]`` probabilities (sigmoid inside the module, so exported artifacts emit them).

Example::

    >>> import torch
    >>> from athe.variants import get_variant
    >>> from athe.training.router import build_router
    >>> router = build_router(get_variant("athe-mini")).eval()
    >>> router(torch.randn(1, 3, 32, 32)).shape
    torch.Size([1, 3])
"""

from __future__ import annotations

import torch
from torch import nn

from athe.variants import Variant

#: MobileNetV1 widths/strides at width 1.0 after the stem (32 channels).
_MOBILENET_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2))


def _conv_bn(c_in: int, c_out: int, stride: int, groups: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out), nn.ReLU6(inplace=True))


class RouterCNN(nn.Module):
    """Depthwise-separable CNN: ``[B, 3, S, S]`` -> per-level correctness probabilities ``[B, L]``."""

    def __init__(self, num_levels: int, image_size: int, input_size: int, width: float = 0.25) -> None:
        super().__init__()
        if image_size % input_size:
            raise ValueError(f"router input_size {input_size} must divide the image size {image_size}")
        self.pool = image_size // input_size
        self.image_size, self.input_size = image_size, input_size

        def w(c: int) -> int:
            return max(8, int(c * width))

        stem_stride = 1 if input_size <= 32 else 2
        layers: list[nn.Module] = [_conv_bn(3, w(32), stem_stride)]
        c = w(32)
        for c_out, stride in _MOBILENET_BLOCKS:
            layers += [_conv_bn(c, c, stride, groups=c), _conv_bn(c, w(c_out), 1, k=1)]
            c = w(c_out)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_levels)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool > 1:
            x = nn.functional.avg_pool2d(x, self.pool)
        x = self.features(x)
        x = x.mean(dim=(2, 3))
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))

    def get_example_inputs(self) -> tuple[torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        return (torch.randn(1, 3, self.image_size, self.image_size, generator=gen),)


def build_router(variant: Variant) -> RouterCNN:
    if variant.router is None:
        raise ValueError(f"variant {variant.name!r} has no router")
    return RouterCNN(len(variant.levels), variant.backbone.img_size, variant.router.input_size,
                     variant.router.width)


def router_macs(router: RouterCNN) -> int:
    """MACs of one image through the router (convs + classifier), measured with hooks."""
    total = 0

    def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            total += out.numel() // out.shape[0] * (mod.in_channels // mod.groups) * k
        elif isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in router.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = router.training
    router.eval()
    with torch.no_grad():
        router(router.get_example_inputs()[0])
    router.train(was_training)
    for h in handles:
        h.remove()
    return total


class RouterExport(nn.Module):
    """The router for export: BatchNorm folded into the convs, global mean as avg_pool2d."""

    def __init__(self, router: RouterCNN) -> None:
        super().__init__()
        import copy

        from torch.nn.utils.fusion import fuse_conv_bn_eval

        router = copy.deepcopy(router).eval()
        fused: list[nn.Module] = []
        for block in router.features:
            conv, bn, act = block.children()
            assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)  # _conv_bn's layout
            fused += [fuse_conv_bn_eval(conv, bn), act]
        self.features = nn.Sequential(*fused)
        self.classifier = router.classifier
        self.pool = router.pool
        self.image_size = router.image_size
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool > 1:
            x = nn.functional.avg_pool2d(x, self.pool)
        x = self.features(x)
        x = nn.functional.avg_pool2d(x, (x.shape[2], x.shape[3]))  # 4-D mean, delegated
        return torch.sigmoid(self.classifier(x.reshape(x.shape[0], -1)))

    def get_example_inputs(self) -> tuple[torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        return (torch.randn(1, 3, self.image_size, self.image_size, generator=gen),)
