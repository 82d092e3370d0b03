"""Word filter throughput: the normaliser and the matcher on danmaku and replies, with a 10,000-entry list.

    .venv/bin/python bench/moderation.py [--terms 10000] [--lines 3000] [--seconds 3] [--seed 7]

Builds a synthetic word list (half Chinese terms of 2-4 characters, half Latin
pseudo-words of 4-9 letters, and a small allow-list) and a few thousand realistic lines:
short danmaku, fan texts and the idol's replies, in Chinese, Japanese and English, one in
ten with a listed term disguised in it (spaced out, full width, traditional, pinyin,
emoji between its characters). Prints the time to compile the list, then texts/s for
`Normaliser.forms()` alone and for `TextFilter.check()` (normalise and match), for the
big list and for the shipped one, and one JSON line with the same figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from producers.samples import DANMAKU, FAN_TEXTS  # noqa: E402
from stream.moderation.normalise import Normaliser  # noqa: E402
from stream.moderation.text_filter import TextFilter  # noqa: E402
from stream.moderation.words import WordList  # noqa: E402

ZH_DANMAKU = ["哈哈哈哈哈", "888888", "主播好可爱！", "来了来了", "前排", "好听！！", "awsl", "下一首唱什么？",
              "晚安～", "这个画太棒了", "主播加油💪", "笑死我了😂", "打卡", "生日快乐🎂🎉"]
JA_DANMAKU = ["かわいい！", "草", "おつかれ～", "きたー！", "歌って！", "8888", "神回", "ミライちゃん好き"]
REPLIES = [
    "Ehehe, I love it! Thank you so much for sending this!", "Waah, that's so sweet of you! Mirai-mode, on!",
    "You made my whole stream sparkle! Thank you!", "哇，这幅画好可爱！谢谢你画了我和Mochi～",
    "嘿嘿，被你发现我在笑了！今天也谢谢大家！", "わあ、すごく上手！ありがとう、大事にするね！",
    "So yellow! I see circles and stars, Haru!", "这道题呀…12 加 60，答案是72！我算对了吧？",
]  # fmt: skip
SYLLABLES = ["ka", "lo", "mi", "ter", "zan", "po", "rex", "vi", "dul", "sen", "gro", "ba", "nix", "tu", "fel", "quo"]


def synthetic_words(count: int, rng: random.Random) -> tuple[WordList, list[str]]:
    """`count` terms in three categories (half Chinese, half Latin) and a 100-word allow-list."""
    zh: set[str] = set()
    en: set[str] = set()
    while len(zh) < count // 2:
        zh.add("".join(chr(rng.randrange(0x4E00, 0x9FA5)) for _ in range(rng.randint(2, 4))))
    while len(en) < count - count // 2:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if len(word) >= 4:
            en.add(word)
    terms = sorted(zh) + sorted(en)
    rng.shuffle(terms)
    third = len(terms) // 3
    categories = {
        "insult": {"action": "block", "terms": terms[:third]},
        "spam": {"action": "block", "terms": terms[third : 2 * third]},
        "self_harm": {"action": "review", "terms": terms[2 * third :]},
    }
    allow = [term + "ing" for term in sorted(en)[:100]]
    return WordList.model_validate({"categories": categories, "allow": allow}), terms


def disguise(term: str, rng: random.Random) -> str:
    how = rng.randrange(4)
    if how == 0:
        return " ".join(term)
    if how == 1:
        return "".join(chr(ord(c) + 0xFEE0) if c.isascii() else c for c in term)  # full width
    if how == 2:
        return "🤡".join(term)
    return ".".join(term)


def realistic_lines(count: int, terms: list[str], rng: random.Random) -> list[str]:
    pool = [t for t in FAN_TEXTS if t] + DANMAKU + ZH_DANMAKU + JA_DANMAKU + REPLIES
    lines = []
    for n in range(count):
        line = rng.choice(pool)
        if n % 10 == 0:
            line = f"{line} {disguise(rng.choice(terms), rng)}"
        lines.append(line)
    return lines


def rate(fn, lines: list[str], seconds: float) -> float:
    """Texts per second of `fn` over `lines`, repeated for at least `seconds`."""
    done = 0
    started = time.perf_counter()
    while True:
        for line in lines:
            fn(line)
        done += len(lines)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--terms", type=int, default=10_000)
    parser.add_argument("--lines", type=int, default=3_000)
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum time per measurement")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    words, terms = synthetic_words(args.terms, rng)
    lines = realistic_lines(args.lines, terms, rng)
    started = time.perf_counter()
    big = TextFilter(words, source="synthetic")
    compile_s = time.perf_counter() - started
    shipped = TextFilter.from_file(ROOT / "config/moderation/words.json")
    normaliser = Normaliser()

    flagged = sum(1 for line in lines if big.check(line).action != "allow")
    normalise_rate = rate(normaliser.forms, lines, args.seconds)
    check_rate = rate(big.check, lines, args.seconds)
    shipped_rate = rate(shipped.check, lines, args.seconds)
    mean_chars = sum(map(len, lines)) / len(lines)

    print(f"{os.cpu_count()} CPUs; {len(lines)} lines, {mean_chars:.0f} characters on average, {flagged} flagged")
    print(f"list: {args.terms} terms -> {big.pattern_count} patterns (with pinyin), compiled in {compile_s:.1f} s")
    print(f"{'stage':<34}{'texts/s':>10}{'us/text':>10}")
    for name, value in [
        ("normalise (text + pinyin forms)", normalise_rate),
        (f"check, {args.terms}-term list", check_rate),
        (f"check, shipped list ({shipped.pattern_count} patterns)", shipped_rate),
    ]:
        print(f"{name:<34}{value:>10,.0f}{1e6 / value:>10.1f}")
    print(json.dumps({
        "terms": args.terms, "patterns": big.pattern_count, "lines": len(lines), "flagged": flagged,
        "compile_s": round(compile_s, 2), "normalise_per_s": round(normalise_rate),
        "check_per_s": round(check_rate), "check_shipped_per_s": round(shipped_rate),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
