"""A classifier's predictions over a loader: the one loop that evaluation (``dfkd.distill.trainer.evaluate``), the
shifted test sets (``dfkd.benchmark.dg``) and the diagnosis (``dfkd.benchmark.diagnose``) share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader


@dataclass(frozen=True)
class Predictions:
    top: Tensor  # (N, k) int64 class indices, best first, in loader order (CPU)
    targets: Tensor  # (N,) int64 labels in loader order (CPU)

    @property
    def pred(self) -> Tensor:
        """The argmax (N,)."""
        return self.top[:, 0]

    def correct(self, k: int = 1) -> int:
        """How many targets are among the first ``k`` predictions."""
        return int((self.top[:, :k] == self.targets[:, None]).any(dim=1).sum())


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    *,
    topk: int = 1,
    class_subset: Sequence[int] | None = None,
    on_batch: Callable[[Tensor, int], None] | None = None,
) -> Predictions:
    """``model``'s top-``topk`` classes (at most the number of logits) for every item of ``loader``, in eval mode (its
    mode is restored afterwards). Items are ``(x, y, …)``.

    ``class_subset``: rank only those logits and map the positions back to global labels (a shifted set that covers
    some of the classes, e.g. ImageNet-R's 200). ``on_batch(x, start)``: called with each input batch as loaded and the
    index of its first item, for work on the same batches (features of chosen images)."""
    was_training = model.training
    model.eval()
    subset = torch.as_tensor(list(class_subset), dtype=torch.long, device=device) if class_subset else None
    tops, targets, start = [], [], 0
    try:
        for batch in loader:
            x, y = batch[0], batch[1]
            if on_batch is not None:
                on_batch(x, start)
            start += len(x)
            logits = model(x.to(device, non_blocking=True)).float()  # (B, K)
            if subset is not None:
                logits = logits.index_select(1, subset)  # (B, |subset|)
            if topk == 1:  # argmax: the first of equal logits, as everywhere else
                top = logits.argmax(dim=1, keepdim=True)  # (B, 1) positions
            else:
                top = logits.topk(min(topk, logits.shape[1]), dim=1).indices  # (B, k) positions
            if subset is not None:
                top = subset[top]  # positions in the subset → global labels
            tops.append(top.cpu())
            targets.append(torch.as_tensor(y, dtype=torch.long))
    finally:
        model.train(was_training)
    if not tops:
        return Predictions(torch.empty(0, max(1, topk), dtype=torch.long), torch.empty(0, dtype=torch.long))
    return Predictions(torch.cat(tops), torch.cat(targets))
