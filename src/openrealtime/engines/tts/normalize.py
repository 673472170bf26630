"""Rewrite text for the synthesizer the way a careful agent reads it aloud.

A confirmation code, an order number or a phone number read "however the synthesiser
guesses" comes out wrong ("A7X-4921" as "a seven x minus four thousand nine hundred…"), so
before synthesis such spans are spelled out the way a careful agent reads them: codes
character by character in their groups, the letters a listener confuses said with a spelling
word ("B as in Boston"), the digits that follow letters announced and paired ("A, number 7,
X, dash, 49, 21"); phone numbers digit by digit in their groups, e-mail addresses with "at"
and "dot", amounts with their currency, dates and times as words. Numbers use ``num2words``
(many languages); what no library does (codes, phone numbers, e-mail addresses) is done by
the rules below.

Only the text sent to the synthesizer is rewritten: the transcript keeps what was written.
Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

from num2words import num2words

__all__ = ["SPELLING_ALPHABET", "WORD_ALONE", "normalize_for_speech", "spell_code", "spoken_digits"]

_SEPARATORS = {"-": "dash", "_": "underscore", ".": "dot", "/": "slash", "+": "plus", "#": "hash"}
_SEPARATORS_BY_LANG: dict[str, dict[str, str]] = {
    "es": {"-": "guion", "_": "guion bajo", ".": "punto", "/": "barra", "+": "más", "@": "arroba"},
    "fr": {"-": "tiret", "_": "tiret bas", ".": "point", "/": "barre oblique", "+": "plus", "@": "arobase"},
    "it": {"-": "trattino", "_": "trattino basso", ".": "punto", "/": "barra", "+": "più", "@": "chiocciola"},
    "pt": {"-": "hífen", "_": "sublinhado", ".": "ponto", "/": "barra", "+": "mais", "@": "arroba"},
    "pt_BR": {"-": "hífen", "_": "sublinhado", ".": "ponto", "/": "barra", "+": "mais", "@": "arroba"},
    "de": {"-": "Bindestrich", "_": "Unterstrich", ".": "Punkt", "/": "Schrägstrich", "+": "plus", "@": "at"},
}
"""How separators inside codes and addresses are said; English uses ``_SEPARATORS``."""
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
_CURRENCY_SYMBOLS = {"$": "USD", "\u20ac": "EUR", "\u00a3": "GBP", "\u00a5": "JPY"}
_CURRENCY_CODES = {"USD", "EUR", "GBP", "JPY", "CAD", "AUD", "CHF"}
_CURRENCY_WORDS_EN = {
    "USD": ("dollar", "dollars", "cent", "cents"),
    "CAD": ("Canadian dollar", "Canadian dollars", "cent", "cents"),
    "AUD": ("Australian dollar", "Australian dollars", "cent", "cents"),
    "EUR": ("euro", "euros", "cent", "cents"),
    "GBP": ("pound", "pounds", "penny", "pence"),
    "JPY": ("yen", "yen", "", ""),
    "CHF": ("Swiss franc", "Swiss francs", "centime", "centimes"),
}
_CODE_KEYWORDS = (
    r"code|reference|ref|confirmation|booking|locator|PNR|ticket|tracking|order|account|"
    r"invoice|serial|ID|number|no\.|#"
)

# num2words names some languages differently from the ISO codes sessions use.
_NUM2WORDS_LANG = {"pt": "pt_BR", "pt-br": "pt_BR", "zh": "zh", "en-us": "en", "en-gb": "en"}


def _lang(lang: str) -> str:
    key = lang.lower().replace("_", "-")
    return _NUM2WORDS_LANG.get(key, key.split("-")[0])


def _english(lang: str) -> bool:
    return _lang(lang) == "en"


def _cardinal(value: int | Decimal, lang: str) -> str:
    try:
        return str(num2words(value, lang=_lang(lang)))
    except (NotImplementedError, OverflowError, ValueError):
        return str(num2words(value, lang="en")) if _english(lang) else str(value)


def _separator(ch: str, lang: str) -> str:
    if _english(lang):
        return _SEPARATORS.get(ch, ch)
    return _SEPARATORS_BY_LANG.get(_lang(lang), {}).get(ch, ch)


def spoken_digits(digits: str) -> str:
    """Digits one by one ("4921" -> "4 9 2 1"): the phonemizer says each in its language."""
    return " ".join(d for d in digits if d.isdigit())


SPELLING_ALPHABET: dict[str, str] = {
    "B": "Boston", "D": "David", "E": "Echo", "G": "George", "M": "Mike", "N": "November",
    "P": "Peter", "S": "Sunday", "T": "Texas", "V": "Victory", "Z": "Zebra",
}  # fmt: skip
"""English letters said with a spelling word inside codes ("B as in Boston"), and the word.

