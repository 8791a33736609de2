"""The tools an agent sees: for each, what it does, when to use it, its arguments (a JSON
schema, which is also what the arguments are checked against) and an example.

Descriptions are written for a model, which reads nothing else before choosing a tool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arqond.core.moo.pane import MAX_LINES

NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"}
ZGENT = {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,62}$"}
WAIT = {"type": "number", "minimum": 0, "maximum": 3600, "default": 0,
        "description": "seconds to wait for something new when there is nothing yet "
                       "(0: answer at once)"}


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    properties: dict[str, Any]
    required: tuple[str, ...] = ()
    needs_zgent: bool = False

    @property
    def schema(self) -> dict[str, Any]:
        return {"type": "object", "properties": self.properties,
                "required": list(self.required), "additionalProperties": False}


TOOLS = (
    Tool("publish", """Publish a message on a bus channel, for everyone who follows it.

Use it to tell a group something: status, results, questions for whoever reads the channel.
Channels are named room:channel; one that does not exist yet is created. Some rooms are guarded:
another Zgent's room (its narrative, its inbox) and the room "moo" refuse publishers that
may not speak there, and the error says which rule refused.

Example: {"room": "team", "channel": "status", "payload": {"build": "green"}}""",
         {"room": {**NAME, "description": "the room, e.g. team"},
          "channel": {**NAME, "description": "the channel in the room, e.g. status"},
          "payload": {"description": "any JSON value: the message"}},
         ("room", "channel", "payload")),
    Tool("read", """Read the messages of a channel that this agent has not read yet.

Each call returns what arrived since the previous read of the same channel (oldest first) and
moves this agent's cursor past it; the first read of a channel returns its most recent
messages. The cursor is kept by the server: after a restart you go on where you left off (the
last messages you were given may come once more). With wait, it waits up to that many seconds
when nothing is new, so you can block until someone speaks instead of polling. If "missed" is
in the answer, some messages since your last read are gone (the server keeps a channel's
recent messages only), and it says which.

Example: {"room": "team", "channel": "status", "wait": 30, "limit": 10}""",
         {"room": {**NAME, "description": "the room"},
          "channel": {**NAME, "description": "the channel"},
          "wait": WAIT,
          "limit": {"type": "integer", "minimum": 1, "maximum": 500, "default": 20,
                    "description": "most messages to return at once"}},
         ("room", "channel")),
    Tool("send", """Put a message in another Zgent's inbox (its mailbox), for it alone.

Use it for a direct note to one agent that it reads with its own recv, when it wants no
immediate answer (to ask and wait for an answer, use call). An object is sent as it is, with
"from" set to your Zgent name unless it has one; a string is sent as {"from", "text"}. It is
kept in the recipient's mailbox until read. Find Zgents with the zgents tool.

Example: {"to": "reviewer", "message": {"text": "PR 42 is ready", "pr": 42}}""",
         {"to": {**ZGENT, "description": "the Zgent whose inbox gets it"},
          "message": {"type": ["object", "string"],
                      "description": "a JSON object, or a string of text"}},
         ("to", "message")),
    Tool("recv", """Take the next message from this agent's own mailbox.

Messages others sent you (with send, or written to your inbox) wait there until you take them;
each is returned once. Answers {"message": null} when there is none. With wait, it waits up to
that many seconds for one. Subscribing to the resource arqon://mailbox tells you when one
arrives, so you need not poll.

Example: {"wait": 10}""",
         {"wait": WAIT}, needs_zgent=True),
    Tool("call", """Ask another Zgent something and wait for its answer: a JSON-RPC call.

The request goes to the Zgent's socket; its handler (a program, or another agent that answers
with requests and reply) returns a result, which you get as {"result": ...}, or an error,
which this tool reports as an error with the Zgent's code and message. Errors -32001 (not
serving: nobody answers for it now), -32002 (it did not answer in time) and -32003 (you may
not ask it) come from arqond. Find Zgents and what they can do with the zgents tool.

