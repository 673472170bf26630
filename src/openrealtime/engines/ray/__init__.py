"""Engines on a Ray cluster (optional extra ``openrealtime[ray]``).

``deployments.py`` holds the Ray Serve deployments that host the embedded LLM, ASR, TTS and
image describer; ``adapters.py`` the engine Protocol implementations the gateway uses to call
them; ``deploy.py`` what ``openrealtime engines up|down`` does. Nothing here is imported unless
``OPENREALTIME_RAY_ENGINES`` names an engine.
"""
