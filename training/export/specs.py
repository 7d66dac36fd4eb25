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
import torch.nn.functional as F
from torch import nn

from seam.common.cam import stride_size
from service.engine.manifest import KIND_OUTPUTS
from training.models.seam import pcm_normalize


class SeamGraph(nn.Module):
    """image (B, 3, H, W) -> cam, cam_rv (B, C, h8, w8): `SEAM.forward_stride8` with the
    PCM's column normalisation folded into its last product.

    The release computes aff = relu(g^T g) / (colsum + 1e-5), then cam_rv = n @ aff.
    Here [n; 1] @ relu(g^T g) yields n @ A and the column sums in one product and
    the division happens on (C, hw) instead of (hw, hw): the same numbers up to
    summation order (the export's parity check compares with `forward_stride8`
    itself), without the two hw x hw passes that cost onnxruntime half the PCM time
    (a strided ReduceSum and a Div over hw^2 elements).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.net
        d = net.forward_features(image)
        cam = net.fc8(d["conv6"])  # (B, C, h, w); dropout7 is the identity in eval mode
        B, C, h, w = cam.shape
        cam_norm = pcm_normalize(cam)
        f = torch.cat([
            F.interpolate(image, (h, w), mode="bilinear", align_corners=True),
            F.relu(net.f8_3(d["conv4"])),
            F.relu(net.f8_4(d["conv5"])),
        ], dim=1)
        g = net.f9(f).flatten(2)  # (B, D, hw)
        g = g / (torch.norm(g, dim=1, keepdim=True) + 1e-5)
        aff = F.relu(torch.bmm(g.transpose(1, 2), g))  # (B, hw, hw), symmetric, unnormalised
        n1 = torch.cat([cam_norm.flatten(2), torch.ones_like(cam_norm[:, :1].flatten(2))], dim=1)
        prod = torch.bmm(n1, aff)  # (B, C + 1, hw): n @ A and, last, the column sums of A
        cam_rv = prod[:, :C] / (prod[:, C:] + 1e-5)
        return cam, cam_rv.view(B, C, h, w)


def _seam_reference(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(net.forward_stride8(x))


def _single_reference(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    out = net(x)
    return (out[0] if isinstance(out, (tuple, list)) else out,)


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
    # the eager network's own outputs, which the exported graph must reproduce
    reference: Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, ...]]
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
    "seam": ExportSpec("seam", SeamGraph, _seam_reference, lambda net: (net.num_classes, net.num_classes)),
    "affinity": ExportSpec("affinity", SingleOutputGraph, _single_reference, lambda net: (None,)),
    "deeplab": ExportSpec("deeplab", SingleOutputGraph, _single_reference,
                          lambda net: (getattr(net, "num_classes", None),)),
}
