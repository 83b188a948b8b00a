"""Breaker state shared between processes through Redis (``VIDGATE_REDIS_URL``).

A provider outage seen by one worker should stop every worker from sending there, not only the
one that counted the failures. Each process keeps its breakers in local memory (every routing
decision and every create reads them there: no Redis round trip on the hot path) and
:class:`HealthSync` shares the *transitions*:

* a breaker that opens (or closes after successful probes) on this process's own evidence is
  published on a channel and stored under a key that expires when the breaker would go
  half-open (so a process that starts later, or missed messages while its connection was
  down, reads the open breakers when it (re)subscribes);
* a subscriber thread applies other processes' transitions to the local breakers.

Every process then goes half-open at the same moment and sends its own probe: at most one
probe per process per open period, the cheap side to err on. Publishing happens on its own
thread from a queue, so a slow or absent Redis never blocks routing or a create; while Redis
is unreachable each process falls back to its own breakers (today's per-process behaviour).

The namespace is derived from the job store's URL: the processes that share a queue share
health, and two deployments on one Redis do not mix.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import threading
import time
import uuid
from typing import Any

from vidgate.errors import ConfigError
from vidgate.routing.health import BreakerState, Health

log = logging.getLogger("vidgate.health")


def namespace_for(database_url: str) -> str:
    return "vidgate:health:" + hashlib.sha256(database_url.encode()).hexdigest()[:12]


class HealthSync:
    def __init__(self, health: Health, redis_url: str, namespace: str) -> None:
        try:
            import redis
        except ImportError:  # pragma: no cover - the server extra brings it
            raise ConfigError(
                "VIDGATE_REDIS_URL is set but the redis package is missing: install vidgate[server]"
            ) from None
        self.health = health
        self.channel = namespace
        self.prefix = namespace + ":"
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._redis = redis.Redis.from_url(
            redis_url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=10
        )
        self._outbox: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        #: transitions received from other processes (for tests and /metrics)
        self.applied = 0
        self.subscribed = threading.Event()
        health.on_transition = self._local_transition
        self._threads = [
            threading.Thread(target=self._publisher, name="vidgate-health-pub", daemon=True),
            threading.Thread(target=self._subscriber, name="vidgate-health-sub", daemon=True),
        ]
        for t in self._threads:
            t.start()

    # -- outgoing ----------------------------------------------------------------------------

    def _local_transition(
        self, kind: str, key: str, state: BreakerState, open_s: float, reason: str
    ) -> None:
        # Called under Health's lock: only enqueue.
        self._outbox.put(
            {
                "origin": self.origin,
                "kind": kind,
                "key": key,
                "state": state.value,
                # wall-clock: monotonic clocks do not agree between processes
                "until": time.time() + open_s,
                "reason": reason,
            }
        )

    def _publisher(self) -> None:
        while True:
            event = self._outbox.get()
            if event is None:
                return
            name = f"{self.prefix}{event['kind']}:{event['key']}"
            body = json.dumps(event)
            try:
                pipe = self._redis.pipeline(transaction=False)
                if event["state"] == BreakerState.OPEN.value:
                    ttl_ms = max(1, int((event["until"] - time.time()) * 1000))
                    pipe.set(name, body, px=ttl_ms)
                else:
                    pipe.delete(name)
                pipe.publish(self.channel, body)
                pipe.execute()
            except Exception as e:  # Redis down: this process's own breakers still work
                log.warning("could not share a breaker transition (%s): %s", name, e)

    # -- incoming ------------------------------------------------------------------------------

    def _apply(self, raw: bytes | str) -> None:
        try:
            event = json.loads(raw)
            if event.get("origin") == self.origin:
                return
            state = BreakerState(event["state"])
            open_s = float(event["until"]) - time.time()
            self.health.apply(str(event["kind"]), str(event["key"]), state, open_s, event["reason"])
            self.applied += 1
        except (ValueError, KeyError, TypeError) as e:
            log.warning("ignored a malformed breaker event: %s", e)

    def _subscriber(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                # Subscribed first, then read what is open: nothing falls between the two.
                for name in self._redis.scan_iter(match=self.prefix + "*", count=500):
                    raw = self._redis.get(name)
                    if raw is not None:
                        self._apply(raw)
                self.subscribed.set()
                backoff = 0.5
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=1.0)
                    if msg is not None and msg.get("type") == "message":
                        self._apply(msg["data"])
            except Exception as e:
                self.subscribed.clear()
                if self._stop.is_set():
                    return
                log.warning("breaker sharing lost its Redis connection (%s); retrying", e)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()

    def close(self) -> None:
        self._stop.set()
        self._outbox.put(None)
        self.health.on_transition = None
        for t in self._threads:
            t.join(timeout=3)
        with contextlib.suppress(Exception):
            self._redis.close()
