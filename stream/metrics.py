"""Prometheus metrics, one small set per service, under the ``idolstream_`` prefix.

Each service builds its metrics on its own CollectorRegistry (tests and the in-process
demo run several services side by side) and serves them on ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Sub-second resolution where the objective lives (a reply within a second), then minutes.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


class FastTierMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.items_consumed = Counter("idolstream_items_consumed_total", "Items read from Kafka", ["topic"], registry=r)
        self.replies = Counter("idolstream_replies_total", "Replies produced", ["tier"], registry=r)
        self.dead_letters = Counter(
            "idolstream_dead_letters_total", "Items sent to the dead-letter topic", ["reason"], registry=r
        )
        self.batch_size = Histogram(
            "idolstream_batch_size", "Items per model call", buckets=BATCH_BUCKETS, registry=r
        )
        self.inference_seconds = Histogram(
            "idolstream_inference_seconds", "Model call duration", buckets=LATENCY_BUCKETS, registry=r
        )
        self.end_to_end_seconds = Histogram(
            "idolstream_item_to_reply_seconds",
            "From the item's created_at to its reply being acknowledged by Kafka",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.generated_tokens = Counter("idolstream_generated_tokens_total", "Tokens generated", registry=r)
        self.inbox_depth = Gauge("idolstream_inbox_items", "Items waiting for the model", registry=r)
        self.paused = Gauge("idolstream_partitions_paused", "1 while partitions are paused for backpressure", registry=r)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.clients = Gauge("idolstream_ws_clients", "Connected overlays", registry=r)
        self.pushed = Counter("idolstream_ws_replies_pushed_total", "Replies sent to overlays", registry=r)
        self.duplicates = Counter(
            "idolstream_ws_duplicates_dropped_total", "Replies dropped because their item was already answered", registry=r
        )
        self.dropped = Counter(
            "idolstream_ws_client_queue_dropped_total", "Replies dropped from a full client queue", registry=r
        )
        self.invalid = Counter("idolstream_ws_invalid_replies_total", "Records on the replies topic that were not replies", registry=r)
