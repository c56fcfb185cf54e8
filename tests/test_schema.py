import json

import pytest

from videonarrator.schema import (Clip, Product, SchemaError, Video, load_dataset, save_dataset,
                                  text_length, video_from_dict, video_to_dict)


def make_video(**kw):
    clips = [Clip(index=0, start=0.0, end=2.0, window=(2, 8), labels=["pain_point"], narration="Tired of dry skin?"),
             Clip(index=1, start=2.0, end=5.0, window=(4, 10), labels=["product_trial", "product_efficacy"],
                  narration="Here it is held in a hand.", frames=["frames/v/001_000.jpg"])]
    return Video(**{"id": "v1", "product": Product("Lumo serum", {"efficacy": ["a glow"]}), "clips": clips, **kw})


def test_text_length_units():
    assert text_length("Tired of dry skin? It's twenty-five percent off!", "en") == 8
    assert text_length("质地轻薄，保湿不油腻。", "zh") == 11   # every character, as the windows count
    with pytest.raises(ValueError, match="unknown language 'fr'"):
        text_length("x", "fr")


def test_json_round_trip(tmp_path):
    v = make_video()
    assert video_from_dict(json.loads(json.dumps(video_to_dict(v)))) == v
    save_dataset([v], tmp_path / "d.json", meta={"a": 1})
    videos, meta = load_dataset(tmp_path / "d.json")
    assert videos == [v] and meta == {"a": 1}
    assert videos[1 - 1].clips[1].duration == 3.0


@pytest.mark.parametrize("change, message", [
    (lambda d: d["clips"][1].update(start=1.0), "clip 1: starts at 1.0 before the previous clip ends"),
    (lambda d: d["clips"][0].update(end=0.0), "clip 0: zero or negative length"),
    (lambda d: d["clips"][0].update(window=[9, 3]), r"clip 0: word window \(9, 3\)"),
    (lambda d: d["clips"][0].update(labels=["nonsense"]), "unknown script label 'nonsense'"),
    (lambda d: d["clips"][0].update(labels=[]), "clip 0: no script label"),
    (lambda d: d["clips"][1].update(index=5), "clip 1: index is 5"),
    (lambda d: d.update(language="fr"), "language 'fr'"),
    (lambda d: d.update(clips=[]), "no clips"),
    (lambda d: d["clips"][0].pop("start"), "malformed record"),
    (lambda d: d["clips"][0].update(end="soon"), "malformed record"),
])
def test_invalid_records_name_the_video(change, message):
    d = video_to_dict(make_video())
    change(d)
    with pytest.raises(SchemaError, match=message) as err:
        video_from_dict(d)
    assert "'v1'" in str(err.value)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json does not exist"):
        load_dataset(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe not json")
    with pytest.raises(SchemaError, match="bad.json: not valid UTF-8 JSON"):
        load_dataset(bad)
    other = tmp_path / "other.json"
    other.write_text("[1, 2]")
    with pytest.raises(SchemaError, match="other.json: not a VideoNarrator dataset"):
        load_dataset(other)


def test_failed_save_leaves_the_old_file(tmp_path):
    path = tmp_path / "d.json"
    save_dataset([make_video()], path)
    before = path.read_bytes()
    broken = make_video()
    broken.clips[0].labels = ["nonsense"]
    with pytest.raises(SchemaError):
        save_dataset([broken], path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["d.json"]
