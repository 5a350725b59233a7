"""Offline CLIP tokenizer: Stable Diffusion v1.x's token ids without a download.

open_clip ships the byte-pair vocabulary of OpenAI CLIP (``bpe_simple_vocab_16e6.txt.gz``), the very
vocabulary that Stable Diffusion v1.x's ``tokenizer/`` folder holds (CLIP ViT-L/14). Built the way
open_clip's ``SimpleTokenizer`` builds it (256 byte symbols, the same with ``</w>``, 48 894 merges,
two specials = 49 408 entries), written out as Hugging Face ``vocab.json`` + ``merges.txt`` with the
specials renamed (open_clip ``<start_of_text>`` / ``<end_of_text>`` → ``<|startoftext|>`` 49406 /
``<|endoftext|>`` 49407, the latter also the padding token), and loaded as a ``transformers``
``CLIPTokenizer``::

    "A realistic photo." → 49406, 320, 16157, 1125, 269, 49407, 49407, ... (77 ids)

The two files are written once into ``<cache>/tokenizers/clip-vit-l-14-bpe`` (atomically: a
temporary folder renamed into place) and reused. Only the tiny test generator uses this; a real
model folder brings its own ``tokenizer/``.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from dfkd.paths import cache_dir, ordinary_permissions

CONTEXT_LENGTH = 77  # CLIP's text context; SD v1.x pads every prompt to it
BOS_TOKEN = "<|startoftext|>"  # id 49406; open_clip: <start_of_text>
EOS_TOKEN = "<|endoftext|>"  # id 49407; open_clip: <end_of_text>; also pad and unk
VOCAB_SIZE = 49408
_NUM_MERGES = 49152 - 256 - 2  # open_clip's SimpleTokenizer keeps merges[1 : 49152 - 256 - 2 + 1]
_FOLDER = "clip-vit-l-14-bpe"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte → printable unicode map (same as ``open_clip.tokenizer.bytes_to_unicode``)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def default_bpe_path() -> Path:
    """The gzipped BPE merge list that open_clip installs with its package."""
    try:
        from open_clip.tokenizer import default_bpe
    except ImportError as exc:  # pragma: no cover - open_clip is a dependency
        raise ImportError("the offline CLIP tokenizer needs open_clip_torch (pip install open_clip_torch)") from exc
    return Path(default_bpe())


def vocab_and_merges(bpe_path: str | os.PathLike | None = None) -> tuple[dict[str, int], list[str]]:
    """Hugging Face ``vocab.json`` dict and ``merges.txt`` lines (without header) from open_clip's BPE file."""
    path = Path(bpe_path) if bpe_path is not None else default_bpe_path()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = lines[1 : _NUM_MERGES + 1]  # line 0 is a version header
    byte_symbols = list(_bytes_to_unicode().values())
    tokens = byte_symbols + [s + "</w>" for s in byte_symbols]
    tokens += ["".join(m.split()) for m in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"{path} gave {len(vocab)} CLIP tokens, expected {VOCAB_SIZE}")
    return vocab, merges


def restricted_vocab_and_merges(texts: list[str], bpe_path: str | os.PathLike | None = None):
    """CLIP's BPE cut down to what ``texts`` need: the 512 byte symbols, the merges that build the tokens of
    ``texts`` (in CLIP's order) and the two specials.

    ``texts`` tokenize exactly as with the full vocabulary (BPE applies the lowest-ranked applicable merge; every
    merge it applies to these words is kept, in the same relative order); any other word still tokenizes, into
    smaller pieces. Ids are renumbered (a model trained with this tokenizer brings its own text encoder).
    """
    full_vocab, merges = vocab_and_merges(bpe_path)
    produced = {"".join(m.split()): m for m in merges}  # token → the merge that makes it
    tokenizer = clip_tokenizer()
    needed: set[str] = set()
    stack = [token for text in texts for token in tokenizer.tokenize(text)]
    while stack:
        token = stack.pop()
        if token not in needed:
            needed.add(token)
            stack.extend(produced[token].split() if token in produced else ())
    kept = [m for m in merges if "".join(m.split()) in needed]
    byte_symbols = list(_bytes_to_unicode().values())
    tokens = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m.split()) for m in kept]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    del full_vocab
    return {tok: i for i, tok in enumerate(tokens)}, kept


def write_tokenizer_files(
    directory: str | os.PathLike,
    bpe_path: str | os.PathLike | None = None,
    vocab_merges: tuple[dict[str, int], list[str]] | None = None,
) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` into ``directory`` (created atomically; reused if present): CLIP's
    full BPE, or the ``(vocab, merges)`` given (e.g. from ``restricted_vocab_and_merges``)."""
    target = Path(directory)
    if (target / "vocab.json").is_file() and (target / "merges.txt").is_file():
        return target
    vocab, merges = vocab_merges or vocab_and_merges(bpe_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with open(tmp / "vocab.json", "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        with open(tmp / "merges.txt", "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
        ordinary_permissions(tmp)  # mkdtemp makes 0700
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race (or a partial folder is in the way)
            if not ((target / "vocab.json").is_file() and (target / "merges.txt").is_file()):
                shutil.rmtree(target, ignore_errors=True)
                os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def tokenizer_dir() -> Path:
    """Where the offline tokenizer files live: ``<cache>/tokenizers/clip-vit-l-14-bpe``."""
    return cache_dir() / "tokenizers" / _FOLDER


@lru_cache(maxsize=4)
def _read_files(directory: str) -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    with open(Path(directory) / "vocab.json", encoding="utf-8") as f:
        vocab = json.load(f)
    with open(Path(directory) / "merges.txt", encoding="utf-8") as f:
        lines = [line for line in f.read().split("\n") if line and not line.startswith("#version")]
    return vocab, tuple(tuple(line.split(" ")) for line in lines)


def clip_tokenizer(directory: str | os.PathLike | None = None):
    """A ``transformers.CLIPTokenizer`` with Stable Diffusion v1.x's ids, built offline (see module doc).

    ``directory`` is where the vocabulary files are cached (default ``tokenizer_dir()``). Each call
    returns a new tokenizer object; the files (and their parsed form) are reused.
    """
    import transformers
    from transformers import CLIPTokenizer

    folder = write_tokenizer_files(directory if directory is not None else tokenizer_dir())
    kwargs = {
        "unk_token": EOS_TOKEN,
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "model_max_length": CONTEXT_LENGTH,
    }
    if int(transformers.__version__.split(".")[0]) >= 5:  # tokenizers-backed class: vocab dict + merge pairs
        vocab, merges = _read_files(str(folder.resolve()))
        tok = CLIPTokenizer(vocab=dict(vocab), merges=list(merges), **kwargs)
    else:  # transformers 4: the slow class reads the two files
        tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), **kwargs)
    tok.name_or_path = str(folder)
    return tok
