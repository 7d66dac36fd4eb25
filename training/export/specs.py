"""What each model kind exports: the graph (a thin module over the trained network)
and its output names. The graphs stop at the output stride: every upsampling,
flip and aggregation happens in the shared numpy code (`seam.common.cam`), so the
service and the torch path post-process identically.

A kind is exportable when its network module exists (`seam.training.models.registry`
imports them lazily); its contract is checked at export time (output count, rank,
channels, stride-8 size) before the onnxruntime parity check.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from seam.training.models.seam import pcm_block, pcm_features
from torch import nn

from seam.common.cam import stride_size
from seam.modelrepo.manifest import KIND_OUTPUTS


def _seam_outputs(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The network's cam, the PCM's normalised CAM and its L2-normalised embedding at stride 8."""
    cam, cam_norm, f = net.pcm_inputs(x)
    B, _, h, w = cam.shape
    g = pcm_features(f, net.f9)
    return cam, cam_norm, g.view(B, g.shape[1], h, w)


def _single_output(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor]:
    """The first output of a network that may return several."""
    out = net(x)
    return (out[0] if isinstance(out, (tuple, list)) else out,)


class SeamGraph(nn.Module):
    """image (B, 3, H, W) -> cam (B, C, h8, w8), pcm_n (B, C, h8, w8), pcm_g (B, D, h8, w8).

    Stops before the PCM's (hw x hw) product: `pcm_n` is the PCM's normalised CAM and
    `pcm_g` its L2-normalised embedding; `PcmGraph` finishes the job in column blocks
    so that memory is O(hw * block). A caller that wants only the raw CAM fetches `cam`
    and never pays for the affinities.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return _seam_outputs(self.net, image)


class PcmGraph(nn.Module):
    """One column block of the PCM: pcm_n (B, C, N), pcm_g (B, D, N), pcm_q (B, D, M) ->
    cam_rv (B, C, M), where pcm_q holds columns of pcm_g (`seam.training.models.seam.pcm_block`)."""

    def forward(self, pcm_n: torch.Tensor, pcm_g: torch.Tensor, pcm_q: torch.Tensor) -> torch.Tensor:
        return pcm_block(pcm_n, pcm_g, pcm_q)


class SingleOutputGraph(nn.Module):
    """image -> net(image): AffinityNet (stride-8 features) and DeepLab (stride-8 logits)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return _single_output(self.net, image)[0]


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
        for name, t, c in zip(self.outputs, outs, self.channels(net), strict=True):
            if t.ndim != 4 or t.shape[0] != x.shape[0] or tuple(t.shape[-2:]) != hw:
                raise ValueError(
                    f"{self.kind} output {name!r} has shape {tuple(t.shape)} for input {tuple(x.shape)}; "
                    f"expected (B, C, {hw[0]}, {hw[1]}) at output stride 8"
                )
            if c is not None and t.shape[1] != c:
                raise ValueError(f"{self.kind} output {name!r} has {t.shape[1]} channels, expected {c}")


SPECS: dict[str, ExportSpec] = {
    "seam": ExportSpec("seam", SeamGraph, _seam_outputs,
                       lambda net: (net.num_classes, net.num_classes, net.f9.out_channels)),
    "affinity": ExportSpec("affinity", SingleOutputGraph, _single_output, lambda net: (None,)),
    "deeplab": ExportSpec("deeplab", SingleOutputGraph, _single_output,
                          lambda net: (getattr(net, "num_classes", None),)),
}
