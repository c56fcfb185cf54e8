"""E-SyncVidStory loader: real records (VN_ESYNCVIDSTORY) and hand-made bad records."""
import copy
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videonarrator.data.esyncvidstory import (
    has_frames, load_esyncvidstory, load_esyncvidstory_report, parse_record,
    resolve_frames, save_esyncvidstory, to_official,
)
from videonarrator.labels import LABEL_FROM_ZH, LABEL_ZH
from videonarrator.schema import Clip, Product, SchemaError, Video
from videonarrator.stats import dataset_statistics

# A record in the official layout, written here so these tests need no data file.
VID = "0123456789abcdef0123456789abcdef"
RECORD = {
    "inputs": (
        "商品信息：\n名称：测试牌保湿面霜\n质地：轻薄、不油腻\n成分/材质：玻尿酸、3：3：1科学配比\n功效：保湿\n\n广告视频：\n"
        "镜头1/2：\n场景：<vid_start><vid_end>\n字数要求：7-13个字\n剧本类型：产品推荐\n1.推荐这款面霜给大家。\n"
        "镜头2/2：\n场景：<vid_start><vid_end>\n字数要求：8-14个字\n剧本类型：质地/成分/材质+产品功效\n2.质地轻薄，保湿不油腻。"
    ),
    "id": VID,
    "frames": [f"{VID}_0.pkl", f"{VID}_1.pkl"],
    "images": [[f"{VID}_001.jpg", f"{VID}_002.jpg"], [f"{VID}_004.jpg", f"{VID}_005.jpg", f"{VID}_006.jpg"]],
    "p_info": "质地：轻薄、不油腻\n成分/材质：玻尿酸、3：3：1科学配比\n功效：保湿",
}


def edited(inputs_old="", inputs_new="", **fields):
    r = copy.deepcopy(RECORD)
    if inputs_old:
        assert inputs_old in r["inputs"], inputs_old
        r["inputs"] = r["inputs"].replace(inputs_old, inputs_new, 1)
    r.update(fields)
    return r


def write(tmp_path, records, name="split.json"):
    p = tmp_path / name
    p.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    return p


# -- the inline record ------------------------------------------------------------

def test_inline_record_parses_exactly():
    v = parse_record(RECORD, split="val")
    assert (v.id, v.language, v.split) == (VID, "zh", "val")
    assert v.product.name == "测试牌保湿面霜"
    assert v.product.knowledge == {"质地": ["轻薄", "不油腻"], "成分/材质": ["玻尿酸", "3：3：1科学配比"], "功效": ["保湿"]}
    a, b = v.clips
    assert (a.index, a.start, a.end, a.window, a.labels) == (0, 0.0, 2.0, (7, 13), ["product_recommendation"])
    assert (b.index, b.start, b.end, b.window) == (1, 2.0, 5.0, (8, 14))
    assert b.labels == ["texture_material", "product_efficacy"]
    assert a.narration == "推荐这款面霜给大家。" and b.narration == "质地轻薄，保湿不油腻。"
    assert b.frames == RECORD["images"][1] and b.meta["feature_file"] == f"{VID}_1.pkl"
    assert to_official(v) == RECORD
    assert list(to_official(v)) == list(RECORD)  # same key order -> same bytes when dumped


def test_to_official_of_a_new_video_and_edits():
    v = Video(id="x1", language="zh", split="test", product=Product("面霜", {"功效": ["保湿", "修护"], "外观": []}),
              clips=[Clip(0, 0.0, 2.0, (3, 9), ["pain_point", "product_trial"], "皮肤干？试试它。", ["x1_001.jpg", "x1_002.jpg"])])
    r = to_official(v)
    assert r["frames"] == ["x1_0.pkl"]  # the reference naming when no feature file is known
    assert r["p_info"] == "功效：保湿、修护\n外观："
    assert r["inputs"].endswith("镜头1/1：\n场景：<vid_start><vid_end>\n字数要求：3-9个字\n剧本类型：痛点铺垫+产品试用\n1.皮肤干？试试它。")
    assert parse_record(r).clips[0].labels == ["pain_point", "product_trial"]
    # An edited narration is what gets written.
    loaded = parse_record(RECORD)
    loaded.clips[0].narration = "新的旁白。"
    assert "\n1.新的旁白。\n" in to_official(loaded)["inputs"]


