"""Whether a fan asks her to draw, in which mode, and a fallback image prompt from their words.

Pure text work, no I/O. `draw_request` reads a fan's text (Chinese, English, Japanese) for
a request that *she* draw something, and says what was asked; fans who talk about their
own drawing ("I drew this for you!", "我画的", "描いてみました!") and words that only
contain the letters or the character ("withdraw", "画面", "動画") are not requests.
Requests are recognised by their frame (an imperative at the start of a clause, "can you
draw", "帮我画", "描いてください"), never by the verb alone, because fans mostly send their
own drawings. `draw_mode` picks the pipeline mode from the words; `image_prompt` builds
the prompt used when the fast model's own prompt is unusable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from stream.contracts import DrawMode
from stream.persona.reading import neutralise_fan_text

DrawLanguage = Literal["zh", "en", "ja"]

MAX_READ_CHARS = 2000  # fan text read at most (Submission.text allows 500)
MAX_SUBJECT_CHARS = 300  # what was asked, kept for the prompt
MAX_PROMPT_CHARS = 1000  # DrawRequest.prompt's limit


@dataclass(frozen=True)
class DrawAsk:
    """A fan's request that she draw something.

    `subject` is what they asked for in their own words, normalised and bounded ("me with
    my cat", "我和你一起看星星", "猫と私"); "" when they left it to her. `text` is their whole
    text, normalised and bounded: the mode is read from it. `trigger` is the words that asked.
    """

    subject: str
    language: DrawLanguage
    trigger: str
    text: str


# --- normalising --------------------------------------------------------------------------

# Traditional forms of the characters the Chinese patterns read, folded to simplified
# one for one (so positions in the folded text are positions in the fan's text).
# Japanese shares some of them (勢, 風, 進): the Japanese patterns are written folded too.
_TRADITIONAL = str.maketrans({
    "畫": "画", "幫": "帮", "給": "给", "張": "张", "圖": "图", "這": "这", "個": "个", "勢": "势",
    "進": "进", "裡": "里", "裏": "里", "請": "请", "們": "们", "嗎": "吗", "讓": "让", "風": "风",
    "隻": "只", "繪": "绘", "製": "制", "煩": "烦", "樣": "样", "會": "会", "為": "为", "來": "来",
    "過": "过", "筆": "笔", "冊": "册", "質": "质", "師": "师", "臉": "脸",
    "\u2019": "'", "\u2018": "'", "\u02bc": "'",
})  # fmt: skip
_SPACES = re.compile(r"[^\S\n]+")
_LINES = re.compile(r" ?\n[\s]*")
# Format characters (zero-width spaces and joiners, bidi marks) and variation selectors: NFKC keeps them.
_HIDDEN = re.compile(r"[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u2060-\u206f\u3164"
                     r"\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e007f\U000e0100-\U000e01ef]")


def _fold_char(char: str) -> str:
    folded = char.casefold()
    return folded if len(folded) == 1 else char


def _normalise(text: str) -> tuple[str, str]:
    """The fan's text made inert (NFKC, no invisible characters, one space between words), and
    the same text folded for matching, character for character (case folded, traditional
    Chinese as simplified, curly apostrophes straight)."""
    text = neutralise_fan_text(text, max_chars=MAX_READ_CHARS)
    text = _LINES.sub("\n", _SPACES.sub(" ", _HIDDEN.sub("", text))).strip()
    folded = "".join(_fold_char(c) for c in text).translate(_TRADITIONAL)
    return text, folded


# --- English ------------------------------------------------------------------------------

# The start of a clause: the text's start or after punctuation or a symbol (emoji, hearts).
_CLAUSE = r"(?:^|(?<=[^\w\s'])|(?<=[^\w\s'] )|(?<=\n))"
# Words a fan puts before an imperative: "hey Mirai, please draw ...", "ok now draw ...".
_LEAD = (r"(?:(?:hey|hi|hello|yo|oh|ok|okay|so|now|and|also|then|but|next|pls|please|plz|pretty please|kindly)"
         r"\b,? ?|(?:hey|hi|hello|yo|dear) [\w-]+,? ){0,4}")
_VERB = r"(?:(?:re-?)?draw|sketch|doodle|paint)"
# Drawn things: "picture" only after "make" ("send me a picture" asks for a photo).
_ART = r"(?:drawing|sketch|doodle|painting|portrait|illustration|fan ?art|artwork)"
_MAKE_ART = rf"(?:make|do)(?: me| us)? (?:a|an|one|some)(?: [\w-]+)? (?:{_ART}|picture)s?"
# A request's verb phrase: "draw", or "make me a (cute) drawing".
_ASK = rf"(?:{_VERB}|{_MAKE_ART})\b"
# What cannot follow an imperative "draw" for it to be one: "Draw distance is awful", "draw the line".
_NOT_AFTER_DRAW = (r"(?!'s\b| (?:is|was|are|were|of|distance|call|calls|rate|game|match|result|results|end|ends|"
                   r"ended|bridge|string|bar|back|near|here|too|lots|straws|the line)\b)")
# An imperative of the other verbs needs an object: "Sketch for Mirai!" is a fan's title.
_OBJECT = r"(?= (?:me|us|yourself|you|a|an|some|something|anything|my|our|her|him|them|this|that|it|one)\b)"

_EN_PATTERNS: tuple[re.Pattern[str], ...] = tuple(re.compile(p) for p in (
    # "Draw me with my cat", "hey Mirai, please draw us!", "Make me a drawing of Mochi"
    rf"{_CLAUSE}{_LEAD}(?:(?:re-?)?draw\b{_NOT_AFTER_DRAW}|(?:sketch|doodle|paint)\b{_OBJECT}|"
    rf"{_MAKE_ART}\b)",
    # "can you draw ...", "could you please sketch ...", "would you mind drawing ..."
    rf"\b(?:can|could|would|will|won't|wont|can't|cant|pls|please|plz)(?: you| u| ya)(?: please| pls| plz| maybe| "
    rf"possibly| also| just| pretty please| ever| one day)? {_ASK}",
    r"\b(?:would|do) (?:you|u) mind (?:drawing|sketching|painting|doodling)\b",
    rf"\b(?:would|could|can|will) (?:you|u) be able to {_ASK}",
    # "I want you to draw ...", "I'd love you to draw ...", "we wish you would draw ..."
    rf"\b(?:i|i'd|i would|we|we'd|we would)(?: really| so| really really)? (?:want|wanna|love|like|need|wish|hope)"
    rf"(?: for)? (?:you|u) (?:to |would |could |'d |will |can )?{_ASK}",
    # "I'd love it if you drew ...", "it would be so cute if you could draw ..."
    r"\b(?:love it|like it|be (?:so |really |super )?\w+|what|how about) if (?:you|u) (?:would |could |can )?"
    r"(?:draw|drew|sketch(?:ed)?|paint(?:ed)?)\b",
    # "why don't you draw ...", "you should draw ...", "how about drawing ..."
    rf"\b(?:why don't you|why dont you|why not|how about you|maybe you could|you should|you gotta|you have to) {_ASK}",
    r"\bhow about (?:drawing|sketching|painting|doodling)\b",
    # "can I get a drawing of ...", "drawing request: ..."
    rf"\b(?:can|could|may) (?:i|we) (?:get|have|request|ask for) (?:a|an|one|some)(?: [\w-]+)? {_ART}s?\b",
    r"\b(?:drawing|art|sketch) request\b:?",
))
# "draw me/us" in the middle of a clause: a request unless someone else is drawing.
_EN_DRAW_ME = re.compile(r"\b(?:draw|sketch|paint) (?=me\b|us\b)")
_EN_NOT_A_REQUEST = frozenset({"i", "we", "they", "he", "she", "it", "me", "to", "i'll", "we'll", "i'm", "let",
                               "lets", "let's", "you", "u", "who"})
_EN_AUXILIARY = frozenset({"will", "'ll", "can", "could", "would", "should", "gonna", "never", "always", "did",
                           "didn't", "don't", "just", "also", "might", "may", "must", "cannot", "can't", "wanna",
                           "sometimes", "often", "really", "still"})


def _en_draw_me_asks(folded: str, start: int) -> bool:
    words = re.findall(r"[\w']+", folded[:start])[-2:]
    if not words:
        return True
    if words[-1] in _EN_NOT_A_REQUEST:
        return False
    if words[-1] in _EN_AUXILIARY:
        return len(words) < 2 or words[0] not in _EN_NOT_A_REQUEST
    return True


# --- Chinese ------------------------------------------------------------------------------

_HUA = r"(?:画|绘制)"
# What may not follow 画 for it to be the verb: nouns (画面 screen, 画质 quality, 画家 painter,
# 画风 art style...) and past or finished drawing (画的, 画得, 画了, 画过, 画完, 画好).
_NOT_AFTER_HUA = r"(?![面质家师风展册廊像框布板报室作工技法功的得了过着中境卷笔具集稿手坛派完好廊])"
_ZH_CLAUSE = r"(?:^|(?<=[\s,.!?~、。…:;\"“”()\[\]]))"
_ZH_PATTERNS: tuple[re.Pattern[str], ...] = tuple(re.compile(p) for p in (
    # 帮我画, 给我们画, 替我画, 为我画 (not 因为我画: "because I draw"), 帮我用你的画风画
    rf"(?:帮|给|替|(?<![因作成认以])为)(?:我们|咱们|我|咱|俺)(?:用[^,.!?。\n]{{1,8}}?)?(?:也|再|来|重新|重)?"
    rf"{_HUA}{_NOT_AFTER_HUA}",
    # 请画, 请你画, 麻烦你帮我画, 求画 (not 求画师: "looking for an artist")
    rf"(?:请|麻烦|拜托|求求|求|恳请)(?:你|您)?(?:帮我们?|给我们?|替我们?)?(?:也|再|来|重新|重)?{_HUA}{_NOT_AFTER_HUA}",
    # 你能画, 你可以给我画, 你来画
    rf"(?:你|您)(?:能不能|可不可以|能否|要不要|愿意|会不会|能|可以|来)(?:帮我们?|给我们?)?(?:也|再|重新|重)?"
    rf"{_HUA}{_NOT_AFTER_HUA}",
    # 你画一个, 你画个, 你画我 (bare 你画 is often praise: 你画画好厉害)
    rf"(?:你|您)(?:再)?{_HUA}(?=一?[个张幅只下些点]|我)",
    # 想让你画, 希望你画, 要你画
    rf"(?:想让|想要|希望|要|让)(?:你|您)(?:帮我们?|给我们?)?(?:也|再|来)?{_HUA}{_NOT_AFTER_HUA}",
    # an imperative at the start of a clause: 画一个…, 画我和…, 快画只猫, 画星星吧 (not 画这个花了三天:
    # "drawing this took three days", nor 画画好难: "drawing is hard")
    rf"{_ZH_CLAUSE}(?:那就|那|快|再|就|也|来|赶紧)?{_HUA}(?=一?[个张幅只条朵颗位对双些点]|一下|我|你自己|出|成|上|"
    rf"{_NOT_AFTER_HUA}(?!画(?![我你一]))[^,.!?。\n]{{1,20}}?(?:吧|呗|嘛|好不好|好吗|可以吗|行吗|行不行))",
    # 把你画进这张图, 可以把我画成猫娘吗
    rf"(?:{_ZH_CLAUSE}|请|帮我们?|给我们?|能不能|可不可以|能否|能|可以|麻烦你?|你|您|快|再|就)"
    rf"把[^,.!?。\n]{{1,16}}?(?:画|绘制|加|放|p)(?:进|到|在|成|上)(?![了过])",
))
# Modal + 画 without "you": a request unless the fan is the one who can draw (我可以画: "I can draw").
_ZH_MODALS = ("能不能", "可不可以", "能否", "可以", "能")
_ZH_MODAL = re.compile(rf"(?:{'|'.join(_ZH_MODALS)}){_HUA}{_NOT_AFTER_HUA}")
_ZH_SUBJECTS = "我们他她它俺咱"


def _zh_modal_asks(folded: str, start: int) -> bool:
    """Whether a modal at `start` is not the fan's (or someone else's) own "I can"."""
    before = folded[:start].rstrip("也还都就不可 ")
    return not before or before[-1] not in _ZH_SUBJECTS


# --- Japanese -----------------------------------------------------------------------------

# The request forms after 描いて: ください, ほしい, くれる (not くれた/くれて: thanks for a past
# drawing), もらえ, みて (not みました: "I tried drawing"), ね, よ, or punctuation and the end.
_JA_MAY = r"(?:ますか|ません(?:か)?|ます|る|ない)?"  # 描いてもらえますか, 描いてくれる?
_JA_TAIL = (rf"(?:ください|下さい|くださ|(?:ほしい|欲しい)(?:です|な)?|ほし|くれ(?![たて]){_JA_MAY}|"
            rf"(?:もらえ|貰え|いただけ|頂け){_JA_MAY}|もらいたい|いただきたい|頂きたい|ちょうだい|"
            r"みて(?![たま])(?:ください|ほしい|くれ|ね|よ)?|みない|ね|よ|(?=[^\w\s、,]|ー|$))")
_JA_PATTERNS: tuple[re.Pattern[str], ...] = tuple(re.compile(p) for p in (
    rf"(?:(?<!顔)(?:お?絵|イラスト)を?)?[描画](?:いて|き直して|きなおして){_JA_TAIL}",
    rf"(?:お?絵|イラスト)を?(?:かいて|書いて){_JA_TAIL}",
    rf"お絵[描か]きして{_JA_TAIL}",
    r"(?:絵|イラスト)を?(?:(?:お願い|おねがい)(?:します|しまーす|したい)?|リクエスト)",
))
_JA_PARTICLES = "をもはがにで"

# Trimmed off the ends of what was asked: politeness, particles, punctuation.
_END_NOISE_EN = re.compile(r"(?:[\s,.!?~:;\"'()\-]|\b(?:please|pls|plz|thanks|thank you|thx|ty)\b)+$")
_START_NOISE_EN = re.compile(r"^(?:[\s,.!?~:;\"'()\-]|\b(?:please|pls|plz|of)\b)+")
_END_NOISE_CJK = re.compile(r"(?:[\s,.!?~:;\"'()、。…ー♪☆★♡♥]|好吗|好不好|可以吗|行吗|吧|吗|呀|啊|嘛|呢|哦|"
                            r"喔|谢谢|拜托了|お願いします|お願い|おねがい|です|ね|よ)+$")
_START_NOISE_CJK = re.compile(r"^(?:[\s,.!?~:;\"'()、。…]|一下|一?[个张幅只個張隻])+")


def _trim(subject: str, language: DrawLanguage) -> str:
    if language == "en":
        subject = _START_NOISE_EN.sub("", _END_NOISE_EN.sub("", subject))
    else:
        subject = _START_NOISE_CJK.sub("", _END_NOISE_CJK.sub("", subject))
    subject = subject.strip()
    if len(subject) > MAX_SUBJECT_CHARS:
        subject = subject[: MAX_SUBJECT_CHARS - 1].rstrip() + "…"
    return subject


def _first_match(folded: str) -> tuple[DrawLanguage, re.Match[str]] | None:
    found: list[tuple[int, DrawLanguage, re.Match[str]]] = []
    for language, patterns in (("en", _EN_PATTERNS), ("zh", _ZH_PATTERNS), ("ja", _JA_PATTERNS)):
        for pattern in patterns:
            for match in pattern.finditer(folded):
                if language != "zh" or not match.group(0).startswith(_ZH_MODALS) or _zh_modal_asks(
                        folded, match.start()):
                    found.append((match.start(), language, match))
                    break
    for match in _EN_DRAW_ME.finditer(folded):
        if _en_draw_me_asks(folded, match.start()):
            found.append((match.start(), "en", match))
            break
    for match in _ZH_MODAL.finditer(folded):
        if _zh_modal_asks(folded, match.start()):
            found.append((match.start(), "zh", match))
            break
    if not found:
        return None
    _, language, match = min(found, key=lambda f: f[0])
    return language, match


def draw_request(text: str | None) -> DrawAsk | None:
    """The fan's request that she draw something, or None when their text asks for no drawing."""
    if not text:
        return None
    shown, folded = _normalise(text)
    hit = _first_match(folded)
    if hit is None:
        return None
    language, match = hit
    start, end = match.span()
    if language == "ja":
        # Japanese puts what to draw before the verb: "猫と私を描いて" asks for "猫と私".
        sentence_start = max(shown.rfind(mark, 0, start) for mark in "。!?\n") + 1
        before = shown[sentence_start:start].rstrip(" 、").rstrip(_JA_PARTICLES)
        subject = f"{before} {shown[end:]}"
    elif language == "zh" and "把" in match.group(0):
        subject = shown[start + match.group(0).index("把"):]  # "把你画进这张图": the whole clause says it
    else:
        subject = shown[end:]
    return DrawAsk(_trim(subject, language), language, shown[start:end].strip(), shown[:MAX_PROMPT_CHARS])


