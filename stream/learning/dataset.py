"""Fine-tuning datasets in Qwen3-VL's own format (``qwen-vl-finetune``), read and validated.

A dataset is a JSON Lines file (or a ``.json`` file holding a list) of records::

    {"image": "images/000123.png",            # or a list of paths, or absent (text only)
     "system": "You are ...",                 # optional: the persona's instructions
     "conversations": [{"from": "human", "value": "<image>\\nAki sent a picture."},
                       {"from": "gpt", "value": "[happy] Aki, a red picture with stars!"}]}

Image paths are relative to the dataset file's directory. Each image has exactly one
``<image>`` tag, in a human turn, in order. Turns alternate human, gpt, ... starting with
human and ending with gpt; the gpt turns are the targets (the loss goes on them only).
``"images"`` is accepted for ``"image"`` and a top-level ``"system"`` string is read as
LLaMA-Factory's and ms-swift's ShareGPT readers read it.

`read_dataset` turns records into Hugging Face chat messages shaped exactly as the fast
tier's `stream.persona.build_messages` shapes a request, so a trained model sees at
inference what it saw in training. Every fault raises `DatasetError` naming file:line.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from PIL import Image, UnidentifiedImageError

from stream.learning.errors import DatasetError

__all__ = ["DatasetError", "Example", "IMAGE_TAG", "dataset_digest", "read_dataset", "write_dataset"]

IMAGE_TAG = "<image>"
_VIDEO_TAG = "<video>"
ROLES = {"human": "user", "gpt": "assistant"}
_TAG_SPLIT = re.compile(f"({re.escape(IMAGE_TAG)})")


@dataclass(frozen=True)
class Example:
    images: tuple[Path, ...]  # resolved image files, in the order of their <image> tags
    # Hugging Face chat messages: an optional system message, then alternating user and
    # assistant turns. A user turn's content is a list of {"type": "image"} (one per tag,
    # in place) and {"type": "text", "text": ...} parts; an assistant turn's content is
    # the target string.
    messages: list[dict]
    line: int  # 1-based line of the record in the dataset file, for error messages


def read_dataset(path: Path) -> list[Example]:
    """Every record of a dataset file as an Example; raises DatasetError at the first fault."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DatasetError(str(path), "the dataset file does not exist") from exc
    except OSError as exc:
        raise DatasetError(str(path), f"the dataset file cannot be read: {exc.strerror or exc}") from exc
    records = _json_list_records(path, raw) if path.suffix.lower() == ".json" else _jsonl_records(path, raw)
    base = path.resolve().parent
    examples = [_example(record, base, f"{path}:{line}", line) for line, record in records]
    if not examples:
        raise DatasetError(str(path), "the dataset holds no records")
    return examples


