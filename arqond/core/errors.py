"""Every error code arqond puts on the wire, in one place.

``ErrorCode`` values go in ``error_code`` of error frames, failed command responses and HTTP
error bodies; ``RpcCode`` values in the ``error.code`` of JSON-RPC replies on Zgent sockets.
Both are plain str/int subclasses, so they serialize as their values. arqond(8) and
arqond-moo(7) list them for users; a test keeps those lists and these enums in step.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    # The frame or its arguments
    INVALID_JSON = "INVALID_JSON"                  # not JSON at all
    VALIDATION_ERROR = "VALIDATION_ERROR"          # a field, argument, name or limit broken
    UNSUPPORTED_FRAME = "UNSUPPORTED_FRAME"        # a binary WebSocket frame
    LINE_TOO_LONG = "LINE_TOO_LONG"                # a control-socket line over the limit
    UNKNOWN_COMMAND = "UNKNOWN_COMMAND"
    # Who may do it
    AUTHORIZATION_ERROR = "AUTHORIZATION_ERROR"    # the principal may not
    FEATURE_DISABLED = "FEATURE_DISABLED"          # switched off in the configuration
    # What it is about
    NOT_FOUND = "NOT_FOUND"                        # no such room, channel, Zgent, job, key...
    TARGET_NOT_FOUND = "TARGET_NOT_FOUND"          # a private message to no connected client
    NOT_A_MEMBER = "NOT_A_MEMBER"                  # leaving a channel one is not in
    CHANNEL_EXISTS = "CHANNEL_EXISTS"
    CHANNEL_PROTECTED = "CHANNEL_PROTECTED"        # hard-coded channels are never deleted
    CHANNEL_NOT_EMPTY = "CHANNEL_NOT_EMPTY"
    ZGENT_EXISTS = "ZGENT_EXISTS"
    ZGENT_CONFIGURED = "ZGENT_CONFIGURED"          # declared in the config file: change it there
    FILE_REFUSED = "FILE_REFUSED"                  # something not arqond's is at a Zgent's path
    # Bounds and failures
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"              # a quota or a bound of arqond's
    STORE_FAILED = "STORE_FAILED"                  # not stored (disk full, I/O error): not sent
    CONNECTION_REFUSED = "CONNECTION_REFUSED"      # server.max_connections reached
    EXECUTION_ERROR = "EXECUTION_ERROR"            # the command failed while running
    INTERNAL_ERROR = "INTERNAL_ERROR"              # a failure inside arqond (a bug), logged


class RpcCode(IntEnum):
    # JSON-RPC 2.0's own
    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    # arqond's, in the range JSON-RPC leaves to servers
    NOT_SERVING = -32001                           # no handler attached to the Zgent
    TIMEOUT = -32002                               # the handler did not answer in time
    FORBIDDEN = -32003                             # the peer's uid may not do this
    BUSY = -32004                                  # a bound: handler taken, too many waiting
    # arqon's handlers' own (arqon serve, arqon mcp): the handler or tmux failed
    HANDLER_FAILED = -32000
