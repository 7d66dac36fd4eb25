"""What each model kind exports: the graph (a thin module over the trained network)
and its output names. The graphs stop at the output stride: every upsampling,
flip and aggregation happens in the shared numpy code (`seam.common.cam`), so the
service and the torch path post-process identically.

A kind is exportable when its network module exists (`training.models.registry`
imports them lazily); its contract is checked at export time (output count, rank,
channels, stride-8 size) before the onnxruntime parity check.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from seam.common.cam import stride_size
from service.engine.manifest import KIND_OUTPUTS


class SeamGraph(nn.Module):
    """image (B, 3, H, W) -> cam, cam_rv (B, C, h8, w8): `SEAM.forward_stride8`."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.forward_stride8(image)


class SingleOutputGraph(nn.Module):
    """image -> net(image): AffinityNet (stride-8 features) and DeepLab (stride-8 logits)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.net(image)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out


@dataclass(frozen=True)
class ExportSpec:
    kind: str
    graph: Callable[[nn.Module], nn.Module]
    # expected channels of each output given the network (None = any)
    channels: Callable[[nn.Module], tuple[int | None, ...]]

    @property
    def outputs(self) -> tuple[str, ...]:
        return KIND_OUTPUTS[self.kind]

    def check_contract(self, net: nn.Module, x: torch.Tensor, outs: tuple[torch.Tensor, ...]) -> None:
        """Raise ValueError when the network's outputs are not what the engine expects."""
        if len(outs) != len(self.outputs):
            raise ValueError(f"{self.kind} graph returned {len(outs)} outputs, expected {list(self.outputs)}")
        hw = tuple(stride_size(n) for n in x.shape[-2:])
        for name, t, c in zip(self.outputs, outs, self.channels(net)):
            if t.ndim != 4 or t.shape[0] != x.shape[0] or tuple(t.shape[-2:]) != hw:
                raise ValueError(
                    f"{self.kind} output {name!r} has shape {tuple(t.shape)} for input {tuple(x.shape)}; "
                    f"expected (B, C, {hw[0]}, {hw[1]}) at output stride 8"
                )
            if c is not None and t.shape[1] != c:
                raise ValueError(f"{self.kind} output {name!r} has {t.shape[1]} channels, expected {c}")


SPECS: dict[str, ExportSpec] = {
    "seam": ExportSpec("seam", SeamGraph, lambda net: (net.num_classes, net.num_classes)),
    "affinity": ExportSpec("affinity", SingleOutputGraph, lambda net: (None,)),
    "deeplab": ExportSpec("deeplab", SingleOutputGraph, lambda net: (getattr(net, "num_classes", None),)),
}
