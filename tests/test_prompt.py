import pytest

from videonarrator.labels import LABELS, format_labels
from videonarrator.prompt import TEMPLATES, PromptOptions, build_caption_prompt, build_clip_prompt, build_prefix, parse_generated
from videonarrator.schema import Clip, Product, Video, validate_video


def make_video(language: str = "en") -> Video:
    knowledge = ({"ingredients": ["aloe vera", "vitamin E"], "price": ["19 dollars today"]} if language == "en"
                 else {"成分": ["芦荟", "维生素E"], "价格": ["今天19元"]})
    narr = (["Dry skin all winter?", "Meet the new aloe cream.", "Grab it for 19 dollars today."] if language == "en"
            else ["冬天皮肤干？", "试试这款芦荟霜。", "今天只要19元。"])
    clips = [
        Clip(index=0, start=0.0, end=2.0, window=(2, 8), labels=["pain_point"], narration=narr[0],
             truth={"colour": "crimson", "shape": "hexagon", "action": "squeezing"}),
        Clip(index=1, start=2.0, end=5.5, window=(5, 11), labels=["product_recommendation", "appearance_design"],
             narration=narr[1], truth={"colour": "crimson", "shape": "hexagon", "action": "rotating"}),
        Clip(index=2, start=5.5, end=8.0, window=(3, 9), labels=["purchase_guidance"], narration=narr[2],
             truth={"colour": "crimson", "shape": "hexagon", "action": "pointing"}),
    ]
    return validate_video(Video(id="v1", product=Product(name="Aloe Cream" if language == "en" else "芦荟霜",
                                                         knowledge=knowledge), clips=clips, language=language))


def test_layout_given_mode():
    v = make_video()
    p = build_clip_prompt(v, 1, mode="given")
    assert p.prefix.startswith("Product: Aloe Cream\n")
    assert "- ingredients: aloe vera; vitamin E\n" in p.prefix
    assert "Use only the facts above." in p.prefix
    assert p.prefix.endswith("Story so far:\n1. Dry skin all winter?\n")
    assert p.suffix.startswith("\nClip 2/3, 3.5 seconds, write 5-11 words.\n")
    assert p.suffix.endswith("Label: product recommendation+appearance design\nNarration:")
    assert p.target == " Meet the new aloe cream."
    # the knowledge comes before the story (only the story grows clip by clip)
    assert p.prefix.index("Use only the facts above.") < p.prefix.index("Story so far:")


@pytest.mark.parametrize("language", ["en", "zh"])
def test_a_caption_prompt_holds_no_knowledge_and_no_story(language):
    v = make_video(language)
    p = build_caption_prompt(v, "red square, on a table")
    narration = build_clip_prompt(v, 2)
    assert narration.prefix.startswith(p.prefix)              # the product line, as a narration prompt starts
    for line in (TEMPLATES[language].only_facts, TEMPLATES[language].story, v.clips[0].narration):
        assert line not in p.prefix + p.suffix
    assert p.suffix == TEMPLATES[language].caption
    assert p.target[p.narration_at:] == "red square, on a table"
    chat = build_caption_prompt(v, "x", options=PromptOptions(chat=("<u>", "</u>")))
    assert chat.prefix.startswith("<u>") and chat.suffix.endswith("</u>")


def test_layout_generated_mode_puts_labels_in_target():
    v = make_video()
    p = build_clip_prompt(v, 2, mode="generated")
    assert "Label" not in p.prefix + p.suffix
    assert "purchase guidance" not in p.prefix + p.suffix
    assert p.target == "Label: purchase guidance\nNarration: Grab it for 19 dollars today."
    assert p.suffix == "\nClip 3/3, 2.5 seconds, write 3-9 words.\n"


def test_prefix_is_append_only_across_clips():
    """The KV cache of clip i's prefix is reusable for clip i+1: its text is a prefix of the next one."""
    v = make_video()
    for mode in ("given", "generated"):
        prefixes = [build_clip_prompt(v, i, mode=mode).prefix for i in range(3)]
        for a, b in zip(prefixes, prefixes[1:]):
            assert b.startswith(a) and len(b) > len(a)
    own = ["My first line.", "My second\nline."]
    p = build_clip_prompt(v, 2, story_so_far=own)
    assert p.prefix.endswith("1. My first line.\n2. My second line.\n")  # model's own story, one line each


