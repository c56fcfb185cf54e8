"""The hand-written prompt of one clip, and parsing of what the model writes.

A training sample (and a generation step) is laid out as

    [PREFIX]  product name, knowledge fields and items, "use only the facts above",
              the story so far (earlier narrations, numbered)
    [VISUAL]  memory tokens + this clip's tokens          (embeddings, see model.py)
    [SUFFIX]  "Clip i/n, d seconds, write lo-hi words."  (+ "Label: ..." in given mode)
    [TARGET]  given mode: the narration + EOS
              generated mode: "Label: ...\\nNarration: ..." + EOS

The prefix of clip i+1 is the prefix of clip i plus one story line, so at
generation time the key/value cache of a video's text prefix can be extended
clip by clip instead of recomputed.  The prompt states no visible fact (colour,
shape, action) unless the product knowledge does: those must come from the
frames.  A short hand-written format is used instead of a chat template (SmolLM2's
template adds a long system prompt).  All strings live in :data:`TEMPLATES`,
one entry per language.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .labels import LABELS, format_labels, parse_labels
from .schema import Video

MODES = ("given", "generated")


@dataclass(frozen=True)
class Template:
    product: str        # "{name}"
    knowledge: str      # header line before the fields
    field: str          # "{field}", "{items}"
    item_sep: str
    only_facts: str
    story: str          # header line before the earlier narrations
    story_line: str     # "{i}", "{text}"
    story_line_unplaced: str  # "{text}" (PromptOptions.position_text False: no clip numbers)
    clip: str           # "{i}", "{n}", "{seconds}", "{lo}", "{hi}"
    clip_unplaced: str  # "{seconds}", "{lo}", "{hi}" (no clip index or count)
    label: str          # "Label:" marker (no trailing space)
    narration: str      # "Narration:" marker
    space: str          # between a marker and its value
    instruct_given: str      # spelled-out output format (PromptOptions.instructions): "{lo}", "{hi}"
    instruct_generated: str  # the same with the label list: "{lo}", "{hi}", "{labels}"
    caption: str        # after a clip's visual tokens in a caption warm-up sample (build_caption_prompt)


TEMPLATES: dict[str, Template] = {
    "en": Template(
        product="Product: {name}\n",
        knowledge="Product knowledge:\n",
        field="- {field}: {items}\n",
        item_sep="; ",
        only_facts="Use only the facts above.\n",
        story="Story so far:\n",
        story_line="{i}. {text}\n",
        story_line_unplaced="- {text}\n",
        clip="\nClip {i}/{n}, {seconds} seconds, write {lo}-{hi} words.\n",
        clip_unplaced="\nThis clip: {seconds} seconds, write {lo}-{hi} words.\n",
        label="Label:",
        narration="Narration:",
        space=" ",
        instruct_given='Write the narration of this clip in one line of {lo}-{hi} words after "Narration:".\n',
        instruct_generated=('Write two lines. First "Label: " and the script label of this clip, one of: {labels} '
                            '(join several with +). Then "Narration: " and the narration of this clip in '
                            '{lo}-{hi} words.\n'),
        caption="\nWhat this clip shows:",
    ),
    "zh": Template(
        product="商品：{name}\n",
        knowledge="商品知识：\n",
        field="- {field}：{items}\n",
        item_sep="；",
        only_facts="只能使用上面的信息。\n",
        story="前文解说：\n",
        story_line="{i}. {text}\n",
        story_line_unplaced="- {text}\n",
        clip="\n第{i}/{n}段，{seconds}秒，写{lo}-{hi}字。\n",
        clip_unplaced="\n这一段：{seconds}秒，写{lo}-{hi}字。\n",
        label="标签：",
        narration="解说：",
        space="",
        instruct_given="在“解说：”后用一行写出这一段的解说，{lo}-{hi}字。\n",
        instruct_generated="写两行。第一行“标签：”加这一段的脚本标签，从以下选择：{labels}（多个用+连接）。第二行“解说：”加这一段的解说，{lo}-{hi}字。\n",
        caption="\n这一段的画面：",
    ),
}


@dataclass(frozen=True)
class PromptOptions:
    """How a prompt is framed around its content.  The defaults are the trained narrator's own short
    format; an LLM that was never fine-tuned on it (the zero-shot row) needs its chat template and
    the output format and label list spelled out."""
    chat: tuple[str, str] | None = None   # the LLM's chat template before / after a user message
    instructions: bool = False            # spell out the output format (and, generated mode, the labels)
    position_text: bool = True            # False: no "Clip i/n" and no story numbering (the no_position ablation)


def chat_wrap(tokenizer) -> tuple[str, str]:
    """The text the tokenizer's chat template puts before and after one user message, up to the
    start of the assistant's answer."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("this tokenizer has no chat template; use PromptOptions(chat=None)")
    mark = "\u2063"   # an invisible separator that no template contains
    text = tokenizer.apply_chat_template([{"role": "user", "content": mark}], tokenize=False,
                                         add_generation_prompt=True)
    if text.count(mark) != 1:
        raise ValueError("the chat template does not place the user message exactly once")
    before, after = text.split(mark)
    return before, after


