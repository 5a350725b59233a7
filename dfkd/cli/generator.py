"""bench generator build|show: the pretrained generators the package ships (today: ``glyphs``)."""

from __future__ import annotations

import argparse

from dfkd.cli.common import add_set_option


def add_parser(sub) -> None:
    p = sub.add_parser("generator", help="build or inspect a shipped pretrained generator (glyphs)")
    gsub = p.add_subparsers(dest="generator_verb", metavar="ACTION", required=True)
    b = gsub.add_parser(
        "build",
        help="train a generator from scratch (resumable)",
        description="Train the glyph generator from font renders only (no data set): VAE, then U-Net + text "
        "encoder, then the render classifier that measures caption accuracy, then an evaluation of the saved "
        "folder. Checkpoints go to OUT.build/; rerunning the same command resumes there. "
        "Example: bench generator build glyphs --install-fonts --out dfkd/synthesis/pretrained/glyphs --overwrite",
    )
    b.add_argument("name", choices=["glyphs"], help="which generator")
    b.add_argument("--out", "-o", help="output folder (default <cache>/generators/NAME)")
    b.add_argument("--overwrite", action="store_true", help="replace a finished generator at --out")
    b.add_argument(
        "--install-fonts",
        action="store_true",
        help="apt-get install the Debian font packages of the recipe first (needs root and Debian's archive)",
    )
    add_set_option(b, "override a build setting, e.g. --set unet_steps=8000 --set system_fonts=false")
    s = gsub.add_parser("show", help="print a shipped generator's folder, digest and recipe summary")
    s.add_argument("name", choices=["glyphs"])
    p.set_defaults(func=main)


def _install_fonts() -> None:
    import shutil
    import subprocess

    from dfkd.errors import UserError
    from dfkd.synthesis.glyphs.render import DEBIAN_FONT_PACKAGES

    if shutil.which("apt-get") is None:
        raise UserError("--install-fonts needs apt-get (Debian/Ubuntu). Fix: install the fonts yourself, or drop it")
    cmd = ["apt-get", "install", "-y", "-q", *DEBIAN_FONT_PACKAGES]
    if subprocess.run(cmd, check=False).returncode != 0:
        raise UserError(f"`{' '.join(cmd)}` failed. Fix: run `apt-get update` (as root) first, or drop --install-fonts")


def main(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from dfkd.config import from_dict, merge, nest, parse_set

    if args.generator_verb == "show":
        from dfkd.hashing import folder_digest
        from dfkd.synthesis.diffusion import shipped_path

        folder = shipped_path(args.name)
        recipe = json.loads((folder / "recipe.json").read_text())
        ev = recipe.get("evaluation", {})
        print(f"{args.name}: {folder}")
        print(f"digest {folder_digest(folder)}; {len(recipe['fonts'])} fonts, {len(recipe['charset'])} characters")
        print(
            f"caption accuracy {ev.get('caption_accuracy', float('nan')):.3f} (digits "
            f"{ev.get('caption_accuracy_digits', float('nan')):.3f}, chance {ev.get('chance', float('nan')):.3f}); "
            f"VAE reconstruction PSNR {ev.get('vae_recon_psnr_db', float('nan')):.1f} dB"
        )
        return 0

    from dfkd.paths import cache_dir
    from dfkd.synthesis.glyphs.build import GlyphBuildConfig, build_glyph_generator

    if args.install_fonts:
        _install_fonts()
    tree: dict = {}
    for item in args.sets:
        key, value = parse_set(item)
        tree = merge(tree, nest(key, value))
    cfg = from_dict(GlyphBuildConfig, tree, prefix="")
    out = Path(args.out) if args.out else cache_dir() / "generators" / args.name
    recipe = build_glyph_generator(cfg, out, overwrite=args.overwrite)
    ev = recipe["evaluation"]
    print(
        f"{out}: caption accuracy {ev['caption_accuracy']:.3f} (digits {ev['caption_accuracy_digits']:.3f}, "
        f"chance {ev['chance']:.3f}), VAE PSNR {ev['vae_recon_psnr_db']:.1f} dB, "
        f"{sum(recipe['seconds'].get(k, 0) for k in ('vae', 'diffusion', 'classifier', 'evaluate')):.0f} s"
    )
    return 0