def test_story_window_keeps_the_last_narrations_with_their_numbers():
    v = make_video()
    p = build_clip_prompt(v, 2, story_clips=1)
    assert p.prefix.endswith("Story so far:\n2. Meet the new aloe cream.\n") and "1. Dry skin" not in p.prefix
    assert build_clip_prompt(v, 2, story_clips=2).prefix == build_clip_prompt(v, 2).prefix
    assert build_clip_prompt(v, 0, story_clips=1).prefix == build_clip_prompt(v, 0).prefix
    with pytest.raises(ValueError, match="story_clips must be >= 1"):
        build_clip_prompt(v, 1, story_clips=0)


@pytest.mark.parametrize("language", ["en", "zh"])
def test_visible_facts_never_in_prompt(language):
    v = make_video(language)
    for mode in ("given", "generated"):
        for i in range(3):
            p = build_clip_prompt(v, i, mode=mode)
            text = (p.prefix + p.suffix).lower()
            for word in ("colour", "color", "shape", "crimson", "hexagon", "squeezing", "rotating", "pointing",
                         "颜色", "形状"):
                assert word not in text, (word, mode, i)
    # ...unless the knowledge states them
    v.product.knowledge["appearance"] = ["crimson hexagon jar"]
    assert "crimson hexagon jar" in build_clip_prompt(v, 0).prefix


def test_chinese_variant():
    v = make_video("zh")
    p = build_clip_prompt(v, 1, mode="given")
    assert p.prefix.startswith("商品：芦荟霜\n") and "只能使用上面的信息。" in p.prefix
    assert p.prefix.endswith("前文解说：\n1. 冬天皮肤干？\n")
    assert "写5-11字" in p.suffix and "3.5秒" in p.suffix
    assert p.suffix.endswith("标签：产品推荐+外观设计\n解说：")
    assert p.target == "试试这款芦荟霜。"
    g = build_clip_prompt(v, 1, mode="generated")
    assert parse_generated(g.target, "generated", "zh") == (["product_recommendation", "appearance_design"],
                                                            "试试这款芦荟霜。")
    assert set(TEMPLATES) == {"en", "zh"}


def test_first_clip_and_errors():
    v = make_video()
    p = build_clip_prompt(v, 0)
    assert p.prefix == build_prefix(v, [])
    assert p.prefix.endswith("Story so far:\n")
    with pytest.raises(ValueError, match="story_so_far has 1"):
        build_clip_prompt(v, 2, story_so_far=["only one"])
    with pytest.raises(ValueError, match="mode"):
        build_clip_prompt(v, 0, mode="free")
    with pytest.raises(IndexError, match="no clip 3"):
        build_clip_prompt(v, 3)
    with pytest.raises(ValueError, match="language"):
        build_clip_prompt(v, 0, language="fr")


@pytest.mark.parametrize("keys", [["pain_point"], ["texture_material", "safety_certification"], list(LABELS[:3])])
def test_parse_round_trip(keys):
    v = make_video()
    v.clips[0].labels = keys
    target = build_clip_prompt(v, 0, mode="generated").target
    assert parse_generated(target, "generated") == (keys, "Dry skin all winter?")
    given = build_clip_prompt(v, 0, mode="given").target
    assert parse_generated(given, "given") == (None, "Dry skin all winter?")


@pytest.mark.parametrize("text,expected", [
    ("Label: flying saucer\nNarration: Hello there.", (None, "Hello there.")),
    ("label : pain point\nnarration: Hi.\nClip 3/3, 2 seconds", (["pain_point"], "Hi.")),
    ("Just a sentence without markers.\nMore junk", (None, "Just a sentence without markers.")),
    ("Label: pain point", (["pain_point"], "")),
    ("", (None, "")),
    ("\n\nNarration:\nLabel: pain point+\nNarration: It works.", (None, "It works.")),
])
def test_parse_generated_is_robust(text, expected):
    assert parse_generated(text, "generated") == expected


def test_parse_given_mode_ignores_labels():
    assert parse_generated(" Fresh and light.\nLabel: pain point", "given") == (None, "Fresh and light.")
    assert parse_generated("Narration: Fresh.", "given") == (None, "Fresh.")
    assert format_labels(["pain_point"]) == "pain point"
