"""Property-based tests: no input makes the parsers crash with anything but the project's own clear errors."""
import copy
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_esyncvidstory import RECORD
from videonarrator.data.esyncvidstory import parse_record, to_official
from videonarrator.params import ParamsError, validate_section
from videonarrator.schema import SchemaError, video_from_dict

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.integers(min_value=0, max_value=10_000), junk=st.text(max_size=12),
       cut=st.integers(min_value=0, max_value=30))
def test_annotation_parser_edits_of_a_real_record(position, junk, cut):
    """Splice junk into (and cut characters from) the record's text: it parses or raises SchemaError."""
    record = copy.deepcopy(RECORD)
    text = record["inputs"]
    i = position % (len(text) + 1)
    record["inputs"] = text[:i] + junk + text[i + cut:]
    try:
        video = parse_record(record)
    except SchemaError as err:
        assert str(err)
        return
    assert to_official(video)["id"] == RECORD["id"]


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(["inputs", "id", "frames", "images", "p_info", "extra"]), value=JSON)
def test_annotation_parser_on_wrong_types(field, value):
    record = copy.deepcopy(RECORD)
    record[field] = value
    try:
        parse_record(record)
    except SchemaError as err:
        assert str(err)


@settings(max_examples=300, deadline=None)
@given(value=JSON)
def test_dataset_records_of_any_shape(value):
    try:
        video_from_dict(value if not isinstance(value, dict) else {**value, "id": "v"})
    except SchemaError as err:
        assert str(err)


@settings(max_examples=300, deadline=None)
@given(section=st.sampled_from(["common", "prepare", "train", "model", "evaluate", "nonsense"]),
       key=st.text(max_size=12), value=JSON)
def test_params_validation_only_raises_params_error(section, key, value):
    import yaml
    from pathlib import Path

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    values = copy.deepcopy(params.get(section, {}))
    if key in values or not values:
        values[key] = value
    else:
        values[next(iter(values))] = value
    try:
        validate_section(section, json.loads(json.dumps(values)))
    except ParamsError as err:
        assert section in str(err) or "params.yaml" in str(err)
