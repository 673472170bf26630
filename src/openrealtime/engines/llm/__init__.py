"""engines/llm."""
