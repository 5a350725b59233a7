"""PRISM's diversified prompt engineering (reconstruction): disambiguated class phrases, content sources (templates,
prompt files, a text-generation model with a disk cache), styles, farthest-point coverage selection with a tiny
random open_clip text tower, and `bench prompts`. Nothing is downloaded."""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
from typing import ClassVar

import pytest
import torch
import yaml

from dfkd.config import from_dict
from dfkd.datasets import get_dataset
from dfkd.errors import ConfigError, UserError
from dfkd.methods.prism_prompts import (
    CONTENT_TEMPLATES,
    PromptBuilder,
    PromptConfig,
    PromptEntry,
    build_prompt_sets,
    class_phrases,
    compose_prompt,
    curated_phrases,
    gloss_phrase,
    load_prompt_file,
    parse_generated,
    prompt_sets_digest,
    sample_prompt,
    save_prompt_file,
    select_prompts,
    with_article,
)
from dfkd.metrics.features import open_clip_text_encoder
from dfkd.metrics.manifold import farthest_point_sampling

SMALL = PromptConfig(prompts_per_class=6, candidates_per_class=20)
TINY_CLIP = {  # an open_clip model config small enough to build in well under a second
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    """``local-dir:`` folder with an open_clip config and no weights: a random text tower, open_clip's own BPE."""
    folder = tmp_path_factory.mktemp("tiny_clip")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP}))
    return f"local-dir:{folder}"


# ---------------------------------------------------------------------------------------------
# Prompt sets
# ---------------------------------------------------------------------------------------------
def test_prompt_sets_are_deterministic_for_a_seed_and_differ_for_another():
    spec = get_dataset("cifar10")
    a = build_prompt_sets(spec, SMALL)
    assert a == build_prompt_sets(spec, SMALL)
    b = build_prompt_sets(spec, dataclasses.replace(SMALL, seed=1))
    assert a != b
    phrases = class_phrases(spec)
    for label, entries in enumerate(a):
        assert len(entries) == SMALL.prompts_per_class
        assert len({e.prompt for e in entries}) == len(entries), "candidates are distinct"
        for e in entries:
            assert e.phrase == phrases[label]
            assert e.style in SMALL.styles and e.content in CONTENT_TEMPLATES["default"]
            assert e.prompt == compose_prompt(e.style, e.phrase, e.content) == f"{e.style} {e.phrase}, {e.content}"
    assert a[0] != a[1]
    assert prompt_sets_digest(a) == prompt_sets_digest(build_prompt_sets(spec, SMALL)) != prompt_sets_digest(b)


def test_sets_mix_styles_and_contents_and_use_the_data_sets_templates():
    sets = build_prompt_sets(get_dataset("digits"), PromptConfig(prompts_per_class=30, candidates_per_class=60))
    assert len({e.style for e in sets[3]}) > 5 and len({e.content for e in sets[3]}) > 10
    assert all(e.content in CONTENT_TEMPLATES["digits"] for e in sets[3])
    assert sets[3][0].phrase == "the handwritten digit 3 (three)"


def test_a_grid_smaller_than_the_set_gives_every_combination_once():
    cfg = PromptConfig(styles=("a photo of", "a sketch of"), prompts_per_class=200, candidates_per_class=200)
    entries = build_prompt_sets(get_dataset("cifar10"), cfg)[0]
    assert len(entries) == 2 * len(CONTENT_TEMPLATES["default"])


def test_sample_prompt_is_seeded_and_draws_from_the_class():
    sets = build_prompt_sets(get_dataset("cifar10"), SMALL)
    assert sample_prompt(sets, 4, 7) == sample_prompt(sets, 4, 7)
    draws = {sample_prompt(sets, 4, s).prompt for s in range(60)}
    assert draws <= {e.prompt for e in sets[4]} and len(draws) > 3
    rng = random.Random(0)
    assert sample_prompt(sets, 2, rng) in sets[2]
    assert sample_prompt(sets, 2, torch.Generator().manual_seed(0)) in sets[2]
    with pytest.raises(UserError):
        sample_prompt([[]], 0, 0)


