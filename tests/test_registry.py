"""Registry behaviour: lazy built-ins, duplicates, did-you-mean, plugins via entry points."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from dfkd.errors import UnknownNameError, UserError
from dfkd.registry import METHODS, Registry


def test_lazy_string_entries_import_on_first_get():
    reg: Registry = Registry("thing")
    reg.register("ordered", "collections:OrderedDict")
    assert reg.target_path("ordered") == "collections:OrderedDict"
    from collections import OrderedDict

    assert reg.get("ordered") is OrderedDict


def test_duplicate_names_raise_and_name_the_first():
    reg: Registry = Registry("thing")
    reg.register("a", "collections:OrderedDict")
    with pytest.raises(UserError, match=r"already registered \(first by dfkd: collections:OrderedDict\)"):
        reg.register("a", dict)


def test_decorator_registration():
    reg: Registry = Registry("thing")

    @reg.register("f")
    def f():
        return 1

    assert reg.get("f") is f
    assert reg.names("f*") == ["f"]


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownNameError) as info:
        METHODS.get("deepinversoin")
    msg = str(info.value)
    assert msg.startswith("Unknown method 'deepinversoin'. Did you mean: deepinversion?")
    assert "bench ls methods" in msg
    assert "\n" not in msg


def test_unknown_name_without_close_match_has_no_suggestion():
    with pytest.raises(UnknownNameError, match=r"^Unknown method 'zzzz'\. Run `bench ls methods`\.$"):
        METHODS.get("zzzz")


def test_pattern_listing():
    from dfkd.methods import list_methods

    assert "deepinversion" in list_methods("deep*")
    assert all(n.startswith("deep") for n in list_methods("deep*"))


@pytest.mark.parametrize(
    "code",
    [
        "import dfkd, dfkd.methods, dfkd.models, dfkd.datasets; dfkd.list_methods(); dfkd.list_models()",
        "from dfkd.cli.main import build_parser; build_parser()",
    ],
)
def test_builtins_are_lazy(code):
    """`bench --help` and `bench ls` must not import diffusers / transformers / timm."""
    check = textwrap.dedent(
        f"""
        import sys
        {code}
        heavy = [m for m in ("diffusers", "transformers", "timm", "open_clip") if m in sys.modules]
        print(",".join(heavy))
        """
    )
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_bench_ls_methods_does_not_import_diffusers():
    check = textwrap.dedent(
        """
        import sys
        from dfkd.cli.main import main
        main(["ls", "methods"])
        assert "diffusers" not in sys.modules, "bench ls imported diffusers"
        """
    )
    subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)


def test_entry_point_plugin_is_discovered(tmp_path, monkeypatch):
    """A fake installed distribution on sys.path registers a method through `dfkd.methods`."""
    (tmp_path / "fake_dfkd_plugin.py").write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass
            from dfkd.methods.base import Method, MethodCard

            class FakeMethod(Method):
                @dataclass(frozen=True)
                class Config:
                    strength: float = 1.0  # how fake

                card = MethodCard(title="Fake", authors="Nobody", year=2026)
                shape = "real_data"

                def build_synthesizer(self, ctx):
                    return None
            """
        )
    )
    dist = tmp_path / "fake_dfkd_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-dfkd-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[dfkd.methods]\nfake_method = fake_dfkd_plugin:FakeMethod\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    METHODS._reset_plugins()
    try:
        from dfkd.methods import create_method, list_methods

        assert "fake_method" in list_methods()
        assert METHODS.source("fake_method") == "fake-dfkd-plugin"
        method = create_method("fake_method", strength=2.0)
        assert method.config.strength == 2.0
    finally:
        monkeypatch.undo()
        METHODS._reset_plugins()
    assert "fake_method" not in METHODS.names()


def test_plugin_clashing_with_builtin_is_an_error(tmp_path, monkeypatch):
    dist = tmp_path / "clash-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: clash\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[dfkd.methods]\ndeepinversion = clash:Other\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    METHODS._reset_plugins()
    try:
        with pytest.raises(UserError, match="clashes with the one registered by dfkd"):
            METHODS.names()
    finally:
        monkeypatch.undo()
        METHODS._reset_plugins()
