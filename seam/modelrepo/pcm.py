"""The PCM's (hw x hw) product, in column blocks, on onnxruntime.

The SEAM graph stops at the PCM's inputs (`pcm_n`, `pcm_g`); the exported `pcm.onnx`
computes a block of output columns from all pixels and those columns' embeddings
(`seam.training.models.seam.pcm_block`); `seam.common.pcm_blocks` says why that is exact.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

from seam.common.pcm_blocks import PCM_BLOCK_BYTES, block_columns
from seam.modelrepo.manifest import PCM_INPUTS, PCM_OUTPUTS


def run_pcm(session: ort.InferenceSession, pcm_n: np.ndarray, pcm_g: np.ndarray,
            budget: int = PCM_BLOCK_BYTES) -> np.ndarray:
    """cam_rv (B, C, h, w) from pcm_n (B, C, h, w) and pcm_g (B, D, h, w), block by block."""
    B, C, h, w = pcm_n.shape
    hw = h * w
    n = np.ascontiguousarray(pcm_n.reshape(B, C, hw), dtype=np.float32)
    g = np.ascontiguousarray(pcm_g.reshape(B, pcm_g.shape[1], hw), dtype=np.float32)
    step = block_columns(hw, B, budget)
    out = np.empty((B, C, hw), np.float32)
    for i in range(0, hw, step):
        q = np.ascontiguousarray(g[:, :, i:i + step])
        out[:, :, i:i + step] = session.run(list(PCM_OUTPUTS), dict(zip(PCM_INPUTS, (n, g, q), strict=True)))[0]
    return out.reshape(B, C, h, w)
