"""engines/tts."""
