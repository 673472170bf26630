"""The listener's normalisation the code read-back is judged by."""

from __future__ import annotations

from openrealtime.benchmark.readback import canonical, generated_codes, read_well
from openrealtime.engines.tts.normalize import spell_code


def test_canonical_form() -> None:
    assert canonical("Your confirmation code is A, 7, X, dash 4, 9, 2, 1.").endswith("a7x4921")
    assert canonical("The code is ay-seven-ex 4921").endswith("a7x4921")
    assert canonical("W, double you") == "ww"
    assert canonical("(555) 123-4567") == "5551234567"
    assert canonical("and as in November, number 8") == "n8"
    assert canonical("B is in Boston. D. As in David, Zulu, x-ray") == "bdzx"
    assert canonical("he is an echo, 29, 77") == "e2977"
    assert canonical("the Asin Boston, 56, mic") == "b56m"
    assert canonical("xd as in Boston, 56d is in David") == "xb56d"
    assert canonical(" ".join(spell_code("NV8-2977").split(","))) == "nv82977"


def test_every_spelled_code_reads_back_from_its_own_text() -> None:
    """What the voice is given to say, written down verbatim, is the code."""
    for _sentence, code in generated_codes():
        if any(c.isalpha() for c in code):
            assert canonical(code) in canonical(" ".join(spell_code(code).split(","))), code


def test_read_well() -> None:
    assert read_well("email", "anna.lee@shop.org", "Please write to anna.lee@shop.org for help.")
    assert read_well("email", "anna.lee@shop.org", "write to Anna dot Lee at shop dot org")
    assert not read_well("email", "anna.lee@shop.org", "write to Anna at shop dot org")
    assert read_well("amount", "$1,234.56", "The total comes to $1,234.56 today.")
    assert not read_well("amount", "$1,234.56", "The total comes to 1234 today.")
    assert read_well("date", "2024-03-15", "Your appointment is on March 15th, 2024.")
    assert not read_well("date", "2024-03-15", "Your appointment is on March 5th, 2024.")


def test_what_whisper_made_of_as_in() -> None:
    """Transcripts of spelled codes as Whisper base wrote them (bench/results/code_readback.json)."""
    assert canonical("G is in George. Assess in sugar, number two, W") == "gs2w"
    assert canonical("R, as is in sugar, number 7-7046") == "rs77046"
    assert canonical("David, key as in Peter, number 0-2627") == "dp02627"
    assert canonical("5. Echo number 5, 8, 4, thea's in Boston.") == "5e584b"
    assert canonical("8 and as in November, number 1") == "8n1"
    assert canonical("Number 8, 9, free, 1") == "8931"
