"""Real brokers in the same run for B1/B2, each started on loopback by the bench and stopped
after: nats-server, driven by the very load generator that drives arqond (bench/wsload.js with
Node's NATS client: same frames, same processes, same closed loop), and mosquitto (paho-mqtt).

The MQTT load generators mirror wsload.js (same frames, same closed loop, same JSON result
line):

    python -m bench.peers sub mqtt URL CONNECTIONS EXPECT
    python -m bench.peers pub mqtt URL TOTAL RATE WINDOW SIZE

They are Python clients, so their CPU share is reported next to the figure: where it nears one
core per process, the client, not the broker, set the pace.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Callable
from urllib.parse import urlsplit

import orjson

from bench import procs
from bench.fanout import ws_fanout
from bench.stats import latency_row, row

SUBJECT = "bench.fanout"
# Frames with seq below this give no latency sample, as in wsload.js (BENCH_WARMUP).
WARMUP = int(os.environ.get("BENCH_WARMUP", "0"))
PROCESSES = 4
IDLE_TIMEOUT = 10.0


def frame(seq: int, size: int) -> bytes:
    payload = {"seq": seq, "t": time.monotonic_ns(), "pad": ""}
    payload["pad"] = "x" * max(0, size - len(orjson.dumps(payload)))
    return orjson.dumps(payload)


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


# CPU spent before the measurement (imports, connecting) is not load-generation work.
CPU_BASELINE = [0.0]


def start_measuring() -> None:
    CPU_BASELINE[0] = cpu_seconds()


def emit(result: dict[str, Any]) -> None:
    result["cpu_s"] = cpu_seconds() - CPU_BASELINE[0]
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    sys.stdout.flush()


class Counter:
    """Counts bench frames over all connections of one process, keeping latencies."""

    def __init__(self, connections: int, expect: int) -> None:
        self.goal = connections * expect
        self.received = 0
        self.first = self.last = 0
        self.latencies: list[int] = []
        self.stride = max(1, self.goal // 100000)
        self.done = threading.Event()

    def saw(self, data: bytes) -> None:
        now = time.monotonic_ns()
        payload = orjson.loads(data)
        self.first = self.first or now
        self.last = now
        if payload["seq"] >= WARMUP and self.received % self.stride == 0:
            self.latencies.append(now - payload["t"])
        self.received += 1
        if self.received >= self.goal:
            self.done.set()

    def wait(self) -> None:
        seen = -1
        while not self.done.wait(IDLE_TIMEOUT) and self.received != seen:
            seen = self.received

    def result(self) -> dict[str, Any]:
        return {"received": self.received, "first_ns": self.first, "last_ns": self.last,
                "latencies_ns": self.latencies, "closed": 0}


def mqtt_client(url: str, on_message: Callable[[bytes], None] | None = None) -> Any:
    import paho.mqtt.client as mqtt

    address = urlsplit(url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    if on_message is not None:
        client.on_message = lambda _c, _u, msg: on_message(msg.payload)
    client.max_queued_messages_set(0)
    client.connect(address.hostname, address.port)
    if on_message is not None:
        client.subscribe(SUBJECT.replace(".", "/"), qos=0)
    client.loop_start()
    return client


def mqtt_sub(url: str, connections: int, expect: int) -> None:
    counter = Counter(connections, expect)
    lock = threading.Lock()

    def on_message(data: bytes) -> None:
        with lock:
            counter.saw(data)

    clients = [mqtt_client(url, on_message) for _ in range(connections)]
    del clients  # kept alive by their network threads
    time.sleep(0.5)  # SUBACKs
    start_measuring()
    print("ready", flush=True)
    counter.wait()
    emit(counter.result())
    os._exit(0)  # stopping each paho network thread takes up to a second apiece


def mqtt_pub(url: str, total: int, rate: int, window: int, size: int) -> None:
    probed = 0
    progressed = threading.Condition()

    def on_probe(_data: bytes) -> None:
        nonlocal probed
        with progressed:
            probed += 1
            progressed.notify()

    publisher, probe = mqtt_client(url), mqtt_client(url, on_probe)
    time.sleep(0.5)
    start_measuring()
    topic = SUBJECT.replace(".", "/")
    started = time.monotonic_ns()
    for seq in range(total):
        if rate:
            delay = (started + seq * 1e9 / rate - time.monotonic_ns()) / 1e9
            if delay > 0:
                time.sleep(delay)
        else:
            with progressed:
                progressed.wait_for(lambda: seq - probed < window, IDLE_TIMEOUT)
        publisher.publish(topic, frame(seq, size), qos=0)
    with progressed:
        progressed.wait_for(lambda: probed >= total, IDLE_TIMEOUT)
    emit({"sent": total, "probed": probed, "started_ns": started,
          "ended_ns": time.monotonic_ns()})
    os._exit(0)


# -- the bench side ------------------------------------------------------------------------------

PEERS = {"nats": "nats", "mosquitto": "mqtt"}


def broker_fanout(kind: str, url: str, pid: int, subscribers: int, total: int, rate: int,
                  warmup: int = 0) -> dict[str, Any]:
    if kind == "nats":
        result = ws_fanout(url, pid, subscribers=subscribers, total=total, rate=rate,
                           warmup=warmup)
        notes = result.cpu_notes()
        return {"url": url, "delivered": result.delivered, "expected": result.expected,
                "seconds": result.seconds, "latencies": result.latencies_ns,
                "loadgen_cpu": notes["loadgen_cpu"],
                "server_us_per_msg": notes["server_us_per_msg"]}
    shares = [subscribers // PROCESSES + (1 if i < subscribers % PROCESSES else 0)
              for i in range(PROCESSES)]
    env = {"BENCH_WARMUP": str(warmup)}
    subs = [procs.spawn_python("bench.peers", "sub", kind, url, share, total, env=env)
            for share in shares]
    for sub in subs:
        procs.wait_ready(sub)
    cpu_before = procs.cpu_seconds(pid)
    published = procs.result_of(procs.spawn_python("bench.peers", "pub", kind, url, total, rate,
                                                   64, 200), timeout=600)
    results = [procs.result_of(sub, timeout=600) for sub in subs]
    delivered = sum(r["received"] for r in results)
    last = max((r["last_ns"] for r in results if r["received"]), default=published["started_ns"])
    seconds = (last - published["started_ns"]) / 1e9
    client_cpu = published["cpu_s"] + sum(r["cpu_s"] for r in results)
    return {"url": url, "delivered": delivered, "expected": subscribers * total, "seconds": seconds,
            "latencies": [v for r in results for v in r["latencies_ns"]],
            "loadgen_cpu": round(client_cpu / seconds, 2) if seconds else None,
            "server_us_per_msg": round((procs.cpu_seconds(pid) - cpu_before) / delivered * 1e6,
                                       2) if delivered else None}


def _each_broker(settings: dict[str, Any], subscribers: int, total: int, rate: int,
                 warmup: int = 0):
    for label, kind in PEERS.items():
        if label not in settings["peers"]:
            continue
        with procs.broker(kind) as (server, url):
            if server is None:
                yield label, None, url
                continue
            yield label, broker_fanout(kind, url, server.pid, subscribers, total, rate,
                                       warmup), ""


def fanout_peers(settings: dict[str, Any], subscribers: int, total: int
                 ) -> list[dict[str, Any]]:
    rows = []
    for label, result, reason in _each_broker(settings, subscribers, total, 0):
        if result is None:
            rows.append(row("B1", label, "n/a", None, note=reason))
            continue
        rate = result["delivered"] / result["seconds"] if result["seconds"] > 0 else 0.0
        rows.append(row("B1", label, "delivered msgs/s", rate, "msg/s",
                        lost=result["expected"] - result["delivered"],
                        loadgen_cpu=result["loadgen_cpu"],
                        server_us_per_msg=result["server_us_per_msg"],
                        note=client_note(result)))
    return rows


def client_note(result: dict[str, Any]) -> str:
    if result["url"].startswith("nats://"):
        return "Node's nats client in wsload.js, the processes arqond gets"
    return f"Python clients (paho), {PROCESSES} processes"


def latency_peers(settings: dict[str, Any], subscribers: int, total: int, warmup: int
                  ) -> list[dict[str, Any]]:
    rows = []
    for label, result, reason in _each_broker(settings, subscribers, total, 1000, warmup):
        if result is None:
            rows.append(row("B2", label, "n/a", None, note=reason))
            continue
        rows.append(latency_row("B2", label, result["latencies"],
                                lost=result["expected"] - result["delivered"],
                                loadgen_cpu=result["loadgen_cpu"],
                                server_us_per_msg=result["server_us_per_msg"],
                                note=client_note(result)))
    return rows


if __name__ == "__main__":
    role, kind, url, *numbers = sys.argv[1:]
    (mqtt_sub if role == "sub" else mqtt_pub)(url, *[int(n) for n in numbers])
