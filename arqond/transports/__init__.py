"""One adapter per transport: each only moves bytes between its sockets and the core Bus."""
