"""The fine-tuning dataset reader and writer: Qwen3-VL's format in, chat messages out, clear errors."""

import shutil
from pathlib import Path

import orjson
import pytest
from PIL import Image

from stream.errors import IdolstreamError
from stream.learning.dataset import DatasetError, Example, dataset_digest, read_dataset, write_dataset


def _png(path: Path, colour=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), colour).save(path)
    return path


def _record(image="images/a.png", human="<image>\nAki sent a picture.", gpt="[happy] A red one, Aki!", **extra):
    record = {"conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}], **extra}
    if image is not None:
        record["image"] = image
    return record


@pytest.fixture
def data_dir(tmp_path) -> Path:
    _png(tmp_path / "images" / "a.png")
    _png(tmp_path / "images" / "b.png", (30, 30, 200))
    return tmp_path


def _write_lines(path: Path, *lines) -> Path:
    path.write_bytes(b"".join((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines))
    return path


def test_reader_accepts_what_the_writer_writes(data_dir):
    records = [
        _record(system="You are Mirai."),
        _record(image=["images/a.png", "images/b.png"], human="Compare <image> with <image> please",
                gpt="[surprised] Red, then blue!"),
        _record(image=None, human="Just saying hi", gpt="[happy] Hi!"),
    ]
    assert write_dataset(data_dir / "data.jsonl", records) == 3

    examples = read_dataset(data_dir / "data.jsonl")

    a, b = (data_dir / "images" / "a.png").resolve(), (data_dir / "images" / "b.png").resolve()
    assert examples[0] == Example(
        images=(a,),
        messages=[
            {"role": "system", "content": [{"type": "text", "text": "You are Mirai."}]},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Aki sent a picture."}]},
            {"role": "assistant", "content": "[happy] A red one, Aki!"},
        ],
        line=1,
    )
    # Several images: one image part per tag, in place, in the order of "image".
    assert examples[1].images == (a, b)
    assert examples[1].messages[0]["content"] == [
        {"type": "text", "text": "Compare"}, {"type": "image"}, {"type": "text", "text": "with"}, {"type": "image"},
        {"type": "text", "text": "please"},
    ]
    # Text only: no images, no image parts, no system message.
    assert examples[2].images == ()
    assert examples[2].messages == [
        {"role": "user", "content": [{"type": "text", "text": "Just saying hi"}]},
        {"role": "assistant", "content": "[happy] Hi!"},
    ]


def test_multi_turn_records_alternate_and_keep_every_target(data_dir):
    record = {"image": "images/a.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "Red!"},
        {"from": "human", "value": "And now?"}, {"from": "gpt", "value": "Still red."},
    ]}
    write_dataset(data_dir / "d.jsonl", [record])
    (example,) = read_dataset(data_dir / "d.jsonl")
    assert [m["role"] for m in example.messages] == ["user", "assistant", "user", "assistant"]
    assert [m["content"] for m in example.messages if m["role"] == "assistant"] == ["Red!", "Still red."]


def test_blank_lines_are_skipped_and_lines_are_counted_as_in_the_file(data_dir):
    path = _write_lines(data_dir / "d.jsonl", _record(), b"", b"   ", _record(gpt="[happy] Again!"))
    assert [e.line for e in read_dataset(path)] == [1, 4]


def test_a_json_file_holding_a_list_is_read_with_the_line_each_record_starts_on(data_dir):
    path = data_dir / "d.json"
    path.write_text("[\n" + orjson.dumps(_record()).decode() + ",\n\n" + orjson.dumps(_record()).decode() + "\n]\n")
    examples = read_dataset(path)
    assert [e.line for e in examples] == [2, 4]
    assert examples[0].images == ((data_dir / "images" / "a.png").resolve(),)


def test_the_images_key_of_other_sharegpt_readers_is_accepted(data_dir):
    record = _record(image=None)
    record["images"] = ["images/a.png"]
    write_dataset(data_dir / "d.jsonl", [record])
    assert read_dataset(data_dir / "d.jsonl")[0].images == ((data_dir / "images" / "a.png").resolve(),)


def test_image_paths_are_relative_to_the_dataset_file_not_the_working_directory(
    data_dir, monkeypatch, tmp_path_factory
):
    write_dataset(data_dir / "d.jsonl", [_record()])
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert read_dataset(data_dir / "d.jsonl")[0].images[0].is_file()


BAD_RECORDS = [
    # (what, line content, message fragment)
    ("bad JSON", b'{"image": "images/a.png", "conversations": [', "not valid JSON"),
    ("not an object", [1, 2], "a record must be a JSON object, not a list"),
    ("missing image file", _record(image="images/missing.png"), 'image "images/missing.png" does not exist'),
    ("more tags than images", _record(human="<image><image>\nTwo?"), "2 <image> tags in the human turns but 1 image"),
    ("fewer tags than images", _record(image=["images/a.png", "images/b.png"]),
     "1 <image> tag in the human turns but 2 images"),
    ("image without a tag", _record(human="Aki sent a picture."), "0 <image> tags in the human turns but 1 image"),
    ("tag without image", _record(image=None), "1 <image> tag in the human turns but 0 images"),
    ("tag in a gpt turn", _record(gpt="<image> red"), "turn 2 (gpt) has an <image> tag"),
    ("empty target", _record(gpt=""), "turn 2 (gpt) is empty"),
    ("whitespace target", _record(gpt=" \n\t "), "turn 2 (gpt) is empty"),
    ("whitespace human turn", _record(image=None, human="  \n "), "turn 1 (human) is empty"),
    ("unknown role", {"conversations": [{"from": "bot", "value": "hi"}]},
     'turn 1 has "from": "bot"; it must be "human" or "gpt"'),
    ("gpt first", {"conversations": [{"from": "gpt", "value": "hi"}, {"from": "human", "value": "yo"}]},
     'turn 1 is "gpt" but "human" was expected'),
    ("two human turns", {"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]},
     'turn 2 is "human" but "gpt" was expected'),
    ("no target", {"conversations": [{"from": "human", "value": "a"}]}, "must end with a gpt turn"),
    ("no conversations", {"image": "images/a.png"}, 'no "conversations" list'),
    ("empty conversations", {"conversations": []}, '"conversations" must be a non-empty list'),
    ("turn not an object", {"conversations": ["hi"]}, "turn 1 must be an object"),
    ("value not a string", {"conversations": [{"from": "human", "value": 3}]}, 'turn 1 (human) needs a "value" string'),
    ("image not a path", _record(image=7), '"image" must be a path or a list of paths'),
    ("system not a string", _record(system=["x"]), '"system" must be a non-empty string'),
    ("video", _record(video="v.mp4"), "videos are not supported"),
]


@pytest.mark.parametrize("content,fragment", [case[1:] for case in BAD_RECORDS], ids=[case[0] for case in BAD_RECORDS])
def test_each_fault_names_the_file_the_line_and_what_is_wrong(data_dir, content, fragment):
    path = _write_lines(data_dir / "d.jsonl", _record(), b"", content)
    with pytest.raises(DatasetError) as caught:
        read_dataset(path)
    assert str(caught.value).startswith(f"{path}:3: ")
    assert fragment in str(caught.value)
    assert caught.value.where == f"{path}:3"
    assert isinstance(caught.value, IdolstreamError)


def test_a_file_that_is_not_an_image_is_reported(data_dir):
    (data_dir / "images" / "notes.png").write_text("not a picture")
    path = _write_lines(data_dir / "d.jsonl", _record(image="images/notes.png"))
    with pytest.raises(DatasetError, match=r":1: image \"images/notes.png\" is not an image file"):
        read_dataset(path)


def test_a_missing_or_empty_dataset_file_is_reported(data_dir):
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset(data_dir / "nope.jsonl")
    (data_dir / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DatasetError, match="holds no records"):
        read_dataset(data_dir / "empty.jsonl")


def test_json_file_faults_name_their_line(data_dir):
    path = data_dir / "d.json"
    path.write_text('[\n{"conversations": []},\n')
    with pytest.raises(DatasetError, match=r"d\.json:2: .*non-empty list"):
        read_dataset(path)
    path.write_text('[\n' + orjson.dumps(_record()).decode() + ',\n{"image": \n}\n]')
    with pytest.raises(DatasetError, match=r"d\.json:4: not valid JSON"):
        read_dataset(path)
    path.write_text('{"conversations": []}')
    with pytest.raises(DatasetError, match=r"d\.json:1: a \.json dataset must hold a list"):
        read_dataset(path)


def test_write_dataset_refuses_json_and_leaves_no_partial_file(data_dir):
    with pytest.raises(DatasetError, match="JSON Lines"):
        write_dataset(data_dir / "d.json", [_record()])
    with pytest.raises(DatasetError, match=r"d\.jsonl:2: a record must be a dict"):
        write_dataset(data_dir / "d.jsonl", [_record(), ["not", "a", "record"]])
    assert sorted(p.name for p in data_dir.iterdir()) == ["images"]


def test_digest_follows_the_records_and_every_image_but_not_where_the_dataset_lies(data_dir, tmp_path_factory):
    write_dataset(data_dir / "d.jsonl", [_record(), _record(image="images/b.png")])
    first = dataset_digest(data_dir / "d.jsonl")
    assert len(first) == 64 and first == dataset_digest(data_dir / "d.jsonl")

    moved = tmp_path_factory.mktemp("copy") / "ds"
    shutil.copytree(data_dir, moved)
    assert dataset_digest(moved / "d.jsonl") == first

    _png(moved / "images" / "b.png", (30, 31, 200))  # one pixel value changed in one image
    assert dataset_digest(moved / "d.jsonl") != first

    write_dataset(data_dir / "d.jsonl", [_record(), _record(image="images/b.png", gpt="[happy] Blue!")])
    assert dataset_digest(data_dir / "d.jsonl") != first


def test_digest_refuses_an_invalid_dataset(data_dir):
    write_dataset(data_dir / "d.jsonl", [_record(image="images/gone.png")])
    with pytest.raises(DatasetError, match="does not exist"):
        dataset_digest(data_dir / "d.jsonl")
