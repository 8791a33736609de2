#!/bin/sh
# Writers and requesters for the restart tests, run on the host against a booted container's
# MOO dir (reached through /proc/LEADER/root). Each prints one result line per attempt.
#   moo-writers.sh echo  INBOX STOPFILE   -- one `echo > INBOX` per line: "ok N" or "fail N"
#   moo-writers.sh ping  SOCKET STOPFILE  -- one socat connection per arqon.ping: "ok N" or
#                                            "fail N <what socat said>"
set -u
mode=$1 path=$2 stop=$3
n=0
while [ ! -e "$stop" ]; do
    n=$((n + 1))
    case $mode in
    echo)
        # A subshell of its own: EPIPE (the reader gone after open) must not end the loop.
        if (echo "{\"w\":\"echo\",\"n\":$n}" >"$path") 2>/dev/null; then echo "ok $n"
        else echo "fail $n"; fi ;;
    ping)
        out=$(echo "{\"jsonrpc\":\"2.0\",\"id\":$n,\"method\":\"arqon.ping\"}" |
              socat -t 10 - "UNIX-CONNECT:$path" 2>&1)
        case $out in
        *'"pong":true'*) echo "ok $n" ;;
        *) echo "fail $n $(echo "$out" | tr '\n' ' ')" ;;
        esac ;;
    esac
done