# --- mode ---------------------------------------------------------------------------------

_PICTURE_EN = r"(?:picture|photo|pic|image|photograph|selfie|drawing|screenshot|shot)"
_OUTPAINT = re.compile("|".join((
    rf"\b(?:in|into|onto) (?:this|my|that|our) {_PICTURE_EN}\b",
    rf"\b(?:into|onto) the {_PICTURE_EN}\b",
    r"\b(?:add|put|insert|photoshop) yourself\b",
    r"\bjoin (?:me|us) in\b",
    r"(?:画|加|放|p)(?:进|到|在)(?:这|那|我的|图|照片|画)",
    r"(?:这|那)[张个幅](?:图|照片|相片|画|合照)里",
    r"(?:照片|图片|合照)里",
    r"(?:この|その|私の)(?:写真|画像|絵|イラスト|スクショ)(?:に|の中に)",
    r"(?:写真|画像)(?:に|の中に)(?:入|描|追加|加え)",
)))
_POSE = re.compile("|".join((
    r"\b(?:this|that|these|the same|same|my|his|her|their) (?:pose|poses|posture|position)\b",
    r"\bpose like (?:this|that|me|mine|in)\b",
    r"(?:这个|那个|同样的|一样的|同款|相同的|这|照着这?个?)(?:姿势|动作|pose)",
    r"(?:この|その|同じ|あの)(?:ポーズ|姿势)",  # 姿勢, folded
)))
_IMG2IMG = re.compile("|".join((
    r"\bre-?draw",
    r"\b(?:draw|sketch|paint) (?:this|it|that|mine|my \w+) again\b",
    r"\bin your (?:own )?(?:style|art ?style)\b",
    r"\byour (?:own )?(?:version|take) (?:of|on)\b",
    r"\bremake\b",
    r"重画|重新画|重绘|照着画|照着这张|临摹",
    r"(?:你的|用你的)(?:画风|风格)",
    r"描き直|描きなおし|リメイク|模写",
    r"(?:絵柄|画风|タッチ|スタイル)で",  # 画風, folded
)))
_SCREENSHOT_KIND = "danmaku_screenshot"


