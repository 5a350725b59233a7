"""Read, check and write model weights.

* :func:`read_state_dict` — safe load (``weights_only=True``) of the community format
  ``{'state_dict': ...}`` (other entries ignored), ``{'model': ...}`` or a raw state_dict; a
  ``module.`` (DataParallel) and/or ``_orig_mod.`` (torch.compile) prefix shared by *all* keys is
  stripped once.
* :func:`load_weights` — compares keys and shapes *before* ``load_state_dict`` and raises a
  :class:`~dfkd.errors.CheckpointError` of a few lines that says what differs and what to do.
* :func:`save_weights` — atomic ``{'state_dict': ..., **meta}`` write.
* :func:`key_digest` — the spec's machine check of key sets (cifar-archs.md §2): sha256 over
  the sorted lines ``f"{key} {tuple(shape)}"`` joined by ``\\n``, first 16 hex digits.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dfkd.errors import CheckpointError, one_line
from dfkd.models import list_models
from dfkd.paths import atomic_writer
from dfkd.registry import MODELS

__all__ = ["key_digest", "load_weights", "read_state_dict", "save_weights"]

_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DistributedDataParallel, torch.compile
_SHOW = 5  # keys shown per category in mismatch messages


def key_digest(state_dict: Mapping[str, Any] | nn.Module) -> str:
    """First 16 hex digits of sha256 over sorted ``"<key> <tuple(shape)>"`` lines (spec §2)."""
    if isinstance(state_dict, nn.Module):
        state_dict = state_dict.state_dict()
    lines = sorted(f"{k} {tuple(v.shape)}" for k, v in state_dict.items())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def _strip_prefixes(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop a ``module.`` and/or ``_orig_mod.`` prefix (each at most once) shared by every key."""
    sd = dict(state_dict)
    stripped: set[str] = set()
    while sd:
        prefix = next((p for p in _PREFIXES if p not in stripped and all(k.startswith(p) for k in sd)), None)
        if prefix is None:
            break
        stripped.add(prefix)
        sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Load a checkpoint file safely and return its state_dict (CPU tensors, prefixes stripped)."""
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise CheckpointError(f"Checkpoint {path} {what}; check the path (teachers: see `bench teacher --help`)")
    if path.suffix == ".safetensors":  # tensors only, by design: nothing to refuse, nothing to execute
        from safetensors.torch import load_file

        try:
            return _extract_state_dict(load_file(path, device="cpu"), str(path))
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"{path} is not a safetensors file ({one_line(e, with_type=True)})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if re.search(r"unsupported global", text, re.IGNORECASE):  # torch ≤ 2.5 "Unsupported global", 2.14 "GLOBAL"
            name = re.search(r"GLOBAL\s+(\S+?)[:\s]", text + " ", re.IGNORECASE)
            raise CheckpointError(
                f"Checkpoint {path} holds Python objects ({name.group(1) if name else 'a pickled global'}) that "
                "would run code when loaded; they were not loaded or executed. Fix: re-save only its weights: "
                "torch.save({'state_dict': model.state_dict()}, path)"
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        reason = detail.group(1).strip() if detail else one_line(e, with_type=True)
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({reason}); point to a .pth/.pt file") from None
    except Exception as e:
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint ({one_line(e, with_type=True)}); point to a .pth/.pt file"
        ) from None
    return _extract_state_dict(obj, str(path))


def _extract_state_dict(obj: Any, source: str) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for entry in ("state_dict", "model", "student"):  # "student": a checkpoint of this suite's trainer
            if entry in obj and isinstance(obj[entry], Mapping):
                obj = obj[entry]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        found = f"a dict with entries {', '.join(map(str, list(obj)[:6]))}" if isinstance(obj, Mapping) else type(obj)
        raise CheckpointError(
            f"{source} has no 'state_dict' or 'model' entry and is not a state_dict itself ({found}); "
            "save weights with dfkd.models.checkpoint.save_weights or torch.save({'state_dict': ...})"
        )
    return _strip_prefixes(obj)


def _head_name(model: nn.Module) -> str | None:
    """Module name of the classifier head: the last ``nn.Linear`` in registration order."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _guess_architecture(state_dict: Mapping[str, Tensor]) -> str | None:
    """Registered model whose key digest equals the checkpoint's (built on the meta device; cheap)."""
    target = key_digest(state_dict)
    for name in list_models():
        if not MODELS.target_path(name).startswith("dfkd.models."):
            continue
        try:
            builder = MODELS.get(name)
            with torch.device("meta"):
                probe = builder(num_classes=10)
                head = _head_name(probe)
                w = state_dict.get(f"{head}.weight") if head else None
                if w is not None and w.ndim == 2 and w.shape[0] != 10:
                    probe = builder(num_classes=int(w.shape[0]))
        except Exception:  # a plugin model that cannot be built like this: not a candidate
            continue
        if key_digest(probe.state_dict()) == target:
            return name
    return None


