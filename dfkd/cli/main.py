"""``bench``: the command line. One module per verb; heavy imports happen inside each verb.

User errors (:class:`dfkd.errors.UserError`) print one line and exit 1; ``--debug`` shows the
traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

VERBS = {
    "run": "dfkd.cli.run",
    "ls": "dfkd.cli.ls",
    "leaderboard": "dfkd.cli.leaderboard",
    "validate": "dfkd.cli.validate",
    "teacher": "dfkd.cli.teacher",
    "synth": "dfkd.cli.synth",
    "student": "dfkd.cli.student",
    "prompts": "dfkd.cli.prompts",
    "suite": "dfkd.cli.suite",
    "report": "dfkd.cli.report",
    "compare": "dfkd.cli.compare",
    "generator": "dfkd.cli.generator",
    "config": "dfkd.cli.config",
    "env": "dfkd.cli.env",
}


# one or more examples per verb (and sub-verb), shown at the end of its --help
EXAMPLES: dict[str, tuple[str, ...]] = {
    "ls": ("bench ls methods", "bench ls models 'wrn*'", "bench ls datasets"),
    "leaderboard": ("bench leaderboard --runs runs -o results/", "bench leaderboard --runs runs/a runs/b -d cifar10"),
    "teacher": ("bench teacher train --dataset digits --arch resnet20", "bench teacher eval --dataset digits"),
    "teacher train": ("bench teacher train --dataset digits --arch resnet20",),
    "teacher eval": ("bench teacher eval --dataset cifar10 --arch resnet34",),
    "synth": ("bench synth info runs/digits/resnet20-resnet8/diffdfkd/seed0-*",),
    "synth export": (
        "bench synth export runs/digits/resnet20-resnet8/diffdfkd/seed0-* /tmp/images",
        "bench synth export runs/digits/resnet20-resnet8/diffdfkd/seed0-* /tmp/hf --format hf --push-to-hub me/digits",
    ),
    "student": ("bench student export runs/digits/resnet20-resnet8/diffdfkd/seed0-* /tmp/student",),
    "student export": (
        "bench student export runs/digits/resnet20-resnet8/diffdfkd/seed0-* /tmp/student --push-to-hub me/r8-digits",
    ),
    "synth info": ("bench synth info ~/.cache/dfkd/stores/digits/prism/<hash>",),
    "prompts": ("bench prompts --dataset cifar10 --classes cat dog --limit 5", "bench prompts -d digits -o ."),
    "suite": ("bench suite ls", "bench suite run digits --dry-run", "bench suite run cifar-table --shard 0/8"),
    "suite run": ("bench suite run digits", "bench suite run cifar-table --shard 3/8 --dry-run"),
    "suite ls": ("bench suite ls",),
    "report": ("bench report runs/digits/resnet20-resnet8/diffdfkd/seed0-*",),
    "compare": ("bench compare runs/digits/resnet20-resnet8/*/seed0-* -o .",),
    "generator": ("bench generator show glyphs", "bench generator build glyphs -o /tmp/glyphs"),
    "generator build": ("bench generator build glyphs -o /tmp/glyphs",),
    "generator show": ("bench generator show glyphs",),
    "config show": ("bench config show deepinversion", "bench config show distill --dataset cifar10"),
}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written; each option's default shown where it has one and the help does not say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default in (None, False, [], argparse.SUPPRESS)
            or not action.option_strings
            or isinstance(default, bool)
        ):
            return text
        return f"{text} (default: %(default)s)"


def _explain(parser: argparse.ArgumentParser, key: str) -> None:
    """Our formatter and the verb's examples on ``parser`` and its sub-verbs."""
    parser.formatter_class = _HelpFormatter
    if key in EXAMPLES and not (parser.epilog and "example" in parser.epilog):
        parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[key])
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                _explain(child, f"{key} {name}".strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench",
        description="dfkd-bench: run, compare and extend data-free knowledge distillation methods.",
        epilog="start with `bench run` (the embedded default: diffdfkd on digits, CPU, minutes); "
        "`bench VERB --help` shows each verb's options with examples.",
    )
    from dfkd import __version__

    parser.add_argument("--version", action="version", version=f"dfkd-bench {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for module in VERBS.values():
        importlib.import_module(module).add_parser(sub)
    for name, child in sub.choices.items():
        _explain(child, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:  # `bench` alone: what it can do, not a multi-minute run
        parser.print_help()
        return 0
    _quiet_third_party_bars()
    from dfkd.errors import UserError

    try:
        return int(args.func(args) or 0)
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `bench … | head`: the reader left; stop quietly, as other Unix tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    except OSError as e:  # the file system said no: one line naming the path, not a traceback
        message = _io_message(e)
        if message is None or args.debug:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1


def _quiet_third_party_bars() -> None:
    """Under a scheduler or with stderr redirected, the libraries' own tqdm bars (weights loading, Hub downloads)
    would fill the log with carriage returns: switch them off (our progress prints plain lines there instead)."""
    import os

    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def _io_message(e: OSError) -> str | None:
    """One line for the I/O errors a user can fix (full disk, read-only or forbidden place); None for others."""
    import errno

    where = e.filename or "the output folder"
    fixes = {
        errno.ENOSPC: f"no space left on the device holding {where}. Fix: free space or point "
        "--output-dir / $DFKD_CACHE elsewhere, then run the same command again (it resumes)",
        errno.EDQUOT: f"disk quota exceeded writing {where}. Fix: free space or write elsewhere, then run again",
        errno.EROFS: f"{where} is on a read-only file system. Fix: choose a writable --output-dir / $DFKD_CACHE",
        errno.EACCES: f"permission denied: {where}. Fix: choose a folder you can write (--output-dir, $DFKD_CACHE)",
        errno.ENOTDIR: f"{where}: a path component is a file, not a folder. Fix: choose another --output-dir",
        errno.EEXIST: f"{where} exists and is not a folder. Fix: choose another --output-dir",
    }
    return fixes.get(e.errno)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
