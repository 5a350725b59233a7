"""The embedded default's pretrained generator: typeset-glyph renders with attribute captions (``render``) and the
resumable build of an SD-shaped latent diffusion model from them (``build``; ``bench generator build glyphs``).
The shipped result lives in ``dfkd/synthesis/pretrained/glyphs``; see docs/generators/glyphs.md."""