def _mismatch_message(
    model: nn.Module,
    source: str,
    missing: list[str],
    unexpected: list[str],
    shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
    model_sd: Mapping[str, Tensor],
    ckpt: Mapping[str, Tensor],
) -> str:
    def listing(keys: list[str]) -> str:
        more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
        return ", ".join(keys[:_SHOW]) + more

    def plural(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    lines = [f"Checkpoint {source} does not match the model ({type(model).__name__}):"]
    if missing:
        lines.append(f"  {plural(len(missing), 'missing key')}: {listing(missing)}")
    if unexpected:
        lines.append(f"  {plural(len(unexpected), 'unexpected key')}: {listing(unexpected)}")
    if shapes:
        lines.append(f"  {len(shapes)} shape mismatch{'' if len(shapes) == 1 else 'es'}:")
        lines += [f"    {k}: checkpoint {c} vs model {m}" for k, c, m in shapes[:_SHOW]]
        if len(shapes) > _SHOW:
            lines.append(f"    (+{len(shapes) - _SHOW} more)")
    head = _head_name(model)
    head_keys = {f"{head}.weight", f"{head}.bias"} if head else set()
    if not missing and not unexpected and shapes and {k for k, _, _ in shapes} <= head_keys:
        ck_nc, model_nc = ckpt[f"{head}.weight"].shape[0], model_sd[f"{head}.weight"].shape[0]
        lines.append(f"  hint: the checkpoint has {ck_nc} classes, the model {model_nc}: wrong --dataset?")
    else:
        arch = _guess_architecture(ckpt)
        if arch is not None:
            lines.append(
                f"  hint: the checkpoint's keys match the registered architecture '{arch}' "
                f"(key digest {key_digest(ckpt)}): build that one (e.g. --set teacher_arch={arch})"
            )
        elif len(missing) + len(unexpected) + len(shapes) > len(model_sd) // 2:
            lines.append("  hint: the key sets differ a lot: is this checkpoint for another architecture?")
    return "\n".join(lines)


def load_weights(
    model: nn.Module,
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Tensor],
    *,
    strict: bool = True,
    source: str | None = None,
) -> Any:
    """Check ``path_or_state_dict`` against ``model`` and load it; returns ``load_state_dict``'s result.

    Keys and shapes are compared first. Shape mismatches always raise; missing / unexpected keys
    raise when ``strict``. A missing ``*.num_batches_tracked`` is tolerated (old checkpoints;
    BatchNorm fills it in). ``source`` names the checkpoint in messages (default: the path).
    """
    if isinstance(path_or_state_dict, Mapping):
        ckpt = _extract_state_dict(path_or_state_dict, source or "the state_dict")
        source = source or "(state_dict)"
    else:
        source = source or str(path_or_state_dict)
        ckpt = read_state_dict(path_or_state_dict)
    model_sd = model.state_dict()
    missing = [k for k in model_sd if k not in ckpt and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in ckpt if k not in model_sd]
    shapes = [
        (k, _shape(v), _shape(model_sd[k])) for k, v in ckpt.items() if k in model_sd and v.shape != model_sd[k].shape
    ]
    if shapes or (strict and (missing or unexpected)):
        if not strict:
            missing, unexpected = [], []  # tolerated: only the shapes are the problem
        raise CheckpointError(_mismatch_message(model, source, missing, unexpected, shapes, model_sd, ckpt))
    return model.load_state_dict(ckpt, strict=strict)


def _check_meta(value: Any, where: str) -> None:
    if value is None or isinstance(value, (str, int, float, bool)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_meta(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"save_weights: meta key {where}[{k!r}] must be a str or int")
            _check_meta(v, f"{where}[{k!r}]")
        return
    raise TypeError(
        f"save_weights: meta {where} is a {type(value).__name__}; use str/int/float/bool/None/list/dict "
        "so that torch.load(weights_only=True) can read it"
    )


def save_weights(
    model_or_state_dict: nn.Module | Mapping[str, Tensor], path: str | os.PathLike[str], **meta: Any
) -> Path:
    """Write ``{'state_dict': ..., **meta}`` atomically (temp file beside ``path``, then ``os.replace``).

    Tensors are detached and moved to the CPU; a ``torch.compile`` wrapper is unwrapped so keys
    carry no ``_orig_mod.``. ``meta`` values must be plain data (str/int/float/bool/None/list/dict).
    Parent directories are created. Returns the path.
    """
    if "state_dict" in meta:
        raise TypeError("save_weights: 'state_dict' is reserved; pass the weights as the first argument")
    for k, v in meta.items():
        _check_meta(v, k)
    if isinstance(model_or_state_dict, nn.Module):
        model = getattr(model_or_state_dict, "_orig_mod", model_or_state_dict)
        state_dict: Mapping[str, Tensor] = model.state_dict()
    else:
        state_dict = model_or_state_dict
    payload = {"state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}, **meta}
    path = Path(path).expanduser()
    with atomic_writer(path, durable=True) as f:  # created with the umask's permissions: a shared cache stays readable
        torch.save(payload, f)
    return path
