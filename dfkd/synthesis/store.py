"""Sharded, crash-safe storage of synthetic images: ``SyntheticStore``.

Synthesis is split into *units* (``c0003-b0007`` = class 3, trajectory batch 7), each with a deterministic
seed. The runner asks the store which units are complete, generates only the others, and writes each unit
as one shard. Layout of a store folder::

    <root>/
      manifest.json                  # format, schema_version, config_hash, meta, created, schema (image shape,
                                     # table columns); after mark_complete(): complete, completed, counts, and
                                     # index: {unit: {images, kept, bytes, sha256}} (what verify() checks)
      shards/
        <unit>.pt                    # one finished unit: torch.save({"schema_version", "unit", "images", "table"})
        .<unit>.<pid>-<token>.tmp    # a shard being written, or left behind by a crash; never read
      info/<unit>.json               # how the unit was made (seconds, rank, host): not content, not in the shard
      states/<unit>.pt               # only for synthesizers whose units depend on earlier ones (an online adversary,
                                     # a memory bank): its state_dict() after generating <unit>, written before the
                                     # unit's shard; only the last completed unit's is kept (save_state, load_state)
      finalize.json                  # artifacts (write_artifact, ARTIFACTS): the method's finalize() scalars,
      shortfall.json                 # PRISM's classes short of their budget, with the styles they dropped
      .lock                          # held by the one process writing the store (writer_lock)

Nothing else writes into the folder: every file above is written by a method of the store.

``images`` is uint8 (N, C, H, W), the same (C, H, W) for every unit; ``table`` maps column names to tensors
with first dim N or lists of N str/int/float: ``label`` (int64, required), ``kept`` (bool, all True when not
given), and by convention ``seed`` (int64), ``prompt`` (list of str). The **score columns** (``SCORE_COLUMNS``,
made by :func:`teacher_scores` from the teacher's logits on each image exactly as stored; the runner writes them
with every unit, PRISM's filter, the diagnosis and the report read them):

    teacher_logits      float32 (N, K)   the teacher's logits
    teacher_pred        int64 (N,)       their argmax
    teacher_confidence  float32 (N,)     max softmax probability
    teacher_energy      float32 (N,)     free energy −logsumexp f(x) at T = 1 (lower: more in-distribution)

Crash safety: a shard is serialised to a temporary file in ``shards/`` (the same file system), flushed and
fsync'ed, then ``os.replace``d to ``<unit>.pt`` and the folder is fsync'ed. ``os.replace`` is atomic, so
``<unit>.pt`` either does not exist or is the whole, durable shard; a crash at any moment loses at most the
unit in flight and leaves only a temporary file, which ``completed_units`` never counts (its name differs)
and a later write removes (that unit's leftovers at once, anyone's after ``STALE_TMP_SECONDS``). Completion
*is* the presence of the final name, so a resumed run regenerates exactly the missing units, and writing an
existing unit raises unless ``overwrite=True``: no loss, no duplicates. The manifest is replaced the same way.
Several processes may write disjoint units into one store; one unit must have one writer. A shard's bytes
depend only on its content (torch's archive name is fixed for file objects), so the same units written by
one process or by eight give byte-identical shards; timings and the writer's rank live in ``info/``.

Verification: a complete store lists every unit's image count, shard size and sha256 in its manifest.
``verify()`` checks presence and sizes (cheap: one ``stat`` per shard) and, with ``digests=True``, the sha256 of
every shard; ``reopen(problems)`` moves damaged shards aside (``<unit>.pt.damaged``) and marks the store
incomplete, so a resumed synthesis writes exactly those units again.

Shards use torch's zipfile format and are read with ``torch.load(..., weights_only=True, mmap=True)``, so the
KD data loader neither decodes images nor reads the whole store into memory (``dataset()``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from dfkd.errors import UserError
from dfkd.hashing import canonicalize, file_digest
from dfkd.paths import TMP_SUFFIX, atomic_write_text, atomic_writer, file_lock

SCHEMA_VERSION = 1
FORMAT = "dfkd.SyntheticStore"
MANIFEST_NAME = "manifest.json"
SHARDS_DIR = "shards"
INFO_DIR = "info"
SHARD_SUFFIX = ".pt"
STALE_TMP_SECONDS = 600.0  # a temporary file lives for one torch.save; older ones are crash leftovers
MAX_OPEN_SHARDS = 256  # memory-mapped shards a dataset keeps open per process (LRU)
STATES_DIR = "states"
LOCK_NAME = ".lock"
# the files a store keeps besides its manifest, shards and info (write_artifact): name → what it holds
ARTIFACTS: Mapping[str, str] = {
    "finalize.json": "the method's finalize() scalars, reused when a later run finds the store complete",
    "shortfall.json": "PRISM: per class short of its budget, how far, and the styles the filter dropped",
}
# the score columns of every unit (module docstring): what the teacher thinks of each stored image
TEACHER_LOGITS, TEACHER_PRED = "teacher_logits", "teacher_pred"
TEACHER_CONFIDENCE, TEACHER_ENERGY = "teacher_confidence", "teacher_energy"
SCORE_COLUMNS = (TEACHER_LOGITS, TEACHER_PRED, TEACHER_CONFIDENCE, TEACHER_ENERGY)

_UNIT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_LIST_ITEM_TYPES = (str, int, float, bool, type(None))
_PNG_MODES = {1: "L", 3: "RGB", 4: "RGBA"}

Table = dict[str, "Tensor | list"]


def teacher_scores(logits: Tensor) -> dict[str, Tensor]:
    """The score columns (``SCORE_COLUMNS``) of the teacher's logits (N, K) on a unit's images as stored."""
    from dfkd.metrics.energy import free_energy

    logits = logits.float()  # (N, K)
    return {
        TEACHER_LOGITS: logits,
        TEACHER_PRED: logits.argmax(1),  # (N,)
        TEACHER_CONFIDENCE: logits.softmax(1).max(1).values,  # (N,)
        TEACHER_ENERGY: free_energy(logits),  # (N,) −logsumexp f(x), T = 1
    }


class IncompleteStoreError(UserError):
    """``mark_complete`` found expected units missing: resume the synthesis to write them."""


def to_uint8(x: Tensor) -> Tensor:
    """uint8 images from uint8 (returned as is) or float in [0, 1]: ``(x*255).round().clamp(0, 255)``.

    Rounding is half-to-even (``torch.round``), computed in at least float32: 0.5 → 128, 1.0 → 255,
    -0.1 → 0, 1.2 → 255. NaN raises ``ValueError`` rather than becoming a silent black pixel.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point in [0, 1], got {x.dtype}")
    x = x.detach()
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    if torch.isnan(x).any():
        raise ValueError("images contain NaN; the generator or decoder diverged (check the synthesis hyper-parameters)")
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


