"""engines/asr."""