Measured through the server's ASR (Whisper base) on Piper joe: said alone, N and M are heard
as "and", V as "the", "B" or "D", Z as "C", B/D/P/T as one another, S and E as "C", G as "D".
Each word is the one Whisper wrote back right most often in real codes (``bench/spelling.py``
compares candidates); NATO's "Foxtrot", "Victor", "Papa", "Sierra" and "Zulu" came back as
"Foxdrad", "vicar", "pop-up", "Ziera" and "Sulu" after "as in". S: "Sunday" read back in 10
of 12 readings of four codes with an S (the two misses were P), "Sugar" in 9 ("shoulder",
"showber"), "Sam" in 7 ("San"); P: "Peter" 11 of 12, "Pizza" 11, "Paris" 6 ("pairs"). The
other letters are said as themselves."""

WORD_ALONE: frozenset[str] = frozenset({"D", "E", "M", "N"})
"""Letters said by their word alone ("Echo"): "E as in Echo" came back as "he does an echo",
"D as in David" as "ds and David", "M as in Mike" as "m is in my"; the words alone were
heard right in 6, 6 and 5 of 6 contexts. "Echo, N as in November" came back as "echoed and as
in November" every time; with "November" alone, 13 of 14 codes with an N read back (7 codes,
twice each) where "N as in November" gave 10."""


def _digit_groups(run: str) -> list[str]:
    """A digit run as agents read codes: two digits as a number ("50"), three one by one
    ("314" as "three fourteen" came back as "3, 4, 1"), four or more in pairs ("4921" ->
    "49", "21"; "83054" -> "8", "30", "54"); a pair starting with 0 digit by digit ("0 5")."""
    if len(run) == 3 or len(run) < 2:
        return list(run)
    parts: list[str] = []
    start = len(run) % 2
    if start:
        parts.append(run[0])
    for i in range(start, len(run), 2):
        pair = run[i : i + 2]
        parts.append(" ".join(pair) if pair[0] == "0" else pair)
    return parts


def spell_code(code: str, lang: str = "en") -> str:
    """A code read the way a careful agent reads it to someone writing it down.

    English: ``A7X-4921`` -> ``A, number 7, X, dash, 49, 21``; ``BN8-2977`` -> ``B as in
    Boston, November, number 8, dash, 29, 77``. Letters a listener confuses are said
    with their :data:`SPELLING_ALPHABET` word; a digit run after letters or at the start is
    announced with "number" (after spelled letters "8" was heard as the letter "A", "3" as
    "free"; "code is 3" as "Cotus III"); digit
    runs are said in pairs. Other languages: character by character (``A, 7, X, guion, 4, 9,
    2, 1``). Capital letters between commas are read as letter names by espeak-ng (which
    phonemizes for every embedded voice); the commas give a careful reader's pauses.
    """
    if not _english(lang):
        spoken: list[str] = []
        for ch in code:
            if ch.isalnum():
                spoken.append(ch.upper())
            elif ch in _SEPARATORS:
                spoken.append(_separator(ch, lang))
            elif not ch.isspace():
                spoken.append(ch)
        return ", ".join(spoken)
    items: list[str] = []
    # at the start of a code with letters ("code is 3" was heard as "Cotus III") and after letters
    announce = any(ch.isalpha() for ch in code)
    for piece in re.findall(r"\d+|[A-Za-z]|\S", code):
        if piece.isdigit():
            groups = _digit_groups(piece)
            if announce:
                groups[0] = f"number {groups[0]}"
            items.extend(groups)
            announce = False
        elif piece.isalpha():
            letter = piece.upper()
            word = SPELLING_ALPHABET.get(letter)
            if word is None:
                items.append(letter)
            else:
                items.append(word if letter in WORD_ALONE else f"{letter} as in {word}")
            announce = True
        else:
            items.append(_separator(piece, lang))
            announce = False
    return ", ".join(items)


# --------------------------------------------------------------------------- span readers

Reader = Callable[["re.Match[str]", str], str]


def _read_email(m: re.Match[str], lang: str) -> str:
    local, _, domain = m.group(0).partition("@")
    at = "at" if _english(lang) else _separator("@", lang)
    return f"{_read_address_part(local, lang)}, {at}, {_read_address_part(domain, lang)}"


def _read_address_part(part: str, lang: str) -> str:
    """Word-like pieces are said as words, short or unpronounceable ones spelled."""
    words: list[str] = []
    for piece in re.split(r"([._+\-])", part):
        if not piece:
            continue
        if piece in _SEPARATORS:
            words.append(_separator(piece, lang))
        elif piece.isalpha() and len(piece) >= 3 and re.search(r"[aeiouy]", piece, re.IGNORECASE):
            words.append(piece.lower())
        else:
            words.append(spell_code(piece, lang))
    return " ".join(words)


def _read_phone(m: re.Match[str], lang: str) -> str:
    text = m.group(0)
    groups = re.findall(r"\d+", text)
    spoken = [spoken_digits(g) for g in groups]
    prefix = _separator("+", lang) + " " if text.lstrip().startswith("+") else ""
    return prefix + ", ".join(spoken)


def _ordinal(n: int, lang: str) -> str:
    try:
        return str(num2words(n, lang=_lang(lang), to="ordinal"))
    except (NotImplementedError, ValueError):
        return _cardinal(n, lang)


def _year(n: int, lang: str) -> str:
    try:
        return str(num2words(n, lang=_lang(lang), to="year"))
    except (NotImplementedError, ValueError):
        return _cardinal(n, lang)


def _date(year: int, month: int, day: int, lang: str) -> str | None:
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    if _english(lang):
        return f"{_MONTHS[month - 1]} {_ordinal(day, lang)}, {_year(year, lang)}"
    return f"{_cardinal(day, lang)}. {_cardinal(month, lang)}. {_year(year, lang)}"


def _read_iso_date(m: re.Match[str], lang: str) -> str:
    year, month, day = int(m.group("y")), int(m.group("m")), int(m.group("d"))
    return _date(year, month, day, lang) or spell_code(m.group(0), lang)


def _read_slash_date(m: re.Match[str], lang: str) -> str:
    a, b, y = int(m.group("a")), int(m.group("b")), m.group("y")
    year = int(y) if len(y) == 4 else 2000 + int(y)
    # Month first in English unless that is impossible; day first elsewhere.
    month, day = (a, b) if _english(lang) and a <= 12 else (b, a)
    return _date(year, month, day, lang) or m.group(0)


def _read_time(m: re.Match[str], lang: str) -> str:
    hour, minute = int(m.group("h")), int(m.group("min"))
    ampm = m.group("ampm")
    if hour > 23 or minute > 59:
        return m.group(0)
    if not _english(lang):
        return f"{_cardinal(hour, lang)} {_cardinal(minute, lang)}" if minute else _cardinal(hour, lang)
    if minute == 0:
        words = _cardinal(hour, lang) + ("" if ampm else " o'clock")
    elif minute < 10:
        words = f"{_cardinal(hour, lang)} oh {_cardinal(minute, lang)}"
    else:
        words = f"{_cardinal(hour, lang)} {_cardinal(minute, lang)}"
    if ampm:
        words += " " + ("a m" if ampm.lower().startswith("a") else "p m")
        if ampm.endswith("."):
            words += "."  # the abbreviation's dot may also end the sentence
    return words


def _amount_words(amount: Decimal, currency: str, lang: str) -> str:
    if not _english(lang):
        try:
            return str(num2words(amount, lang=_lang(lang), to="currency", currency=currency))
        except (NotImplementedError, ValueError, KeyError):
            return f"{_cardinal(amount, lang)} {currency}"
    one, many, cent, cents = _CURRENCY_WORDS_EN[currency]
    whole = int(amount)
    fraction = int((amount - whole) * 100)
    parts = []
    if whole or not fraction:
        # "nine hundred seven dollars": with num2words' British "and" inside the number,
        # Whisper heard "nine hundred and seven dollars" as "$900 and $7"
        words = _cardinal(whole, lang).replace(" and ", " ")
        parts.append(f"{words} {one if whole == 1 else many}")
    if fraction and cent:
        parts.append(f"{_cardinal(fraction, lang)} {cent if fraction == 1 else cents}")
    return " and ".join(parts)


def _parse_amount(number: str) -> Decimal | None:
    try:
        return Decimal(number.replace(",", ""))
    except InvalidOperation:
        return None


def _read_symbol_amount(m: re.Match[str], lang: str) -> str:
    currency = _CURRENCY_SYMBOLS[m.group("sym")]
    scale = m.group("scale")
    if scale:
        # "$2.5 million": the number as written, its scale, then the currency.
        scale_word = {"k": "thousand", "m": "million", "bn": "billion"}.get(scale.lower(), scale.lower())
        unit = _CURRENCY_WORDS_EN[currency][1] if _english(lang) else currency
        return f"{_read_plain_number(m.group('num'), lang)} {scale_word} {unit}"
    value = _parse_amount(m.group("num"))
    return m.group(0) if value is None else _amount_words(value, currency, lang)


def _read_suffix_amount(m: re.Match[str], lang: str) -> str:
    number = m.group("num")
    if not _english(lang):
        # 1.234,56 in most of Europe
        number = number.replace(".", "").replace(" ", "").replace(",", ".")
    value = _parse_amount(number)
    return m.group(0) if value is None else _amount_words(value, _CURRENCY_SYMBOLS[m.group("sym")], lang)


def _read_code_amount(m: re.Match[str], lang: str) -> str:
    value = _parse_amount(m.group("num"))
    if value is None:
        return m.group(0)
    return _amount_words(value, m.group("code").upper(), lang)


def _read_percent(m: re.Match[str], lang: str) -> str:
    word = "percent" if _english(lang) else "%"
    return f"{_read_plain_number(m.group('num'), lang)} {word}"


def _read_ordinal(m: re.Match[str], lang: str) -> str:
    return _ordinal(int(m.group("num")), lang)


def _read_code(m: re.Match[str], lang: str) -> str:
    return spell_code(m.group("code"), lang)


def _read_keyword_code(m: re.Match[str], lang: str) -> str:
    return f"{m.group('kw')}{m.group('gap')}{spell_code(m.group('code'), lang)}"


def _read_digit_run(m: re.Match[str], lang: str) -> str:
    text = m.group(0)
    prefix = ""
    if text.startswith("#"):
        prefix = "number " if _english(lang) else ""
        text = text[1:]
    # digit by digit: order numbers read back 10 / 10 through Whisper base this way
    return prefix + ", ".join(text)


def _read_plain_number(text: str, lang: str) -> str:
    clean = text.replace(",", "")
    if "." in clean:
        try:
            return _cardinal(Decimal(clean), lang)
        except InvalidOperation:
            return text
    n = int(clean)
    if "," not in text and len(clean) == 4 and 1100 <= n <= 2099 and n % 100 != 0:
        return _year(n, lang)
    return _cardinal(n, lang)


def _read_number(m: re.Match[str], lang: str) -> str:
    return _read_plain_number(m.group(0), lang)


_B = r"(?<![\w@.\-/])"  # start of a token
_E = r"(?![\w@\-/]|[.,:]\w)"  # end of a token (a sentence's final dot may follow)
_PATTERNS: tuple[tuple[str, str, Reader], ...] = (
    (
        "email",
        r"(?<![\w.+\-])[A-Za-z0-9][A-Za-z0-9._+\-]*@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
        _read_email,
    ),
    ("iso_date", _B + r"(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})" + _E, _read_iso_date),
    ("slash_date", _B + r"(?P<a>\d{1,2})/(?P<b>\d{1,2})/(?P<y>\d{4}|\d{2})" + _E, _read_slash_date),
    (
        "phone",
        r"(?<![\w+\-])(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{2,4}\)\s?|\d{2,4}[\s.\-])\d{3,4}[\s.\-]\d{3,4}" + _E,
        _read_phone,
    ),
    ("time", _B + r"(?P<h>\d{1,2}):(?P<min>\d{2})(?:\s?(?P<ampm>[AaPp]\.?[Mm]\.?))?(?![\w:])", _read_time),
    (
        "symbol_amount",
        r"(?P<sym>[$\u20ac\u00a3\u00a5])\s?(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d{1,2})?|\d+(?:\.\d{1,2})?)"
        r"(?:\s?(?P<scale>k|m|bn|thousand|million|billion)\b)?(?![\w.]\d)",
        _read_symbol_amount,
    ),
    (
        "suffix_amount",
        _B
        + r"(?P<num>\d{1,3}(?:[.,\s]\d{3})+(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?)\s?(?P<sym>[$\u20ac\u00a3\u00a5])",
        _read_suffix_amount,
    ),
    (
        "code_amount",
        _B
        + r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d{1,2})?|\d+(?:\.\d{1,2})?)\s?(?P<code>"
        + "|".join(sorted(_CURRENCY_CODES))
        + r")\b",
        _read_code_amount,
    ),
    ("percent", _B + r"(?P<num>\d+(?:\.\d+)?)\s?%", _read_percent),
    ("ordinal", _B + r"(?P<num>\d+)(?:st|nd|rd|th)\b", _read_ordinal),
    (
        "keyword_code",
        r"(?P<kw>\b(?:" + _CODE_KEYWORDS + r"))(?P<gap>\s*(?:is|:|#)?\s*)"
        r"(?P<code>(?=[A-Z0-9\-]*[A-Z])[A-Z0-9]{4,}(?:-[A-Z0-9]+)*)" + _E,
        _read_keyword_code,
    ),
    (
        "code",
        _B + r"(?P<code>(?=[A-Za-z0-9\-]*\d)(?=[A-Za-z0-9\-]*[A-Za-z])"
        r"(?:[A-Z0-9]{2,}(?:-[A-Za-z0-9]+)+|[A-Z0-9]*[A-Z][A-Z0-9]*\d[A-Z0-9]*|[A-Z0-9]*\d[A-Z0-9]*[A-Z][A-Z0-9]*"
        r"|[A-Za-z0-9]*[a-z][A-Za-z0-9]*\d[A-Za-z0-9]{2,}|\d+-[A-Za-z0-9\-]+))" + _E,
        _read_code,
    ),
    ("digit_run", r"(?<![\w.,@\-/])#?(?:\d{5,}|0\d+)" + _E, _read_digit_run),
    ("number", _B + r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|" + _B + r"\d+(?:\.\d+)?(?![\w@/]|[.,]\d)", _read_number),
)
_WORTH_A_LOOK = re.compile(r"[\d@$\u20ac\u00a3\u00a5]|[A-Z]{4}")
_COMPILED: tuple[tuple[re.Pattern[str], Reader], ...] = tuple(
    (re.compile(pattern), reader) for _, pattern, reader in _PATTERNS
)


def normalize_for_speech(text: str, lang: str = "en") -> str:
    """The text with codes, numbers, phone numbers, e-mail addresses, amounts, dates and
    times written out as words for a synthesizer speaking ``lang`` (ISO 639-1, e.g. ``en``,
    ``es``; codes and numbers are spelled in that language where ``num2words`` knows it).

    Spans are found left to right; where several patterns match at one place the first in
    ``_PATTERNS`` wins (an e-mail address before a code, a phone number before a number).
    Text without digits, ``@``, currency signs or capital runs is returned unchanged.
    """
    if not _WORTH_A_LOOK.search(text):
        return text
    out: list[str] = []
    pos = 0
    while pos < len(text):
        best: tuple[re.Match[str], Reader] | None = None
        for pattern, reader in _COMPILED:
            m = pattern.search(text, pos)
            if m is not None and m.end() > m.start() and (best is None or m.start() < best[0].start()):
                best = (m, reader)
        if best is None:
            break
        m, reader = best
        out.append(text[pos : m.start()])
        out.append(reader(m, lang))
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)
