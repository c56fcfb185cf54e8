"""The widget explorer on a tiny fake project: navigation, tau marking, missing files, live regeneration."""
import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file

from helpers import DEFAULTS, make_tiny_llm
from videonarrator.features import FEATURES_FORMAT, features_path
from videonarrator.generate import narrate_videos
from videonarrator.dataset import visual_inputs
from videonarrator.schema import Clip, Product, Video, save_dataset
from videonarrator.widgets import (DATASET, FEATURES, METRICS, MODEL, NARRATIONS, ExplorerState, NarrationExplorer,
                                   fact_status, narrate_live, ordered_videos, video_label)

REPO = Path(__file__).resolve().parents[1]
P, W, D = 5, 16, 8           # patch tokens per frame, their width, pooled embedding width
COLOURS = {"A": (220, 30, 40), "B": (40, 80, 230), "C": (40, 190, 60), "E": (240, 215, 30)}
# clip 0 of every video: frames A, A (identical: always collapse), B (cosine 0.8 with A: dropped only
# when tau <= 0.8); clips 1 and 2: two orthogonal frames (never dropped at tau >= 0.5)
FRAMES = [["A", "A", "B"], ["C", "E"], ["A", "C"]]
NARR = {"vtest": ["A red lamp for dark corners.", "Soft even light, held in a hand.", "Grab it at half price."],
        "vtrain": ["Meet the blue kettle today.", "It boils water fast.", "Ten percent off now."]}
LABELS = [["pain_point"], ["product_trial"], ["purchase_guidance"]]


def pooled_for(name: str) -> torch.Tensor:
    e = torch.eye(D)
    return {"A": e[0], "B": 0.8 * e[0] + 0.6 * e[1], "C": e[2], "E": e[3]}[name]


def make_video(vid: str, split: str, colour: str, frames_root: Path) -> Video:
    clips = []
    for i, names in enumerate(FRAMES):
        rels = []
        for k, name in enumerate(names):
            rel = f"frames/{vid}/{i:03d}_{k:03d}.png"
            (frames_root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), COLOURS[name]).save(frames_root / rel)
            rels.append(rel)
        clips.append(Clip(index=i, start=3.0 * i, end=3.0 * i + len(names), window=(3, 8), labels=LABELS[i],
                          narration=NARR[vid][i], frames=rels,
                          truth={"colour": colour, "shape": "round", "action": "held in a hand",
                                 "stated": ["colour"] if i == 0 else []}))
    product = Product(f"{vid.title()} Lamp", {"efficacy": ["soft even light"], "promotion": ["half price"]})
    return Video(id=vid, product=product, clips=clips, split=split)


def write_features(features_dir: Path, video: Video) -> None:
    """The features store format (features.py): clip{i}.tokens (F, P, W) fp16, clip{i}.pooled (F, D)."""
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for i, names in enumerate(FRAMES):
        tensors[f"clip{i}.pooled"] = torch.stack([pooled_for(n) for n in names])
        tensors[f"clip{i}.tokens"] = torch.randn(len(names), P, W, generator=g).half()
    meta = {"format": FEATURES_FORMAT, "video_id": video.id, "n_clips": str(len(FRAMES)),
            "frames": json.dumps([len(f) for f in FRAMES]), "cache_key": "test", "tower": "{}"}
    features_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(features_path(features_dir, video.id)), metadata=meta)


def fake_narrations() -> dict:
    def clips(texts, labels):
        return [{"text": t, "labels": l, "length": 0, "in_window": True, "stop": "eos"} for t, l in zip(texts, labels)]
    given_a = ["A red round lamp for you.", "Held in a hand, it glows softly.", "Buy it at half price today."]
    given_b = ["A blue lamp.", "It is on a table and very very very very nice.", ""]
    return {
        "sysA": {"given": {"vtest": clips(given_a, LABELS)},
                 "generated": {"vtest": clips(given_a, LABELS)}},
        "sysB": {"given": {"vtest": clips(given_b, LABELS)},
                 "generated": {"vtest": clips(given_b, [["product_efficacy"], None, LABELS[2]])}},
    }


