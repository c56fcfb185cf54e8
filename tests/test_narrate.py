"""Narrate my own video: a real mp4 + a product sheet -> SRT, WebVTT and JSON."""
import json
from pathlib import Path

import av
import pytest
import torch
import yaml

from helpers import DEFAULTS, make_tiny_llm
from videonarrator import narrate
from videonarrator.config import Settings
from videonarrator.model import VideoNarrator, VideoNarratorConfig
from videonarrator.schema import Product
from videonarrator.subtitles import read_subtitles

ROOT = Path(__file__).resolve().parents[1]
SHEET = {"name": "Bunny plush", "knowledge": {"material": ["soft fleece"], "efficacy": ["hugs all night"]}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny narrator in the trained-model layout, for the tiny tower of the default profile."""
    root = tmp_path_factory.mktemp("narrate")
    llm = make_tiny_llm(root / "llm", ["Product: Bunny plush soft fleece hugs all night. Label: Narration:"] * 20)
    torch.manual_seed(0)
    cfg = VideoNarratorConfig(vision_width=64, num_patches=64, qformer_hidden=16, qformer_heads=2, num_query_tokens=2,
                              qformer_layers=2, patch_pos_embed=True, memory_frames=1, story_clips=None, label_head=False)
    VideoNarrator.from_llm(cfg, llm, DEFAULTS.lora(r=2)).save_pretrained(root / "model")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["llm"]["path"] = str(llm)
    params["evaluate"]["max_new_tokens"] = 12
    sheet = root / "sheet.yaml"
    sheet.write_text(yaml.safe_dump(SHEET))
    return root, params, sheet


@pytest.mark.slow
def test_narrates_a_real_video_into_timed_subtitles(setup, real_video, tmp_path):
    root, params, sheet = setup
    written = narrate.narrate_file(real_video, sheet, tmp_path, Settings(params), root / "model", max_clip_s=2.0,
                                   progress=False)
    report = json.loads(written["json"].read_text())
    spans = [(c["start"], c["end"]) for c in report["clips"]]
    assert len(spans) == 3 and spans[0][0] == 0 and spans[-1][1] == pytest.approx(5.28)   # 5.28 s, no cut
    assert report["mode"] == "generated"
    for kind in ("srt", "vtt"):
        cues = read_subtitles(written[kind])                  # strict format check
        assert [(c.start, c.end) for c in cues] == [(a, b) for (a, b), c in zip(spans, report["clips"])
                                                    if c["narration"].strip()]
    with av.open(str(written["srt"])) as container:          # FFmpeg reads it as a subtitle stream
        assert container.streams.subtitles


def test_product_sheet_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.yaml: the product sheet needs a non-empty 'name'"):
        narrate.load_product_sheet(empty)
    no_facts = tmp_path / "nofacts.json"
    no_facts.write_text(json.dumps({"name": "X", "knowledge": {}}))
    with pytest.raises(ValueError, match="nofacts.json: 'knowledge' must map at least one field"):
        narrate.load_product_sheet(no_facts)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "X", "knowledge": {"efficacy": [{"a": 1}]}}))
    with pytest.raises(ValueError, match="knowledge field 'efficacy'"):
        narrate.load_product_sheet(bad)
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps({"name": " X ", "knowledge": {"efficacy": "glow"}}))
    assert narrate.load_product_sheet(ok).knowledge == {"efficacy": ["glow"]}


def test_windows_and_storyline_checks():
    assert narrate.window_for(4.0, "en") == (7, 13)       # 2.5 words/s x 4 s = 10, +-3
    assert narrate.window_for(0.4, "en") == (1, 4)
    product = Product("X", {"a": ["b"]})
    with pytest.raises(ValueError, match="--storyline has 1 labels but the video was cut into 2 clips"):
        narrate.build_video("v", product, [(0, 2), (2, 4)], "en", ["pain_point"])


def test_missing_model_fails_before_decoding(setup, tmp_path, capsys):
    root, params, sheet = setup
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    code = narrate.main(["nothing.mp4", str(sheet), "--model", str(tmp_path / "nope"),
                         "--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "out")])
    assert code == 1 and "trained model" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert narrate.main(["x.mp4", str(sheet), "--storyline", "nonsense"]) == 2


@pytest.mark.slow
def test_voice_writes_a_narrated_copy_whose_utterances_start_at_the_cues(setup, real_video, tmp_path, capsys):
    """The acceptance command: `videonarrator-narrate VIDEO product.yaml --voice`."""
    import shutil

    from test_voice import decoded_voice, quiet_before, utterance_starts, video_packets

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng): nothing to speak with")
    root, params, sheet = setup
    params = {**params, "evaluate": {**params["evaluate"], "max_new_tokens": 6}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    code = narrate.main([str(real_video), str(sheet), "--voice", "--max-clip-s", "2", "--model", str(root / "model"),
                         "--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    out = tmp_path / "out" / f"{real_video.stem}.narrated.mp4"
    assert f"mp4: {out}" in capsys.readouterr().out
    cues = read_subtitles(tmp_path / "out" / f"{real_video.stem}.srt")
    report = json.loads((tmp_path / "out" / f"{real_video.stem}.json").read_text())
    assert len(cues) == sum(bool(c["narration"].strip()) for c in report["clips"]) >= 2
    samples = decoded_voice(out)
    starts = utterance_starts(samples)
    assert len(starts) == len(cues)                                # one utterance per cue
    for s, cue in zip(starts, cues):
        assert cue.start <= s < cue.start + 0.1                   # starts with its cue...
        assert quiet_before(samples, cue.end)                     # ...and is over before the cue ends
    assert video_packets(out) == video_packets(real_video)
