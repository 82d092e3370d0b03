"""The word filter: listed words are caught however they are disguised, ordinary lines pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from producers.samples import DANMAKU, FAN_TEXTS
from stream.moderation.errors import WordListError
from stream.moderation.normalise import Normaliser
from stream.moderation.text_filter import TextFilter

ROOT = Path(__file__).resolve().parents[2]

WORDS = {
    "categories": {
        "insult": {"action": "block", "terms": ["idiot", "ass", "asshole", "笨蛋", "骗子"]},
        "harassment": {"action": "block", "terms": ["草泥马", "滚出去", "去死"]},
        "spam": {"action": "block", "terms": ["加微信", "vx"]},
        "self_harm": {"action": "review", "terms": ["不想活了", "kill myself"]},
    },
    "allow": ["assist", "去死海"],
}


def write_words(directory: Path, words: dict | str, name: str = "words.json") -> Path:
    path = directory / name
    path.write_text(words if isinstance(words, str) else json.dumps(words, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def word_filter(tmp_path_factory) -> TextFilter:
    return TextFilter.from_file(write_words(tmp_path_factory.mktemp("words"), WORDS))


@pytest.fixture(scope="module")
def shipped_filter() -> TextFilter:
    return TextFilter.from_file(ROOT / "config/moderation/words.json")


# (how it is written, the listed term it disguises)
EVASIONS = {
    "plain": [("idiot", "idiot"), ("笨蛋", "笨蛋")],
    "full width": [("ｉｄｉｏｔ", "idiot"), ("ＩＤＩＯＴ", "idiot"), ("ｖｘ", "vx")],
    "zero width": [("i\u200bd\u200ci\u2060o\ufefft", "idiot"), ("笨\u200b蛋", "笨蛋"), ("笨\ufe0f蛋", "笨蛋")],
    "mixed script": [("іdіоt", "idiot"), ("草ni马", "草泥马"), ("cao泥ma", "草泥马"), ("gun出qu", "滚出去")],
    "traditional": [("騙子", "骗子"), ("滾出去", "滚出去"), ("草泥馬", "草泥马"), ("加微信", "加微信")],
    "spaces": [("i d i o t", "idiot"), ("滚 出 去", "滚出去"), ("a s s", "ass"), ("as shole", "asshole")],
    "symbols": [("i.d.i.o.t", "idiot"), ("i-d_i~o/t", "idiot"), ("加*微*信", "加微信"), ("a$s$s", "ass")],
    "emoji": [("笨🤡蛋", "笨蛋"), ("i😀d😀i😀o😀t", "idiot"), ("草👍🏻泥👍🏻马", "草泥马")],
    "pinyin": [("bendan", "笨蛋"), ("caonima", "草泥马"), ("JiaWeiXin", "加微信")],
    "initials": [("cnm", "草泥马"), ("JWX", "加微信"), ("Ｃ Ｎ Ｍ", "草泥马")],
    "repeated": [("idioooooot", "idiot"), ("笨笨笨蛋蛋", "笨蛋"), ("aaasssss", "ass")],
    "read alike": [("加薇信", "加微信")],
}
CONTEXTS = {
    "fan text": ["you are such an {} lol", "主播你就是个{}！"],
    "reply": ["Ehehe, thank you! {}", "谢谢你的画！{}"],
    "display name": ["{}", "★{}★"],
}
CASES = [
    pytest.param(template, written, term, id=f"{kind}-{context}-{written}")
    for kind, pairs in EVASIONS.items()
    for written, term in pairs
    for context, templates in CONTEXTS.items()
    for template in templates
]


@pytest.mark.parametrize("template,written,term", CASES)
def test_a_disguised_listed_word_is_caught_and_its_span_is_what_was_written(word_filter, template, written, term):
    line = template.format(written)
    verdict = word_filter.check(line)
    assert verdict.action == "block", f"{line!r} passed"
    match = next((m for m in verdict.matches if m.term == term), None)
    assert match is not None, f"{line!r} matched {[m.term for m in verdict.matches]}, not {term!r}"
    start, end = match.span
    assert line[start:end] == match.text == written


def test_the_verdict_takes_the_most_severe_action_and_lists_each_category_once(word_filter):
    review = word_filter.check("sometimes I want to kill myself")
    assert (review.action, review.categories) == ("review", ("self_harm",))

    verdict = word_filter.check("不想活了, idiot, 笨蛋, 加vx")
    assert verdict.action == "block"
    assert verdict.categories == ("insult", "self_harm", "spam")
    assert [m.text for m in verdict.matches] == ["不想活了", "idiot", "笨蛋", "vx"], "in the order written"
    assert verdict.to_dict()["matches"][1] == {
        "term": "idiot", "category": "insult", "action": "block", "span": [6, 11], "text": "idiot", "via": "text",
    }  # fmt: skip


@pytest.mark.parametrize(
    "line",
    ["I can assist you with that", "Ask my assistant!", "我想去死海玩", "下次一起去死海吧"],
)
def test_allow_listed_words_pass(word_filter, line):
    assert word_filter.check(line).action == "allow"


def test_an_allowed_word_does_not_hide_a_listed_word_beside_it(word_filter):
    line = "my assistant says you are an ass"
    verdict = word_filter.check(line)
    assert verdict.action == "block"
    assert [m.span for m in verdict.matches] == [(len(line) - 3, len(line))]

    verdict = word_filter.check("去死海玩？去死吧")
    assert [m.span for m in verdict.matches] == [(5, 7)]


@pytest.mark.parametrize(
    "line",
    [
        "what a classy bass line",  # a Latin term counts only where a word starts
        "I passed the class",
        "as soon as possible",  # skipped spaces must not join two ordinary words into one
        "as she said, the glass is full",
        "the embassy is massive",
    ],
)
def test_a_latin_term_inside_an_ordinary_word_or_across_ordinary_words_passes(word_filter, line):
    assert word_filter.check(line).matches == ()


def test_a_latin_term_matches_from_a_word_start_including_longer_forms(word_filter):
    assert [m.text for m in word_filter.check("idiots, all of you").matches] == ["idiot"]
    assert [m.text for m in word_filter.check("你这个idiot").matches] == ["idiot"], "after Chinese, a word starts"


def test_doubled_letters_of_a_term_are_required(word_filter):
    assert word_filter.check("as").matches == ()
    assert word_filter.check("idot").matches == ()


@pytest.mark.parametrize(
    "line",
    [
        "bd",  # initials of a two-character term: too short to mean anything
        "本单已发货",  # reads like 笨蛋 (bendan): a two-character term never matches by sound alone
        "我要回去，死也要回去",  # a clause break: 去，死 is not 去死
        "你快回去。死心吧",
    ],
)
def test_short_pinyin_and_words_across_clauses_are_not_matched(word_filter, line):
    assert word_filter.check(line).matches == ()


def test_initials_count_only_as_a_word_of_their_own(tmp_path):
    # 给爱猫 reads gei ai mao: its initials "gam" start many English words.
    words = {"categories": {"spam": {"action": "block", "terms": ["给爱猫"]}}}
    word_filter = TextFilter.from_file(write_words(tmp_path, words))
    assert word_filter.check("what game is next?").matches == ()
    assert [m.via for m in word_filter.check("gam!! 快点").matches] == ["initials"]


def test_separators_other_than_clause_breaks_are_skipped_in_chinese(word_filter):
    assert word_filter.check("去.死").action == "block"
    assert word_filter.check("去 死").action == "block"


def persona_lines(node) -> list[str]:
    """Every line of the sample persona (her lines in each language, lore, likes...), not its forbidden topics."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [line for key, value in node.items() if key != "forbidden_topics" for line in persona_lines(value)]
    if isinstance(node, list):
        return [line for value in node for line in persona_lines(value)]
    return []