def make_project(root: Path, narrations: bool = True) -> list[Video]:
    """data/processed (dataset + PNG frames), data/features, reports/narrations.json -- as the pipeline lays them out."""
    frames_root = (root / DATASET).parent
    videos = [make_video("vtrain", "train", "blue", frames_root), make_video("vtest", "test", "red", frames_root)]
    save_dataset(videos, root / DATASET)
    for v in videos:
        write_features(root / FEATURES, v)
    if narrations:
        (root / NARRATIONS).parent.mkdir(parents=True, exist_ok=True)
        (root / NARRATIONS).write_text(json.dumps(fake_narrations()))
    return videos


@pytest.fixture
def project(tmp_path) -> Path:
    make_project(tmp_path)
    return tmp_path


def is_dropped(caption: str) -> bool:
    return "dropped at" in caption


# -- navigation and what is shown -------------------------------------------------------------

def test_video_list_puts_test_videos_first(project):
    ex = NarrationExplorer.from_project(project)
    labels = [label for label, _ in ex.video_dropdown.options]
    assert labels == ["vtest · Vtest Lamp (test)", "vtrain · Vtrain Lamp (train)"]
    assert ex.video_id == "vtest" and ex.clip_index == 0
    assert [v.id for v in ordered_videos(ex.videos[::-1])] == ["vtest", "vtrain"]
    assert video_label(ex.video) == labels[0]
    assert "reports/metrics.json not found" in ex.summary_html.value

    metrics = {"sysA": {"CIDEr": 0.5, "label_acc": 0.25}, "sysB": {"CIDEr": 0.125}}
    (project / METRICS).write_text(json.dumps(metrics))
    summary = NarrationExplorer.from_project(project).summary_html.value
    assert "<th style='padding:2px 8px'>CIDEr</th>" in summary and "ROUGE-L" not in summary
    assert "<td style='padding:2px 8px'>sysA</td><td style='padding:2px 8px'>0.500</td>" in summary


def test_next_previous_change_what_is_shown(project):
    ex = NarrationExplorer.from_project(project)
    assert "Soft even light" not in ex.narration_html.value
    assert NARR["vtest"][0] in ex.narration_html.value and "A red round lamp for you." in ex.narration_html.value
    assert "pain point" in ex.clip_html.value and "3–8 words" in ex.clip_html.value
    assert ex.prev_button.disabled and not ex.next_button.disabled

    ex.next_button.click()                      # the button, as a user presses it
    assert ex.clip_index == 1 and ex.clip_slider.value == 2
    assert NARR["vtest"][1] in ex.narration_html.value and NARR["vtest"][0] not in ex.narration_html.value
    assert "Held in a hand, it glows softly." in ex.narration_html.value
    assert "product trial" in ex.clip_html.value and "clip 2 / 3" in ex.clip_html.value
    assert not ex.prev_button.disabled and not ex.next_button.disabled

    ex.next_button.click()
    assert ex.clip_index == 2 and ex.next_button.disabled
    ex.next()                                   # no wrap at the end
    assert ex.clip_index == 2 and ex.clip_slider.value == ex.clip_slider.max == 3
    assert "purchase guidance" in ex.clip_html.value

    ex.prev_button.click()
    ex.previous()
    ex.previous()                               # no wrap at the start
    assert ex.clip_index == 0 and ex.clip_slider.value == ex.clip_slider.min == 1 and ex.prev_button.disabled
    assert NARR["vtest"][0] in ex.narration_html.value

    ex.next()
    ex.set_video("vtrain")                      # a new video starts at its first clip
    assert ex.video_id == "vtrain" and ex.clip_index == 0 and ex.clip_slider.max == 3
    assert NARR["vtrain"][0] in ex.narration_html.value
    assert "sysA" not in ex.narration_html.value        # no system narrated a train video
    assert "Vtrain Lamp" in ex.knowledge_html.value and "half price" in ex.knowledge_html.value
    with pytest.raises(ValueError, match="unknown video id 'nope'"):
        ex.set_video("nope")


