"""Codes, numbers, addresses, amounts and dates spoken and written back: the material of the
read-back benchmark (``bench/code_readback.py``) and test.

A listener who hears "B as in Boston, number 8, dash, 29, 77" writes down "B8-2977": the
comparison is made after the same normalisation of the transcript (:func:`canonical`), letter
names, homophones and spelling words back to characters, spoken digits to digits, "dash" and
"number" to nothing. The generators are seeded, so every run speaks the same 50 codes.
"""

from __future__ import annotations

import datetime
import random
import re
import string

from openrealtime.engines.tts.normalize import SPELLING_ALPHABET

__all__ = [
    "LETTERS",
    "LETTER_WORDS",
    "SPELLING_WORDS",
    "canonical",
    "generated_codes",
    "generated_details",
    "read_well",
]

LETTERS = "".join(c for c in string.ascii_uppercase if c not in "IO")  # as booking codes avoid them
LETTER_WORDS = {
    "ay": "a", "eh": "a", "bee": "b", "be": "b", "see": "c", "sea": "c", "cee": "c", "dee": "d",
    "ee": "e", "eff": "f", "ef": "f", "gee": "g", "jee": "g", "aitch": "h", "jay": "j", "kay": "k",
    "el": "l", "em": "m", "en": "n", "pee": "p", "cue": "q", "queue": "q", "are": "r", "ar": "r",
    "ess": "s", "tee": "t", "tea": "t", "you": "u", "vee": "v", "ex": "x", "why": "y", "zee": "z",
    "zed": "z", "zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "dash": "", "hyphen": "",
    "for": "4", "to": "2", "too": "2", "ate": "8", "won": "1", "free": "3", "number": "", "mic": "m",
}  # fmt: skip
"""Whisper writes a spelled-out character as itself, its name or a homophone (also of a
spelling word: "mic"; "free" for "three"); "number" only announces digits."""

SPELLING_WORDS = {
    **{word.lower(): letter.lower() for letter, word in SPELLING_ALPHABET.items()},
    "alpha": "a", "alfa": "a", "bravo": "b", "charlie": "c", "delta": "d", "echo": "e",
    "foxtrot": "f", "golf": "g", "hotel": "h", "india": "i", "juliet": "j", "juliett": "j",
    "kilo": "k", "lima": "l", "mike": "m", "november": "n", "oscar": "o", "papa": "p",
    "quebec": "q", "romeo": "r", "sierra": "s", "tango": "t", "uniform": "u", "victor": "v",
    "whiskey": "w", "whisky": "w", "xray": "x", "yankee": "y", "zulu": "z", "sugar": "s",
}  # fmt: skip
"""Spelling-alphabet words a listener maps back to letters: the server's own alphabet, the
NATO one, and "Sugar" (the server's S before "Sunday")."""

IN_WORDS = frozenset({"in", "an", "asin"})
"""How Whisper writes the "in" of "B as in Boston" ("an"; "asin" with the "as" glued on)."""

AS_WORDS = frozenset({"as", "is", "s", "has", "his"})
"""How Whisper writes its "as" ("is", the "s" of "thea's in Boston")."""

HEARD_FOR_A_LETTER = frozenset({"and", "an", "end", "in", "the", "he", "ds", "as", "ass"})
"""Words Whisper wrote for a lone letter before "as in" (N as "and", E as "he", V as "the", S
as "as")."""


def _character(token: str) -> str:
    if token in SPELLING_WORDS:
        return SPELLING_WORDS[token]
    if len(token) > 1 and not token.isdigit():
        return LETTER_WORDS.get(token, token)
    return token