class SyntheticStore:
    """Sharded uint8 images + per-image table + manifest, in one folder (see the module docstring).

    Create or resume with ``SyntheticStore.open(root, config_hash=...)``; read a finished store without
    knowing its hash with ``SyntheticStore.open_existing(root)``. Reads go over the units in sorted id order,
    so zero-pad unit ids (``c0003-b0007``) to make that order the natural one.
    """

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        """Use ``open`` or ``open_existing``; this does no checking."""
        self.root = root
        self.manifest = manifest
        self._info_cache: dict[str, tuple[int, Tensor]] = {}  # unit -> (N, kept (N,) bool)

    # -- opening --------------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, root: str | os.PathLike[str], *, config_hash: str, meta: dict | None = None) -> SyntheticStore:
        """Create ``root`` (manifest.json + shards/) or resume it if it holds the same ``config_hash``.

        ``meta`` (JSON-able: dataclasses, paths, tuples are converted) is recorded on creation only.
        A folder holding another synthesis, or a non-empty folder that is not a store, raises ``UserError``.
        """
        if not isinstance(config_hash, str) or not config_hash:
            raise ValueError(f"config_hash must be a non-empty string, got {config_hash!r}")
        root = Path(root).expanduser()
        path = root / MANIFEST_NAME
        if path.exists():
            manifest = _read_manifest(path)
            found = manifest.get("config_hash")
            if found != config_hash:
                raise UserError(
                    f"{root} holds another synthesis (config hash {found}, this one is {config_hash}); "
                    "delete it or choose another folder"
                )
        else:
            if root.exists():
                if not root.is_dir():
                    raise UserError(f"{root} is a file, not a synthetic store folder; choose another path")
                others = sorted(p.name for p in root.iterdir() if not _is_tmp_name(p.name))
                if others:
                    raise UserError(
                        f"{root} is not empty ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}) and has "
                        f"no {MANIFEST_NAME}, so it is not a synthetic store; choose a new or empty folder"
                    )
            root.mkdir(parents=True, exist_ok=True)
            manifest = {
                "format": FORMAT,
                "schema_version": SCHEMA_VERSION,
                "config_hash": config_hash,
                "meta": canonicalize(meta or {}),
                "created": _now(),
                "complete": False,
            }
            atomic_write_text(path, _dump_json(manifest), durable=True)
        (root / SHARDS_DIR).mkdir(exist_ok=True)
        _remove_tmp_files(root, older_than=STALE_TMP_SECONDS)  # manifest temporaries left by a crash
        return cls(root, manifest)

    @classmethod
    def open_existing(cls, root: str | os.PathLike[str]) -> SyntheticStore:
        """Open a store for reading (or resuming) without checking its config hash."""
        root = Path(root).expanduser()
        path = root / MANIFEST_NAME
        if not path.exists():
            raise UserError(f"{root} is not a synthetic store (no {MANIFEST_NAME}); run the synthesis first")
        return cls(root, _read_manifest(path))

    # -- state ----------------------------------------------------------------------------------------------------

    @property
    def shards_dir(self) -> Path:
        return self.root / SHARDS_DIR

    @property
    def config_hash(self) -> str:
        return self.manifest["config_hash"]

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) shared by all units, or None before the first write."""
        schema = self.manifest.get("schema")
        return tuple(schema["image_shape"]) if schema else None

    @property
    def is_complete(self) -> bool:
        """True once ``mark_complete`` has checked every expected unit is present."""
        return bool(self.manifest.get("complete", False))

    def completed_units(self) -> set[str]:
        """Ids of units whose shard is on disk; a shard is complete by construction (atomic rename)."""
        out: set[str] = set()
        try:
            entries = os.scandir(self.shards_dir)
        except FileNotFoundError:
            return out
        with entries:
            for entry in entries:
                name = entry.name
                if name.endswith(SHARD_SUFFIX) and not name.startswith("."):
                    unit = name[: -len(SHARD_SUFFIX)]
                    if _UNIT_RE.fullmatch(unit):
                        out.add(unit)
        return out

    def has_unit(self, unit_id: str) -> bool:
        return self._shard_path(unit_id).is_file()

    def units(self) -> list[str]:
        """Completed unit ids, sorted: the order of every read."""
        return sorted(self.completed_units())

    def num_images(self, kept_only: bool = True) -> int:
        counts = self.manifest.get("counts") if self.is_complete else None
        if counts:
            return int(counts["kept" if kept_only else "images"])
        return sum(self._count(unit, kept_only) for unit in self.units())

    # -- writing --------------------------------------------------------------------------------------------------

    def write_unit(
        self,
        unit_id: str,
        images: Tensor,
        table: Mapping[str, Any],
        *,
        info: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        """Write one unit as one shard, atomically (temporary file, fsync, ``os.replace``).

        ``images``: uint8 (N, C, H, W) or float in [0, 1] (converted by ``to_uint8``). ``table``: column →
        tensor with first dim N or list of N str/int/float/bool/None; ``label`` (integer (N,)) is required,
        ``kept`` (bool (N,)) defaults to all True, ``seed`` is stored as int64 and ``teacher_logits`` as
        float32 (N, K). Every unit of a store must have the same image shape and the same columns.
        An existing unit raises ``FileExistsError`` unless ``overwrite=True``. ``info`` (JSON-able: seconds,
        rank, …) is written to ``info/<unit>.json`` after the shard; it is not part of the content.
        """
        _check_unit_id(unit_id)
        if self.is_complete:
            raise UserError(
                f"synthetic store {self.root} is marked complete and takes no more units; "
                "delete it or choose another folder"
            )
        final = self._shard_path(unit_id)
        if not overwrite and final.exists():
            raise FileExistsError(
                f"unit {unit_id!r} is already in {self.root}; units are written once (overwrite=True replaces it)"
            )
        imgs = _prepare_images(images)  # (N, C, H, W) uint8, CPU, own storage
        tbl = _prepare_table(table, imgs.shape[0])
        self._check_schema(unit_id, _schema_of(imgs, tbl))

        _remove_tmp_files(self.shards_dir, unit_id=unit_id, older_than=STALE_TMP_SECONDS)
        payload = {"schema_version": SCHEMA_VERSION, "unit": unit_id, "images": imgs, "table": tbl}
        with atomic_writer(final, durable=True, tmp_stem=unit_id) as f:  # ".<unit>.<pid>-<token>.tmp"
            torch.save(payload, f)
        self._info_cache.pop(unit_id, None)
        if info is not None:
            (self.root / INFO_DIR).mkdir(exist_ok=True)
            atomic_write_text(self.root / INFO_DIR / f"{unit_id}.json", _dump_json(dict(info)), durable=True)

    # -- the synthesizer's state (units that depend on earlier units: an online adversary, a memory bank) -------
    def state_path(self, unit_id: str) -> Path:
        return self.root / STATES_DIR / f"{unit_id}.pt"

    def save_state(self, unit_id: str, state: Mapping[str, Any]) -> None:
        """Write ``Synthesizer.state_dict()`` as it is after generating ``unit_id``, atomically and durably, *before*
        the unit's shard. A resumed synthesis loads the state of the last unit whose shard exists: a kill between
        the two writes leaves the unit missing and its state unused, so the unit is regenerated from the state before
        it — exactly what an uninterrupted synthesis did."""
        _check_unit_id(unit_id)
        with atomic_writer(self.state_path(unit_id), durable=True) as f:
            torch.save(dict(state), f)

    def load_state(self, unit_id: str) -> dict[str, Any] | None:
        """The state saved with ``unit_id``, or None when there is none."""
        path = self.state_path(unit_id)
        return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None

    def prune_states(self, keep: str) -> None:
        """Remove every saved state but ``keep``'s (called once ``keep``'s shard is written: the others are older)."""
        folder = self.root / STATES_DIR
        for path in folder.glob("*.pt") if folder.is_dir() else ():
            if path.stem != keep:
                path.unlink(missing_ok=True)

    # -- artifacts: the store's other files, written through it -----------------------------------------------
    def artifact_path(self, name: str) -> Path:
        """Where artifact ``name`` (one of ``ARTIFACTS``) lives."""
        if name not in ARTIFACTS:
            raise ValueError(f"unknown store artifact {name!r}; the store keeps {', '.join(ARTIFACTS)} (ARTIFACTS)")
        return self.root / name

    def write_artifact(self, name: str, obj: Any) -> Path:
        """Write artifact ``name`` as JSON (atomically); ``None`` removes it (e.g. no class fell short)."""
        path = self.artifact_path(name)
        if obj is None:
            path.unlink(missing_ok=True)
            return path
        return atomic_write_text(path, json.dumps(obj, indent=1) + "\n")

    def read_artifact(self, name: str) -> Any:
        """Artifact ``name`` as written, or None when the store has none."""
        path = self.artifact_path(name)
        return json.loads(path.read_text()) if path.is_file() else None

    def writer_lock(self, on_wait: Callable[[str], None] | None = None) -> contextlib.AbstractContextManager:
        """The store's file lock: the one process synthesizing into it holds it; another run that needs the same
        store waits (``on_wait`` is told once), then finds it complete."""
        return file_lock(self.root / LOCK_NAME, "writing this synthetic store", on_wait)

    def unit_info(self) -> dict[str, dict[str, Any]]:
        """``{unit: info}`` for the units written with an ``info`` (see ``write_unit``)."""
        folder = self.root / INFO_DIR
        if not folder.is_dir():
            return {}
        return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}

    def unit_size(self, unit_id: str) -> int:
        """Number of images (kept or not) in one unit."""
        return self._count(unit_id, kept_only=False)

    def set_kept(self, unit_id: str, kept: Tensor) -> None:
        """Rewrite one unit's ``kept`` column (bool (N,)), atomically; for filters that rank a whole class."""
        payload = torch.load(self._shard_path(unit_id), map_location="cpu", weights_only=True)
        table = dict(payload["table"])
        kept = torch.as_tensor(kept, dtype=torch.bool).cpu()
        if kept.shape != table["kept"].shape:
            raise ValueError(f"unit {unit_id!r} has {table['kept'].shape[0]} images, got {kept.shape[0]} kept flags")
        if torch.equal(kept, table["kept"]):
            return
        table["kept"] = kept
        self.write_unit(unit_id, payload["images"], table, overwrite=True)

    def mark_complete(self, expected_units: Collection[str]) -> None:
        """Check that exactly ``expected_units`` are on disk, then record ``complete: true`` + counts.

        Missing units raise ``IncompleteStoreError`` (resume to write them); units that were not expected
        raise ``UserError``. Removes leftover temporary files. Idempotent.
        """
        expected = set(expected_units)
        for unit in expected:
            _check_unit_id(unit)
        done = self.completed_units()
        missing, extra = sorted(expected - done), sorted(done - expected)
        if missing:
            raise IncompleteStoreError(
                f"synthetic store {self.root} is missing {len(missing)} of {len(expected)} units "
                f"({_preview(missing)}); resume the synthesis to write them"
            )
        if extra:
            raise UserError(
                f"synthetic store {self.root} holds {len(extra)} units that were not expected ({_preview(extra)}); "
                "it was written by another plan: delete it or choose another folder"
            )
        _remove_tmp_files(self.shards_dir)
        units = sorted(done)
        on_disk = _read_manifest(self.root / MANIFEST_NAME)  # another process may have written the schema
        self.manifest["schema"] = self.manifest.get("schema") or on_disk.get("schema")
        index = {
            u: {
                "images": self._count(u, kept_only=False),
                "kept": self._count(u, kept_only=True),
                "bytes": self._shard_path(u).stat().st_size,
                "sha256": file_digest(self._shard_path(u), 64),
            }
            for u in units
        }
        self.manifest.update(
            complete=True,
            completed=_now(),
            counts={
                "units": len(units),
                "images": sum(e["images"] for e in index.values()),
                "kept": sum(e["kept"] for e in index.values()),
            },
            index=index,
        )
        self._write_manifest()

    def verify(self, digests: bool = False) -> list[str]:
        """What is wrong with a complete store (empty: intact): a unit of its index missing, a shard of another
        size, an unexpected shard, and with ``digests`` a shard whose sha256 differs. Incomplete stores and stores
        completed before the index existed report nothing (their units are checked as they are written)."""
        index = self.manifest.get("index")
        if not self.is_complete or not index:
            return []
        problems = []
        for unit, entry in index.items():
            path = self._shard_path(unit)
            if not path.is_file():
                problems.append(f"{unit}: shard missing")
            elif path.stat().st_size != entry["bytes"]:
                problems.append(f"{unit}: shard is {path.stat().st_size} bytes, {entry['bytes']} when written")
            elif digests and file_digest(path, 64) != entry["sha256"]:
                problems.append(f"{unit}: shard content differs from what was written (sha256)")
        problems += [f"{u}: shard not in the index" for u in sorted(self.completed_units() - set(index))]
        return problems

    def reopen(self, problems: Sequence[str]) -> None:
        """After ``verify`` found ``problems``: move the damaged shards aside (``<unit>.pt.damaged``) and mark the
        store incomplete, so resuming its synthesis regenerates exactly them."""
        for unit in {p.split(":", 1)[0] for p in problems}:
            path = self._shard_path(unit)
            if path.is_file():
                os.replace(path, path.with_name(path.name + ".damaged"))
            self._info_cache.pop(unit, None)
        for key in ("complete", "completed", "counts", "index"):
            self.manifest.pop(key, None)
        self.manifest["complete"] = False
        self._write_manifest()

    # -- reading --------------------------------------------------------------------------------------------------

    def read_table(self, kept_only: bool = False) -> Table:
        """All units' tables concatenated in sorted unit order (tensors ``cat``, lists joined)."""
        units = self.units()
        if not units:
            return self._empty_table()
        parts: dict[str, list] = {}
        for unit in units:
            tbl = self._load(unit)["table"]
            if parts and set(tbl) != set(parts):
                raise ValueError(f"unit {unit!r} has columns {sorted(tbl)}, other units have {sorted(parts)}")
            mask = tbl["kept"] if kept_only else None
            for name, col in tbl.items():
                parts.setdefault(name, []).append(_select(col, mask))
        return {
            name: torch.cat(cols) if isinstance(cols[0], Tensor) else [v for c in cols for v in c]
            for name, cols in parts.items()
        }

    def iter_units(self, kept_only: bool = True) -> Iterator[tuple[str, Tensor, Table]]:
        """``(unit id, uint8 images (n, C, H, W), table)`` per unit in sorted order, one shard in memory at a time
        (exports of ImageNet-sized stores); ``kept_only`` keeps the images the method's filter kept."""
        for unit in self.units():
            shard = self._load(unit)
            mask = shard["table"]["kept"] if kept_only else None
            images = shard["images"][mask] if mask is not None else shard["images"]
            yield unit, images, {name: _select(col, mask) for name, col in shard["table"].items()}

    def images(self, kept_only: bool = True) -> Tensor:
        """All images as one in-memory uint8 (N, C, H, W) tensor in sorted unit order.

        Loads the whole store: fine for CIFAR-sized sets, large for ImageNet-sized ones; prefer ``dataset()``.
        """
        units = self.units()
        shape = self.image_shape or (0, 0, 0)
        total = sum(self._count(u, kept_only) for u in units)
        out = torch.empty((total, *shape), dtype=torch.uint8)  # (N, C, H, W)
        pos = 0
        for unit in units:
            shard = self._load(unit)
            imgs = shard["images"]
            if kept_only:
                imgs = imgs[shard["table"]["kept"]]
            out[pos : pos + imgs.shape[0]] = imgs
            pos += imgs.shape[0]
        return out

    def dataset(
        self,
        transform: Callable[[Tensor], Any] | None = None,
        kept_only: bool = True,
        units: Collection[str] | None = None,
    ) -> StoreDataset:
        """A map-style dataset of ``(x, label, index)`` over memory-mapped shards.

        ``x`` is ``transform(img)`` for the uint8 (C, H, W) image, or the image itself; ``index`` is the
        position in ``read_table(kept_only)`` order (with ``units``, in the order of the units kept). Safe with
        DataLoader workers (each maps shards itself). ``units``: only these stored units (e.g. the units before
        a given one, so that what an online adversary trains on does not depend on when a run was resumed).
        """
        units = [u for u in self.units() if units is None or u in units]
        unit_of, local, labels = [], [], []
        for i, unit in enumerate(units):
            tbl = self._load(unit)["table"]
            n, kept = self._info(unit)
            idx = kept.nonzero().flatten() if kept_only else torch.arange(n)  # (M,)
            unit_of.append(torch.full((idx.numel(),), i, dtype=torch.int32))
            local.append(idx)
            labels.append(tbl["label"][idx].clone())
        return StoreDataset(
            [str(self._shard_path(u)) for u in units],
            torch.cat(unit_of) if unit_of else torch.empty(0, dtype=torch.int32),
            torch.cat(local) if local else torch.empty(0, dtype=torch.int64),
            torch.cat(labels) if labels else torch.empty(0, dtype=torch.int64),
            transform,
        )

    def export_imagefolder(
        self, out_dir: str | os.PathLike[str], class_names: Sequence[str] | None = None, kept_only: bool = True
    ) -> int:
        """Write PNGs to ``out_dir/<label:03d>[_<class name>]/<unit>_<i>.png``; returns how many.

        ``i`` is the image's index within its unit. Labels are zero-padded (3 digits, more past 999) so folder
        order is label order, and torchvision's ``ImageFolder`` indices equal labels as long as every class
        has at least one image (classes without images get no folder). Needs 1, 3 or 4 channels.
        """
        from PIL import Image

        units = self.units()
        if not units:
            return 0
        shape = self.image_shape
        if shape is None or shape[0] not in _PNG_MODES:
            raise ValueError(f"PNG export needs 1, 3 or 4 channels, this store's images are (C, H, W) = {shape}")
        max_label = max(int(lbl.max()) if (lbl := self._load(u)["table"]["label"]).numel() else 0 for u in units)
        names = list(class_names) if class_names is not None else None
        if names is not None and max_label >= len(names):
            raise ValueError(f"class_names has {len(names)} names but the store has label {max_label}")
        width = max(3, len(str(max_label)))
        out = Path(out_dir).expanduser()
        count = 0
        made: set[Path] = set()
        for unit in units:
            shard = self._load(unit)
            imgs, labels, kept = shard["images"], shard["table"]["label"], shard["table"]["kept"]
            for i in range(imgs.shape[0]):
                if kept_only and not bool(kept[i]):
                    continue
                label = int(labels[i])
                folder = out / (f"{label:0{width}d}" + (f"_{_sanitise(names[label])}" if names is not None else ""))
                if folder not in made:
                    folder.mkdir(parents=True, exist_ok=True)
                    made.add(folder)
                arr = imgs[i].permute(1, 2, 0).contiguous().numpy()  # (H, W, C)
                if shape[0] == 1:
                    arr = arr[:, :, 0]  # (H, W)
                # PIL infers the mode from the array: L, RGB or RGBA
                Image.fromarray(arr).save(folder / f"{unit}_{i}.png", format="PNG")
                count += 1
        return count

    def summary(self) -> dict[str, Any]:
        """Counts for humans and run records: images (kept / total), units, per-class counts, shape, bytes."""
        units = self.units()
        kept_total = images_total = 0
        per_kept: dict[int, int] = {}
        per_total: dict[int, int] = {}
        for unit in units:
            tbl = self._load(unit)["table"]
            labels, kept = tbl["label"], tbl["kept"]
            images_total += labels.numel()
            kept_total += int(kept.sum())
            for label, c in zip(*torch.unique(labels, return_counts=True)):
                per_total[int(label)] = per_total.get(int(label), 0) + int(c)
            for label, c in zip(*torch.unique(labels[kept], return_counts=True)):
                per_kept[int(label)] = per_kept.get(int(label), 0) + int(c)
        size = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        return {
            "root": str(self.root),
            "config_hash": self.config_hash,
            "complete": self.is_complete,
            "units": len(units),
            "images": {"kept": kept_total, "total": images_total},
            "per_class_kept": dict(sorted(per_kept.items())),
            "per_class_total": dict(sorted(per_total.items())),
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "bytes_on_disk": size,
        }

    def __repr__(self) -> str:
        return f"SyntheticStore({str(self.root)!r}, config_hash={self.config_hash!r}, complete={self.is_complete})"

    # -- internals ------------------------------------------------------------------------------------------------

    def _shard_path(self, unit_id: str) -> Path:
        _check_unit_id(unit_id)
        return self.shards_dir / f"{unit_id}{SHARD_SUFFIX}"

    def _load(self, unit_id: str) -> dict[str, Any]:
        return _load_shard(self._shard_path(unit_id))

    def _info(self, unit_id: str) -> tuple[int, Tensor]:
        if unit_id not in self._info_cache:
            shard = self._load(unit_id)
            self._info_cache[unit_id] = (int(shard["images"].shape[0]), shard["table"]["kept"].clone())
        return self._info_cache[unit_id]

    def _count(self, unit_id: str, kept_only: bool) -> int:
        n, kept = self._info(unit_id)
        return int(kept.sum()) if kept_only else n

    def _write_manifest(self) -> None:
        atomic_write_text(self.root / MANIFEST_NAME, _dump_json(self.manifest), durable=True)

    def _check_schema(self, unit_id: str, schema: dict[str, Any]) -> None:
        """All units share image shape and columns; the first unit written (or rewritten alone) sets them."""
        recorded = self.manifest.get("schema")
        if recorded is None or not (self.completed_units() - {unit_id}):
            if recorded != schema:
                self.manifest["schema"] = schema
                self._write_manifest()
            return
        if recorded["image_shape"] != schema["image_shape"]:
            raise ValueError(
                f"unit {unit_id!r} has images of shape (C, H, W) = {tuple(schema['image_shape'])} but store "
                f"{self.root} holds {tuple(recorded['image_shape'])}; all units of a store share one image shape"
            )
        if recorded["columns"] != schema["columns"]:
            have, want = schema["columns"], recorded["columns"]
            problems = [f"missing {k!r}" for k in sorted(set(want) - set(have))]
            problems += [f"unexpected {k!r}" for k in sorted(set(have) - set(want))]
            problems += [
                f"{k!r} is {have[k]} not {want[k]}" for k in sorted(set(have) & set(want)) if have[k] != want[k]
            ]
            raise ValueError(f"unit {unit_id!r} has other table columns than the store's units: {'; '.join(problems)}")

    def _empty_table(self) -> Table:
        schema = self.manifest.get("schema")
        columns = schema["columns"] if schema else {"label": _tensor_spec("int64"), "kept": _tensor_spec("bool")}
        return {
            name: torch.empty((0, *spec["shape"]), dtype=getattr(torch, spec["dtype"]))
            if spec["kind"] == "tensor"
            else []
            for name, spec in columns.items()
        }