def test_per_clip_checks(project):
    ex = NarrationExplorer.from_project(project)
    shown = ex.narration_html.value
    assert "title='colour: ok'" in shown and "title='colour: wrong'" in shown    # sysA says red, sysB blue
    assert "6 words ✓ in 3–8" in shown                                          # the reference
    assert "3 words ✗ out of 3–8" not in shown and "3 words ✓ in 3–8" in shown  # sysB: "A blue lamp." = 3
    ex.next()
    assert "11 words ✗ out of 3–8 (+3)" in ex.narration_html.value              # sysB's long narration
    ex.next()
    assert "(empty)" in ex.narration_html.value and "0 words ✗ out of 3–8 (-3)" in ex.narration_html.value

    vocab = {"colour": ["red", "blue"], "shape": ["round", "square"], "action": ["held in a hand", "on a table"]}
    truth = {"colour": "red", "shape": "round", "action": "on a table"}
    assert fact_status("A red round lamp, held in a hand.", truth, vocab) == {
        "colour": "ok", "shape": "ok", "action": "wrong"}
    assert fact_status("A red or blue lamp.", truth, vocab)["colour"] == "wrong"   # ambiguous is not correct
    assert fact_status("A lamp.", truth, vocab) == {"colour": "absent", "shape": "absent", "action": "absent"}


def test_generated_mode_shows_predicted_labels(project):
    ex = NarrationExplorer.from_project(project)
    ex.mode_buttons.value = "generated"
    shown = ex.narration_html.value
    assert "<th style='text-align:left;padding:2px 8px'>label</th>" in shown
    assert "✓ pain point" in shown and "✗ product efficacy" in shown       # sysA right, sysB wrong
    ex.next()
    assert "✗ no label parsed" in ex.narration_html.value                   # sysB's label was junk
    ex.set_mode("given")
    assert ">label</th>" not in ex.narration_html.value


# -- frame compression at tau ------------------------------------------------------------------

def test_tau_changes_dropped_frame_marking(project):
    ex = NarrationExplorer.from_project(project, tau=0.9)
    assert len(ex.frames_box.children) == 1 + 3                  # the header and one box per frame
    assert [is_dropped(c) for c in ex.frame_captions()] == [False, True, False]   # the duplicate goes
    assert "2 of 3 frames kept at τ=0.90" in ex.frames_box.children[0].value
    assert "dropped at τ=0.90" in ex.frame_captions()[1]
    kept_image, dropped_image = (ex.frames_box.children[k].children[0] for k in (1, 2))
    assert kept_image.format == "png" and dropped_image.value != kept_image.value   # dimmed copy of frame A

    ex.set_tau(0.7)                                              # cosine(A, B) = 0.8 >= 0.7: B goes too
    assert [is_dropped(c) for c in ex.frame_captions()] == [False, True, True]
    assert "dropped at τ=0.70" in ex.frame_captions()[2]
    assert ex.kept_frames()[0] == [0]
    ex.set_tau(1.0)                                              # identical frames collapse even at 1.0
    assert [is_dropped(c) for c in ex.frame_captions()] == [False, True, False]
    ex.next()                                                    # orthogonal frames: all kept
    ex.set_tau(0.5)
    assert [is_dropped(c) for c in ex.frame_captions()] == [False, False]
    assert ex.message.value == ""


# -- the state alone: no widget is built ------------------------------------------------------