def test_negative_lower_bound_round_trips():
    # The reference writes len(text)-3 even for a 1-character narration.
    r = edited("字数要求：7-13个字", "字数要求：-2-4个字")
    v = parse_record(r)
    assert v.clips[0].window == (0, 4)
    assert to_official(v) == r


def test_inputs_knowledge_differing_from_p_info_is_kept():
    r = edited("功效：保湿\n\n", "功效：保湿、补水\n\n")
    v = parse_record(r)
    assert v.product.knowledge["功效"] == ["保湿"]  # p_info is the knowledge source
    assert to_official(v) == r


# -- format variants the release's building code produces -------------------------------
# data_process/get_training_data.py writes 'inputs' and 'frames'; data/split/split.py adds 'images'
# and 'p_info'.  `released` applies their rules (as read, not copied) to annotated clips, so each
# test states the annotation situation and the record follows from the rules alone.

def released(clips, vid=VID, name="测试牌面霜", p_info="功效：保湿", inputs_p_info=None):
    """The record the release writes for annotated ``clips``: dicts with ``time`` (seconds, as
    annotated), ``label`` (the annotated string), ``text`` (None: not narrated) and ``features``
    (False: no frame features)."""
    blocks, features, images = [], [], []
    for fi, c in enumerate(clips):
        st, et = int(c["time"][0]) + 1, int(c["time"][1]) + 1   # 1-based frame seconds
        et = max(et, st + 1)                                      # at least one frame
        if c.get("text") is None:                                 # not narrated: skipped, no renumbering
            continue
        images.append([f"{vid}_{sec:03d}.jpg" for sec in range(st, et)])   # split.py keeps it ...
        if not c.get("features", True):                           # ... get_training_data.py does not
            continue
        n = len(c["text"])
        blocks.append(f"镜头{fi + 1}/{len(clips)}：\n场景：<vid_start><vid_end>\n字数要求：{n - 3}-{n + 3}个字\n"
                      f"剧本类型：{c['label']}\n{fi + 1}.{c['text']}")
        features.append(f"{vid}_{fi}.pkl")
    knowledge = p_info if inputs_p_info is None else inputs_p_info
    return {"inputs": f"商品信息：\n名称：{name}\n{knowledge}\n\n广告视频：\n" + "\n".join(blocks),
            "id": vid, "frames": features, "images": images, "p_info": p_info}


def clip(t0, t1, text="这款面霜很好用。", label="产品推荐", **kw):
    return {"time": (t0, t1), "text": text, "label": label, **kw}


def round_trips(record):
    v = parse_record(record)
    assert to_official(v) == record
    assert json.dumps(to_official(v), ensure_ascii=False) == json.dumps(record, ensure_ascii=False)
    return v


def test_release_plain_record():
    v = round_trips(released([clip(0, 3), clip(3, 5, "质地轻薄。", "质地/成分/材质+产品功效")]))
    assert [(c.start, c.end) for c in v.clips] == [(0, 3), (3, 5)]
    assert "clips_total" not in v.meta and all("number" not in c.meta for c in v.clips)


def test_release_unnarrated_clips_keep_their_numbers():
    # Clips 2 and 4 of 5 have no narration: blocks 镜头1/5, 镜头3/5, 镜头5/5 and features _0, _2, _4.
    r = released([clip(0, 2), clip(2, 4, None), clip(4, 7), clip(7, 8, None), clip(8, 10)])
    assert "镜头3/5：" in r["inputs"] and "\n3.这款" in r["inputs"] and r["frames"][1] == f"{VID}_2.pkl"
    v = round_trips(r)
    assert len(v.clips) == 3 and v.meta["clips_total"] == 5
    assert [c.meta.get("number", c.index + 1) for c in v.clips] == [1, 3, 5]
    assert [len(c.frames) for c in v.clips] == [2, 3, 2]
    # an edit is written back with the release's numbering
    v.clips[1].narration = "改写的旁白。"
    assert "镜头3/5：\n场景：<vid_start><vid_end>\n字数要求：5-11个字\n剧本类型：产品推荐\n3.改写的旁白。" \
        in to_official(v)["inputs"]


