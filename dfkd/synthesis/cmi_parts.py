"""CMI's pieces: the two augmented views, the instance features, the projection head, the contrastive loss and
the feature memory bank.

Fang, Song, Wang, Shen, Wang, Song, "Contrastive Model Inversion for Data-Free Knowledge Distillation", IJCAI 2021,
arXiv 2105.08584. Written from ``shared/spec/classic-baselines.md`` §6.1, §6.3, §6.4 (the released code,
zju-vipa/CMI @ 9e79fa9, has no licence: nothing is copied from it); the method itself is ``dfkd.methods.cmi``.

* :func:`reset_model`: the generator initialisation CMI applies at every round (``CMI:contrastive.py:168-176``):
  Conv / Linear weights N(0, 0.02), biases 0; BatchNorm weights N(1, 0.02), biases 0. Drawn from a given
  ``torch.Generator``, so a round's generator depends on its seed only.
* :func:`global_view` / :func:`local_view`: the two views of every synthesis step (``CMI:contrastive.py:244-257``,
  kornia there, torch ops here), each image with its own random parameters drawn from a ``torch.Generator``:
  global = RandomCrop(S, padding 4, zero fill) + horizontal flip (p ½); local = RandomResizedCrop(S, scale
  (0.25, 1), ratio (¾, 4⁄3)) + horizontal flip, resampled bilinearly.
* :class:`InstanceMeans`: per instance the spatial mean of the *inputs* of the hooked modules, concatenated:
  f(x) = [mean_HW(in_1) | … | mean_HW(in_L)] (B, D) (``InstanceMeanHook``, ``CMI:datafree/hooks.py:11-17``).
* :class:`ProjectionHead`: Linear(D → D) → ReLU → Linear(D → 256), L2-normalised rows (``MLPHead``).
* :func:`contrastive_loss`: InfoNCE between local and (detached) global projections, §6.1.
* :class:`MemoryBank`: a bounded ring buffer of the raw features [f_local | f_global] of earlier rounds' kept images,
  sampled without replacement from the rows written so far (``CMI:contrastive.py:136-166``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfkd.errors import ConfigError
from dfkd.models.stages import stage_modules

FEATURE_LAYERS = ("bn_inputs", "stage_inputs")


# ---------------------------------------------------------------------------------------------
# the generator's per-round initialisation
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def reset_model(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """CMI's ``reset_model``: Conv/ConvTranspose/Linear weight ~ N(0, 0.02), bias 0; BatchNorm2d weight ~ N(1, 0.02),
    bias 0 (running statistics untouched: the generator runs in train mode). Parameters must be on the CPU."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            m.weight.normal_(0.0, 0.02, generator=generator)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            m.weight.normal_(1.0, 0.02, generator=generator)
            m.bias.zero_()
    return model