def test_config_validation():
    with pytest.raises(ConfigError, match="prompt_file"):
        PromptConfig(contents="file")
    with pytest.raises(ConfigError, match="text_model"):
        PromptConfig(contents="model")
    with pytest.raises(ConfigError, match="Did you mean 'templates'"):
        PromptConfig(contents="templtes")
    with pytest.raises(ConfigError, match="contents=file"):
        PromptConfig(prompt_file="p.yaml")
    with pytest.raises(ConfigError, match="candidates_per_class"):
        PromptConfig(prompts_per_class=300)
    # as a nested config: lists become tuples
    cfg = from_dict(PromptConfig, {"styles": ["a photo of", "a sketch of"], "prompts_per_class": 3})
    assert cfg.styles == ("a photo of", "a sketch of")


# ---------------------------------------------------------------------------------------------
# Semantic disambiguation
# ---------------------------------------------------------------------------------------------
def test_imagenet_cranes_are_disambiguated():
    spec = get_dataset("imagenet")
    assert spec.class_names[134] == spec.class_names[517] == "crane"
    phrases = class_phrases(spec)
    bird, machine = phrases[134], phrases[517]
    assert bird != machine
    assert bird.startswith("a crane, ") and "bird" in bird
    assert machine.startswith("a crane, ") and "lifts" in machine
    assert phrases[638] != phrases[639]  # maillot: tights / bathing suit
    assert len(set(phrases)) == 1000, "every ImageNet class gets its own phrase"
    assert max(len(p.split()) for p in phrases) <= 20
    sets = build_prompt_sets(spec, SMALL)
    assert all(bird in e.prompt for e in sets[134]) and all(machine in e.prompt for e in sets[517])


def test_gloss_phrase_golden():
    assert (
        gloss_phrase("crane: large long-necked wading bird of marshes and plains in many parts of the world")
        == "a crane, a large long-necked wading bird of marshes and plains"
    )
    assert gloss_phrase("crane: lifts and moves heavy objects; lifting tackle is suspended from a pivoted boom") == (
        "a crane, which lifts and moves heavy objects"
    )
    assert gloss_phrase("maillot: tights for dancers or gymnasts") == "a maillot, tights for dancers or gymnasts"
    assert gloss_phrase("tench, Tinca tinca: freshwater dace-like game fish of Europe and western Asia noted for "
                        "ability to survive outside water") == (
        "a tench, a freshwater dace-like game fish of Europe and western Asia"
    )  # fmt: skip
    assert gloss_phrase("ice bear, polar bear: white bear of Arctic regions") == (
        "an ice bear, a white bear of Arctic regions"
    )
    assert gloss_phrase("sunglasses, dark glasses: spectacles that are darkened or polarized") == (
        "sunglasses, spectacles that are darkened or polarized"
    )
    assert [with_article(w) for w in ("owl", "unicycle", "European robin", "hour glass", "the sea")] == [
        "an owl",
        "a unicycle",
        "a European robin",
        "an hour glass",
        "the sea",
    ]


def test_curated_phrases_cover_their_data_sets():
    for name in ("cifar10", "cifar100", "digits"):
        spec = get_dataset(name)
        table = curated_phrases()[name]
        assert {spec.class_index(k) for k in table} == set(range(spec.num_classes)), name
        phrases = class_phrases(spec)
        assert len(set(phrases)) == spec.num_classes
    c10, c100 = class_phrases(get_dataset("cifar10")), class_phrases(get_dataset("cifar100"))
    names = get_dataset("cifar100").class_names
    assert c10[1] == "a car"
    assert c100[names.index("maple_tree")] == "a maple tree"
    assert c100[names.index("mouse")] == "a mouse, the small rodent"
    assert c100[names.index("ray")] == "a ray, a flat sea fish"
    assert c100[names.index("keyboard")] == "a computer keyboard"


def test_other_data_sets_get_the_name_with_spaces_and_an_article():
    spec = dataclasses.replace(
        get_dataset("cifar10"), name="toy", num_classes=3, class_names=("sea_lion", "owl", "jeans")
    )
    assert class_phrases(spec) == ["a sea lion", "an owl", "jeans"]