def test_release_trailing_clip_without_features_keeps_its_frame_list():
    # The last clip's frames lie past the end of the video: no features, so no block, but split.py
    # still lists its frames in 'images'.
    r = released([clip(0, 2), clip(2, 5), clip(5, 9, features=False)])
    assert len(r["images"]) == 3 and len(r["frames"]) == 2
    v = round_trips(r)
    assert [len(c.frames) for c in v.clips] == [2, 3]
    assert v.meta["images_without_clip"] == [[2, r["images"][2]]] and v.meta["clips_total"] == 3


def test_release_middle_clip_without_features_aligned_by_number():
    # Every clip narrated, so 'images' has one list per clip number and the blocks index it by number.
    r = released([clip(0, 2), clip(2, 6, features=False), clip(6, 7)])
    v = round_trips(r)
    assert [c.frames for c in v.clips] == [r["images"][0], r["images"][2]]
    assert v.meta["images_without_clip"] == [[1, r["images"][1]]]


def test_release_short_empty_and_odd_timed_clips():
    # A 1-character and an empty narration give windows -2-4 and -3-3; a clip annotated with
    # end <= start gets one frame; seconds may overlap the previous clip's.
    r = released([clip(0, 3, "好"), clip(2.5, 2.5, ""), clip(1, 4)])
    assert "字数要求：-2-4个字" in r["inputs"] and "字数要求：-3-3个字\n剧本类型：产品推荐\n2.\n" in r["inputs"]
    v = round_trips(r)
    assert [c.window for c in v.clips] == [(0, 4), (0, 3), (5, 11)]
    assert v.clips[1].narration == "" and len(v.clips[1].frames) == 1
    assert v.clips[2].frames[0] == f"{VID}_002.jpg"          # overlaps clip 1's seconds


@pytest.mark.parametrize("label, keys", [
    ("产品推荐 + 产品功效", ["product_recommendation", "product_efficacy"]),
    ("产品推荐＋产品功效", ["product_recommendation", "product_efficacy"]),
    ("质地／成分／材质", ["texture_material"]),
    ("其他/通用卖点+引导购买", ["other_selling_points", "purchase_guidance"]),
    ("通用卖点+质量/特性", ["other_selling_points", "quality_feature"]),
])
def test_release_label_spellings_are_read_and_kept(label, keys):
    # The label line is the annotated string copied verbatim.
    v = round_trips(released([clip(0, 2, label=label)]))
    assert v.clips[0].labels == keys
    v.clips[0].labels = ["pain_point"]                           # an edited label is written canonically
    assert "剧本类型：痛点铺垫\n" in to_official(v)["inputs"]


def test_release_knowledge_variants():
    # p_info of split.py may differ from the prompt's copy, may be empty, and has 15 field kinds
    # (售后服务 included); items may hold the field separator.
    round_trips(released([clip(0, 2)], p_info="售后服务：七天无理由、运费险\n成分/材质：3：3：1配比",
                         inputs_p_info="售后服务：七天无理由"))
    v = round_trips(released([clip(0, 2)], p_info=""))
    assert v.product.knowledge == {}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.fixed_dictionaries({
    "time": st.tuples(st.integers(0, 30), st.integers(0, 30)),
    "text": st.none() | st.text(alphabet="好用的面霜。，！a1", max_size=12),
    "label": st.sampled_from(["产品推荐", "质地/成分/材质+产品功效", "产品推荐 + 引导购买", "质地／成分／材质"]),
    "features": st.booleans()}), min_size=1, max_size=8))
def test_every_record_the_release_rules_produce_loads_and_writes_back(clips):
    r = released(clips)
    if not r["frames"]:
        return                                                   # the release writes no record without a block
    v = round_trips(r)
    narrated = [(k, c) for k, c in enumerate(clips) if c["text"] is not None]
    kept = [(k, c) for k, c in narrated if c["features"]]
    assert [c.narration for c in v.clips] == [c["text"] for _, c in kept]
    assert [c.meta.get("number", c.index + 1) for c in v.clips] == [k + 1 for k, _ in kept]
    if len(narrated) == len(kept) or len(narrated) == len(clips):   # which frame list is whose is known
        own = {k: frames for (k, _), frames in zip(narrated, r["images"])}
        assert [c.frames for c in v.clips] == [own[k] for k, _ in kept]


