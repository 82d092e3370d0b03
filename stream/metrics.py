"""Prometheus metrics, one small set per service, under the ``idolstream_`` prefix.

Each service builds its metrics on its own CollectorRegistry (tests and the in-process
demo run several services side by side) and serves them on ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream.errors import ReasonCode
from stream.reasons import (
    ESCALATION_REASONS, DegradeReason, ModerationAction, ModerationSide, ModerationStage, ReplyMiss, ShedReason,
)
from stream.tokens import Refusal

# Sub-second resolution where the objective lives (a reply within a second), then minutes.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


def _zeroed(counter: Counter, values) -> Counter:
    """Start a counter's closed set of label values at 0, so rates and ratios are 0, not missing."""
    for value in values:
        counter.labels(*value) if isinstance(value, tuple) else counter.labels(value)
    return counter


DRAW_MODES = ("text_to_image", "pose", "img2img", "outpaint")


class WorkerMetrics:
    """What a model tier (fast or deep) reports; each tier has its own registry and scrape job.

    The model-side series carry the `tier` label, so one dashboard variable picks a tier
    whatever the scrape job is called.
    """

    def __init__(self, tier: str, registry: CollectorRegistry | None = None) -> None:
        self.tier = tier
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.items_consumed = Counter(
            "idolstream_items_consumed_total", "Items read from Kafka", ["tier", "topic"], registry=r
        )
        self.replies = Counter(
            "idolstream_replies_total", "Replies produced", ["tier", "role", "route_reason"], registry=r
        )
        self.escalations = _zeroed(Counter(
            "idolstream_escalations_total", "Items handed to the deep tier", ["reason"], registry=r
        ), sorted(ESCALATION_REASONS))
        self.degraded = _zeroed(Counter(
            "idolstream_degraded_replies_total",
            "Answers that were not what their route asked for (deep late or down, model error or switching)",
            ["reason"],
            registry=r,
        ), DegradeReason)
        self.shed = _zeroed(Counter(
            "idolstream_items_shed_total", "Items deliberately not answered", ["reason"], registry=r
        ), ShedReason)
        self.dead_letters = _zeroed(Counter(
            "idolstream_dead_letters_total", "Items sent to the dead-letter topic", ["reason"], registry=r
        ), ReasonCode)
        self.reply_check_misses = _zeroed(Counter(
            "idolstream_reply_check_misses_total",
            "Model replies stopped by the persona checks, by reason (a reply may miss for several)",
            ["tier", "reason"],
            registry=r,
        ), [(tier, miss) for miss in ReplyMiss])
        self.regenerations = _zeroed(Counter(
            "idolstream_reply_regenerations_total", "Replies asked of the model again after a persona check miss",
            ["tier"], registry=r,
        ), [tier])
        self.moderation_verdicts = _zeroed(Counter(
            "idolstream_moderation_verdicts_total",
            "Moderation verdicts that blocked or held something, by side (fan, reply), stage and action",
            ["side", "stage", "action"],
            registry=r,
        ), [(side, stage, action) for side in ModerationSide for stage in ModerationStage
            for action in (ModerationAction.REVIEW, ModerationAction.BLOCK)])
        self.moderation_categories = Counter(
            "idolstream_moderation_categories_total", "Categories of the moderation verdicts",
            ["side", "stage", "category"], registry=r,
        )
        self.replies_held = Counter(
            "idolstream_replies_held_total", "Replies held for an operator's review", registry=r
        )
        self.deadline_misses = Counter(
            "idolstream_deep_deadline_misses_total", "Escalated items whose deep answer was not ready in time", registry=r
        )
        self.batch_size = Histogram(
            "idolstream_batch_size", "Items per model call", ["tier"], buckets=BATCH_BUCKETS, registry=r
        ).labels(tier)
        self.inference_seconds = Histogram(
            "idolstream_inference_seconds", "Model call duration", ["tier"], buckets=LATENCY_BUCKETS, registry=r
        ).labels(tier)
        self.end_to_end_seconds = Histogram(
            "idolstream_item_to_reply_seconds",
            "From the item's created_at to its answer being acknowledged by Kafka",
            ["tier"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "idolstream_stage_seconds",
            "Time an answered item spent per stage: queue (inbox wait), admission (decode, checks, resize), "
            "preprocess (chat template, tokenizer, image processor), inference (the model's forward passes)",
            ["tier", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "idolstream_consumer_lag", "Records on a partition not yet fetched by this consumer",
            ["tier", "topic", "partition"], registry=r,
        )
        self.generated_tokens = Counter(
            "idolstream_generated_tokens_total", "Tokens generated", ["tier"], registry=r
        ).labels(tier)
        self.thought_tokens = Counter(
            "idolstream_thought_tokens_total", "Tokens a thinking model spent before answering", ["tier"], registry=r
        ).labels(tier)
        self.inbox_depth = Gauge("idolstream_inbox_items", "Items waiting for the model", ["tier"], registry=r).labels(tier)
        self.paused = Gauge(
            "idolstream_partitions_paused", "1 while partitions are paused for backpressure", ["tier"], registry=r
        ).labels(tier)
        self.pending_escalations = Gauge(
            "idolstream_pending_escalations", "Escalated items waiting for their deep answer", registry=r
        )
        self.breaker_open = Gauge(
            "idolstream_escalation_breaker_open", "1 while escalation is off because the deep tier failed", registry=r
        )
        self.draw_requests = _zeroed(Counter(
            "idolstream_draw_requests_total", "Drawing requests handed to the draw tier, by route reason and mode",
            ["reason", "mode"], registry=r,
        ), [(reason, mode) for reason in ("draw_request", "draw_verdict") for mode in DRAW_MODES])
        self.pending_draws = Gauge(
            "idolstream_pending_draws", "Drawing requests waiting for her picture (or her apology)", registry=r
        )
        self.draw_breaker_open = Gauge(
            "idolstream_draw_breaker_open", "1 while drawing is off because the draw tier missed its deadlines",
            registry=r,
        )
        self._model_loaded = Gauge(
            "idolstream_model_loaded", "1 for the loaded model id", ["tier", "model_id"], registry=r
        )
        self.model_switching = Gauge(
            "idolstream_model_switching", "1 while the worker switches model", ["tier"], registry=r
        ).labels(tier)
        self.fan_memory_lookups = _zeroed(Counter(
            "idolstream_fan_memory_lookups_total",
            "Fans looked up in the tier's memory: hit (a profile was there) or miss (answered as a first-timer)",
            ["tier", "result"], registry=r,
        ), [(tier, "hit"), (tier, "miss")])
        self.fan_memory_profiles = Gauge(
            "idolstream_fan_memory_profiles", "Fan profiles held in the tier's memory", ["tier"], registry=r
        ).labels(tier)

    def model_loaded(self, model_id: str):
        return self._model_loaded.labels(self.tier, model_id)


# A picture takes seconds on a GPU and tens of seconds on a CPU.
DRAW_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0, 30.0, 45.0, 60.0, 120.0)
DRAW_OUTCOMES = ("drawn", "late", "failed", "flagged")


class DrawMetrics(WorkerMetrics):
    """The draw tier's metrics: a worker's (tier "draw": inbox, pauses, replies, dead letters) plus pictures."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__("draw", registry)
        r = self.registry
        self.draw_seconds = Histogram(
            "idolstream_draw_seconds", "Time the pipeline spent on one picture, by mode", ["mode"],
            buckets=DRAW_BUCKETS, registry=r,
        )
        self.draw_steps_per_second = Gauge(
            "idolstream_draw_steps_per_second", "Denoising steps per second of the last picture, by mode", ["mode"],
            registry=r,
        )
        self.draw_steps = Counter("idolstream_draw_steps_total", "Denoising steps run", registry=r)
        self.pictures = _zeroed(Counter(
            "idolstream_draw_pictures_total",
            "Drawing requests by outcome: drawn (shown), late (apology), failed (apology), flagged by the image guard",
            ["mode", "outcome"], registry=r,
        ), [(mode, outcome) for mode in DRAW_MODES for outcome in DRAW_OUTCOMES])


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.clients = Gauge("idolstream_ws_clients", "Connected overlays", registry=r)
        self.rooms = Gauge("idolstream_ws_rooms", "Rooms with at least one overlay connected", registry=r)
        self.rooms_held = Gauge(
            "idolstream_ws_rooms_held", "Rooms remembered (history, duplicate filter), watched or not", registry=r
        )
        # Per-room series exist only while the room has an overlay: as many as rooms being watched.
        self.room_clients = Gauge(
            "idolstream_ws_room_clients", "Connected overlays of a room", ["room"], registry=r
        )
        self.room_pushed = Counter(
            "idolstream_ws_room_replies_pushed_total", "Replies sent to a room's overlays (while it has any)",
            ["room"], registry=r,
        )
        self.received = Counter("idolstream_ws_replies_received_total", "Replies read off the replies topic", registry=r)
        self.pushed = Counter("idolstream_ws_replies_pushed_total", "Replies sent to overlays", registry=r)
        self.item_to_push_seconds = Histogram(
            "idolstream_item_to_push_seconds", "From the item's created_at to its reply being sent to an overlay",
            ["tier"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.push_seconds = Histogram(
            "idolstream_ws_push_seconds", "From reading a reply off Kafka to sending it to an overlay (pacing included)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=r,
        )
        self.duplicates = Counter(
            "idolstream_ws_duplicates_dropped_total", "Replies dropped because their item was already answered", registry=r
        )
        self.dropped = Counter(
            "idolstream_ws_client_queue_dropped_total", "Replies dropped from a full overlay queue (slow overlay)",
            registry=r,
        )
        self.ack_timeouts = Counter(
            "idolstream_ws_ack_timeouts_total", "Replies whose overlay did not ack within the pacing timeout", registry=r
        )
        self.refused = _zeroed(Counter(
            "idolstream_ws_refused_total", "Overlay connections refused, by reason", ["reason"], registry=r
        ), [*Refusal, "bad_cursor"])
        self.resumes = _zeroed(Counter(
            "idolstream_ws_resumes_total", "Reconnects that named their last reply; complete=false when some were lost",
            ["complete"], registry=r,
        ), ["true", "false"])
        self.replayed = Counter("idolstream_ws_replayed_total", "Replies sent again from history on resume", registry=r)
        self.history_bytes = Gauge("idolstream_ws_history_bytes", "Bytes held by the room histories", registry=r)
        self.history_rebuilt = Counter(
            "idolstream_ws_history_rebuilt_total", "Replies read back from Kafka at start to rebuild room histories",
            registry=r,
        )
        self.invalid = Counter(
            "idolstream_ws_invalid_replies_total",
            "Records on the replies topic that were not replies or could not be decoded", registry=r,
        )
        self.retractions = _zeroed(Counter(
            "idolstream_gateway_retractions_total",
            "Replies taken back (out of the room history, off the overlays), by reason; each reply once",
            ["reason"], registry=r,
        ), ["reports", "operator"])
        self.invalid_retractions = Counter(
            "idolstream_gateway_invalid_retractions_total",
            "Records on the retractions topic that were not retractions or could not be decoded", registry=r,
        )


class ConsoleMetrics:
    """What the operator console reports: the review queue and the decisions taken."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.review_pending = Gauge("idolstream_review_pending", "Held replies waiting for an operator", registry=r)
        self.review_oldest = Gauge(
            "idolstream_review_oldest_pending_seconds", "Age of the oldest held reply waiting for an operator",
            registry=r,
        )
        self.review_unlisted = Gauge(
            "idolstream_review_unlisted", "Held replies beyond the console's list, shown once older ones are decided",
            registry=r,
        )
        self.review_decisions = _zeroed(Counter(
            "idolstream_review_decisions_total", "Operators' decisions on held replies", ["decision"], registry=r,
        ), ["approve", "reject"])
        self.refused = Counter(
            "idolstream_console_refused_total", "Console API requests refused, by why", ["reason"], registry=r
        )
        self.retractions = Counter(
            "idolstream_console_retractions_total", "Replies an operator retracted from the console", registry=r
        )


class FansMetrics:
    """What the fans app (`idolstream serve fans`) reports: feedback, answers counted, retractions, digests, lag."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.feedback = Counter(
            "idolstream_feedback_total", "Likes and reports counted, by the reply's tier, model and persona version",
            ["kind", "tier", "model_id", "persona_version"], registry=r,
        )
        self.answers = Counter(
            "idolstream_fans_answers_total", "Answers counted by the fans app (the like rate's denominator)",
            ["tier", "model_id", "persona_version"], registry=r,
        )
        self.unreadable = Counter(
            "idolstream_fans_unreadable_total", "Records the fans app skipped because it could not read them",
            ["topic"], registry=r,
        )
        self.dead_letters = _zeroed(Counter(
            "idolstream_dead_letters_total", "Feedback records sent to the dead-letter topic", ["reason"], registry=r
        ), ReasonCode)
        self.retractions = _zeroed(Counter(
            "idolstream_retractions_total", "Replies retracted by the fans app", ["reason"], registry=r
        ), ["reports"])
        self.digests = _zeroed(Counter(
            "idolstream_digests_total", "Thank-you digests: sent, or not (nobody left to name, or the word filter)",
            ["outcome"], registry=r,
        ), ["sent", "nobody", "filtered"])
        self.digest_names = Counter("idolstream_digest_names_total", "Fans thanked by name in digests", registry=r)
        self.profiles = Gauge("idolstream_fans_profiles", "Fan profiles held by the fans app", registry=r)
        self.forgotten = _zeroed(Counter(
            "idolstream_fans_forgotten_total", "Fan profiles removed: on request, or past retention",
            ["why"], registry=r,
        ), ["request", "retention"])
        self.lag = Gauge(
            "idolstream_fans_lag", "Records on the fans app's topics not yet processed", ["topic"], registry=r
        )
        self.errors = Counter(
            "idolstream_fans_errors_total", "Records an agent of the fans app failed on and skipped", ["agent"], registry=r
        )
        self.ready = Gauge("idolstream_fans_ready", "1 once the tables are recovered and the app processes", registry=r)
