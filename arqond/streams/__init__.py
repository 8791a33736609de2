"""Where streams are kept: the SQLite store (arqond/core/streams.py is the model)."""