class StoreDataset(Dataset):
    """``(x, label, index)`` items read from memory-mapped shards; made by ``SyntheticStore.dataset``.

    Holds only shard paths and index tensors, so it pickles cheaply into DataLoader workers; each
    process maps the shards it touches (at most ``MAX_OPEN_SHARDS`` at once). ``targets`` holds the labels.
    """

    def __init__(
        self,
        paths: list[str],
        unit_of: Tensor,
        local: Tensor,
        labels: Tensor,
        transform: Callable[[Tensor], Any] | None = None,
    ) -> None:
        self.paths = paths
        self.unit_of = unit_of  # (N,) int32: which shard
        self.local = local  # (N,) int64: row in that shard
        self.targets = labels  # (N,) int64
        self.transform = transform
        self._open: OrderedDict[int, Tensor] = OrderedDict()  # shard -> mmapped images

    def __len__(self) -> int:
        return int(self.targets.numel())

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        images = self._images(int(self.unit_of[index]))
        x = images[int(self.local[index])].clone()  # (C, H, W) uint8, detached from the mmap
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.targets[index]), index

    def _images(self, shard: int) -> Tensor:
        images = self._open.get(shard)
        if images is None:
            images = _load_shard(Path(self.paths[shard]))["images"]
            self._open[shard] = images
            if len(self._open) > MAX_OPEN_SHARDS:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(shard)
        return images

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()  # never ship mapped tensors to workers
        return state


