"""``openrealtime bench``: voice-to-voice latency over real WebSocket sessions with real speech,
swept over concurrency until latency or playback breaks down."""
