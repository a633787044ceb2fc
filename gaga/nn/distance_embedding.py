"""EDM's optional sinusoidal embedding of interatomic distances (`sin_embedding`, off by default).

Maps a squared distance d^2 to [sin(w_k d), cos(w_k d)] for geometrically spaced frequencies w_k.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalDistanceEmbedding(nn.Module):
    r"""Features :math:`[\sin(2\pi d / \lambda_k), \cos(2\pi d / \lambda_k)]_k` of :math:`d = \sqrt{d^2 + 10^{-8}}`.

    Wavelengths :math:`\lambda_k = \text{max\_res} / \text{div\_factor}^k` run from `max_res` down to about
    `min_res` (EDM: 15 A to 15/2000 A in factors of 4, i.e. 6 frequencies and 12 features). EDM detaches the
    output, so no gradient flows back into the coordinates through it; this does the same.
    """

    def __init__(self, max_res: float = 15.0, min_res: float = 15.0 / 2000.0, div_factor: float = 4.0):
        super().__init__()
        num_frequencies = int(math.log(max_res / min_res, div_factor)) + 1
        frequencies = 2 * math.pi * div_factor ** torch.arange(num_frequencies, dtype=torch.float32) / max_res
        self.register_buffer("frequencies", frequencies, persistent=False)

    @property
    def dim(self) -> int:
        return 2 * self.frequencies.numel()

    def forward(self, sq_dist: torch.Tensor) -> torch.Tensor:
        phase = torch.sqrt(sq_dist + 1e-8) * self.frequencies
        return torch.cat([phase.sin(), phase.cos()], dim=-1).detach()
