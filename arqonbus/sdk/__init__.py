"""ArqonBus's SDK import path: arqond's client (arqond.sdk) under the names ArqonBus exports."""

from arqonbus.sdk.client import (
    ArqonBusClient,
    ArqonBusConnectionError,
    ArqonBusProtocolError,
    ArqonBusSDKError,
)

__all__ = ["ArqonBusClient", "ArqonBusSDKError", "ArqonBusConnectionError",
           "ArqonBusProtocolError"]
