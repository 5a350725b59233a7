"""NAYER's pieces: the label-text embeddings (LTE) and the noisy-layer generator ``NLGenerator``.

Tran, Le, Le, Harandi, Tran, Phung, "NAYER: Noisy Layer Data Generation for Efficient and Effective Data-free
Knowledge Distillation", CVPR 2024, arXiv 2310.00258. Written from ``shared/spec/classic-baselines.md`` §8.1–§8.2
(the released code, tmtuan1307/NAYER @ c6bedcd, has no licence: nothing is copied from it); the method itself is
``dfkd.methods.nayer``.

* :func:`label_text_embeddings`: the LTE, one row per class, computed ONCE per (data set, text model, weights,
  prompt) with the open_clip text tower (``dfkd.metrics.features.load_open_clip``, the suite's one open_clip loader)
  and cached under ``<cache>/nayer/label-embeddings/`` as a float32 (K, D) tensor file, written atomically, with a
  JSON beside it holding the prompts and the tensor's sha256, both checked on load. Released:
  ``clip.load("ViT-B/32")``, ``model.encode_text`` of ``"a image of " + name`` (``_`` and ``-`` as spaces),
  **not** L2-normalised (``NAYER:label_embedding/label_embedding.py:25-46``); here the same tower through open_clip
  (``ViT-B-32`` / ``openai``), in float32 on the CPU (released: fp16 on the GPU, then ``.float()``).
* ``clip_model="tiny"``: a tiny random-weight open_clip text tower built locally (no download): what the tests and the
  embedded digits preset use, as PRISM's tests and the CLIP metrics' tests do. It gives every class a distinct
  constant code, not CLIP's semantics.
* :class:`NLGenerator` (``NAYER:datafree/models/generator.py:15-80``)::

      e   = BatchNorm1d(D)(LTE[y])                       # (B, D), the batch's class embeddings, normalised
      v_i = Linear_i(D → le_emb_size)(e[i·K:(i+1)·K])    # one "noisy layer" per block of K rows, ⌈B / K⌉ of them
      x   = G(concat_i v_i)                              # the CMI pack's small Generator with nz = le_emb_size

  The noisy layers are re-drawn (weight N(0, 1), bias 0) at the start of every g-loop (:meth:`reinit_noisy`); the
  rest persists until the synthesizer makes a new generator. There is no latent z.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dfkd.datasets.base import DatasetSpec
from dfkd.errors import UserError, one_line
from dfkd.hashing import stable_hash
from dfkd.paths import atomic_write_text, atomic_writer, cache_dir, file_lock, safe_name
from dfkd.synthesis.generators import ConvGenerator

TINY = "tiny"  # clip_model value: the tiny random text tower below
# an open_clip model config small enough to build in well under a second (its vision tower is discarded)
TINY_TEXT_TOWER: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
TINY_SEED = 0  # its random weights come from this seed (the global RNG is left alone)


# ---------------------------------------------------------------------------------------------
# label-text embeddings
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelEmbeddings:
    """The LTE of one data set: ``tensor`` (K, D) float32 on the CPU, row c = class c, and where it is cached."""

    tensor: Tensor  # (K, D)
    prompts: tuple[str, ...]  # the text of each row
    sha256: str  # of the tensor's float32 bytes (row-major)
    path: Path  # the tensor file; its metadata is path.with_suffix(".json")


def class_prompts(spec: DatasetSpec, template: str) -> list[str]:
    """``template`` with ``{name}`` = each class name, ``_`` and ``-`` as spaces (``label_embedding.py:25-33``)."""
    return [template.format(name=n.replace("_", " ").replace("-", " ")) for n in spec.class_names]


def tensor_sha256(t: Tensor) -> str:
    """sha256 of a tensor's float32 values (contiguous, row-major bytes) and nothing else."""
    return hashlib.sha256(t.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


def embeddings_path(spec: DatasetSpec, clip_model: str, clip_pretrained: str | None, prompt: str) -> Path:
    """Where the LTE of (data set, text model, weights, prompt) is cached: ``<cache>/nayer/label-embeddings/``."""
    model = {"tiny": TINY_TEXT_TOWER, "seed": TINY_SEED} if clip_model == TINY else clip_model
    key = {"dataset": spec.name, "classes": list(spec.class_names), "model": model, "pretrained": clip_pretrained}
    key["prompt"] = prompt
    name = clip_model.rsplit("/", 1)[-1].replace(":", "-") if clip_model != TINY else TINY
    return cache_dir() / "nayer" / "label-embeddings" / f"{safe_name(spec.name)}-{name}-{stable_hash(key, 16)}.pt"


def label_text_embeddings(
    spec: DatasetSpec, clip_model: str, clip_pretrained: str | None, prompt: str, *, fix: str = ""
) -> LabelEmbeddings:
    """The LTE (K, D) of ``spec``'s classes: read from the cache when there, else encoded once and cached.

    A cached file whose values or prompts do not match its JSON is refused with a one-line ``UserError`` saying to
    delete it. ``fix``: what the user can do when the text tower cannot be loaded (no weights offline)."""
    path = embeddings_path(spec, clip_model, clip_pretrained, prompt)
    meta_path = path.with_suffix(".json")
    prompts = class_prompts(spec, prompt)
    if path.is_file() and meta_path.is_file():
        return _read_embeddings(path, meta_path, prompts)
    with file_lock(path.with_suffix(".lock"), "encoding NAYER's label-text embeddings"):
        if path.is_file() and meta_path.is_file():  # another process made them while we waited
            return _read_embeddings(path, meta_path, prompts)
        emb = encode_prompts(prompts, clip_model, clip_pretrained, fix=fix)  # (K, D)
        digest = tensor_sha256(emb)
        with atomic_writer(path, durable=True) as f:  # the tensor first: the JSON (its checksum) says it is whole
            torch.save(emb, f)
        meta = {
            "dataset": spec.name,
            "clip_model": clip_model,
            "clip_pretrained": clip_pretrained,
            "prompt": prompt,
            "prompts": prompts,
            "shape": list(emb.shape),
            "dtype": "float32",
            "sha256": digest,
        }
        atomic_write_text(meta_path, json.dumps(meta, indent=1) + "\n", durable=True)
    return LabelEmbeddings(emb, tuple(prompts), digest, path)


def _read_embeddings(path: Path, meta_path: Path, prompts: list[str]) -> LabelEmbeddings:
    delete = f"delete {path} and {meta_path.name} beside it to compute them again"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        emb = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"Cannot read NAYER's cached label-text embeddings ({one_line(e)}): {delete}") from e
    if not isinstance(emb, Tensor) or emb.dtype != torch.float32 or list(emb.shape) != meta.get("shape"):
        raise UserError(f"NAYER's cached label-text embeddings are not a float32 {meta.get('shape')} tensor: {delete}")
    if meta.get("prompts") != prompts:
        raise UserError(
            f"NAYER's cached label-text embeddings were made for other prompts ({prompts[0]!r}, …): {delete}"
        )
    digest = tensor_sha256(emb)
    if digest != meta.get("sha256"):
        raise UserError(
            f"NAYER's cached label-text embeddings fail their sha256 check ({digest[:12]}… ≠ "
            f"{str(meta.get('sha256'))[:12]}…, the file is damaged): {delete}"
        )
    return LabelEmbeddings(emb, tuple(prompts), digest, path)