def draw_mode(ask: DrawAsk | str | None, has_picture: bool, kind: str) -> DrawMode:
    """The pipeline mode a request asks for, from its words.

    "Put yourself in this picture" is outpainting the fan's picture, "this pose" a pose-
    conditioned drawing, "redraw it in your style" img2img; anything else, and any request
    without a picture to condition on, is text-to-image. A comment-wall screenshot is never
    conditioned on: its pixels are other people's comments, not something to draw into.
    """
    if not has_picture or kind == _SCREENSHOT_KIND or ask is None:
        return "text_to_image"
    folded = _normalise(ask)[1] if isinstance(ask, str) else _normalise(ask.text)[1]
    if _OUTPAINT.search(folded):
        return "outpaint"
    if _POSE.search(folded):
        return "pose"
    if _IMG2IMG.search(folded):
        return "img2img"
    return "text_to_image"


# --- fallback prompt ----------------------------------------------------------------------

# The fan's pronouns, as the picture's people: "draw me with my cat" is "a fan with their cat".
_EN_PRONOUNS = {
    "us": "{name} and a fan", "we": "{name} and a fan", "ourselves": "{name} and a fan",
    "me": "a fan", "i": "a fan", "myself": "a fan", "my": "their", "mine": "theirs", "our": "their",
    "ours": "theirs", "yourself": "{name}", "your": "{name}'s", "ur": "{name}'s", "you": "{name}", "u": "{name}",
}  # fmt: skip
_ZH_PRONOUNS = {
    "你自己": "{name}", "我们": "{name}和粉丝", "咱们": "{name}和粉丝", "俺": "粉丝", "我": "粉丝",
    "您": "{name}", "你": "{name}",
}
_JA_PRONOUNS = {
    "私たち": "{name}とファン", "僕たち": "{name}とファン", "わたしたち": "{name}とファン", "私": "ファン",
    "僕": "ファン", "俺": "ファン", "わたし": "ファン", "あたし": "ファン", "ぼく": "ファン",
    "あなた": "{name}", "きみ": "{name}", "君": "{name}",
}
_PRONOUN_PATTERNS = {
    "en": re.compile(r"\b(?:" + "|".join(sorted(_EN_PRONOUNS, key=len, reverse=True)) + r")\b", re.IGNORECASE),
    "zh": re.compile("|".join(sorted(_ZH_PRONOUNS, key=len, reverse=True))),
    "ja": re.compile("|".join(sorted(_JA_PRONOUNS, key=len, reverse=True))),
}
_PRONOUNS = {"en": _EN_PRONOUNS, "zh": _ZH_PRONOUNS, "ja": _JA_PRONOUNS}
_STYLE = {
    "en": ("An illustration drawn by {name}, a cheerful virtual idol, in her own style: soft, bright anime art, "
           "clean line work, warm pastel colours, gentle light, a playful, friendly mood. It shows: {subject}."),
    "zh": ("由元气虚拟偶像{name}亲手画的插画，她自己的画风：柔和明亮的动漫风格，"
           "干净的线条，温暖的粉彩色调，柔光，俏皮亲切的氛围。画面内容：{subject}。"),
}
_NOTHING_ASKED = {"en": "something cheerful she chose for a fan", "zh": "她为粉丝挑选的开心小画"}
# Characters that could start markup or quote-breaking in a prompt: made plain.
_PROMPT_PLAIN = str.maketrans({"\"": "'", "“": "'", "”": "'", "{": "(", "}": ")", "<": "＜", ">": "＞", "\\": "/"})