# ---------------------------------------------------------------------------------------------
# the two views
# ---------------------------------------------------------------------------------------------
def global_view(x: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Per image: pad by ``padding`` with zeros, crop back to H×W at a random offset, flip horizontally with p ½.

    x (B, C, H, W) in [0, 1]; differentiable in x. The random numbers come from ``generator`` (on the CPU)."""
    b, _, h, w = x.shape
    top = torch.randint(0, 2 * padding + 1, (b,), generator=generator)  # (B,)
    left = torch.randint(0, 2 * padding + 1, (b,), generator=generator)  # (B,)
    flip = torch.rand(b, generator=generator) < 0.5  # (B,)
    rows = top[:, None] + torch.arange(h)  # (B, H) rows of the padded image
    cols = left[:, None] + torch.arange(w)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # the flip folded into the gather
    dev = x.device
    padded = F.pad(x, (padding, padding, padding, padding))  # (B, C, H + 2p, W + 2p)
    out = padded[torch.arange(b, device=dev)[:, None, None], :, rows.to(dev)[:, :, None], cols.to(dev)[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()  # (B, H, W, C) → (B, C, H, W)


def local_view(
    x: Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.25, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    tries: int = 10,
) -> Tensor:
    """Per image: a random box of area ∈ ``scale``·H·W and aspect ∈ ``ratio`` (log-uniform), resized bilinearly to
    H×W, flipped horizontally with p ½ (RandomResizedCrop + RandomHorizontalFlip).

    As torchvision samples a box: up to ``tries`` candidates, the first that fits; none fits → the whole image.
    x (B, C, H, W); differentiable in x. The random numbers come from ``generator`` (on the CPU)."""
    b, c, h, w = x.shape
    area = h * w * torch.empty(b, tries).uniform_(scale[0], scale[1], generator=generator)  # (B, T)
    log_r = torch.empty(b, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)  # (B, T)
    aspect = torch.exp(log_r)  # (B, T)
    cw = torch.sqrt(area * aspect).round()  # (B, T) box width in pixels
    ch = torch.sqrt(area / aspect).round()  # (B, T) box height
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)  # (B, T)
    first = fits.float().argmax(1)  # (B,) first candidate that fits (0 when none does)
    any_fit = fits.any(1)  # (B,)
    bw = torch.where(any_fit, cw.gather(1, first[:, None])[:, 0], torch.full((b,), float(w)))  # (B,)
    bh = torch.where(any_fit, ch.gather(1, first[:, None])[:, 0], torch.full((b,), float(h)))  # (B,)
    u_top, u_left = torch.rand(b, generator=generator), torch.rand(b, generator=generator)  # (B,), (B,)
    top = torch.floor(u_top * (h - bh + 1))  # (B,) integer offsets, box inside the image
    left = torch.floor(u_left * (w - bw + 1))  # (B,)
    flip = torch.rand(b, generator=generator) < 0.5  # (B,)
    # output pixel centre u ∈ (−1, 1) (align_corners False) ↦ input a·u + t, the box [left, left + bw] in pixel edges
    ax, ay = bw / w, bh / h  # (B,), (B,)
    tx, ty = (2 * left + bw) / w - 1, (2 * top + bh) / h - 1  # (B,), (B,)
    theta = torch.zeros(b, 2, 3)  # (B, 2, 3)
    theta[:, 0, 0] = torch.where(flip, -ax, ax)
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = ay
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta.to(x), [b, c, h, w], align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)  # (B, C, H, W)


# ---------------------------------------------------------------------------------------------
# instance features, projection head, contrastive loss
# ---------------------------------------------------------------------------------------------
def feature_modules(teacher: nn.Module, which: str) -> list[nn.Module]:
    """The modules whose inputs define CMI's instance features: ``bn_inputs`` = every BatchNorm2d (CMI's default);
    ``stage_inputs`` = the residual stages (``dfkd.models.stages``; what CMI hard-codes for a ResNet-34 teacher)."""
    if which == "bn_inputs":
        found = [m for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)]
        if not found:
            raise ConfigError(
                f"{type(teacher).__name__} has no BatchNorm2d: set cmi.feature_layers=stage_inputs (and bn_weight=0)"
            )
        return found
    if which == "stage_inputs":
        try:
            return stage_modules(teacher)
        except ConfigError:
            raise ConfigError(
                f"{type(teacher).__name__} has no residual stages (layer<N> / block<N>): set "
                "cmi.feature_layers=bn_inputs"
            ) from None
    raise ConfigError(f"cmi.feature_layers must be one of {', '.join(FEATURE_LAYERS)}, got {which!r}")


class InstanceMeans:
    """Records, at every forward of the hooked modules, the spatial mean of each module's input (B, C_l); ``take()``
    returns their concatenation (B, D) in hook order and forgets them. A context manager: the hooks are removed."""

    def __init__(self, modules: list[nn.Module]):
        self._means: list[Tensor] = []
        self._handles = [m.register_forward_hook(self._hook) for m in modules]

    def _hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        self._means.append(inputs[0].float().mean(dim=(2, 3)))  # (B, C_l)

    def take(self) -> Tensor:
        if not self._means:
            raise RuntimeError("InstanceMeans.take() called before a forward pass of the hooked model")
        out = torch.cat(self._means, dim=1)  # (B, D)
        self._means = []
        return out

    def __enter__(self) -> InstanceMeans:
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


@torch.no_grad()
def feature_dim(teacher: nn.Module, modules: list[nn.Module], size: int, device: torch.device) -> int:
    """D of :class:`InstanceMeans` over ``modules``, probed with one forward of a zero image (teacher in eval mode,
    as CMI probes it, ``CMI:contrastive.py:223-229``)."""
    was_training = teacher.training
    teacher.eval()
    try:
        with InstanceMeans(modules) as means:
            teacher(torch.zeros(1, 3, size, size, device=device))
            return int(means.take().shape[1])
    finally:
        teacher.train(was_training)


class ProjectionHead(nn.Module):
    """CMI's ``MLPHead``: Linear(D → hidden) → ReLU → Linear(hidden → out), then each row L2-normalised."""

    def __init__(self, dim_in: int, dim_hidden: int, dim_out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim_in, dim_hidden), nn.ReLU(), nn.Linear(dim_hidden, dim_out))

    def forward(self, f: Tensor) -> Tensor:
        return F.normalize(self.net(f), dim=1)  # (N, out), unit rows