def test_resolve_class_by_index_name_wnid_and_helpful_errors():
    imagenet, c100 = get_dataset("imagenet"), get_dataset("cifar100")
    assert imagenet.class_index(134) == imagenet.class_index("134") == 134
    assert imagenet.class_index("n01440764") == 0
    assert c100.class_index("maple tree") == c100.class_index("maple_tree") == 47
    with pytest.raises(UserError, match=r"ambiguous.*134 and 517"):
        imagenet.class_index("crane")
    with pytest.raises(UserError, match="Did you mean: maple_tree"):
        c100.class_index("mapel_tree")
    with pytest.raises(UserError, match="out of range"):
        c100.class_index(100)


# ---------------------------------------------------------------------------------------------
# Content sources: prompt files
# ---------------------------------------------------------------------------------------------
def _file_config(path, **kw):
    return PromptConfig(contents="file", prompt_file=str(path), prompts_per_class=6, candidates_per_class=20, **kw)


def test_a_yaml_prompt_file_overrides_the_templates_for_its_classes(tmp_path):
    path = tmp_path / "prompts.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "cat": ["asleep on a sofa", "chasing a ball of yarn"],  # content phrases × styles
                9: [{"prompt": "a truck on a desert highway at dusk", "style": "a photo of"}, "parked at a depot"],
                "ship": [{"content": "in a harbour"}],
            }
        )
    )
    spec = get_dataset("cifar10")
    sets = build_prompt_sets(spec, _file_config(path))
    cat, truck, ship = sets[3], sets[9], sets[8]
    assert {e.content for e in cat} == {"asleep on a sofa", "chasing a ball of yarn"}
    assert len(cat) == 6 and all(e.prompt.startswith(e.style + " a domestic cat, ") for e in cat)
    assert truck[0] == PromptEntry("a truck on a desert highway at dusk", "a photo of", "", "a large truck")
    assert {e.content for e in truck[1:]} == {"parked at a depot"} and len(truck) == 6
    assert {e.content for e in ship} == {"in a harbour"}
    assert all(e.content in CONTENT_TEMPLATES["default"] for e in sets[0]), "classes not in the file use templates"
    assert sets[0] == build_prompt_sets(spec, dataclasses.replace(SMALL))[0]


