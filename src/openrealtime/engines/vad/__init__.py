"""engines/vad."""
