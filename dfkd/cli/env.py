"""bench env: what a bug report needs (versions, devices, cache paths)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "env",
        help="versions, devices and cache paths, for bug reports",
        description="Print the package versions, Python, platform, devices and the folders the suite uses "
        "(cache, stores, teachers, data), as a YAML block to paste into a bug report.",
        epilog="example:\n  bench env > env.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import yaml

    from dfkd import __version__
    from dfkd.benchmark.records import environment
    from dfkd.paths import cache_dir, data_dir, stores_dir, teachers_dir

    info = environment()
    try:
        import torch

        devices = ["cpu"] + [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    except Exception as e:  # a broken CUDA install is exactly what a bug report must show
        devices = [f"cpu (torch.cuda failed: {type(e).__name__})"]
    out = {
        "dfkd-bench": __version__,
        **{k: info[k] for k in ("git", "python", "platform", "cpu_count", "torch_threads")},
        "devices": devices,
        "packages": info["packages"],
        "paths": {
            "cache": str(cache_dir()),
            "stores": str(stores_dir()),
            "teachers": str(teachers_dir()),
            "data": str(data_dir()),
        },
    }
    print(yaml.safe_dump(out, sort_keys=False), end="")
    return 0
