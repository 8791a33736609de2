"""The narrative bridge's decisions, no I/O: file names (names), the line schema and envelopes
(schema), file identities and message ids (ids), file-based queries (queries), and the file
follower (follow, over files and actions), which the tailer (arqond/moo/tailer.py) drives."""