def test_release_file_written_back_byte_for_byte(tmp_path):
    records = [released([clip(0, 2), clip(2, 3, None), clip(3, 6)]),
               released([clip(0, 4, "好"), clip(4, 9, features=False)], vid="f" * 32)]
    path = tmp_path / "test.json"
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")   # as split.py writes it
    out = tmp_path / "again.json"
    save_esyncvidstory(load_esyncvidstory(path), out)
    assert out.read_bytes() == path.read_bytes()


def test_file_level_bad_inputs(tmp_path):
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps([RECORD], ensure_ascii=False).encode())
    assert [v.id for v in load_esyncvidstory(bom)] == [VID]
    with pytest.raises(SchemaError, match=r"empty\.json: the list of video records is empty"):
        load_esyncvidstory(write(tmp_path, [], "empty.json"))
    with pytest.raises(IsADirectoryError, match=rf"{tmp_path} is a directory; give the split file inside it"):
        load_esyncvidstory(tmp_path)


# -- errors ------------------------------------------------------------------------

@pytest.mark.parametrize("record, message", [
    (edited("剧本类型：产品推荐", "剧本类型：产品推荐+飞行表演"), "unknown script label '飞行表演'"),
    (edited("镜头1/2：\n场景：<vid_start><vid_end>\n", "镜头1/2：\n场景：<vid_start>\n"), "second line must be"),
    (edited("镜头1/2：\n场景：<vid_start><vid_end>\n", "镜头1/2：\n"), "expected 5 lines"),
    (edited("1.推荐", "推荐"), "clip 1 line 12: narration must start with the clip number '1.'"),
    (edited("剧本类型：产品推荐\n", ""), "expected 5 lines"),
    (edited("镜头2/2", "镜头2/3"), "clip 2 line 13: header says 镜头2/3 but it is clip 2 of 2"),
    (edited("镜头2/2", "镜头3/2"), "镜头3/2 but it is clip 2 of 2"),
    (edited("镜头2/2：", "镜头1/2："), "镜头1/2 but it is clip 2 of 2 after clip number 1"),
    (edited("镜头1/2", "镜头1/1"), "N must be the same in every header and >= the number of clips"),
    (edited("镜头1/2", "镜头２/2"), "'镜头２/2：' looks like a clip header but is not '镜头i/N：' with ASCII digits"),
    (edited("字数要求：7-13个字", "字数要求：７-１３个字"), "line 10: word window line '字数要求：７-１３个字' is not "
     "'字数要求：lo-hi个字': it has full-width digits; write the numbers with ASCII digits 0-9"),
    (edited("字数要求：7-13个字", "字数要求：7 - 13个字"), "it has spaces; write it without spaces"),
    (edited("字数要求：7-13个字", "字数要求：13-7个字"), "lo > hi"),
    (edited("字数要求：7-13个字", "字数要求：七-十三个字"), "is not '字数要求：lo-hi个字'"),
    (edited(images=RECORD["images"][:1]), "2 clip blocks in 'inputs' but only 1 frame lists in 'images'"),
    (edited(frames=RECORD["frames"] + ["extra.pkl"]), "3 feature files in 'frames'"),
    (edited(images=[[f"{VID}_001.jpg"], []]), "clip 2: no frames in 'images' (zero-length clip)"),
    (edited(images=[f"{VID}_001.jpg", f"{VID}_002.jpg"]), "'images' must be a list (one per clip) of lists"),
    (edited(frames="a.pkl"), "'frames' must be a list"),
    (edited(p_info=["质地：轻薄"]), "'p_info' must be a string"),
    (edited(p_info="质地：轻薄\n功效保湿"), "knowledge line 2 '功效保湿'"),
    (edited(p_info="质地：轻薄\n质地：厚重"), "knowledge field '质地' appears twice"),
    (edited("商品信息：\n名称：", "商品：\n名称："), "'inputs' must start with"),
    (edited("\n\n广告视频：\n", "\n广告视频：\n"), "no '广告视频：' section"),
])
def test_bad_records_raise_naming_the_video(record, message):
    with pytest.raises(SchemaError) as err:
        parse_record(record)
    assert VID in str(err.value) and message in str(err.value)