def test_a_jsonl_prompt_file_overrides_the_templates_too(tmp_path):
    path = tmp_path / "prompts.jsonl"
    lines = [
        {"class": "dog", "content": "fetching a stick"},
        {"class": 5, "prompt": "a watercolor of a dog in a hat"},
        {"class": "airplane", "prompt": "an airliner landing in the rain", "style": "", "content": "landing"},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    sets = build_prompt_sets(get_dataset("cifar10"), _file_config(path))
    assert sets[5][0].prompt == "a watercolor of a dog in a hat"
    assert {e.content for e in sets[5][1:]} == {"fetching a stick"}
    assert sets[0] == [PromptEntry("an airliner landing in the rain", "", "landing", "an airplane")]


@pytest.mark.parametrize(
    ("suffix", "text"),
    [(".yaml", "catt: [on a sofa]\n"), (".jsonl", '{"class": "catt", "content": "on a sofa"}\n')],
)
def test_unknown_class_in_a_prompt_file_says_did_you_mean(tmp_path, suffix, text):
    path = tmp_path / f"prompts{suffix}"
    path.write_text(text)
    with pytest.raises(UserError, match=r"unknown class 'catt' for cifar10\. Did you mean: cat\?") as e:
        build_prompt_sets(get_dataset("cifar10"), _file_config(path))
    assert "\n" not in str(e.value)


def test_bad_prompt_files_are_user_errors(tmp_path):
    spec = get_dataset("cifar10")
    cases = {
        "missing.yaml": None,
        "a.txt": "cat: [x]",
        "b.yaml": "cat: [{promt: x}]",
        "c.jsonl": '{"class": "cat"}',
        "d.jsonl": "not json",
        "e.yaml": "[1, 2]",
    }
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(UserError):
            load_prompt_file(tmp_path / name, spec)


@pytest.mark.parametrize("suffix", [".yaml", ".jsonl"])
def test_saved_prompt_sets_load_back_to_the_same_sets(tmp_path, suffix):
    spec = get_dataset("imagenet")
    builder = PromptBuilder(spec, SMALL)
    sets = {label: builder.build(label) for label in (0, 134, 517)}
    path = save_prompt_file(tmp_path / f"out{suffix}", spec, sets)
    if suffix == ".yaml":
        keys = list(yaml.safe_load(path.read_text()))
        assert keys == ["tench", 134, 517], "names where unique, indices where shared"
    again = PromptBuilder(spec, _file_config(path))
    assert {label: again.build(label) for label in sets} == sets


# ---------------------------------------------------------------------------------------------
# Content sources: a text-generation model (fake pipeline) with a disk cache
# ---------------------------------------------------------------------------------------------
class FakePipeline:
    calls: ClassVar[list[str]] = []

    def __init__(self, task, model=None, device=None):
        assert task == "text-generation" and model == "local/fake-llm"

    def __call__(self, text, **kwargs):
        FakePipeline.calls.append(text)
        assert kwargs["return_full_text"] is False and kwargs["do_sample"] is False
        if "handwritten digit 7" in text:
            return [{"generated_text": "\n\n"}]  # nothing usable: the templates step in
        text = ' on a rainy street\n2. "in a glass jar"\n3) - seen from far away.\nIdeas:\n4. on a rainy street'
        return [{"generated_text": text}]


def test_text_model_contents_are_parsed_cached_and_not_regenerated(monkeypatch, _isolated_cache):
    import transformers

    FakePipeline.calls = []
    monkeypatch.setitem(transformers.__dict__, "pipeline", FakePipeline)  # no lazy import of the real pipeline
    spec = get_dataset("digits")
    cfg = PromptConfig(contents="model", text_model="local/fake-llm", prompts_per_class=5, candidates_per_class=10)
    with pytest.warns(UserWarning, match="no usable content phrases"):
        sets = build_prompt_sets(spec, cfg)
    assert len(FakePipeline.calls) == 10 and "the handwritten digit 3 (three)" in FakePipeline.calls[3]
    assert {e.content for e in sets[3]} <= {"on a rainy street", "in a glass jar", "seen from far away"}
    assert all(e.content in CONTENT_TEMPLATES["digits"] for e in sets[7])
    files = list((_isolated_cache / "prompts").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["classes"]["3"] == [
        "on a rainy street",
        "in a glass jar",
        "seen from far away",
    ]

    def fail(*args, **kwargs):
        raise AssertionError("the cache should answer")

    monkeypatch.setitem(transformers.__dict__, "pipeline", fail)
    with pytest.warns(UserWarning):
        assert build_prompt_sets(spec, cfg) == sets


def test_text_model_that_cannot_load_is_one_user_error(monkeypatch):
    import transformers

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'\nto load this model")

    monkeypatch.setitem(transformers.__dict__, "pipeline", offline)
    cfg = PromptConfig(contents="model", text_model="someone/llm", prompts_per_class=2, candidates_per_class=4)
    with pytest.raises(UserError, match="Cannot load the text-generation model 'someone/llm'") as e:
        build_prompt_sets(get_dataset("cifar10"), cfg)
    assert "\n" not in str(e.value)


def test_parse_generated_golden():
    text = "1. in the snow\n2) Seen from above.\n- 'at night'\n* at night\nHere are more:\n3. " + "word " * 20
    assert parse_generated(text) == ["in the snow", "Seen from above", "at night"]
    assert parse_generated("a\nb\nc", n=2) == ["a", "b"]


# ---------------------------------------------------------------------------------------------
# Coverage selection
# ---------------------------------------------------------------------------------------------
def test_fps_returns_k_distinct_indices_deterministically():
    emb = torch.randn(40, 8, generator=torch.Generator().manual_seed(0))
    for k in (1, 5, 40):
        idx = farthest_point_sampling(emb, k)
        assert len(idx) == k == len(set(idx)) and idx[0] == 0
        assert idx == farthest_point_sampling(emb, k)
    assert farthest_point_sampling(emb, 3, first=7)[0] == 7
    assert farthest_point_sampling(emb, 6, selected=[4, 9])[:2] == [4, 9]
    with pytest.raises(ValueError):
        farthest_point_sampling(emb, 41)


def test_fps_golden_on_2d_points():
    # cosine distance 1 − cos: from (1, 0) the farthest is (−1, 0) (distance 2); then (0, 1) is at distance 1 from
    # both, (0.7, 0.7) only ≈0.29 from (1, 0), (0.9, 0.1) ≈0.006.
    pts = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0], [0.7, 0.7]])
    assert farthest_point_sampling(pts, 3) == [0, 3, 2]
    assert farthest_point_sampling(pts, 5) == [0, 3, 2, 4, 1]
    assert farthest_point_sampling(pts * 5, 3) == [0, 3, 2], "cosine: the scale does not matter"


