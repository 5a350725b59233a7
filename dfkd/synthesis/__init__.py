"""Synthesis of training images for data-free KD: storage (``dfkd.synthesis.store``) and backends.

Kept deliberately light: importing ``dfkd.synthesis`` must not import diffusers or transformers,
so submodules are imported by whoever needs them (``from dfkd.synthesis.store import SyntheticStore``).
"""