def test_a_per_clip_training_file_is_named():
    # get_cut_data.py: one sample per clip, the scene line only in the current clip, no p_info
    sample = {"shot_pos": 0, "shot_loc": 1, "inputs": RECORD["inputs"], "id": VID, "frames": RECORD["frames"][:1],
              "images": RECORD["images"][:1]}
    with pytest.raises(SchemaError, match="per-clip training sample .* get_cut_data.py.*give the split file"):
        parse_record(sample)


def test_missing_field_is_named():
    r = edited()
    del r["p_info"]
    with pytest.raises(SchemaError, match=rf"{VID}.*missing field\(s\) \['p_info'\]"):
        parse_record(r)


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_esyncvidstory(tmp_path / "nope.json")
    bad = tmp_path / "latin1.json"
    bad.write_bytes('[{"id": "caf\xe9"}]'.encode("latin-1"))
    with pytest.raises(SchemaError, match=r"latin1\.json: not UTF-8"):
        load_esyncvidstory(bad)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": ', encoding="utf-8")
    with pytest.raises(SchemaError, match=r"broken\.json: invalid JSON"):
        load_esyncvidstory(broken)
    with pytest.raises(SchemaError, match="expected a JSON list"):
        load_esyncvidstory(write(tmp_path, {"videos": []}))


def test_report_skips_bad_records(tmp_path):
    other = edited(id="f" * 32)
    other["frames"] = [f.replace(VID, other["id"]) for f in other["frames"]]
    bad = edited("剧本类型：产品推荐", "剧本类型：不存在", id="b" * 32)
    path = write(tmp_path, [RECORD, bad, 42, other, RECORD])
    with pytest.raises(SchemaError, match="unknown script label '不存在'") as err:
        load_esyncvidstory(path)
    assert f"split.json record #1: video '{'b' * 32}' clip 1" in str(err.value)
    videos, skipped = load_esyncvidstory_report(path)
    assert [v.id for v in videos] == [VID, "f" * 32]
    assert [rid for rid, _ in skipped] == ["b" * 32, "#2", VID]
    assert "unknown script label" in skipped[0][1]
    assert "must be a JSON object" in skipped[1][1]
    assert "duplicate id" in skipped[2][1]


# -- the user's frames ---------------------------------------------------------------

def touch(paths):
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"\xff\xd8 not really a jpeg")


def test_frames_flat_and_per_video_layouts(tmp_path):
    v = parse_record(RECORD)
    names = [n for c in v.clips for n in c.frames]
    flat, nested = tmp_path / "flat", tmp_path / "nested"
    touch(flat / n for n in names)
    touch(nested / VID / n for n in names)
    for root in (flat, nested):
        got = resolve_frames(v, root)
        assert [len(c) for c in got] == [2, 3]
        assert got[1][0].name == f"{VID}_004.jpg" and got[1][0].is_file()
        assert has_frames(v, root)
    assert load_esyncvidstory(write(tmp_path, [RECORD]), frames_root=flat)[0].id == VID


def test_frames_none_or_partial(tmp_path):
    v = parse_record(RECORD)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert resolve_frames(v, empty) == [[], []]
    assert not has_frames(v, empty)
    partial = tmp_path / "partial"
    touch([partial / f"{VID}_001.jpg", partial / f"{VID}_002.jpg", partial / f"{VID}_005.jpg"])
    with pytest.raises(FileNotFoundError, match=rf"'{VID}_004\.jpg' of video '{VID}' clip 2 .*3 of 5 frames"):
        resolve_frames(v, partial)
    path = write(tmp_path, [RECORD])
    with pytest.raises(FileNotFoundError, match=f"{VID}_004.jpg"):
        load_esyncvidstory(path, frames_root=partial)
    videos, skipped = load_esyncvidstory_report(path, frames_root=partial)
    assert videos == [] and skipped[0][0] == VID
    assert load_esyncvidstory(path, frames_root=empty)[0].id == VID  # no frames is fine: text only
    with pytest.raises(FileNotFoundError, match="frames_root .* is not a folder"):
        load_esyncvidstory(path, frames_root=tmp_path / "typo")