def generated_codes(seed: int = 19) -> list[tuple[str, str]]:
    """50 (sentence, expected characters): confirmation codes, order numbers, phone numbers."""
    rng = random.Random(seed)
    out = []
    for i in range(30):
        if i % 2:
            code = "".join(rng.choice(LETTERS + string.digits) for _ in range(6))
        else:
            head = "".join(rng.choice(LETTERS) for _ in range(2)) + rng.choice(string.digits)
            code = f"{head}-{rng.randint(1000, 9999)}"
        if not (re.search(r"\d", code) and re.search(r"[A-Z]", code)):
            code = code[:-1] + "7"
        out.append((f"Your confirmation code is {code}.", code))
    for _ in range(10):
        number = str(rng.randint(10_000_000, 99_999_999))
        out.append((f"Your order number is {number}.", number))
    for _ in range(10):
        phone = f"({rng.randint(200, 999)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}"
        out.append((f"You can reach us at {phone}.", phone))
    return out


def canonical(text: str) -> str:
    """Letters and digits only, as a listener writes down what was spelled: letter names,
    homophones and spelling words ("N as in November", "November") become their characters,
    spoken digits digits, "dash" and "number" nothing."""
    text = re.sub(r"\bx[ -]ray\b", "xray", text.lower())
    text = re.sub(r"\bdouble[ -]?(?:you|u)\b", " w ", text)
    tokens = re.findall(r"[a-z]+|\d+", text)
    heard: list[str] = []  # the tokens as written, for what "as in" takes back
    out: list[str] = []

    def drop_letter() -> None:
        """The letter as heard before "as in" goes (the spelling word says which it is);
        two letters Whisper glued ("xd as in Boston") keep the first; digits stay."""
        if not heard or heard[-1].isdigit():
            return
        last = heard[-1]
        glued = len(last) == 2 and last not in LETTER_WORDS and last not in HEARD_FOR_A_LETTER
        out[-1] = last[0] if glued else ""
        heard[-1] = ""

    for i, token in enumerate(tokens):
        if token in IN_WORDS and i + 1 < len(tokens) and tokens[i + 1] in SPELLING_WORDS:
            # "<letter> as in <word>": the letter is the word's, whatever it was heard as
            if token != "asin" and heard and heard[-1] in AS_WORDS:
                heard.pop()
                out.pop()
            drop_letter()  # the letter, or what "as" was glued into ("assess in", "Diaz in")
            continue
        heard.append(token)
        out.append(_character(token))
    return "".join(out)


def generated_details(seed: int = 23) -> list[tuple[str, str, str]]:
    """(kind, sentence, what was written) for e-mail addresses, amounts and dates."""
    rng = random.Random(seed)
    names = ["john.smith", "maria", "support", "anna.lee", "peter_parker", "orders"]
    domains = ["example.com", "shop.org", "mail.net", "airline.com"]
    out = []
    for name, domain in zip(rng.sample(names, 4), domains, strict=True):
        address = f"{name}@{domain}"
        out.append(("email", f"Please write to {address} for help.", address))
    for _ in range(4):
        amount = f"${rng.randint(2, 2500):,}.{rng.randint(10, 99)}"
        out.append(("amount", f"The total comes to {amount} today.", amount))
    for _ in range(4):
        date = f"{rng.randint(2021, 2029)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        out.append(("date", f"Your appointment is on {date}.", date))
    return out


def read_well(kind: str, written: str, heard: str) -> bool:
    """Whether ``heard`` carries ``written``: an address's letters in order ("dot"/"at" or
    their signs), an amount's digits and currency, a date's month, day and year."""
    low = heard.lower()
    if kind == "email":
        letters = re.sub(r"\b(?:dot|at|underscore)\b|[^a-z0-9]", "", low)
        return re.sub(r"[^a-z0-9]", "", written) in letters
    if kind == "amount":
        return re.sub(r"\D", "", written) in re.sub(r"\D", "", low) and ("$" in low or "dollar" in low)
    year, month, day = (int(p) for p in written.split("-"))
    month_name = datetime.date(year, month, 1).strftime("%B").lower()
    return (
        month_name in low and str(year) in low and re.search(rf"\b{day}(?:st|nd|rd|th)?\b", low) is not None
    )
