"""Bad inputs, end to end: what the user sees for every row of docs/errors.md.

Each case below feeds one bad input to a public entry point (the function a
notebook or a command calls) and returns the message the user reads.  The
test checks the message names the file / record / key and contains the key
phrases registered with the case (what went wrong and what to do);
``test_docs_quote_the_real_messages`` checks that docs/errors.md quotes exactly
those phrases, so the document cannot drift from the code.

Several of these inputs are also tested, in more detail, next to their code
(test_video.py, test_esyncvidstory.py, test_params.py, test_narrate.py,
test_prepare.py, test_train.py, test_features.py); this file is the one place
for the whole matrix.
"""
import json
import re
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml

from test_esyncvidstory import RECORD, VID, edited
from helpers import DEFAULTS, make_tiny_llm
from videonarrator import narrate, stage
from videonarrator.data.esyncvidstory import load_esyncvidstory
from videonarrator.features import extract_features
from videonarrator.llm import load_llm
from videonarrator.model import VideoNarrator, VideoNarratorConfig, clip_bucket, encode_sample
from videonarrator.prepare import prepare_dataset
from videonarrator.prompt import build_clip_prompt
from videonarrator.schema import Clip, Product, Video
from videonarrator.train import train
from videonarrator.video import read_frames, sample_times

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "errors.md"

# name -> (function(tmp_path, request) -> message, key phrases the message must contain)
CASES: dict[str, tuple] = {}


def case(name: str, *phrases: str):
    def register(fn):
        assert name not in CASES, name
        CASES[name] = (fn, phrases)
        return fn
    return register


def message_of(exc_type, fn, *args, **kwargs) -> str:
    with pytest.raises(exc_type) as err:
        fn(*args, **kwargs)
    return str(err.value)


# -- small real inputs ---------------------------------------------------------------------------

