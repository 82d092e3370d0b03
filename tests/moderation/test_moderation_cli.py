"""`idolstream moderation check`: an operator tests a word list on a line and reads the verdict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stream.cli import main

ROOT = Path(__file__).resolve().parents[2]

WORDS = {
    "categories": {
        "harassment": {"action": "block", "terms": ["草泥马"]},
        "self_harm": {"action": "review", "terms": ["不想活了"]},
    },
    "allow": [],
}


@pytest.fixture
def words(tmp_path) -> Path:
    path = tmp_path / "words.json"
    path.write_text(json.dumps(WORDS, ensure_ascii=False), encoding="utf-8")
    return path


def test_a_blocked_line_prints_its_verdict_and_exits_4(words, capsys):
    line = "哈哈 草 ni 馬!!"
    assert main(["moderation", "check", "--words", str(words), line]) == 4
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["action"] == "block"
    assert verdict["stage"] == "word_filter"
    assert verdict["categories"] == ["harassment"]
    [match] = verdict["matches"]
    assert (match["term"], match["text"], match["via"]) == ("草泥马", "草 ni 馬", "pinyin")
    start, end = match["span"]
    assert line[start:end] == "草 ni 馬"


def test_a_line_for_review_exits_3_and_an_ordinary_line_exits_0(words, capsys):
    assert main(["moderation", "check", "--words", str(words), "我不想活了"]) == 3
    assert json.loads(capsys.readouterr().out)["action"] == "review"
    assert main(["moderation", "check", "--words", str(words), "草莓芭菲真好吃"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "action": "allow", "stage": "word_filter", "categories": [], "matches": [],
    }  # fmt: skip


def test_a_bad_word_list_exits_2_naming_the_file_and_the_field(tmp_path, capsys):
    path = tmp_path / "broken.json"
    path.write_text('{"categories": {"spam": {"action": "delete", "terms": ["vx"]}}}', encoding="utf-8")
    assert main(["moderation", "check", "--words", str(path), "hello"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{path}: categories.spam.action" in captured.err


def test_without_words_it_uses_the_shipped_list(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["moderation", "check", "加 微 信 领福利"]) == 4
    assert json.loads(capsys.readouterr().out)["categories"] == ["spam"]


def test_the_command_prints_utf8_json_and_exits_with_the_verdict(words):
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", "moderation", "check", "--words", str(words), "cao泥ma"],
        capture_output=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 4, done.stderr.decode()
    verdict = json.loads(done.stdout.decode("utf-8"))
    assert verdict["matches"][0]["text"] == "cao泥ma"
    assert done.stdout.decode("utf-8").count("\n") == 1, "one JSON object on one line"
