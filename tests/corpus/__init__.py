"""The bad-input corpus of issue 12: generated tables of what clients may send to each of
arqond's seven surfaces, shared by the in-process rule tests (tests/test_corpus_rules.py) and
the daemon tests (tests/test_corpus_*.py).

Each table is plain data built by a generator function, so a case is one row: a name (the test
id), the bytes sent, and what the sender must get. Expectations are never read back from the
code under test: JSON verdicts are written in the table, error texts are spelled out or built
from the rule they state, and the text of a JSON syntax error is what orjson, the reference
decoder, says about the same bytes (oracle.py).
"""