def _inert(text: str, max_chars: int) -> str:
    text = neutralise_fan_text(text, max_chars=max_chars)
    return " ".join(_HIDDEN.sub("", text).translate(_PROMPT_PLAIN).split())


def _swap_pronouns(subject: str, language: DrawLanguage, name: str) -> str:
    """The fan's English pronouns, and those of their language, as the picture's people (one pass,
    so her name is never read again as a pronoun)."""
    for lang in dict.fromkeys(("en", language)):
        table = _PRONOUNS[lang]
        subject = _PRONOUN_PATTERNS[lang].sub(lambda m: table[m.group(0).lower()].replace("{name}", name), subject)
    return subject


def _style(ask: DrawAsk | None, language: str | None) -> Literal["zh", "en"]:
    return "zh" if language == "zh" or (language is None and ask is not None and ask.language == "zh") else "en"


def image_prompt(ask: DrawAsk | None, persona_name: str, language: str | None = None) -> str:
    """An image prompt in her style from the fan's words, for when the fast model's own is unusable.

    Chinese fans get a Chinese prompt, everyone else an English one (the two languages
    Qwen-Image reads best); the fan's words keep their language. Their pronouns become the
    picture's people ("me" is a fan, "you" is her). The fan's words are made inert (no
    control tokens, markup or line breaks) and the whole prompt fits `MAX_PROMPT_CHARS`.
    """
    name = _inert(persona_name, 64) or "the idol"
    style = _style(ask, language)
    subject = ""
    if ask is not None:
        subject = _inert(_swap_pronouns(_inert(ask.subject, MAX_SUBJECT_CHARS), ask.language, name), MAX_PROMPT_CHARS)
    template = _STYLE[style]
    room = MAX_PROMPT_CHARS - len(template.replace("{name}", name).replace("{subject}", ""))
    if len(subject) > room:
        subject = subject[: max(0, room - 1)].rstrip() + "…"
    prompt = template.replace("{name}", name).replace("{subject}", subject or _NOTHING_ASKED[style])
    return prompt[:MAX_PROMPT_CHARS]


_IDEA = {"en": " Her idea for it: {idea}.", "zh": "她的构思：{idea}。"}


def draw_prompt(ask: DrawAsk | None, persona_name: str, language: str | None = None, idea: str | None = None) -> str:
    """The image prompt the draw tier gets: her style and what the fan asked (`image_prompt`), then
    her idea for the picture, the fast model's words after its [draw] tag (it saw the fan's picture).

    The idea is made inert like the fan's words and cut to fit `MAX_PROMPT_CHARS`; without
    one (the model's answer was unusable) the prompt is `image_prompt`'s alone.
    """
    base = image_prompt(ask, persona_name, language)
    idea = _inert(idea or "", MAX_SUBJECT_CHARS).rstrip("。.!！ ")
    if not idea:
        return base
    template = _IDEA[_style(ask, language)]
    room = MAX_PROMPT_CHARS - len(base) - len(template.replace("{idea}", ""))
    if room < 8:
        return base
    if len(idea) > room:
        idea = idea[: room - 1].rstrip() + "…"
    return base + template.replace("{idea}", idea)