# -- helpers ----------------------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def _check_unit_id(unit_id: str) -> None:
    if not isinstance(unit_id, str) or not _UNIT_RE.fullmatch(unit_id):
        raise ValueError(
            f"unit id {unit_id!r} must be 1-200 characters of letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (e.g. 'c0003-b0007')"
        )


def _is_tmp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def _preview(items: list[str], k: int = 5) -> str:
    return ", ".join(items[:k]) + (f", ... {len(items) - k} more" if len(items) > k else "")


def _sanitise(name: str) -> str:
    """A class name as a portable folder-name part: runs of other characters become '_'."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", str(name)).strip("._-") or "class"


def _remove_tmp_files(folder: Path, *, unit_id: str | None = None, older_than: float | None = None) -> None:
    """Remove temporary files: all of them, or those of ``unit_id`` plus those older than ``older_than`` s."""
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for entry in entries:
        if not _is_tmp_name(entry.name):
            continue
        stem = entry.name[1 : -len(TMP_SUFFIX)].rsplit(".", 1)[0]  # ".<unit>.<pid>-<token>.tmp" -> "<unit>"
        with contextlib.suppress(FileNotFoundError):
            if older_than is None or stem == unit_id or now - entry.stat().st_mtime > older_than:
                os.unlink(entry.path)


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path} cannot be read ({e}); delete the store folder and synthesise again") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{path} is not a synthetic store manifest; choose another folder")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise UserError(
            f"{path} has store schema_version {version}, this dfkd reads up to {SCHEMA_VERSION}; upgrade dfkd-bench"
        )
    return manifest


def _load_shard(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # a shard is whole by construction, so this is disk damage or a foreign file
        raise UserError(f"shard {path} cannot be read ({e}); delete it and resume the synthesis to rewrite it") from e


def _prepare_images(images: Tensor) -> Tensor:
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        # clone: torch.save would write a view's whole underlying storage
        return images.detach().cpu().clone(memory_format=torch.contiguous_format)
    return to_uint8(images).cpu().contiguous()


def _prepare_table(table: Mapping[str, Any], n: int) -> dict[str, Tensor | list]:
    if not isinstance(table, Mapping):
        raise TypeError(f"table must be a mapping of column name -> tensor or list, got {type(table).__name__}")
    if "label" not in table:
        raise ValueError("the table needs a 'label' column (integer class index per image)")
    out: dict[str, Tensor | list] = {}
    for name, col in table.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"table column names must be non-empty strings, got {name!r}")
        if isinstance(col, Tensor):
            if col.dim() == 0 or col.shape[0] != n:
                raise ValueError(f"column {name!r} has shape {tuple(col.shape)}; its first dim must be N = {n}")
            out[name] = col.detach().cpu().clone(memory_format=torch.contiguous_format)
        elif isinstance(col, (list, tuple)):
            if len(col) != n:
                raise ValueError(f"column {name!r} has {len(col)} entries; expected N = {n}")
            for v in col:
                if not isinstance(v, _LIST_ITEM_TYPES):
                    raise TypeError(
                        f"column {name!r}: list entries must be str, int, float, bool or None, got "
                        f"{type(v).__name__}; pass numeric arrays as a tensor"
                    )
            out[name] = list(col)
        else:
            raise TypeError(
                f"column {name!r} must be a tensor with first dim N or a list of N values, got {type(col).__name__}"
            )
    out["label"] = _int_column(out["label"], "label")
    if bool((out["label"] < 0).any()):
        raise ValueError("column 'label' must hold class indices >= 0")
    if "seed" in out:
        out["seed"] = _int_column(out["seed"], "seed")
    out["kept"] = _bool_column(out["kept"]) if "kept" in out else torch.ones(n, dtype=torch.bool)
    if "teacher_logits" in out:
        logits = out["teacher_logits"]
        if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.dim() != 2:
            raise TypeError("column 'teacher_logits' must be a float tensor (N, K)")
        out["teacher_logits"] = logits.float()
    return out


def _int_column(col: Tensor | list, name: str) -> Tensor:
    if isinstance(col, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in col):
            raise TypeError(f"column {name!r} must hold integers")
        return torch.tensor(col, dtype=torch.int64)
    if col.is_floating_point() or col.is_complex() or col.dtype == torch.bool or col.dim() != 1:
        raise TypeError(f"column {name!r} must be an integer tensor (N,), got {col.dtype} {tuple(col.shape)}")
    return col.to(torch.int64)


def _bool_column(col: Tensor | list) -> Tensor:
    if isinstance(col, list):
        if not all(isinstance(v, bool) for v in col):
            raise TypeError("column 'kept' must hold booleans")
        return torch.tensor(col, dtype=torch.bool)
    if col.dtype != torch.bool or col.dim() != 1:
        raise TypeError(f"column 'kept' must be a bool tensor (N,), got {col.dtype} {tuple(col.shape)}")
    return col


def _tensor_spec(dtype: str, shape: Sequence[int] = ()) -> dict[str, Any]:
    return {"kind": "tensor", "dtype": dtype, "shape": list(shape)}


def _schema_of(images: Tensor, table: Mapping[str, Tensor | list]) -> dict[str, Any]:
    columns = {
        name: _tensor_spec(str(col.dtype).removeprefix("torch."), col.shape[1:])
        if isinstance(col, Tensor)
        else {"kind": "list"}
        for name, col in table.items()
    }
    return {"image_shape": list(images.shape[1:]), "columns": dict(sorted(columns.items()))}


def _select(col: Tensor | list, mask: Tensor | None) -> Tensor | list:
    if mask is None:
        return col
    if isinstance(col, Tensor):
        return col[mask]
    return [v for v, keep in zip(col, mask.tolist()) if keep]
