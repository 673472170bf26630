"""Language-model engines: llama.cpp in-process (embedded default) and any OpenAI-compatible
Chat Completions endpoint. Both implement ``engines.base.LanguageModel``."""

from openrealtime.engines.llm.llamacpp import DEFAULT_PROFILE, PROFILES, LlamaCppModel
from openrealtime.engines.llm.openai_compatible import OpenAICompatibleError, OpenAICompatibleModel
from openrealtime.engines.llm.tool_calling import validate_arguments

__all__ = [
    "DEFAULT_PROFILE",
    "PROFILES",
    "LlamaCppModel",
    "OpenAICompatibleError",
    "OpenAICompatibleModel",
    "validate_arguments",
]
