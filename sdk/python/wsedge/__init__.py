"""ws-edge from Python: publish through a node's server API (Publisher), mint HMAC tokens and room
grants (mint_token, mint_grant), verify the node's webhook requests (wsedge.webhooks.verify), and
an asyncio client (wsedge.client.Client, with rpc and keyed sends; it needs the `websockets`
package: ``pip install 'wsedge[client]'``). The publisher, the tokens and the webhooks use the
standard library only; importing this package never imports `websockets`.
"""

from __future__ import annotations

from typing import Any

from .publisher import Publisher, WsEdgeError
from .tokens import mint_grant, mint_token

# Client, ClientError and StateChange are importable too (loaded on first use), but not listed:
# `from wsedge import *` must work without websockets.
__all__ = ["Publisher", "WsEdgeError", "mint_token", "mint_grant"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The client is loaded on first use, so a backend that only publishes needs no websockets.
    if name in ("Client", "ClientError", "StateChange"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'wsedge' has no attribute {name!r}")
