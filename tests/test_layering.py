"""The package's layering (``shared/design/architecture.md``): nothing imports upward, and no import cycle between
the package's parts. Every ``import`` counts, module level or inside a function.

    python tests/test_layering.py      # prints the import picture: each part, the parts it imports, and a verdict
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "dfkd"

# bottom to top; a part may import its own layer and the layers below it
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "paths", "hashing"),
    ("registry", "config", "distributed"),
    ("models", "datasets", "metrics"),
    ("synthesis",),
    ("distill",),
    ("methods",),
    ("benchmark",),
    ("api", "cli", "__init__", "__main__"),
)
LEVEL = {part: level for level, parts in enumerate(LAYERS) for part in parts}


def part_of(module: str) -> str | None:
    """``dfkd.synthesis.store`` → ``synthesis``; ``dfkd`` → ``__init__``; None outside the package."""
    names = module.split(".")
    if names[0] != "dfkd":
        return None
    if len(names) == 1 or names[1] not in LEVEL:  # `dfkd` itself, or a name it defines (`from dfkd import __version__`)
        return "__init__"
    return names[1]


def imports() -> dict[str, set[tuple[str, str]]]:
    """part → {(imported part, "file:line")} for every import of another part of the package."""
    found: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent)
        me = part_of(".".join(rel.with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
                targets = targets[:1] if node.module != "dfkd" else targets[1:]  # `from dfkd import x`: x's part
            else:
                continue
            for target in targets:
                other = part_of(target)
                if other is not None and other != me:
                    found[me].add((other, f"{rel}:{node.lineno}"))
    return found


def upward(found: dict[str, set[tuple[str, str]]]) -> list[str]:
    return sorted(
        f"{where}: {me} (layer {LEVEL[me]}) imports {other} (layer {LEVEL[other]})"
        for me, edges in found.items()
        for other, where in edges
        if LEVEL[other] > LEVEL[me]
    )


def cycles(found: dict[str, set[tuple[str, str]]]) -> list[list[str]]:
    graph = {me: {other for other, _ in edges} for me, edges in found.items()}
    out: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == path[0]:
                out.append([*path, nxt])
            elif nxt not in path and nxt > path[0]:  # each cycle once, from its smallest part
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
    return out


def test_every_part_of_the_package_has_a_layer():
    parts = {
        p.stem if p.is_file() else p.name for p in ROOT.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()
    }
    assert parts <= set(LEVEL), f"add {sorted(parts - set(LEVEL))} to LAYERS"


def test_nothing_imports_upward():
    assert upward(imports()) == []


def test_no_import_cycle_between_parts():
    assert cycles(imports()) == []


if __name__ == "__main__":
    found = imports()
    for level, parts in enumerate(LAYERS):
        for part in parts:
            below = sorted({other for other, _ in found.get(part, ())}, key=lambda p: (LEVEL[p], p))
            print(f"{level} {part:<12} → {', '.join(below) or '—'}")
    bad, loops = upward(found), cycles(found)
    print("\n".join(bad + [" → ".join(c) for c in loops]) or "no upward import, no cycle")
    sys.exit(1 if bad or loops else 0)
