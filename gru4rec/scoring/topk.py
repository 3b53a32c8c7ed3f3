"""The exact top k of inner-product scores `h . W + b`, without the full score matrix.

GRU4Rec's scorer answers `top_k` with it; it is the reference a FAISS index is checked against.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gru4rec.network import kernels

BLOCK_FLOATS = 8 * 2**20  # one block of scores: 32 MB in fp32


@torch.inference_mode()
def exact_top_k(
    states: Tensor, weight: Tensor, bias: Tensor, k: int, *, block_floats: int = BLOCK_FLOATS
) -> tuple[Tensor, Tensor]:
    """The k best items by `h . W + b` for each state: (S, k) scores and item indices.

    states: (S, H); weight: (n_items, H); bias: (n_items, 1) or (n_items,). The (S, n_items)
    score matrix is never built: blocks of up to 1,024 states x `block_floats` / rows
    items are scored by one matmul each (big enough to run near the machine's peak), and
    on CPU a one-pass C loop (`kernels.compiled().top_k_rows`) merges each block into the running top k
    while it is still in cache. Elsewhere (GPU, float64) `torch.topk` per block of states.
    Ties: the lower item index first on CPU; in `torch.topk`'s order elsewhere.
    """
    n_states, n_items = states.shape[0], weight.shape[0]
    bias = bias.reshape(-1)
    block_rows = max(1, min(n_states, 1024))
    block_cols = min(n_items, max(1024, block_floats // block_rows))
    values = torch.empty(n_states, k, dtype=states.dtype, device=states.device)
    indices = torch.empty(n_states, k, dtype=torch.int64, device=states.device)
    fused = kernels.compiled() if _contiguous_fp32_cpu(states, weight, bias) else None
    if fused is None:
        block_cols = n_items
    buffer = torch.empty(block_rows * block_cols, dtype=states.dtype, device=states.device)
    for start in range(0, n_states, block_rows):
        stop = min(start + block_rows, n_states)
        for first in range(0, n_items, block_cols):
            last = min(first + block_cols, n_items)
            scores = buffer[: (stop - start) * (last - first)].view(stop - start, last - first)
            torch.addmm(bias[first:last], states[start:stop], weight[first:last].T, out=scores)
            if fused is not None:
                fused.top_k_rows(
                    scores,
                    k,
                    values[start:stop],
                    indices[start:stop],
                    offset=first,
                    merge=first > 0,
                )
            else:
                torch.topk(scores, k, dim=1, out=(values[start:stop], indices[start:stop]))
    return values, indices


def _contiguous_fp32_cpu(*tensors: Tensor) -> bool:
    """Whether the compiled top-k loop can read `tensors`."""
    return all(
        t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors
    )


__all__ = ["BLOCK_FLOATS", "exact_top_k"]