def test_select_prompts_keeps_the_first_entries_and_spreads_the_rest():
    entries = [PromptEntry(f"p{i}", "", "", "") for i in range(4)]
    vectors = {"p0": [1.0, 0.0], "p1": [0.99, 0.1], "p2": [0.0, 1.0], "p3": [-1.0, 0.05]}

    def encoder(texts):
        return torch.tensor([vectors[t] for t in texts])

    assert [e.prompt for e in select_prompts(entries, 2, encoder)] == ["p0", "p3"]
    assert [e.prompt for e in select_prompts(entries, 3, encoder, keep=2)] == ["p0", "p1", "p3"]
    assert len(select_prompts(entries, 10, encoder)) == 4


def test_open_clip_encoder_with_a_tiny_random_text_tower(tiny_clip_dir):
    encode = open_clip_text_encoder(tiny_clip_dir, None)
    emb = encode(["a photo of a dog", "a sketch of a cat", "a photo of a dog"])
    assert emb.shape == (3, TINY_CLIP["embed_dim"]) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.equal(emb[0], emb[2]) and not torch.equal(emb[0], emb[1])

    cfg = PromptConfig(prompts_per_class=5, candidates_per_class=30, coverage_selection=True, clip_model=tiny_clip_dir)
    cfg = dataclasses.replace(cfg, clip_pretrained=None)
    spec = get_dataset("cifar10")
    builder = PromptBuilder(spec, cfg)
    chosen = builder.build(2)
    _, candidates = builder.candidates(2)
    assert len(chosen) == 5 == len({e.prompt for e in chosen}) and set(chosen) <= set(candidates)
    assert chosen[0] == candidates[0]
    assert chosen == build_prompt_sets(spec, cfg, encoder=encode)[2], "deterministic, the same encoder"


def test_open_clip_weights_that_cannot_be_loaded_are_one_user_error(tmp_path):
    with pytest.raises(UserError, match="Cannot load open_clip ViT-B-32") as e:
        open_clip_text_encoder("ViT-B-32", "no_such_tag", cache_dir=str(tmp_path))
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="Cannot load open_clip"):
        open_clip_text_encoder("local-dir:/no/such/folder", None)


# ---------------------------------------------------------------------------------------------
# bench prompts
# ---------------------------------------------------------------------------------------------
def _bench_prompts(argv):
    from dfkd.cli import prompts

    parser = argparse.ArgumentParser()
    prompts.add_parser(parser.add_subparsers())
    args = parser.parse_args(["prompts", *argv])
    return prompts.main(args)


def test_bench_prompts_lists_and_saves_a_prompt_file(tmp_path, capsys):
    out = tmp_path / "crane.yaml"
    argv = ["--dataset", "imagenet", "--classes", "134", "517", "--limit", "2", "--out", str(out)]
    assert _bench_prompts([*argv, "--set", "prompts.prompts_per_class=4", "--set", "prompts.styles=[a photo of]"]) == 0
    text = capsys.readouterr().out
    assert "134 crane → a crane, a large long-necked wading bird" in text
    assert "517 crane → a crane, which lifts" in text
    assert text.count("a photo of a crane") == 4 and "… 2 more" in text
    saved = load_prompt_file(out, get_dataset("imagenet"))
    assert sorted(saved) == [134, 517] and all(len(saved[k].prompts) == 4 for k in saved)


