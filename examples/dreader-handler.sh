#!/bin/sh
# DReader's request handler, run by `arqon serve dreader --exec dreader-handler.sh` once per
# request: the JSON-RPC request is one line on stdin, its method also in $ARQON_METHOD.
# What it prints is the reply: a plain JSON value is the result; a JSON-RPC response object
# ({"result": ...} or {"error": {"code", "message", "data"}}) is passed on as it is.
# Methods: query, with params {"symbol": "SPX", "type": "volume" | "history", "since": TS}.
set -eu
request=$(cat)

# The seed's dreader_lookup: what DReader knows (fixed figures for the example).
VOLUMES='{"SPX": 125000, "NDX": 48000}'

case "$ARQON_METHOD" in
query)
    printf '%s\n' "$request" | jq -c --argjson volumes "$VOLUMES" '
        .params as $p
        | if ($p.symbol | type) != "string" then
            {error: {code: -32602, message: "params.symbol must be a symbol such as SPX"}}
          elif $volumes[$p.symbol] == null then
            {error: {code: 1, message: "no data for \($p.symbol)",
                     data: {known: ($volumes | keys)}}}
          elif ($p.type // "volume") == "history" then
            {symbol: $p.symbol, since: $p.since,
             entries: [{ts: "2026-02-12T14:30:00Z", volume: 2000,
                        content: "SPX 5900C sweep 2000 contracts"}]}
          else
            {symbol: $p.symbol, volume: $volumes[$p.symbol], timestamp: "2026-02-12T10:00:00Z"}
          end'
    ;;
*)
    jq -cn --arg method "$ARQON_METHOD" \
        '{error: {code: -32601, message: "Method not found: \($method)"}}'
    ;;
esac