def ordinary_lines() -> list[str]:
    lines = persona_lines(json.loads((ROOT / "config/persona.json").read_text(encoding="utf-8")))
    assert len(lines) >= 20, "the persona's lines are part of the corpus"
    lines += [text for text in FAN_TEXTS if text] + DANMAKU
    lines += [
        "主播今天好可爱！", "我画了你和Mochi，喜欢吗？", "哈哈哈哈哈哈", "这个游戏好难啊，加油！",
        "谢谢你一直陪着我们", "下次唱什么歌？", "今天的直播太棒了", "晚安~明天见", "生日快乐！",
        "你好，我是新来的", "我们一起去海边看日落吧", "本单已发货，请注意查收", "请问你最喜欢什么颜色？",
        "今日の配信も楽しかった！", "ミライちゃん、かわいい！", "イラスト描きました、見てください",
        "お疲れ様でした！", "また明日ね～", "歌ってください！", "猫のモチは元気ですか？",
        "Good night everyone!", "See you tomorrow", "I am so happy today", "Let us go on a diet together",
        "I lift dumbbells while I watch", "The promotional video was great", "Who is the best singer here?",
        "Haru drew this for the anniversary stream, I hope you like it",
    ]  # fmt: skip
    return lines


@pytest.mark.parametrize("which", ["test list", "shipped list"])
def test_ordinary_lines_in_chinese_japanese_and_english_pass(word_filter, shipped_filter, which):
    check = (word_filter if which == "test list" else shipped_filter).check
    flagged = {line: [m.term for m in check(line).matches] for line in ordinary_lines()}
    assert {line: terms for line, terms in flagged.items() if terms} == {}


