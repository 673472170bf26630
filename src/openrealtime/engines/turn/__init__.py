"""engines/turn."""
