"""What the synthesizer is given for codes, numbers, amounts, dates, phones and addresses."""

from __future__ import annotations

import pytest

from openrealtime.engines.tts.normalize import normalize_for_speech, spell_code


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("Your confirmation code is A7X-4921.", "Your confirmation code is A, number 7, X, dash, 49, 21."),
        (
            "Booking reference XKQTZB please.",
            "Booking reference X, K, Q, T as in Texas, Z as in Zebra, B as in Boston please.",
        ),
        ("Code NV8-3005.", "Code November, V as in Victory, number 8, dash, 30, 0 5."),
        ("Order 12345678 has shipped.", "Order 1, 2, 3, 4, 5, 6, 7, 8 has shipped."),
        ("Ticket #88213.", "Ticket number 8, 8, 2, 1, 3."),
        ("Room 0042.", "Room 0, 0, 4, 2."),
        ("Call (555) 123-4567 now.", "Call 5 5 5, 1 2 3, 4 5 6 7 now."),
        ("Call +1 555 123 4567.", "Call plus 1, 5 5 5, 1 2 3, 4 5 6 7."),
        ("Mail john.smith@example.com today.", "Mail john dot smith, at, example dot com today."),
        ("It costs $12.50.", "It costs twelve dollars and fifty cents."),
        (
            "That is $1,234.56 in total.",
            "That is one thousand, two hundred thirty-four dollars and fifty-six cents in total.",
        ),
        ("A $3 million deal.", "A three million dollars deal."),
        ("Pay 20 EUR.", "Pay twenty euros."),
        ("Only $907.89.", "Only nine hundred seven dollars and eighty-nine cents."),
        ("Just £1.", "Just one pound."),
        ("On 2024-03-15.", "On March fifteenth, twenty twenty-four."),
        ("On 03/15/2024.", "On March fifteenth, twenty twenty-four."),
        ("At 3:30 pm or 10:00.", "At three thirty p m or ten o'clock."),
        ("At 7:05 A.M.", "At seven oh five a m."),
        ("Up 15% in 2023.", "Up fifteen percent in twenty twenty-three."),
        (
            "The 21st time, 3.5 points, 12,000 people.",
            "The twenty-first time, three point five points, twelve thousand people.",
        ),
        ("Hello there, how are you?", "Hello there, how are you?"),
        ("NASA and the FBI.", "NASA and the FBI."),
    ],
)
def test_english(text: str, spoken: str) -> None:
    assert normalize_for_speech(text) == spoken


def test_other_languages_use_their_words() -> None:
    assert normalize_for_speech("Tu código es A7X-4921 y cuesta 12,50 €.", "es") == (
        "Tu código es A, 7, X, guion, 4, 9, 2, 1 y cuesta doce euros con cincuenta céntimos."
    )
    assert normalize_for_speech("Il costo è 25 euro.", "it") == "Il costo è venticinque euro."
    assert "arroba" in normalize_for_speech("ana.lopez@correo.es", "es")


def test_spell_code() -> None:
    assert spell_code("ab-1") == "A, B as in Boston, dash, 1"
    assert spell_code("X_9", "fr") == "X, tiret bas, 9"
    assert spell_code("K314") == "K, number 3, 1, 4"
    assert spell_code("K3141") == "K, number 31, 41"
    assert spell_code("X07") == "X, number 0 7"
    assert spell_code("9M") == "number 9, Mike"
    assert spell_code("ED2") == "Echo, David, number 2"


def test_plain_text_is_returned_as_is() -> None:
    text = "Nothing to read out here; just words."
    assert normalize_for_speech(text) is text