@pytest.mark.parametrize(
    "line,category,action",
    [
        ("你就是个笨 蛋", "insult", "block"),
        ("q u s i", "harassment", "block"),
        ("加V❤信 领福利", "spam", "block"),
        ("s e n d nudes pls", "sexual", "block"),
        ("我真的不想活了……", "self_harm", "review"),
    ],
)
def test_the_shipped_list_catches_each_of_its_categories(shipped_filter, line, category, action):
    verdict = shipped_filter.check(line)
    assert (verdict.action, verdict.categories) == (action, (category,))


def test_every_normalised_character_points_back_at_what_it_came_from():
    original = "Ｈｉ\u200b!! 草👍泥 馬 ooo"
    form = Normaliser().normalise(original)
    assert form.text == "hi草泥马o"
    assert [original[start:end] for start, end in form.spans] == ["Ｈ", "ｉ", "草", "泥", "馬", "ooo"]
    assert form.runs == (1, 1, 1, 1, 1, 3)


@pytest.mark.parametrize(
    "content,expected",
    [
        ('{"categories": {"insult": {"action": "ban", "terms": ["x"]}}}', "categories.insult.action"),
        ('{"categories": {"insult": {"action": "block", "terms": ["x", "  "]}}}', "categories.insult.terms[1]"),
        ('{"categories": {"insult": {"action": "block", "terms": []}}}', "categories.insult.terms"),
        ('{"categories": {"Bad Name": {"action": "block", "terms": ["x"]}}}', "categories.Bad Name"),
        ('{"categories": {}}', "categories"),
        ('{"allow": ["x"]}', "categories"),
        ('{"categories": {"a": {"action": "block", "terms": ["x"]}}, "alow": []}', "alow"),
        ('{"categories": {"a": {"action": "block", "terms": ["x", "!!! ???"]}}}', "categories.a.terms[1]"),
        ('{"categories": {"a": {"action": "block", "terms": ["ass"]}}, "allow": ["A S S"]}', "allow[0]"),
        ('{\n  "categories": {,\n}', "line 2"),
    ],
)
def test_a_bad_word_list_is_refused_naming_the_file_and_the_field(tmp_path, content, expected):
    path = write_words(tmp_path, content, name="mylist.json")
    with pytest.raises(WordListError) as caught:
        TextFilter.from_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_a_missing_word_list_is_refused_naming_the_file(tmp_path):
    with pytest.raises(WordListError, match="nowhere.json: cannot read"):
        TextFilter.from_file(tmp_path / "nowhere.json")