def contrastive_loss(proj_local: Tensor, proj_global: Tensor, n_current: int, temperature: float) -> Tensor:
    """CMI's contrastive term (§6.1): rows 0..N−1 are this round's instances, rows N..N+K−1 the memory bank's.

        logits_ij = ⟨l_i, sg(g_j)⟩ / τ,   ce_i = −log softmax_j(logits_i)_i
        L_cr = mean_{i<N} ce_i + mean_{i≥N} ce_i   (K > 0),   mean_i ce_i   (K = 0)

    The positive of local view i is global view i; every other current or cached instance's global projection is a
    negative. The global projections are detached (sg): the images get contrastive gradient through the local view
    only. proj_local, proj_global (N + K, d), unit rows."""
    logits = proj_local @ proj_global.detach().T / temperature  # (N + K, N + K)
    ce = F.cross_entropy(logits, torch.arange(len(logits), device=logits.device), reduction="none")  # (N + K,)
    if len(ce) > n_current:
        return ce[:n_current].mean() + ce[n_current:].mean()
    return ce.mean()


# ---------------------------------------------------------------------------------------------
# the memory bank
# ---------------------------------------------------------------------------------------------
class MemoryBank:
    """A ring buffer of at most ``capacity`` feature rows (width ``dim``) on ``device``.

    ``add`` writes rows at the pointer, wrapping round and overwriting the oldest once full; ``sample(k)`` draws
    min(k, rows held) distinct rows, uniformly, from the rows written so far (the filled prefix until the ring has
    wrapped, then the whole ring). ``data`` holds only the rows written so far (it grows up to ``capacity``), and
    the whole state is :meth:`state_dict` (rows, pointer, count), so a resumed run samples the same negatives."""

    def __init__(self, capacity: int, dim: int, device: torch.device | str = "cpu"):
        if capacity < 1:
            raise ConfigError(f"cmi.bank_rows must be a positive integer, got {capacity!r}")
        self.capacity, self.dim, self.device = capacity, dim, torch.device(device)
        self.data = torch.zeros(0, dim, device=self.device)  # (filled, dim)
        self.ptr = 0  # where the next row goes
        self.count = 0  # rows ever written

    def __len__(self) -> int:
        return self.data.shape[0]

    @torch.no_grad()
    def add(self, rows: Tensor) -> None:
        """Append ``rows`` (n, dim) in order, as n single-row writes to the ring would."""
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"MemoryBank rows must be (n, {self.dim}), got {tuple(rows.shape)}")
        rows = rows.detach().to(self.device, torch.float32)
        n = rows.shape[0]
        if n > self.capacity:  # only the last `capacity` rows survive a single write
            skipped = n - self.capacity
            self.ptr, self.count = (self.ptr + skipped) % self.capacity, self.count + skipped
            rows, n = rows[skipped:], self.capacity
        filled = min(self.count + n, self.capacity)
        if filled > len(self):  # grow to the rows that will be held (never past capacity)
            self.data = torch.cat([self.data, self.data.new_zeros(filled - len(self), self.dim)])  # (filled, dim)
        where = (self.ptr + torch.arange(n, device=self.device)) % self.capacity  # (n,)
        self.data[where] = rows
        self.ptr, self.count = (self.ptr + n) % self.capacity, self.count + n

    def sample(self, k: int, generator: torch.Generator) -> Tensor:
        """min(k, len) distinct rows (min(k, len), dim), uniformly without replacement; index draws from
        ``generator`` (CPU)."""
        n = len(self)
        index = torch.randperm(n, generator=generator)[: min(k, n)]  # (k,)
        return self.data[index.to(self.device)]

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.data.to("cpu", copy=True), "ptr": self.ptr, "count": self.count, "capacity": self.capacity}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rows = state["rows"]
        if int(state["capacity"]) != self.capacity or rows.shape[1:] != (self.dim,):
            raise ValueError(
                f"memory bank state of {int(state['capacity'])} × {tuple(rows.shape[1:])} rows does not fit this bank "
                f"({self.capacity} × ({self.dim},)): resume with the run's own cmi.bank_rows and teacher"
            )
        self.data = rows.to(self.device, torch.float32).clone()
        self.ptr, self.count = int(state["ptr"]), int(state["count"])