@dataclass(frozen=True)
class ClipPrompt:
    prefix: str   # text before the visual tokens (shared, append-only, across a video's clips)
    suffix: str   # text between the visual tokens and the target
    target: str   # what the model learns to write (EOS is appended by the tokenising step)
    label_line: str = ""   # the target's leading label line (generated mode; "" in given mode)
    narration_at: int = 0  # where the clip's (one-line) narration starts in ``target``

    def text(self, visual: str = "") -> str:
        """The whole sample as text, with ``visual`` standing in for the visual tokens (for display)."""
        return self.prefix + visual + self.suffix + self.target


def _one_line(text: str) -> str:
    # Narrations are single lines: the parser stops at the first newline.
    return " ".join(text.split())


def _seconds(d: float) -> str:
    return f"{d:.1f}".removesuffix(".0")


def _template(language: str) -> Template:
    if language not in TEMPLATES:
        raise ValueError(f"no prompt template for language {language!r}; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[language]


def build_prefix(video: Video, story_so_far: list[str], language: str | None = None, first: int = 1,
                 numbered: bool = True) -> str:
    """Product, knowledge, the instruction and the story so far, numbered from ``first`` (or unnumbered)."""
    t = _template(language or video.language)
    parts = [t.product.format(name=video.product.name), t.knowledge]
    for name, items in video.product.knowledge.items():
        parts.append(t.field.format(field=name, items=t.item_sep.join(_one_line(x) for x in items)))
    parts += [t.only_facts, t.story]
    line = t.story_line if numbered else t.story_line_unplaced
    parts += [line.format(i=first + i, text=_one_line(s)) for i, s in enumerate(story_so_far)]
    return "".join(parts)


def build_clip_prompt(video: Video, clip_index: int, mode: str = "given",
                      story_so_far: list[str] | None = None, language: str | None = None,
                      story_clips: int | None = None, options: PromptOptions | None = None) -> ClipPrompt:
    """The prompt of clip ``clip_index``.

    ``story_so_far``: the narrations of the earlier clips (default: their
    reference narrations, i.e. teacher forcing; at generation time pass the
    model's own).  ``mode``: "given" puts the clip's labels in the suffix;
    "generated" makes them part of the target.  ``story_clips``: keep only the
    last that many narrations of the story (None: all), so a long video's prompt
    stays bounded; the kept lines keep their clip numbers.  ``options``: the chat template and
    spelled-out instructions (:class:`PromptOptions`; None: the narrator's own format).
    """
    if mode not in MODES:
        raise ValueError(f"unknown prompt mode {mode!r}; expected one of {MODES}")
    if not 0 <= clip_index < len(video.clips):
        raise IndexError(f"video {video.id!r} has {len(video.clips)} clips; no clip {clip_index}")
    language = language or video.language
    t = _template(language)
    clip = video.clips[clip_index]
    if story_so_far is None:
        story_so_far = [c.narration for c in video.clips[:clip_index]]
    if len(story_so_far) != clip_index:
        raise ValueError(f"video {video.id!r} clip {clip_index}: story_so_far has {len(story_so_far)} "
                         f"narrations, expected one per earlier clip ({clip_index})")
    lo, hi = clip.window
    options = options or PromptOptions()
    clip_line = t.clip if options.position_text else t.clip_unplaced
    suffix = clip_line.format(i=clip_index + 1, n=len(video.clips), seconds=_seconds(clip.duration), lo=lo, hi=hi)
    label_line = f"{t.label}{t.space}{format_labels(clip.labels, language)}\n"
    narration = _one_line(clip.narration)
    before, after = options.chat or ("", "")
    if mode == "given":
        if options.instructions:
            suffix += label_line + t.instruct_given.format(lo=lo, hi=hi)
            label_line = ""
        # The narration follows "Narration:" on the same line, after the usual space.
        suffix += label_line + after + t.narration
        target = t.space + narration
    else:
        if options.instructions:
            labels = ", ".join(format_labels([k], language) for k in LABELS)
            suffix += t.instruct_generated.format(lo=lo, hi=hi, labels=labels)
        suffix += after
        target = f"{label_line}{t.narration}{t.space}{narration}"
    if story_clips is not None and story_clips < 1:
        raise ValueError(f"story_clips must be >= 1 or None, got {story_clips}")
    first = 1 if story_clips is None else max(1, clip_index - story_clips + 1)
    prefix = build_prefix(video, story_so_far[first - 1:], language, first, numbered=options.position_text)
    return ClipPrompt(prefix=before + prefix, suffix=suffix, target=target,
                      label_line=label_line if mode == "generated" else "", narration_at=len(target) - len(narration))


def build_caption_prompt(video: Video, caption: str, language: str | None = None,
                         options: PromptOptions | None = None) -> ClipPrompt:
    """A caption warm-up sample: the product line, the clip's visual tokens, then ``caption`` (what
    the clip shows) as the target.  No knowledge and no story: only the frames can say it."""
    t = _template(language or video.language)
    before, after = (options or PromptOptions()).chat or ("", "")
    return ClipPrompt(prefix=before + t.product.format(name=video.product.name), suffix=t.caption + after,
                      target=t.space + _one_line(caption), narration_at=len(t.space))


def _marker(word: str) -> re.Pattern:
    # "Label:" / "Label :" / "label：" at the start of a line
    return re.compile(r"^\s*" + re.escape(word.rstrip(":：")) + r"\s*[:：]\s*", re.IGNORECASE)


def parse_generated(text: str, mode: str = "given", language: str = "en") -> tuple[list[str] | None, str]:
    """Split the model's output into ``(labels, narration)``; never raises on junk.

    Labels (generated mode only; None in given mode): the first "Label:" line,
    None if it is missing or names an unknown label.  Narration: the first
    "Narration:" line's value, else the first non-empty line that is not a
    label line ("" if none).  Narrations are one line, so the rest is dropped.
    """
    if mode not in MODES:
        raise ValueError(f"unknown prompt mode {mode!r}; expected one of {MODES}")
    t = _template(language)
    label_re, narration_re = _marker(t.label), _marker(t.narration)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    labels = None
    label_lines = [line for line in lines if label_re.match(line)]
    if mode == "generated" and label_lines:
        try:
            labels = parse_labels(label_re.sub("", label_lines[0]), language)
        except ValueError:
            labels = None
    marked = [narration_re.sub("", line) for line in lines if narration_re.match(line)]
    marked = [value for value in marked if value]
    plain = [line for line in lines if not (label_re.match(line) or narration_re.match(line))]
    narration = marked[0] if marked else (plain[0] if plain else "")
    return labels, narration.strip()