def tiny_text_tower_dir() -> Path:
    """A ``local-dir:`` folder with the tiny tower's open_clip config and no weights (written once, atomically)."""
    folder = cache_dir() / "nayer" / "tiny-text-tower"
    config = folder / "open_clip_config.json"
    text = json.dumps({"model_cfg": TINY_TEXT_TOWER}, indent=1) + "\n"
    if not config.is_file() or config.read_text(encoding="utf-8") != text:
        atomic_write_text(config, text)
    return folder


def encode_prompts(prompts: list[str], clip_model: str, clip_pretrained: str | None, *, fix: str = "") -> Tensor:
    """open_clip ``encode_text`` of ``prompts``: float32 (K, D) on the CPU, not L2-normalised (as released)."""
    from dfkd.metrics.features import load_open_clip

    if clip_model == TINY:
        name, pretrained, seed = f"local-dir:{tiny_text_tower_dir()}", None, TINY_SEED
    else:
        name, pretrained, seed = clip_model, clip_pretrained, 0
    model, tokenizer = load_open_clip(
        name,
        pretrained,
        "cpu",
        fix=fix or "set nayer.clip_model=tiny for a random text tower (a smoke run, not NAYER's embeddings)",
        purpose=" for NAYER's label-text embeddings",
        seed=seed,
        tokenizer=True,
    )
    with torch.no_grad():
        tokens = tokenizer(prompts)  # (K, context_length)
        emb = model.encode_text(tokens).float()  # (K, D)
    return emb.contiguous()


# ---------------------------------------------------------------------------------------------
# the noisy-layer generator
# ---------------------------------------------------------------------------------------------
class NLGenerator(nn.Module):
    """NAYER's generator (see the module docstring): class labels y (B,) → images (B, 3, S, S) in [0, 1].

    ``embeddings`` (K, D) is a constant, non-persistent buffer (not trained, not in the state dict: it is reloaded
    from its digest-checked cache). ``batch_size`` fixes the number of noisy layers, ⌈batch_size / K⌉."""

    def __init__(
        self, embeddings: Tensor, batch_size: int, le_emb_size: int = 1000, size: int = 32, ngf: int = 64
    ) -> None:
        super().__init__()
        k, d = embeddings.shape
        self.num_classes, self.batch_size = k, batch_size
        self.register_buffer("embeddings", embeddings.detach().float().clone(), persistent=False)  # (K, D)
        self.norm = nn.BatchNorm1d(d)
        self.noisy = nn.ModuleList(nn.Linear(d, le_emb_size) for _ in range(math.ceil(batch_size / k)))
        self.body = ConvGenerator("small", nz=le_emb_size, size=size, ngf=ngf)  # Linear → 128·(S/4)² → convs

    @torch.no_grad()
    def reinit_noisy(self, generator: torch.Generator) -> None:
        """Every noisy layer: weight ~ N(0, 1), bias 0 (``re_init_le``, ``generator.py:52-55``), drawn from
        ``generator`` (a CPU ``torch.Generator``), so the draw does not depend on the global RNG or the device."""
        for layer in self.noisy:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))  # (le_emb_size, D)
            layer.bias.zero_()

    def forward(self, labels: Tensor) -> Tensor:
        if labels.shape[0] > self.batch_size:
            raise ValueError(f"NLGenerator has noisy layers for {self.batch_size} images, got {labels.shape[0]}")
        e = self.norm(self.embeddings[labels])  # (B, D)
        blocks = e.split(self.num_classes)  # ⌈B / K⌉ blocks of ≤ K rows
        v = torch.cat([layer(block) for layer, block in zip(self.noisy, blocks, strict=False)])  # (B, le_emb_size)
        return self.body(v)  # (B, 3, S, S)
