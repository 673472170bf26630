"""Third-party Realtime clients, each driven through one voice turn against a real server.

This package runs in the client venv (``.venv-clients``, ``make clients-env``), not in the
server's: the clients' dependency pins are their own. The test process starts it as
``python -m tests.integration.clients NAME SPEC.json RESULT.json``; ``RUNNERS`` in
``__main__`` names every client. Nothing here imports ``openrealtime``.

To add a client, or a flavour of one (pipecat's ``AzureRealtimeLLMService``, LiveKit's
``RealtimeModel.with_azure``): write a module with ``async def run(spec: TurnSpec) ->
TurnResult`` (a flavour calls the existing runner with its own ``build`` and ``name``), add it
to ``RUNNERS`` and its name to ``CLIENTS`` in ``test_client_libraries.py``. The test's proxy
forwards any path and the ``api-key`` header as they come.
"""
