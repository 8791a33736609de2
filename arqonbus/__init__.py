"""ArqonBus's client-side import paths, served by arqond.

Programs and tests written for ArqonBus import ``arqonbus.sdk`` and ``arqonbus.protocol.ids``;
both are arqond's own code under those names (docs/compat-sdk.md). ArqonBus's server modules
are not here: arqond is the server.
"""

from arqond import __version__

__all__ = ["__version__"]