Example: {"zgent": "dreader", "method": "query", "params": {"symbol": "SPX"}, "timeout": 60}""",
         {"zgent": {**ZGENT, "description": "the Zgent to ask"},
          "method": {"type": "string", "minLength": 1,
                     "description": "the method, e.g. query or ask"},
          "params": {"type": ["object", "array"],
                     "description": "the method's parameters (optional)"},
          "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600, "default": 30,
                      "description": "seconds to wait for the answer"}},
         ("zgent", "method")),
    Tool("pane", """Look at another Zgent's tmux pane, or type into it.

Without text, keys or enter: what the pane shows now, as {"text": ...}, with lines more lines
of scrollback above it. With them: presses keys (tmux names such as C-c, Escape, Up), then
types text as it is, then Enter. Typing runs commands as that Zgent's user: only its owners
may, arqond logs each time, and its handler must relay its pane (else error -32001).

Example: {"zgent": "dreader", "lines": 20}
Example: {"zgent": "dreader", "text": "/query volume SPX", "enter": true}""",
         {"zgent": {**ZGENT, "description": "the Zgent whose pane it is"},
          "lines": {"type": "integer", "minimum": 0, "maximum": MAX_LINES, "default": 0,
                    "description": "lines of scrollback above the visible pane"},
          "text": {"type": "string", "description": "text to type, as it is"},
          "keys": {"type": "array", "items": {"type": "string"},
                   "description": "tmux key names to press before the text"},
          "enter": {"type": "boolean", "default": False,
                    "description": "press Enter after the text"}},
         ("zgent",)),
    Tool("zgents", """List the registered Zgents (agents and programs on this machine): name,
status (active, stale, offline), capabilities, tmux pane, last seen.

Use it to find who can do something before you call or send. With capability, only the
Zgents that declare it.

Example: {"capability": "review:code"}""",
         {"capability": {"type": "string", "description": "e.g. query:volume (optional)"}}),
    Tool("channels", """List the bus's channels with their participants and message counts.

Use it to discover where conversations happen before you read or publish.

Example: {"room": "team"}""",
         {"room": {**NAME, "description": "only this room's channels (optional)"}}),
    Tool("narrate", """Say what you are doing, for the humans: append a line to your Zgent's
narrative log.

People follow it in their tmux panes (arqon tail --moo NAME), and it is published on the
channel NAME:narrative. Write short, plain sentences as you work: what you start, find,
decide, or are blocked on.

Example: {"content": "tests pass; opening the pull request", "tags": ["ci"]}""",
         {"content": {"type": ["string", "object"], "description": "what you say"},
          "type": {"type": "string", "minLength": 1, "default": "narrative",
                   "description": "kind of line, e.g. narrative, status, alert"},
          "tags": {"type": "array", "items": {"type": "string"},
                   "description": "words to find the line by (optional)"}},
         ("content",), needs_zgent=True),
    Tool("requests", """Take the requests others sent to your Zgent with call.

Each has an id, a method and params; answer each with reply, quickly: the caller waits, and
arqond answers it with a timeout error after moo.handler_timeout (30 s by default). A request
without id is a notification, which wants no reply. Each request is returned once; with wait,
it waits up to that many seconds for one. Subscribing to arqon://requests tells you when one
arrives.

Example: {"wait": 5}""",
         {"wait": WAIT}, needs_zgent=True),
    Tool("reply", """Answer a request taken with requests: a result, or an error.

Example: {"id": "r-3", "result": {"answer": 42}}
Example: {"id": "r-3", "error": {"code": -32602, "message": "params.symbol is required"}}""",
         {"id": {"type": ["string", "integer"], "description": "the request's id"},
          "result": {"description": "any JSON value: the answer"},
          "error": {"type": "object", "description": "instead of result: message (text), "
                    "code (integer, default -32000) and data (any JSON, optional)",
                    "properties": {"code": {"type": "integer"}, "message": {"type": "string"},
                                   "data": {}},
                    "required": ["message"], "additionalProperties": False}},
         ("id",), needs_zgent=True),
)
BY_NAME = {tool.name: tool for tool in TOOLS}
