"""The MOO side of the core: every decision about Zgents, with no I/O.

names (the one Zgent-name rule), registry (what a Zgent is declared as, its status, the
registry.json document), mailbox, inbox (what a line to a Zgent is), serving (who may serve
one), rpc (requests waiting on handlers), session (one socket connection), zgents (the served
Zgents and the messages to them). The adapters in arqond/moo carry out the I/O.
"""