def test_state_module_imports_no_widgets():
    import ast

    import videonarrator.widgets.state as state

    tree = ast.parse(Path(state.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any("ipywidgets" in m for m in names), names


def test_state_navigation_is_bounded_and_validated(project):
    s = ExplorerState.from_project(project)
    assert (s.video_id, s.clip_index, s.mode, s.tau) == ("vtest", 0, "given", 1.0)   # no params.yaml: all kept
    assert not s.previous() and s.clip_index == 0
    assert s.next() and s.next() and not s.next() and s.clip_index == 2
    s.set_video("vtest")                                  # the shown video again: the clip stays
    assert s.clip_index == 2
    s.set_video("vtrain")
    assert (s.video_id, s.clip_index, s.clip.narration) == ("vtrain", 0, NARR["vtrain"][0])
    with pytest.raises(ValueError, match="clip index 3 out of range: the video has 3 clips"):
        s.set_clip(3)
    with pytest.raises(ValueError, match="unknown storyline mode 'free'; choose one of given, generated"):
        s.set_mode("free")
    with pytest.raises(ValueError, match="unknown video id 'nope'"):
        s.set_video("nope")
    s.set_tau(0.2)
    assert s.tau == 0.5
    s.set_tau(0.123456 + 0.6)
    assert s.tau == 0.7235
    assert ExplorerState.from_project(project, tau=3).tau == 1.0


def test_state_rows_carry_the_checks(project):
    s = ExplorerState.from_project(project)
    rows = s.narration_rows()
    assert [r.name for r in rows] == ["reference", "sysA", "sysB"]
    ref, a, b = rows
    assert (ref.text, ref.length, ref.label_ok, ref.labels) == (NARR["vtest"][0], 6, None, ["pain_point"])
    assert a.facts == {"colour": "ok", "shape": "ok", "action": "absent"}
    assert b.facts["colour"] == "wrong" and b.length == 3
    s.set_mode("generated")
    s.next()
    _, a, b = s.narration_rows()
    assert a.label_ok is True and b.labels is None and b.label_ok is False
    s.set_mode("given")
    s.next()
    assert s.narration_rows()[2].text == "" and s.narration_rows()[2].length == 0
    assert s.visible_facts() == ["colour", "shape", "action"]
    assert s.summary_metrics() == []                     # no metrics.json
    s.metrics = {"sysA": {"label_acc": 0.5, "CIDEr": 0.1}}
    assert s.summary_metrics() == ["CIDEr", "label_acc"]   # SUMMARY_METRICS order


def test_state_frames_and_notes(project):
    s = ExplorerState.from_project(project, tau=0.9)
    assert [f.dropped for f in s.frames()] == [False, True, False]
    assert s.frames()[1].path == project / "data/processed/frames/vtest/000_001.png" and s.frames()[1].time == 1.5
    s.set_tau(0.7)
    assert [f.dropped for f in s.frames()] == [False, True, True] and s.kept_frames()[0] == [0]
    data, fmt = s.frame_image(s.frames()[0].path, True)
    assert fmt == "png" and data != s.frame_image(s.frames()[0].path, False)[0]
    assert s.notes == {}
    features_path(project / FEATURES, "vtrain").unlink()
    s.set_video("vtrain")
    assert [f.dropped for f in s.frames()] == [None, None, None]
    assert "vtrain.safetensors does not exist" in s.notes["features"]
    s.set_video("vtest")
    s.kept_frames()                                       # cached at this tau: the note still follows the video
    assert "features" not in s.notes


def test_state_regenerate_names_what_is_missing(project):
    s = ExplorerState.from_project(project)
    with pytest.raises(FileNotFoundError, match="no trained model at .*`dvc repro train`"):
        s.regenerate()
    assert s.live == {} and s.model is None
    assert "narrations" not in s.notes
    (project / NARRATIONS).unlink()
    assert "`dvc repro evaluate`" in ExplorerState.from_project(project).notes["narrations"]   # plain text, no HTML


# -- missing files: a message in the UI, never an exception --------------------------------------

def test_missing_narrations_still_shows_references(tmp_path):
    make_project(tmp_path, narrations=False)
    ex = NarrationExplorer.from_project(tmp_path)
    assert NARR["vtest"][0] in ex.narration_html.value and "sysA" not in ex.narration_html.value
    assert "reports/narrations.json does not exist" in ex.message.value
    assert "<code>dvc repro evaluate</code>" in ex.message.value
    ex.next()
    assert NARR["vtest"][1] in ex.narration_html.value


def test_missing_frames_and_features_are_reported(project):
    missing = project / "data/processed/frames/vtest/000_002.png"
    missing.unlink()
    features_path(project / FEATURES, "vtest").unlink()
    ex = NarrationExplorer.from_project(project)
    assert f"frame file {missing} does not exist" in ex.message.value and "dvc repro prepare" in ex.message.value
    assert "vtest.safetensors does not exist" in ex.message.value and "dvc repro features" in ex.message.value
    assert "missing frame" in ex.frames_box.children[3].children[0].value
    assert not any(is_dropped(c) for c in ex.frame_captions())    # no features: nothing marked
    ex.set_video("vtrain")                                        # its files are there: the notes go away
    assert ex.message.value == ""
    assert [is_dropped(c) for c in ex.frame_captions()] == [False, True, False]
    ex.set_video("vtest")                                         # and come back (cached, still said)
    assert "vtest.safetensors does not exist" in ex.message.value


def test_missing_dataset_is_reported(tmp_path):
    ex = NarrationExplorer.from_project(tmp_path)
    assert "dataset.json does not exist" in ex.message.value and "dvc repro prepare" in ex.message.value
    assert ex.video_dropdown.options == ()
    ex.next_button.click()
    ex.regen_button.click()                     # nothing to narrate: no exception
    assert "dataset.json does not exist" in ex.message.value


def test_regenerate_without_model_shows_message(project):
    ex = NarrationExplorer.from_project(project)
    ex.regen_button.click()
    assert f"no trained model at {project / MODEL}" in ex.message.value
    assert "<code>dvc repro train</code>" in ex.message.value
    assert "live (" not in ex.narration_html.value and not ex.regen_button.disabled


# -- live regeneration with a tiny trained-format model ----------------------------------------

@pytest.fixture
def one_thread():
    """Tiny ops gain nothing from threads on a busy 2-core machine (as tests/test_generate.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model_project(root: Path, llm_dir: Path) -> list[Video]:
    """The fake project plus a tiny VideoNarrator in models/videonarrator and params.yaml pointing at its LLM."""
    from videonarrator.model import VideoNarrator, VideoNarratorConfig
    from videonarrator.prompt import build_clip_prompt

    videos = make_project(root)
    corpus = [build_clip_prompt(v, i, mode=m).text() for v in videos for i in range(3)
              for m in ("given", "generated")] * 10
    make_tiny_llm(llm_dir, corpus)
    cfg = VideoNarratorConfig(vision_width=W, num_patches=P, qformer_hidden=16, qformer_layers=2,
                              qformer_heads=2, num_query_tokens=4, patch_pos_embed=True, memory_frames=1,
                              story_clips=None, label_head=False)
    torch.manual_seed(0)
    model = VideoNarrator.from_llm(cfg, llm_dir, lora=DEFAULTS.lora(r=4, alpha=8, dropout=0.0,
                                                                    target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(root / MODEL)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["llm"]["path"] = str(llm_dir)
    params["evaluate"].update(max_new_tokens=10, temperature=0.1)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return videos


def test_regenerate_with_trained_model(tmp_path, one_thread):
    root = tmp_path / "project"
    tiny_model_project(root, tmp_path / "llm")
    ex = NarrationExplorer.from_project(root)
    assert ex.gen.max_new_tokens == 10 and Path(ex.llm_path) == tmp_path / "llm"   # read from params.yaml
    ex.set_tau(0.7)
    ex.regen_button.click()
    assert ex.message.value == "", ex.message.value
    assert ex.progress.max == 3 and ex.progress.value == ex.progress.max
    assert "done: 3 clips narrated live (given storyline, τ=0.70)" in ex.progress_label.value
    assert "live (trained model, τ=0.70)" in ex.narration_html.value
    ex.next()
    assert "live (trained model, τ=0.70)" in ex.narration_html.value         # every clip has its live row
    ex.set_mode("generated")
    assert "live (" not in ex.narration_html.value                            # narrated in given mode only
    result = ex.regenerate()
    assert result is not None and result.mode == "generated" and len(result.outputs) == 3
    assert "live (trained model, τ=0.70)" in ex.narration_html.value
    model = ex.state.model
    assert ex.regenerate() is not None and ex.state.model is model            # loaded once


def test_narrate_live_matches_narrate_videos(tmp_path, one_thread):
    """The per-clip driver decodes exactly as generate.narrate_videos does."""
    from videonarrator.model import VideoNarrator

    root = tmp_path / "project"
    videos = tiny_model_project(root, tmp_path / "llm")
    model = VideoNarrator.from_pretrained(root / MODEL, tmp_path / "llm")
    video = videos[1]
    visual = visual_inputs(video, root / FEATURES, 0.9)
    for mode in ("given", "generated"):
        cfg = DEFAULTS.generation(mode=mode, max_new_tokens=10, temperature=0.1, batch_size=1)
        seen = []
        live = narrate_live(model, video, visual, cfg, on_clip=lambda i, o: seen.append((i, o.text)))
        ref = narrate_videos(model, [video], {video.id: visual}, cfg, progress=False)[video.id]
        assert [o.raw for o in live] == [o.raw for o in ref] and [o.labels for o in live] == [o.labels for o in ref]
        assert seen == [(i, o.text) for i, o in enumerate(live)]