def write_mp4(path: Path, n_frames: int, fps: int = 10, size: int = 64, faststart: bool = False) -> Path:
    """A real H.264 mp4 of ``n_frames`` grey frames (brightness steps so frames differ)."""
    options = {"movflags": "faststart"} if faststart else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for k in range(n_frames):
            img = np.full((size, size, 3), (40 + 20 * k) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def annotated(vid: str, seconds: int) -> Video:
    """An annotation for ``videos/<vid>.mp4``: one clip per second."""
    clips = [Clip(index=i, start=float(i), end=float(i + 1), window=(1, 5), labels=["pain_point"], narration="Dry?")
             for i in range(seconds)]
    return Video(id=vid, product=Product("Aloe Cream", {"efficacy": ["soothes"]}), clips=clips,
                 video_path=f"videos/{vid}.mp4")


def write_split(tmp_path: Path, records, name: str = "split.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def params_file(tmp_path: Path, edit=None) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    if edit:
        edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def saved_narrator(tmp_path_factory):
    """A tiny LLM and a tiny narrator saved in the trained-model layout."""
    root = tmp_path_factory.mktemp("narrator")
    llm = make_tiny_llm(root / "llm", ["Product: Aloe Cream. Label: pain point Narration: Dry skin?"] * 20)
    torch.manual_seed(0)
    cfg = VideoNarratorConfig(vision_width=16, num_patches=5, qformer_hidden=16, qformer_heads=2,
                              qformer_layers=1, num_query_tokens=2, patch_pos_embed=True,
                              memory_frames=1, story_clips=None, label_head=True)
    VideoNarrator.from_llm(cfg, llm, DEFAULTS.lora(r=2, dropout=0.0)).save_pretrained(root / "model")
    return root, llm


# -- videos -----------------------------------------------------------------------------------------

@case("truncated mp4", "cannot decode video", "The file is truncated or corrupt; re-export or re-download it")
def _(tmp_path, request):
    data = write_mp4(tmp_path / "good.mp4", 20).read_bytes()
    bad = tmp_path / "truncated.mp4"
    bad.write_bytes(data[: len(data) // 2])
    msg = message_of(ValueError, read_frames, bad)
    assert str(bad) in msg
    return msg


@case("corrupt mp4", "cannot decode video", "The file is truncated or corrupt; re-export or re-download it")
def _(tmp_path, request):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    msg = message_of(ValueError, read_frames, bad)
    assert str(bad) in msg
    return msg


@case("corrupt mp4 given to videonarrator-narrate", "error: cannot decode video")
def _(tmp_path, request):
    # narrate checks that the model and the LLM exist before decoding; the video fails next
    (tmp_path / "model").mkdir()
    (tmp_path / "model/config.json").write_text("{}")
    params = params_file(tmp_path, lambda p: p["llm"].update(path=str(tmp_path / "model")))
    (tmp_path / "sheet.yaml").write_text(yaml.safe_dump({"name": "X", "knowledge": {"efficacy": ["glow"]}}))
    bad = tmp_path / "ad.mp4"
    bad.write_bytes(b"\x00" * 500)
    capsys = request.getfixturevalue("capsys")
    code = narrate.main([str(bad), str(tmp_path / "sheet.yaml"), "--model", str(tmp_path / "model"),
                         "--params", str(params), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and str(bad) in err and not (tmp_path / "out").exists()
    return err


@case("video with no decodable frames", "has no decodable frames; the file is truncated or corrupt; "
                                        "re-export or re-download it")
def _(tmp_path, request):
    # moov atom first (faststart), cut right after the mdat header: a valid stream with no frame data
    data = write_mp4(tmp_path / "fast.mp4", 20, faststart=True).read_bytes()
    bad = tmp_path / "noframes.mp4"
    bad.write_bytes(data[: data.find(b"mdat") + 4])
    msg = message_of(ValueError, read_frames, bad)
    assert str(bad) in msg
    return msg


@case("file with no video stream", "has no video stream (audio only, or not a video); give a video file")
def _(tmp_path, request):
    path = tmp_path / "audio.mp4"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    msg = message_of(ValueError, read_frames, path)
    assert str(path) in msg
    return msg


@case("empty video file", "is empty (0 bytes); replace it with a complete copy")
def _(tmp_path, request):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    msg = message_of(ValueError, read_frames, path)
    assert str(path) in msg
    return msg


@case("missing video file", "does not exist; check the path (or rerun the stage that writes it)")
def _(tmp_path, request):
    msg = message_of(ValueError, read_frames, tmp_path / "nope.mp4")
    assert "nope.mp4" in msg
    return msg


@case("bad video in the prepare stage", "cannot decode video")
def _(tmp_path, request):
    write_mp4(tmp_path / "raw/videos/good.mp4", 20)
    (tmp_path / "raw/videos/bad.mp4").write_bytes(b"\x00" * 300)
    out = tmp_path / "processed"
    msg = message_of(ValueError, prepare_dataset, [annotated("good", 2), annotated("bad", 2)], tmp_path / "raw",
                     out, DEFAULTS.prepare(), progress=False)
    assert "videos/bad.mp4" in msg and not out.exists()          # nothing half-prepared is left
    return msg


@case("skip_bad: a bad video is left out", "cannot decode video")
def _(tmp_path, request):
    write_mp4(tmp_path / "raw/videos/good.mp4", 20)
    (tmp_path / "raw/videos/bad.mp4").write_bytes(b"\x00" * 300)
    videos, metrics = prepare_dataset([annotated("good", 2), annotated("bad", 2)], tmp_path / "raw",
                                      tmp_path / "processed", DEFAULTS.prepare(), progress=False, skip_bad=True)
    assert [v.id for v in videos] == ["good"]
    (skipped,) = metrics["skipped_videos"]                       # reports/prepare.json "skipped_videos"
    assert skipped["id"] == "bad" and "videos/bad.mp4" in skipped["reason"]
    return skipped["reason"]


@case("skip_bad: every video is bad", "no video could be prepared", "see the reasons")
def _(tmp_path, request):
    (tmp_path / "raw/videos").mkdir(parents=True)
    (tmp_path / "raw/videos/bad.mp4").write_bytes(b"\x00" * 300)
    msg = message_of(ValueError, prepare_dataset, [annotated("bad", 2)], tmp_path / "raw", tmp_path / "processed",
                     DEFAULTS.prepare(), progress=False, skip_bad=True)
    assert "'bad'" in msg and "videos/bad.mp4" in msg and not (tmp_path / "processed").exists()
    return msg


# -- annotations (E-SyncVidStory split files) ---------------------------------------------------------

SKIP_HINT = "fix the record, or load the file with load_esyncvidstory_report to skip bad records"


def annotation_error(tmp_path, record) -> str:
    path = write_split(tmp_path, [RECORD, record])
    msg = message_of(ValueError, load_esyncvidstory, path)
    assert f"{path} record #1" in msg                            # the file and the record
    return msg


@case("annotation: missing field", "missing field(s) ['p_info']", SKIP_HINT)
def _(tmp_path, request):
    record = edited(id="m" * 32)
    del record["p_info"]
    msg = annotation_error(tmp_path, record)
    assert "m" * 32 in msg
    return msg


@case("annotation: wrong type", "'p_info' must be a string, got list", SKIP_HINT)
def _(tmp_path, request):
    msg = annotation_error(tmp_path, edited(id="t" * 32, p_info=["质地：轻薄"]))
    assert "t" * 32 in msg
    return msg


@case("annotation: unknown label", "unknown script label '飞行表演'", "expected one of:", SKIP_HINT)
def _(tmp_path, request):
    msg = annotation_error(tmp_path, edited("剧本类型：产品推荐", "剧本类型：产品推荐+飞行表演", id="u" * 32))
    assert f"video '{'u' * 32}' clip 1" in msg
    return msg


@case("annotation: window lo > hi", "word window 13-7 has lo > hi", SKIP_HINT)
def _(tmp_path, request):
    msg = annotation_error(tmp_path, edited("字数要求：7-13个字", "字数要求：13-7个字", id="w" * 32))
    assert f"video '{'w' * 32}' clip 1" in msg
    return msg


@case("annotation: zero-length clip", "no frames in 'images' (zero-length clip)", SKIP_HINT)
def _(tmp_path, request):
    msg = annotation_error(tmp_path, edited(id="z" * 32, images=[[f"{VID}_001.jpg"], []],
                                            frames=[f"{'z' * 32}_0.pkl", f"{'z' * 32}_1.pkl"]))
    assert f"video '{'z' * 32}' clip 2" in msg
    return msg


@case("annotation: full-width digits in a window", "word window line", "it has full-width digits; write the "
      "numbers with ASCII digits 0-9", SKIP_HINT)
def _(tmp_path, request):
    msg = annotation_error(tmp_path, edited("字数要求：7-13个字", "字数要求：７-１３个字", id="d" * 32))
    assert f"video '{'d' * 32}' clip 1 line 10" in msg                # the clip and the line of 'inputs'
    return msg


@case("annotation: clip numbers out of order", "header says 镜头1/2 but it is clip 2 of 2",
      "numbers must increase, stay <= N", SKIP_HINT)
def _(tmp_path, request):
    msg = annotation_error(tmp_path, edited("镜头2/2：", "镜头1/2：", id="n" * 32))
    assert f"video '{'n' * 32}' clip 2 line 13" in msg
    return msg


@case("annotation: empty list", "the list of video records is empty", "point to a split file with records")
def _(tmp_path, request):
    path = write_split(tmp_path, [])
    msg = message_of(ValueError, load_esyncvidstory, path)
    assert str(path) in msg
    return msg


@case("annotation: a directory", "is a directory; give the split file inside it")
def _(tmp_path, request):
    msg = message_of(IsADirectoryError, load_esyncvidstory, tmp_path)
    assert str(tmp_path) in msg
    return msg


@case("annotation: not UTF-8", "not UTF-8 text", "re-save the file as UTF-8")
def _(tmp_path, request):
    path = tmp_path / "latin1.json"
    path.write_bytes('[{"id": "caf\xe9"}]'.encode("latin-1"))
    msg = message_of(ValueError, load_esyncvidstory, path)
    assert str(path) in msg
    return msg


@case("annotation: not JSON", "invalid JSON", "fix the file at that line and column")
def _(tmp_path, request):
    path = tmp_path / "broken.json"
    path.write_text('[{"id": ', encoding="utf-8")
    msg = message_of(ValueError, load_esyncvidstory, path)
    assert str(path) in msg
    return msg


# -- frames -------------------------------------------------------------------------------------------

@case("missing frame file (features)", "frame file", "regenerate or extract the frames first")
def _(tmp_path, request):
    from PIL import Image
    names = ["v1/000.png", "v1/001.png"]
    (tmp_path / "frames/v1").mkdir(parents=True)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "frames" / names[0])   # the 2nd is missing
    video = Video(id="v1", product=Product("X"), clips=[Clip(0, 0.0, 2.0, (1, 5), ["pain_point"], frames=names)])
    msg = message_of(FileNotFoundError, extract_features, [video], tmp_path / "frames", tmp_path / "features",
                     DEFAULTS.tower(), progress=False)
    assert "'v1'" in msg and "001.png does not exist" in msg
    return msg


@case("missing frame file (E-SyncVidStory frames)", "is missing under", "add it or remove the video's frames")
def _(tmp_path, request):
    frames = tmp_path / "frames"
    frames.mkdir()
    for name in (f"{VID}_001.jpg", f"{VID}_002.jpg", f"{VID}_005.jpg"):       # _004 and _006 are missing
        (frames / name).write_bytes(b"\xff\xd8")
    msg = message_of(FileNotFoundError, load_esyncvidstory, write_split(tmp_path, [RECORD]), frames_root=frames)
    assert f"'{VID}_004.jpg' of video '{VID}' clip 2" in msg
    return msg


@case("E-SyncVidStory video without frames (main pipeline)", "has no frames under",
      "without frames, run the text-side profile instead: dvc repro esyncvidstory/dvc.yaml")
def _(tmp_path, request):
    from videonarrator.realdata import prepare_official

    frames = tmp_path / "frames"
    frames.mkdir()
    esv = {"annotations": str(write_split(tmp_path, [RECORD])), "frames_root": str(frames), "val_fraction": 0.1,
           "test_fraction": 0.1, "max_knowledge_chars": None}
    msg = message_of(FileNotFoundError, prepare_official, esv, 0, tmp_path / "processed", progress=False)
    assert f"video '{VID}'" in msg and not (tmp_path / "processed").exists()
    return msg


# -- the product sheet (videonarrator-narrate) ---------------------------------------------------------

def narrate_cli_error(tmp_path, request, sheet_text: str) -> str:
    sheet = tmp_path / "sheet.yaml"
    sheet.write_text(sheet_text, encoding="utf-8")
    capsys = request.getfixturevalue("capsys")
    code = narrate.main([str(tmp_path / "ad.mp4"), str(sheet), "--params", str(params_file(tmp_path)),
                         "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and str(sheet) in err
    return err


@case("empty product sheet", "the product sheet needs a non-empty 'name'")
def _(tmp_path, request):
    return narrate_cli_error(tmp_path, request, "")


@case("product sheet without knowledge", "'knowledge' must map at least one field to a list of items")
def _(tmp_path, request):
    return narrate_cli_error(tmp_path, request, "name: Lumo serum\n")


# -- params.yaml -------------------------------------------------------------------------------------------

def stage_error(tmp_path, request, edit) -> str:
    params_file(tmp_path, edit)
    capsys = request.getfixturevalue("capsys")
    assert stage.main(["prepare", "--root", str(tmp_path)]) == 1
    assert not (tmp_path / "reports").exists()                  # failed before anything ran
    return capsys.readouterr().err


@case("params: wrong type", "prepare.n_videos must be an integer >= 3", "got 'eighty' (str)")
def _(tmp_path, request):
    return stage_error(tmp_path, request, lambda p: p["prepare"].update(n_videos="eighty"))


@case("params: out of range", "model.lora_dropout must be a number in [0, 1), got 1.5 (float)")
def _(tmp_path, request):
    return stage_error(tmp_path, request, lambda p: p["model"].update(lora_dropout=1.5))


@case("params: true for a number", "prepare.n_videos must be an integer >= 3", "got True (bool)")
def _(tmp_path, request):
    return stage_error(tmp_path, request, lambda p: p["prepare"].update(n_videos=True))


@case("params: inconsistent keys", "prepare.min_clips must be <= prepare.max_clips")
def _(tmp_path, request):
    return stage_error(tmp_path, request, lambda p: p["prepare"].update(min_clips=9, max_clips=4))


@case("params: unknown key", "unknown key prepare.n_vidoes; known keys:")
def _(tmp_path, request):
    return stage_error(tmp_path, request, lambda p: p["prepare"].update(n_vidoes=3))


@case("package of another checkout", "whose code differs from this project's",
      "(it reinstalls the package for this checkout)")
def _(tmp_path, request):
    """A virtual environment shared by two clones imports the other clone's code: the stage stops
    before anything runs; an identical copy of the code is fine."""
    import shutil
    params_file(tmp_path)
    shutil.copytree(ROOT / "src" / "videonarrator", tmp_path / "src" / "videonarrator",
                    ignore=shutil.ignore_patterns("__pycache__"))
    stage.check_package_source(tmp_path)                                  # same code: fine
    with open(tmp_path / "src" / "videonarrator" / "train.py", "a") as f:
        f.write("\n# edited in this checkout only\n")
    capsys = request.getfixturevalue("capsys")
    assert stage.main(["prepare", "--root", str(tmp_path)]) == 1
    assert not (tmp_path / "reports").exists()
    return capsys.readouterr().err


# -- models ---------------------------------------------------------------------------------------------

@case("missing model folder", "is not a saved VideoNarrator (config.json missing); train one first or check the path")
def _(tmp_path, request):
    _, llm = request.getfixturevalue("saved_narrator")
    msg = message_of(FileNotFoundError, VideoNarrator.from_pretrained, tmp_path / "models/videonarrator", llm)
    assert str(tmp_path / "models/videonarrator") in msg
    return msg


@case("missing model folder (videonarrator-narrate)", "error: trained model", "first (or pass --model)")
def _(tmp_path, request):
    capsys = request.getfixturevalue("capsys")
    (tmp_path / "sheet.yaml").write_text(yaml.safe_dump({"name": "X", "knowledge": {"efficacy": ["glow"]}}))
    code = narrate.main([str(tmp_path / "ad.mp4"), str(tmp_path / "sheet.yaml"), "--model", str(tmp_path / "nope"),
                         "--params", str(params_file(tmp_path)), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and str(tmp_path / "nope") in err
    return err


@case("missing LLM folder", "does not exist (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set",
      "pass a local folder written by save_pretrained")
def _(tmp_path, request):
    request.getfixturevalue("monkeypatch").setenv("HF_HUB_OFFLINE", "1")
    msg = message_of(FileNotFoundError, load_llm, "HuggingFaceTB/SmolLM2-135M-Instruct", lora=None)
    assert "SmolLM2-135M-Instruct" in msg
    return msg


@case("incomplete model folder: no visual weights", "visual.safetensors is missing; the saved narrator is incomplete",
      "train it again (dvc repro train)")
def _(tmp_path, request):
    import shutil
    root, llm = request.getfixturevalue("saved_narrator")
    model = shutil.copytree(root / "model", tmp_path / "model")
    (model / "visual.safetensors").unlink()
    msg = message_of(FileNotFoundError, VideoNarrator.from_pretrained, model, llm)
    assert str(model) in msg
    return msg


@case("incomplete model folder: no label head weights", "label_head.safetensors is missing; the saved narrator is "
      "incomplete", "train it again (dvc repro train)")
def _(tmp_path, request):
    import shutil
    root, llm = request.getfixturevalue("saved_narrator")
    model = shutil.copytree(root / "model", tmp_path / "model")
    (model / "label_head.safetensors").unlink()
    msg = message_of(FileNotFoundError, VideoNarrator.from_pretrained, model, llm)
    assert str(model) in msg
    return msg


@case("incomplete model folder: no adapter", "no LoRA adapter in", "(adapter_config.json missing)",
      "train the narrator again (dvc repro train)")
def _(tmp_path, request):
    import shutil
    root, llm = request.getfixturevalue("saved_narrator")
    model = shutil.copytree(root / "model", tmp_path / "model")
    shutil.rmtree(model / "adapter")
    msg = message_of(FileNotFoundError, VideoNarrator.from_pretrained, model, llm)
    assert str(model / "adapter") in msg
    return msg


# -- killed runs --------------------------------------------------------------------------------------------

def tiny_training(llm):
    """A tiny narrator and four one-clip samples (random patch tokens)."""
    video = Video(id="v", product=Product("Aloe Cream", {"efficacy": ["soothes"]}),
                  clips=[Clip(i, 2.0 * i, 2.0 * i + 2, (1, 5), ["pain_point"], "Dry skin?") for i in range(4)])
    torch.manual_seed(0)
    cfg = VideoNarratorConfig(vision_width=16, num_patches=5, qformer_hidden=16, qformer_heads=2,
                              qformer_layers=1, num_query_tokens=2, patch_pos_embed=True,
                              memory_frames=1, story_clips=None, label_head=False)
    model = VideoNarrator.from_llm(cfg, llm, DEFAULTS.lora(r=2, dropout=0.0))
    g = torch.Generator().manual_seed(0)
    samples = [encode_sample(model.tokenizer, build_clip_prompt(video, i), torch.randn(1, 5, 16, generator=g),
                             None, clip_bucket(video, i)) for i in range(4)]
    return model, samples


TINY_TRAIN = DEFAULTS.train(steps=2, batch_size=2, checkpoint_every=1, eval_every=2, eval_clips=2, precision="fp32",
                         warmup_steps=1, modes=["given"])


@case("killed training run", "resuming from", "checkpoint.pt at step")
def _(tmp_path, request):
    _, llm = request.getfixturevalue("saved_narrator")
    capsys = request.getfixturevalue("capsys")
    model, samples = tiny_training(llm)
    train(model, samples, [], TINY_TRAIN, tmp_path / "models/videonarrator", progress=False, stop_after=1)  # "killed"
    assert (tmp_path / "models/videonarrator.ckpt/checkpoint.pt").is_file()
    capsys.readouterr()
    model, samples = tiny_training(llm)
    result = train(model, samples, [], TINY_TRAIN, tmp_path / "models/videonarrator", progress=False)
    assert result["steps"] == 2 and (tmp_path / "models/videonarrator/config.json").is_file()
    return capsys.readouterr().out


@case("checkpoint of other settings", "was written by a run with other settings or data; delete it")
def _(tmp_path, request):
    _, llm = request.getfixturevalue("saved_narrator")
    model, samples = tiny_training(llm)
    train(model, samples, [], TINY_TRAIN, tmp_path / "models/videonarrator", progress=False, stop_after=1)
    model, samples = tiny_training(llm)
    other = replace(TINY_TRAIN, lr_lora=0.5)
    msg = message_of(ValueError, train, model, samples, [], other, tmp_path / "models/videonarrator", progress=False)
    assert str(tmp_path / "models/videonarrator.ckpt/checkpoint.pt") in msg
    return msg


# -- the matrix -------------------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_a_clear_message(name, tmp_path, request):
    fn, phrases = CASES[name]
    message = fn(tmp_path, request)
    for phrase in phrases:
        assert phrase in message, f"{name}: {phrase!r} not in the message:\n{message}"


def test_a_clip_shorter_than_one_second_gets_one_frame(tmp_path):
    """No error: a 0.6 s video becomes one clip with one frame (its middle) and a 1-5 word window."""
    spans, frames, info = narrate.cut_video(write_mp4(tmp_path / "short.mp4", 6), DEFAULTS.prepare(), 8.0, frame_size=32)
    assert spans == [(0.0, 0.6)] and info.n_frames == 6
    assert sample_times(*spans[0]) == [0.5]
    assert narrate.window_for(0.6, "en") == (1, 5)
    assert sample_times(1.0, 1.4) == [1.2]      # shorter than half a second: its midpoint


def quoted_phrases(text: str) -> list[str]:
    """Every `code span` in the 'what the user sees' column (the 2nd) of the doc's tables."""
    phrases = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.lstrip().startswith("|") else []
        if len(cells) >= 3 and not set(cells[1]) <= set("-: "):
            phrases += re.findall(r"``(.+?)``|`([^`]+)`", cells[1])
    return [a or b for a, b in phrases]


def test_docs_quote_the_real_messages():
    text = DOC.read_text(encoding="utf-8")
    registered = {p for _, phrases in CASES.values() for p in phrases}
    quoted = quoted_phrases(text)
    assert quoted, "no quoted messages found in docs/errors.md"
    unverified = sorted(set(quoted) - registered)
    assert not unverified, f"docs/errors.md quotes phrases no test checks: {unverified}"
    missing = sorted(p for p in registered if f"`{p}`" not in text)
    assert not missing, f"docs/errors.md does not quote these real messages: {missing}"
    cited = set(re.findall(r"`\[(.+?)\]`", text))
    assert cited - set(CASES) == set(), f"docs/errors.md cites cases that do not exist: {sorted(cited - set(CASES))}"
    assert set(CASES) - cited == set(), f"docs/errors.md does not cite these cases: {sorted(set(CASES) - cited)}"