def test_statistics_on_the_inline_record():
    s = dataset_statistics([parse_record(RECORD)])
    # 推荐这款面霜给大家。= 10 characters in 2 s; 质地轻薄，保湿不油腻。= 11 in 3 s (punctuation counts,
    # as in the windows: schema.text_length)
    assert s["clips"] == 2 and s["clip_seconds_mean"] == 2.5
    assert s["units_per_second"] == pytest.approx(21 / 5)
    assert s["units_per_second_clip_mean"] == pytest.approx((10 / 2 + 11 / 3) / 2)
    assert s["multi_label_share"] == 0.5
    with pytest.raises(ValueError, match="at least one video"):
        dataset_statistics([])


# -- the real data ------------------------------------------------------------------

@pytest.fixture
def real(esync_path):
    raw = json.loads(esync_path.read_text(encoding="utf-8"))
    return raw, load_esyncvidstory(esync_path)


def test_all_real_records_parse_and_round_trip(real, esync_path, tmp_path):
    raw, videos = real
    assert len(raw) == len(videos) == 120
    assert sum(len(v.clips) for v in videos) == 832  # as the data README states
    for r, v in zip(raw, videos):
        assert to_official(v) == r, v.id
    out = tmp_path / "again.json"
    save_esyncvidstory(videos, out, indent=1)
    assert out.read_bytes() == esync_path.read_bytes()  # the shared subset is written with indent 1


def test_real_clips_match_an_independent_regex_parse(real):
    raw, videos = real
    for r, v in zip(raw, videos):
        text = r["inputs"].split("广告视频：")[1]
        headers = re.findall(r"镜头(\d+)/(\d+)：", text)
        windows = re.findall(r"字数要求：(\d+)-(\d+)个字", text)
        label_lines = re.findall(r"剧本类型：(.+)", text)
        narrations = re.findall(r"^(\d+)\.(.+)$", text, flags=re.M)
        n = len(r["images"])
        assert len(v.clips) == len(headers) == len(windows) == len(label_lines) == len(narrations) == n
        assert all(int(i) == k + 1 and int(m) == n for k, (i, m) in enumerate(headers))
        assert v.product.name == re.search(r"名称：(.+)", r["inputs"]).group(1)
        assert v.product.knowledge == {ln.split("：", 1)[0]: ln.split("：", 1)[1].split("、") for ln in r["p_info"].splitlines()}
        t = 0
        for c, frames, (lo, hi), lab, (_, nar) in zip(v.clips, r["images"], windows, label_lines, narrations):
            assert (c.start, c.end) == (t, t + len(frames))
            t += len(frames)
            assert c.window == (int(lo), int(hi))
            assert c.labels == [LABEL_FROM_ZH[x] for x in lab.split("+")]
            assert c.narration == nar and c.frames == frames
            # The window is the reference length ±3 in raw characters (punctuation
            # included), as the reference code's len(text) makes it.
            assert (int(lo) + 3, int(hi) - 3) == (len(nar), len(nar))


def test_label_names_match_label_definition(esync_path):
    lines = (esync_path.parent / "label_definition.txt").read_text(encoding="utf-8").splitlines()
    names = {ln.split("：", 1)[0] for ln in lines if ln.strip()}
    assert names == set(LABEL_ZH.values())


