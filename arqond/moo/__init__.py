"""The MOO layer on disk: inbox FIFOs, Zgent sockets, registry.json and the broadcast log."""
