"""Writing decode caches (conv states, SSM states) by row index without a host sync."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def write_rows(cache: torch.Tensor, rows: torch.Tensor, new: torch.Tensor) -> None:
    """cache[rows[i]] = new[i] where rows[i] >= 0; a row index below 0 (a padded batch entry) writes nothing.

    Why not `cache[rows[valid]] = new[valid]`: boolean-mask indexing runs nonzero(), which waits for the
    GPU, and CUDA-graph capture (mamba-ssm's generate(cg=True)) refuses that. Here a padded entry rewrites
    what the first valid entry writes (the same value twice), or, with none valid, its row's own value.
    """
    import torch

    valid = rows >= 0
    source = torch.where(valid, torch.arange(rows.shape[0], device=rows.device),
                         torch.argmax(valid.to(torch.int32)))
    target = rows.clamp(min=0)[source]
    keep = valid[source].view(-1, *([1] * (new.dim() - 1)))
    cache[target] = torch.where(keep, new[source].to(cache.dtype), cache[target])