def test_bench_prompts_config_from_sets_and_errors():
    from dfkd.cli.prompts import prompt_config_from_sets

    cfg = prompt_config_from_sets(["prompts.prompts_per_class=3", "seed=2", "prism.prompts.styles=[a sketch of]"])
    assert (cfg.prompts_per_class, cfg.seed, cfg.styles) == (3, 2, ("a sketch of",))
    with pytest.raises(ConfigError, match="Did you mean 'prompts_per_class'"):
        prompt_config_from_sets(["prompts.prompt_per_class=3"])
    with pytest.raises(UserError, match="Did you mean: cat"):
        _bench_prompts(["--dataset", "cifar10", "--classes", "catt"])


def test_bench_prompts_takes_the_settings_of_a_methods_config(capsys):
    from dfkd.methods.base import Method
    from dfkd.registry import METHODS

    class WithPrompts(Method):
        @dataclasses.dataclass(frozen=True)
        class Config:
            prompts: PromptConfig = dataclasses.field(default_factory=PromptConfig)

    METHODS.register("test_prompts_method", WithPrompts, source="tests")
    try:
        argv = ["-d", "cifar10", "-m", "test_prompts_method", "--classes", "0", "-s", "prompts.prompts_per_class=2"]
        assert _bench_prompts(argv) == 0
    finally:
        METHODS.unregister("test_prompts_method")
    assert "(2 prompts, contents: templates)" in capsys.readouterr().out


def test_glyph_vocabulary_draws_styles_and_contents_from_the_generator_captions():
    """prompts.vocabulary=glyphs: every prompt is made of words the glyph generator was trained on."""
    from dfkd.datasets import get_dataset
    from dfkd.methods.prism_prompts import PromptConfig, build_prompt_sets, glyph_vocabulary
    from dfkd.synthesis.glyphs.render import VOCABULARY, caption_corpus
    from dfkd.synthesis.tokenizer import clip_tokenizer

    spec = get_dataset("digits")
    phrases, styles, contents = glyph_vocabulary(spec)
    assert phrases[7] == "digit seven" and len(set(phrases)) == 10
    assert "a bold italic handwritten" in styles and "an italic" in styles and "a" in styles
    assert "white on black" in contents and "at the top left" in contents and "blurry" in contents
    sets = build_prompt_sets(spec, PromptConfig(vocabulary="glyphs", prompts_per_class=6, candidates_per_class=12))
    tokenizer = clip_tokenizer()
    known = {t for text in caption_corpus() for t in tokenizer.tokenize(text)}
    for label, entries in enumerate(sets):
        assert len({e.prompt for e in entries}) == 6
        for e in entries:
            assert f"digit {phrases[label].split()[-1]}" in e.prompt
            assert set(tokenizer.tokenize(e.prompt)) <= known, e.prompt
    assert len({e.style for entries in sets for e in entries}) > 10  # styles really diversify
    assert set(VOCABULARY["family"]) <= {w for s in styles for w in s.split()} | {"sans-serif"}
    with pytest.raises(Exception, match=r"prompts\.vocabulary=glyphs"):
        glyph_vocabulary(get_dataset("cifar10"))


def test_two_processes_sharing_the_prompt_cache_keep_each_others_classes(monkeypatch):
    """Two writers of one prompt cache (two runs at once): neither drops a class the other wrote, and a class both
    generated keeps the first written phrases, so every run uses the same prompts."""
    from dfkd.datasets import get_dataset
    from dfkd.methods.prism_prompts import TextModelContents

    spec = get_dataset("digits")
    phrases = [f"digit {n}" for n in spec.class_names]
    a = TextModelContents("stub-model", spec, phrases, n=2)
    b = TextModelContents("stub-model", spec, phrases, n=2)  # opened before a wrote anything
    monkeypatch.setattr(a, "_generate", lambda phrase: f"1. {phrase} from a\n2. {phrase} again from a")
    monkeypatch.setattr(b, "_generate", lambda phrase: f"1. {phrase} from b\n2. {phrase} again from b")
    first = a(3)
    b(5)
    assert b(3) == first  # b sees a's class 3 instead of generating its own
    fresh = TextModelContents("stub-model", spec, phrases, n=2)
    assert set(fresh._data["classes"]) == {"3", "5"}
    assert fresh(3) == first
