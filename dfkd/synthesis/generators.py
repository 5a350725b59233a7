"""Generator networks of the generator-in-the-loop baselines (DAFL, ZSKT, DFAD, DFQ), from their layouts.

Written from the layouts in the community benchmark (CMI pack, ``datafree/models/generator.py:12-69``) and the
original DAFL / DFAD code (``DAFL-train.py:54-86``, ``network/gan.py:12-44``) as described in
``shared/spec/classic-baselines.md`` §1.5; ``nz`` is the latent size, ``ngf = 64``, ``init = size / 4``, every
upsampling is nearest ×2. No custom initialisation (PyTorch defaults), as in all of them.

* ``small``  (CMI ``Generator``):      Linear(nz→2·ngf·init²) → BN → Up → Conv(2ngf→2ngf) → BN → LReLU(0.2)
                                        → Up → Conv(2ngf→ngf) → BN → LReLU → Conv(ngf→3, bias) → Sigmoid
* ``large``  (CMI ``LargeGenerator``): the same with 4·ngf channels first (Conv 4ngf→2ngf → 2ngf→ngf)
* ``dafl``   (DAFL / DFAD originals):  ``small`` with biased convs, BN eps ``eps`` (DAFL's 0.8 quirk: the
                                        second positional argument of BatchNorm2d is eps) and Tanh → BN(3, affine=False)
                                        instead of Sigmoid: its output is already in the teacher's normalised space.

``small`` and ``large`` output images in [0, 1] (``normalised = False``); ``dafl`` normalised images.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

GENERATORS = ("small", "large", "dafl")


class ConvGenerator(nn.Module):
    """z (B, nz) → images (B, 3, size, size); see the module docstring for the three layouts."""

    def __init__(self, layout: str = "large", nz: int = 256, size: int = 32, ngf: int = 64, eps: float = 1e-5):
        super().__init__()
        if layout not in GENERATORS:
            raise ValueError(f"generator layout must be one of {', '.join(GENERATORS)}, got {layout!r}")
        if size % 4:
            raise ValueError(f"generator image size must be a multiple of 4, got {size}")
        self.layout, self.nz, self.init = layout, nz, size // 4
        first = 4 * ngf if layout == "large" else 2 * ngf
        bias = layout == "dafl"
        self.project = nn.Linear(nz, first * self.init**2)
        self.body = nn.Sequential(
            nn.BatchNorm2d(first),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(first, 2 * ngf, 3, padding=1, bias=bias),
            nn.BatchNorm2d(2 * ngf, eps=eps),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, ngf, 3, padding=1, bias=bias),
            nn.BatchNorm2d(ngf, eps=eps),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ngf, 3, 3, padding=1),
        )
        self.out = nn.Sequential(nn.Tanh(), nn.BatchNorm2d(3, affine=False)) if layout == "dafl" else nn.Sigmoid()

    @property
    def normalised(self) -> bool:
        """True when the output is already in the teacher's normalised space (the DAFL layout)."""
        return self.layout == "dafl"

    def forward(self, z: Tensor) -> Tensor:
        h = self.project(z.flatten(1)).view(z.shape[0], -1, self.init, self.init)  # (B, C0, S/4, S/4)
        return self.out(self.body(h))  # (B, 3, S, S)


def latent(batch: int, nz: int, seed: int, device: torch.device) -> Tensor:
    """z ~ N(0, I) of shape (batch, nz), drawn from its own seed (so a step's batch does not depend on history)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, nz, generator=g).to(device)