def write_dataset(path: Path, records: Iterable[dict]) -> int:
    """Write records as JSON Lines, one per line (UTF-8), replacing `path` whole; returns the count."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        raise DatasetError(str(path), "datasets are written as JSON Lines: name the file .jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    count = 0
    try:
        with partial.open("wb") as out:
            for record in records:
                if not isinstance(record, dict):
                    raise DatasetError(f"{path}:{count + 1}", f"a record must be a dict, not {type(record).__name__}")
                out.write(orjson.dumps(record) + b"\n")
                count += 1
        partial.replace(path)  # readers never see half a dataset
    finally:
        partial.unlink(missing_ok=True)
    return count


def dataset_digest(path: Path) -> str:
    """sha256 (hex) over the dataset file's bytes and the bytes of every image it references.

    The dataset is validated first. Images are hashed once each, in the order they are
    first referenced, each behind its length, so a changed picture changes the digest.
    """
    path = Path(path)
    examples = read_dataset(path)
    digest = hashlib.sha256()
    data = path.read_bytes()
    digest.update(len(data).to_bytes(8, "big") + data)
    seen: set[Path] = set()
    for example in examples:
        for image in example.images:
            if image in seen:
                continue
            seen.add(image)
            content = image.read_bytes()
            digest.update(len(content).to_bytes(8, "big") + content)
    return digest.hexdigest()


def _jsonl_records(path: Path, raw: bytes) -> Iterator[tuple[int, object]]:
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if number == 1:
            line = line.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark some editors write
        if not line.strip():
            continue  # blank lines (and the final newline) are not records
        try:
            yield number, orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}", f"not valid JSON ({_json_problem(exc)})") from exc


def _json_problem(exc: json.JSONDecodeError) -> str:
    # orjson's messages end in "line 1 column N (char M)"; on one JSONL line only the column helps.
    if exc.lineno == 1:
        return f"{exc.msg} at column {exc.colno}"
    return f"{exc.msg} at line {exc.lineno} column {exc.colno}"


def _json_list_records(path: Path, raw: bytes) -> Iterator[tuple[int, object]]:
    """The elements of a .json file's top-level list, each with the line where it starts."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(str(path), f"not UTF-8 text (byte {exc.start})") from exc
    decoder = json.JSONDecoder()

    def line_at(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    def skip_space(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    pos = skip_space(0)
    if not text.startswith("[", pos):
        raise DatasetError(f"{path}:{line_at(pos)}", "a .json dataset must hold a list of records ([ {...}, ... ])")
    pos = skip_space(pos + 1)
    if text.startswith("]", pos):
        return
    while True:
        start = pos
        try:
            record, pos = decoder.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{exc.lineno}", f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
        yield line_at(start), record
        pos = skip_space(pos)
        if text.startswith("]", pos):
            if skip_space(pos + 1) != len(text):
                raise DatasetError(f"{path}:{line_at(pos)}", "text after the closing ] of the list")
            return
        if not text.startswith(",", pos):
            raise DatasetError(f"{path}:{line_at(pos)}", "expected , or ] after a record")
        pos = skip_space(pos + 1)


def _example(record: object, base: Path, where: str, line: int) -> Example:
    if not isinstance(record, dict):
        raise DatasetError(where, f"a record must be a JSON object, not {_json_type(record)}")
    if "video" in record or "videos" in record:
        raise DatasetError(where, "videos are not supported; only images")
    image_refs = _image_refs(record, where)
    messages: list[dict] = []
    if "system" in record:
        system = record["system"]
        if not isinstance(system, str) or not system.strip():
            raise DatasetError(where, '"system" must be a non-empty string (the persona\'s instructions)')
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    turns = record.get("conversations")
    if turns is None:
        raise DatasetError(where, 'the record has no "conversations" list')
    if not isinstance(turns, list) or not turns:
        raise DatasetError(where, '"conversations" must be a non-empty list of turns')
    tags = 0
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise DatasetError(
                where, f'turn {number} must be an object with "from" and "value", not {_json_type(turn)}'
            )
        role = turn.get("from")
        if role not in ROLES:
            raise DatasetError(
                where, f'turn {number} has "from": {json.dumps(role, ensure_ascii=False)}; it must be "human" or "gpt"'
            )
        expected = "human" if number % 2 == 1 else "gpt"
        if role != expected:
            raise DatasetError(
                where, f'turn {number} is "{role}" but "{expected}" was expected: turns alternate human, gpt, '
                "... starting with human",
            )
        value = turn.get("value")
        if not isinstance(value, str):
            raise DatasetError(where, f'turn {number} ({role}) needs a "value" string, not {_json_type(value)}')
        if _VIDEO_TAG in value:
            raise DatasetError(where, f"turn {number} ({role}) has a {_VIDEO_TAG} tag; videos are not supported")
        if role == "gpt":
            if IMAGE_TAG in value:
                raise DatasetError(where, f"turn {number} (gpt) has an {IMAGE_TAG} tag; images go in human turns")
            if not value.strip():
                raise DatasetError(where, f"turn {number} (gpt) is empty: the target reply is missing")
            messages.append({"role": "assistant", "content": value})
            continue
        content = _user_content(value)
        turn_tags = sum(1 for part in content if part["type"] == "image")
        if not content:
            raise DatasetError(where, f"turn {number} (human) is empty: it has neither text nor an {IMAGE_TAG} tag")
        tags += turn_tags
        messages.append({"role": "user", "content": content})
    if len(turns) % 2 == 1:
        raise DatasetError(
            where, f'the last turn (turn {len(turns)}) is "human": a record must end with a gpt turn, the target'
        )
    if tags != len(image_refs):
        raise DatasetError(
            where, f"{_count(tags, f'{IMAGE_TAG} tag')} in the human turns but {_count(len(image_refs), 'image')} "
            f"in \"image\": each image needs exactly one {IMAGE_TAG} tag, in order",
        )
    return Example(tuple(_resolve_image(ref, base, where) for ref in image_refs), messages, line)


def _image_refs(record: dict, where: str) -> list[str]:
    if "image" in record and "images" in record:
        raise DatasetError(where, 'the record has both "image" and "images"; use one')
    refs = record.get("image", record.get("images"))
    if refs is None:
        return []
    if isinstance(refs, str):
        refs = [refs]
    if not isinstance(refs, list) or not all(isinstance(ref, str) and ref.strip() for ref in refs):
        raise DatasetError(where, '"image" must be a path or a list of paths (non-empty strings)')
    return refs


def _user_content(value: str) -> list[dict]:
    """A human turn's parts: one image part per tag, in place, and the text between, stripped."""
    content: list[dict] = []
    for segment in _TAG_SPLIT.split(value):
        if segment == IMAGE_TAG:
            content.append({"type": "image"})
        elif segment.strip():
            content.append({"type": "text", "text": segment.strip()})
    return content


def _resolve_image(ref: str, base: Path, where: str) -> Path:
    resolved = (base / ref).resolve()
    if not resolved.is_file():
        raise DatasetError(where, f'image "{ref}" does not exist (looked for {resolved})')
    try:
        with Image.open(resolved) as img:  # reads the header only
            img.size
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(where, f'image "{ref}" is not an image file that can be read ({exc})') from exc
    return resolved


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
