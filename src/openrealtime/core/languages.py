"""The language a response is given in: the client's setting, else the caller's heard one.

``audio.input.transcription.language`` (the client's) wins; otherwise the runtime reports the
language it hears the caller speak (``CallerLanguageChanged``). A response in a language other
than English tells the model so with one line at the end of its instructions, so the prompt
prefix (and the LLM's prompt cache) is the same as for an English answer.
"""

from __future__ import annotations

__all__ = ["ENGLISH", "language_instruction", "language_name", "normalise_language"]

ENGLISH = "en"

_NAMES = {
    "ar": "Arabic", "bg": "Bulgarian", "ca": "Catalan", "cs": "Czech", "cy": "Welsh", "da": "Danish",
    "de": "German", "el": "Greek", "en": "English", "es": "Spanish", "et": "Estonian", "eu": "Basque",
    "fa": "Persian", "fi": "Finnish", "fr": "French", "ga": "Irish", "gl": "Galician", "he": "Hebrew",
    "hi": "Hindi", "hr": "Croatian", "hu": "Hungarian", "id": "Indonesian", "is": "Icelandic",
    "it": "Italian", "ja": "Japanese", "ko": "Korean", "lt": "Lithuanian", "lv": "Latvian",
    "ms": "Malay", "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "pt": "Portuguese",
    "ro": "Romanian", "ru": "Russian", "sk": "Slovak", "sl": "Slovenian", "sr": "Serbian",
    "sv": "Swedish", "sw": "Swahili", "ta": "Tamil", "th": "Thai", "tl": "Tagalog", "tr": "Turkish",
    "uk": "Ukrainian", "ur": "Urdu", "vi": "Vietnamese", "zh": "Chinese",
}  # fmt: skip
"""English names of the languages callers commonly speak (the model follows a name better
than a code)."""

_IN_ITS_OWN_WORDS = {
    "de": "Antworte auf Deutsch.", "es": "Responde en español.", "fr": "Réponds en français.",
    "hi": "हिंदी में जवाब दें।", "it": "Rispondi in italiano.", "ja": "日本語で答えてください。",
    "nl": "Antwoord in het Nederlands.", "pl": "Odpowiadaj po polsku.", "pt": "Responda em português.",
    "ru": "Отвечай по-русски.", "zh": "请用中文回答。",
}  # fmt: skip
"""The same request in the language itself. Measured with the default model (Qwen2.5 0.5B) on a
garbled Spanish transcript (espeak-ng speech through Whisper base): "The caller speaks Spanish;
answer in Spanish." made it talk about the caller in English in 4 of 4 runs ("The caller can
say Spanish."); "Answer in Spanish. Responde en español." answered in Spanish in 4 of 4."""


def normalise_language(value: str | None) -> str | None:
    """``"ES"``/``"es-MX"`` → ``"es"``; ``None``, ``""`` and ``"auto"`` → ``None``."""
    if value is None:
        return None
    code = value.strip().lower().replace("_", "-").split("-", 1)[0]
    return None if not code or code == "auto" else code


def language_name(code: str) -> str:
    return _NAMES.get(code, f"the language with the code '{code}'")


def language_instruction(language: str | None) -> str | None:
    """The line that makes the model answer in ``language`` (None for English or undecided)."""
    code = normalise_language(language)
    if code is None or code == ENGLISH:
        return None
    line = f"Answer in {language_name(code)}."
    own = _IN_ITS_OWN_WORDS.get(code)
    return f"{line} {own}" if own else line
