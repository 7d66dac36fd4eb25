"""How the PCM's (hw x hw) affinity is cut into column blocks, shared by the torch path
(`seam.training.models.seam.pcm`) and the engine (`seam.modelrepo.pcm`).

Column j of the release's affinity needs only column j's own sum, so blocks of columns
are independent and exact; the block width bounds memory at batch * hw * block * 4 bytes
instead of batch * hw^2 * 4 (a 1600x1200 photo at scale 2: 3.6 GB per image dense).
"""
from __future__ import annotations

# affinity bytes per block; the graph holds about two such tensors (relu(g^T q) and a temporary)
PCM_BLOCK_BYTES = 64 << 20


def block_columns(hw: int, batch: int = 1, budget: int = PCM_BLOCK_BYTES) -> int:
    """Columns per block so that a (batch, hw, block) float32 affinity stays within `budget`."""
    return max(1, min(hw, budget // max(1, 4 * hw * batch)))


def pcm_peak_bytes(hw: int, channels: int, dim: int, batch: int = 1, budget: int = PCM_BLOCK_BYTES) -> int:
    """Upper bound of what one blocked PCM holds: two affinity blocks, its inputs and its output."""
    return 2 * 4 * batch * hw * block_columns(hw, batch, budget) + 4 * batch * hw * (2 * channels + 2 * dim)
