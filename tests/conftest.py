from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support import ServerProcess

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def voice_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The real server with its real speech models in the default configuration, started once
    per run: loading and warming the models is most of a start. Shared by the modules that
    only talk to it over its sockets; a module that reads the server's log, data dir or ledger,
    or needs other settings, starts its own."""
    from tests.support import run_server

    with run_server(tmp_path_factory.mktemp("voice-server")) as server:
        yield server