def test_statistics_match_a_hand_count(real):
    _, videos = real
    by_id = {v.id: v for v in videos}
    lip = by_id["567bb447a170b023b30f323d82368fcb"]   # 曼秀雷敦润唇膏, record #110
    knee = by_id["24018230a482869d21cf2af0481f01c7"]  # 迈克达威护膝, record #95
    # Lip balm, counted by hand from the raw JSON: images lists of 8, 4, 10 frames = 22 s.
    # 曼秀雷敦润唇膏(7)蕴含植物精油和蔷薇果油(11)让你的双唇滋润亮泽(9) = 27
    # 质地温润亲肤(6)易推开(3)滋润不易黏腻(6) = 15 ; 为你的双唇提供全天候的保湿滋养 = 15 -> 57 chars
    # plus punctuation (，，。 ，，。 。) 3 + 3 + 1 = 64 characters: 30, 18, 16 per clip
    # labels 产品推荐 / 质地/成分/材质 / 产品功效 ; p_info has 6 fields.
    s = dataset_statistics([lip])
    assert s["clips_per_video"] == {"mean": 3, "min": 3, "max": 3}
    assert s["clip_seconds_mean"] == pytest.approx(22 / 3)
    assert s["units_per_second"] == pytest.approx(64 / 22)
    assert s["units_per_second_clip_mean"] == pytest.approx((30 / 8 + 18 / 4 + 16 / 10) / 3)
    assert {k: n for k, n in s["label_counts"].items() if n} == {
        "product_recommendation": 1, "texture_material": 1, "product_efficacy": 1}
    assert s["multi_label_share"] == 0
    assert len(s["knowledge_field_counts"]) == 6
    # Knee brace: 3, 9, 6, 3 frames = 21 s.
    # 今天分享一款适合于高强度运动的护膝 = 17 ; 中间内置凝胶垫圈(8)两侧弹簧支撑条(7)稳定髌骨(4) = 19
    # 在横向跑跳的过程中(9)很明显可以感觉到在运动中的压力减轻(17) = 26 ; 这款护膝值得推荐 = 8 -> 70 chars
    # plus punctuation 1 + 3 + 2 + 1 = 77 characters
    # labels 产品推荐 / 质地/成分/材质+产品功效 / 产品功效 / 产品推荐 ; 8 fields.
    s = dataset_statistics([knee])
    assert s["clip_seconds_mean"] == pytest.approx(21 / 4)
    assert s["units_per_second"] == pytest.approx(77 / 21)
    assert {k: n for k, n in s["label_counts"].items() if n} == {
        "product_recommendation": 2, "texture_material": 1, "product_efficacy": 2}
    assert s["multi_label_share"] == pytest.approx(1 / 4)
    assert len(s["knowledge_field_counts"]) == 8
    # Both together: 7 clips, 43 s, 64 + 77 = 141 chars; fields shared by both count 2.
    s = dataset_statistics([lip, knee])
    assert (s["videos"], s["clips"]) == (2, 7)
    assert s["clips_per_video"] == {"mean": 3.5, "min": 3, "max": 4}
    assert s["units_per_second"] == pytest.approx(141 / 43)
    assert s["multi_label_share"] == pytest.approx(1 / 7)
    assert s["knowledge_field_counts"]["功效"] == 2 and s["knowledge_field_counts"]["痛点"] == 1
    assert sum(s["knowledge_field_counts"].values()) == 14


def test_statistics_on_all_real_records(real):
    raw, videos = real
    s = dataset_statistics(videos)
    assert s["clips"] == sum(len(r["images"]) for r in raw)
    label_lines = [ln for r in raw for ln in re.findall(r"剧本类型：(.+)", r["inputs"])]
    assert sum(s["label_counts"].values()) == sum(ln.count("+") + 1 for ln in label_lines)
    assert s["multi_label_share"] == pytest.approx(sum("+" in ln for ln in label_lines) / len(label_lines))
    assert 0 < s["multi_label_share"] < 1


def test_400_official_records_load_strictly_and_write_back_byte_for_byte(esync400_path, tmp_path):
    from videonarrator.realdata import FIELD_EN

    raw = json.loads(esync400_path.read_text(encoding="utf-8"))
    videos = load_esyncvidstory(esync400_path)
    assert len(raw) == len(videos) == 400
    assert sum(len(v.clips) for v in videos) == sum(len(r["frames"]) for r in raw)
    assert [to_official(v) for v in videos] == raw
    out = tmp_path / "again.json"
    save_esyncvidstory(videos, out)
    assert out.read_bytes() == esync400_path.read_bytes()   # the release's own layout
    fields = {f for v in videos for f in v.product.knowledge}
    assert fields <= set(FIELD_EN), f"knowledge fields without an English gloss: {fields - set(FIELD_EN)}"
