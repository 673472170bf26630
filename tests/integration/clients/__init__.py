"""Third-party Realtime clients, each driven through one voice turn against a real server.

This package runs in the client venv (``.venv-clients``, ``make clients-env``), not in the
server's: the clients' dependency pins are their own. The test process starts it as
``python -m tests.integration.clients NAME SPEC.json RESULT.json``; ``RUNNERS`` in
``__main__`` names every client. Nothing here imports ``openrealtime``.

To add a client (for example an Azure flavour of one below): write a module with
``async def run(spec: TurnSpec) -> TurnResult`` and add it to ``RUNNERS``.
"""
