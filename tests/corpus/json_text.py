"""JSON texts every surface must judge the same way (arqond/core/payload.py's one rule).

``verdict`` is the rule's answer for the text on its own: "invalid" (not JSON at all), "deep"
(decodes, but nests past the bound) or "valid". A surface that wraps the text (a payload in an
envelope) adds its own levels: ``depth`` says how many the text has.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JsonCase:
    name: str
    text: bytes
    verdict: str        # "invalid", "deep" or "valid", for the text alone
    depth: int = 0      # levels of arrays and objects in the text
    has_newline: bool = False  # a raw newline inside: line surfaces would split it


def nested(depth: int, kind: str) -> bytes:
    """``depth`` levels of arrays, objects or both alternating, around the number 1."""
    opening, closing = [], []
    for level in range(depth):
        if kind == "array" or (kind == "mixed" and level % 2):
            opening.append(b"[")
            closing.append(b"]")
        else:
            opening.append(b'{"k":')
            closing.append(b"}")
    return b"".join(opening) + b"1" + b"".join(reversed(closing))


INVALID = [
    ("empty document", b""),
    ("only spaces", b"   "),
    ("a NUL byte", b"\x00"),
    ("NUL inside an object", b'{"a":1\x00}'),
    ("truncated object", b'{"a":'),
    ("truncated after a key", b'{"a"'),
    ("truncated string", b'"abc'),
    ("truncated array", b"[1,2"),
    ("unclosed brackets", b"[[[[[[[[[["),
    ("closing bracket alone", b"]"),
    ("mismatched brackets", b'{"a":[1}'),
    ("trailing garbage", b'{"a":1}x'),
    ("two documents", b'{"a":1} {"b":2}'),
    ("NaN literal", b'{"a":NaN}'),
    ("Infinity literal", b'{"a":Infinity}'),
    ("minus Infinity literal", b'{"a":-Infinity}'),
    ("lowercase nan", b"nan"),
    ("number past double range", b'{"a":1e400}'),
    ("integer of 400 digits", b'{"a":' + b"9" * 400 + b"}"),
    ("leading zero", b'{"a":01}'),
    ("hex number", b'{"a":0x1F}'),
    ("plus sign", b'{"a":+1}'),
    ("bare fraction", b'{"a":.5}'),
    ("dangling decimal point", b'{"a":1.}'),
    ("dangling exponent", b'{"a":1e}'),
    ("single quotes", b"{'a':1}"),
    ("unquoted key", b"{a:1}"),
    ("trailing comma in array", b"[1,2,]"),
    ("trailing comma in object", b'{"a":1,}'),
    ("missing comma", b'{"a":1 "b":2}'),
    ("missing colon", b'{"a" 1}'),
    ("block comment", b'{"a":1 /* note */}'),
    ("line comment", b'{"a":1} // note'),
    ("byte order mark", b'\xef\xbb\xbf{"a":1}'),
    ("lone high surrogate escape", b'{"a":"\\ud800"}'),
    ("lone low surrogate escape", b'{"a":"\\udc00"}'),
    ("surrogates in the wrong order", b'{"a":"\\udc00\\ud800"}'),
    ("invalid UTF-8 byte", b'{"a":"\xff"}'),
    ("truncated UTF-8 sequence", b'{"a":"\xc3"}'),
    ("overlong UTF-8 encoding", b'{"a":"\xc0\xaf"}'),
    ("UTF-8 encoded surrogate (CESU-8)", b'{"a":"\xed\xa0\x80"}'),
    ("Latin-1 text", b'{"a":"caf\xe9"}'),
    ("raw control character in a string", b'{"a":"x\x01y"}'),
    ("raw tab in a string", b'{"a":"x\ty"}'),
    ("raw escape character in a string", b'{"a":"\x1b[31mred"}'),
    ("invalid escape", b'{"a":"\\x41"}'),
    ("short unicode escape", b'{"a":"\\u12"}'),
    ("misspelled true", b'{"a":tru}'),
    ("capitalised True", b'{"a":True}'),
    ("Python None", b'{"a":None}'),
    ("bare word", b"hello"),
    ("key that is not a string", b"{1:2}"),
]

VALID = [
    ("largest 64-bit unsigned integer", b'{"a":18446744073709551615}'),
    ("integer past 64 bits", b'{"a":18446744073709551616}'),
    ("integer below the signed 64-bit range", b'{"a":-9223372036854775809}'),
    ("largest finite double", b'{"a":1.7976931348623157e308}'),
    ("smallest subnormal double", b'{"a":5e-324}'),
    ("negative zero", b'{"a":-0}'),
    ("exponent with sign", b'{"a":1E+2}'),
    ("duplicate keys", b'{"a":1,"a":2}'),
    ("escaped NUL", b'{"a":"\\u0000"}'),
    ("escaped control characters", b'{"a":"\\u001b[31m\\b\\f"}'),
    ("escaped surrogate pair", b'{"a":"\\ud83d\\ude00"}'),
    ("raw 4-byte UTF-8", '{"a":"\U0001f600"}'.encode()),
    ("noncharacter U+FFFF", b'{"a":"\\uffff"}'),
    ("right-to-left override", '{"a":"\u202eevil"}'.encode()),
    ("zero-width joiner in a key", '{"a\u200db":1}'.encode()),
    ("empty key", b'{"":1}'),
    ("empty object", b"{}"),
    ("empty array", b"[]"),
    ("empty string", b'""'),
    ("bare true", b"true"),
    ("bare null", b"null"),
    ("bare number", b"42"),
    ("leading and trailing whitespace", b' \t {"a":1} \t '),
    ("wide array", b"[" + b",".join(b"1" for _ in range(20000)) + b"]"),
    ("many keys", b"{" + b",".join(b'"k%d":%d' % (n, n) for n in range(5000)) + b"}"),
]


def json_cases(max_depth: int) -> list[JsonCase]:
    """The corpus of JSON texts for a daemon whose server.max_json_depth is ``max_depth``."""
    cases = [JsonCase(name, text, "invalid") for name, text in INVALID]
    cases += [JsonCase(name, text, "valid", depth=_depth_of_valid(text))
              for name, text in VALID]
    for kind in ("object", "array", "mixed"):
        for depth, verdict in ((max_depth - 1, "valid"), (max_depth, "valid"),
                               (max_depth + 1, "deep"), (1000, "deep")):
            cases.append(JsonCase(f"{kind}s nested {depth} deep", nested(depth, kind),
                                  verdict, depth=depth))
    # Past orjson's own recursion limit (1024): refused as not JSON, before any depth check.
    cases.append(JsonCase("arrays nested 2000 deep", nested(2000, "array"), "invalid"))
    cases.append(JsonCase("raw newline inside a string", b'{"a":"x\ny"}', "invalid",
                          has_newline=True))
    cases.append(JsonCase("CRLF after the value", b'{"a":1}\r\n', "valid", depth=1,
                          has_newline=True))
    return cases


def _depth_of_valid(text: bytes) -> int:
    """The small valid texts above nest at most one level (an object or array at the root)."""
    stripped = text.strip()
    return 1 if stripped[:1] in (b"{", b"[") else 0
