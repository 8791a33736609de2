"""arqond: a local message bus joining ArqonBus WebSockets with tmuxMOO Zgent conventions."""

__version__ = "0.1.0"
PROTOCOL_VERSION = "1.0"
SERVICE_NAME = "arqonbus"
