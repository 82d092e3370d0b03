"""Typed settings, one object per service, read from the environment at start.

Every field can be set as ``IDOLSTREAM_<FIELD>`` (upper case); ``KAFKA_BOOTSTRAP`` points
every service, the demo and the tests at an existing cluster instead of the local broker.
`describe_settings` prints them for ``--help``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from stream.contracts import MAX_CLOCK_SKEW_S
from stream.errors import ConfigError
from stream.images import ImageLimits
from stream.tokens import MIN_SECRET_BYTES
from stream.topics import TopicNames


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IDOLSTREAM_", extra="ignore", frozen=True, populate_by_name=True)

    kafka_bootstrap: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP", "IDOLSTREAM_KAFKA_BOOTSTRAP"),
        description="existing cluster (host:port,...); unset = the project's local broker",
    )
    topic_prefix: str = Field(default="", description="prefix for every topic name")
    home: Path = Field(default=Path("var"), description="local state: broker, tiny checkpoints, logs")
    local_kafka_port: int = Field(default=9092, description="port of the local broker")
    local_kafka_controller_port: int = Field(default=9093, description="controller port of the local broker")
    topic_partitions: int = Field(default=6, ge=1, le=256, description="partitions per topic at creation")
    topic_replicas: int = Field(
        default=1, ge=1, le=16, description="replicas per topic when a service creates it (3 on a production cluster)"
    )

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.topic_prefix)


class WorkerSettings(CommonSettings):
    """What both model tiers share."""

    registry_path: Path = Field(default=Path("config/models.json"), description="model registry file")
    persona_path: Path = Field(default=Path("config/persona.json"), description="persona file")
    commit_interval_s: float = Field(default=0.5, gt=0, description="how often finished offsets are committed")
    session_timeout_ms: int = Field(default=10_000, ge=6000, description="consumer group session timeout")
    max_image_bytes: int = Field(default=4 * 1024 * 1024, description="largest image file accepted")
    max_decoded_pixels: int = Field(default=24_000_000, description="pixels beyond which a file is a bomb")
    max_age_s: float = Field(default=30.0, gt=0, description="items older than this when they reach a model are shed")
    min_switch_interval_s: float = Field(default=30.0, ge=0, description="model switches closer than this are refused")
    admin_host: str = Field(default="127.0.0.1", description="address of the admin/metrics HTTP (0.0.0.0 in a pod)")
    moderation_words_path: Path = Field(
        default=Path("config/moderation/words.json"),
        description="the word filter's list, run on fans' names and texts and on every line before it is produced",
    )
    text_guard_model_id: str | None = Field(
        default=None, description="registry id of a text guard (Qwen3Guard-Gen format) judging fans' texts; unset = none"
    )
    guard_controversial: Literal["allow", "review", "block"] = Field(
        default="review", description="what a guard's Controversial verdict does (Safe allows, Unsafe blocks)"
    )
    guard_unparseable: Literal["allow", "review", "block"] = Field(
        default="review", description="what a guard's unreadable answer does (never shown unchecked by default)"
    )
    check_replies: bool = Field(
        default=True,
        description="check each model reply against the persona (bubble size, language, forbidden topics, "
        "control tokens, markup, reasoning); a miss is regenerated once, then a persona line goes out",
    )
    reply_thumbnail_px: int = Field(
        default=96, ge=0, le=256, description="side of the fan's thumbnail carried by replies; 0 = none"
    )
    dlq_max_original_bytes: int = Field(
        default=1024 * 1024, description="originals larger than this are kept in the DLQ as a digest"
    )
    fan_memory: bool = Field(
        default=False,
        description="read fans' profiles (fans.profiles, written by `serve fans`) so her prompt greets a regular as "
        "one; a fan not found is answered as a first-timer, never waited for",
    )
    fan_memory_entries: int = Field(default=100_000, ge=1, description="fan profiles a tier holds at most (LRU)")
    fan_retention_days: float = Field(
        default=90.0, gt=0, description="a fan not seen for this long is forgotten (profile and memory)"
    )

    def image_limits(self, max_pixels: int) -> ImageLimits:
        return ImageLimits(
            max_bytes=self.max_image_bytes, max_decoded_pixels=self.max_decoded_pixels, max_pixels=max_pixels
        )


class FastTierSettings(WorkerSettings):
    group_id: str = Field(default="idolstream-fast", description="consumer group of the fast tier")
    model_id: str = Field(default="tiny-qwen3vl-moe", description="registry id of the fast model")
    batch_max_size: int = Field(default=4, ge=1, le=64, description="items per model call at most")
    batch_max_wait_ms: int = Field(default=30, ge=0, le=5000, description="wait for a batch to fill")
    inbox_high_watermark: int = Field(
        default=32, ge=1, description="items held in memory before partitions are paused"
    )
    inbox_low_watermark: int = Field(default=8, ge=0, description="paused partitions resume below this")
    admin_port: int | None = Field(
        default=None, ge=0, description="port of /metrics /healthz /readyz /switch_model; unset = off, 0 = any"
    )
    # routing
    escalate: bool = Field(default=True, description="send complex items to the deep tier")
    long_text_chars: int = Field(default=160, ge=1, description="fan text this long escalates")
    question_min_chars: int = Field(default=24, ge=1, description="questions this long escalate")
    dense_text_coverage: float = Field(default=0.5, ge=0, le=1, description="screenshots this covered in text escalate")
    trust_model_verdict: bool = Field(default=True, description="escalate when the fast model tags [think]")
    deep_deadline_ms: int = Field(default=8000, ge=100, description="an escalated item's answer is due within this")
    image_guard_model_id: str | None = Field(
        default=None, description="registry id of an image guard judging fans' pictures; unset = none"
    )
    thumbnails_without_image_guard: bool = Field(
        default=False,
        description="show fans' thumbnails on the overlay although no image guard checked the pictures",
    )
    regenerate_within_ms: int = Field(
        default=3000, ge=0,
        description="a reply that failed the persona checks is regenerated only if the item, in the tier this "
        "long at most once the retry is done, is still on time; otherwise a persona line goes out at once",
    )
    max_pending_escalations: int = Field(default=256, ge=1, description="escalations waiting at most; past it, answer fast")
    breaker_failures: int = Field(default=3, ge=1, description="missed deep deadlines in a row that stop escalation")
    breaker_open_s: float = Field(default=15.0, gt=0, description="how long escalation stays off before a probe")
    draw: bool = Field(default=True, description="send drawing requests to the draw tier (items.draw)")
    draw_deadline_ms: int = Field(
        default=30_000, ge=1000, description="a drawing request's picture is due within this, or she apologises"
    )
    draw_grace_ms: int = Field(
        default=5000, ge=0,
        description="past a drawing's deadline, how long the fast tier waits for the draw tier's own apology",
    )
    max_pending_draws: int = Field(default=64, ge=1, description="drawing requests waiting at most; past it, no drawing")
    # shedding
    user_max_items: int = Field(default=3, ge=0, description="items per fan and room per window; 0 = no limit")
    user_window_s: float = Field(default=30.0, gt=0, description="window of the per-fan limit")
    room_max_replies: int = Field(default=20, ge=0, description="replies per room per window; 0 = no limit")
    room_window_s: float = Field(default=10.0, gt=0, description="window of the per-room pace")
    max_clock_skew_s: float = Field(
        default=MAX_CLOCK_SKEW_S, ge=0,
        description="how far an item's created_at may be ahead of this clock (its age counts as 0); "
        "further ahead it is dead-lettered as schema_violation",
    )


class DeepTierSettings(WorkerSettings):
    deep_group_id: str = Field(default="idolstream-deep", description="consumer group of the deep tier")
    deep_model_id: str = Field(default="tiny-qwen3vl-thinking", description="registry id of the deep model")
    deep_batch_max_size: int = Field(default=2, ge=1, le=32, description="escalations per model call at most")
    deep_batch_max_wait_ms: int = Field(default=20, ge=0, le=5000, description="wait for a deep batch to fill")
    deep_inbox_high_watermark: int = Field(default=8, ge=1, description="escalations held before pausing")
    deep_inbox_low_watermark: int = Field(default=2, ge=0, description="paused partitions resume below this")
    thinking_budget_tokens: int = Field(default=128, ge=1, description="thought tokens before the thought is closed")
    deadline_margin_ms: int = Field(
        default=300, ge=0, description="give up this long before the deadline, so the draft still goes out in time"
    )
    keep_reasoning: bool = Field(default=False, description="publish the thought to the reasoning topic for operators")
    deep_admin_port: int | None = Field(default=None, ge=0, description="the deep tier's admin port; unset = off, 0 = any")


class DrawTierSettings(WorkerSettings):
    draw_group_id: str = Field(default="idolstream-draw", description="consumer group of the draw tier")
    draw_model_id: str = Field(
        default="tiny-qwen-image", description="registry id of the draw model (a diffusers pipeline, tier draw)"
    )
    draw_max_pending: int = Field(
        default=4, ge=1, le=256,
        description="drawing requests held in memory before partitions are paused (each is seconds of work)",
    )
    draw_resume_below: int = Field(default=1, ge=0, description="paused partitions resume below this many pending")
    draw_image_guard_model_id: str | None = Field(
        default=None,
        description="registry id of an image guard judging her pictures before they are shown; unset = none",
    )
    draw_picture_max_chars: int = Field(
        default=400_000, ge=10_000, le=400_000,
        description="largest data URL of a picture on the replies topic (quality, then size, is lowered to fit)",
    )
    draw_admin_port: int | None = Field(
        default=None, ge=0, description="the draw tier's admin port; unset = off, 0 = any"
    )


def _hmac_secret(secret: SecretStr | None, variable: str, why: str) -> bytes:
    """A token-signing secret's bytes, or a ConfigError saying how to set it."""
    if secret is None:
        raise ConfigError(f"set {variable} (32+ bytes, e.g. `openssl rand -hex 32`): {why}")
    value = secret.get_secret_value().encode()
    if len(value) < MIN_SECRET_BYTES:
        raise ConfigError(f"{variable} must be at least {MIN_SECRET_BYTES} bytes")
    return value


class ConsoleSettings(FastTierSettings):
    """The operator console: review queue, playground, the tiers' models (registry, persona, word list: the fast tier's)."""

    console_host: str = Field(default="127.0.0.1", description="address the console listens on")
    console_port: int = Field(default=8770, ge=0, description="port of the console page and its API; 0 = any")
    console_secret: SecretStr | None = Field(
        default=None,
        description="HMAC secret of operator tokens (32+ bytes, not the overlay's); `idolstream operator-token` signs",
    )
    tier_admins: str = Field(
        default="", description="the tiers' admin URLs, e.g. fast=http://127.0.0.1:8081,deep=http://127.0.0.1:8082"
    )
    review_capacity: int = Field(default=2000, ge=1, description="held replies listed at most, oldest first")
    playground_model_id: str | None = Field(
        default=None, description="the playground's model until one is picked; unset = the fast model (model_id)"
    )

    def secret(self) -> bytes:
        return _hmac_secret(self.console_secret, "IDOLSTREAM_CONSOLE_SECRET",
                            "operators sign in with a token signed with it (not the overlay's secret)")

    def admins(self) -> dict[str, str]:
        """tier -> admin base URL."""
        found = {}
        for part in filter(None, (p.strip() for p in self.tier_admins.split(","))):
            tier, _, url = part.partition("=")
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"IDOLSTREAM_TIER_ADMINS: {part!r} is not tier=http(s)://host:port")
            found[tier.strip()] = url.strip().rstrip("/")
        return found


class FansSettings(CommonSettings):
    """The fans app (`idolstream serve fans`): feedback tables, fan profiles, retraction, thank-you digests."""

    fans_app_id: str = Field(
        default="idolstream-fans",
        description="the faust app id: its consumer group and the prefix of its tables' changelog topics",
    )
    fans_host: str = Field(default="127.0.0.1", description="address of its /metrics, probes and table views")
    fans_port: int = Field(default=8790, ge=0, description="port of its /metrics, probes and table views; 0 = any")
    persona_path: Path = Field(default=Path("config/persona.json"), description="persona file (digest lines)")
    moderation_words_path: Path = Field(
        default=Path("config/moderation/words.json"), description="the word filter, run on every digest line"
    )
    console_secret: SecretStr | None = Field(
        default=None, description="operator tokens' secret (the console's): the table views need an operator token"
    )
    commit_interval_s: float = Field(default=1.0, gt=0, description="how often processed offsets are committed")
    report_threshold: int = Field(
        default=3, ge=0, description="reports that retract a reply (per room overrides in room_report_thresholds); 0 = never"
    )
    room_report_thresholds: str = Field(
        default="", description="per-room report thresholds, e.g. quiet-room=2,big-room=10"
    )
    room_window_s: float = Field(default=60.0, gt=0, description="tumbling window of the per-room counts")
    room_windows_kept_s: float = Field(default=24 * 3600.0, gt=0, description="how long per-room windows are kept")
    digest_window_s: float = Field(
        default=30.0, gt=0, description="shed fans of a room are gathered this long, then thanked in one line"
    )
    digest_max_names: int = Field(default=5, ge=1, le=50, description="fans named in a digest; the rest are 'N more'")
    fan_retention_days: float = Field(
        default=90.0, gt=0, description="a fan not seen for this long is forgotten (profile and memory)"
    )
    reply_retention_days: float = Field(
        default=7.0, gt=0, description="feedback on a reply older than this is no longer counted per reply"
    )
    tick_s: float = Field(default=1.0, gt=0, le=60, description="how often windows due are closed and expiry runs")

    def secret(self) -> bytes:
        return _hmac_secret(self.console_secret, "IDOLSTREAM_CONSOLE_SECRET",
                            "the fans app's table views take an operator token")

    def threshold_for(self, room: str) -> int:
        for part in filter(None, (p.strip() for p in self.room_report_thresholds.split(","))):
            name, _, value = part.partition("=")
            if name.strip() == room:
                return int(value)
        return self.report_threshold

    def model_post_init(self, _context: Any) -> None:
        for part in filter(None, (p.strip() for p in self.room_report_thresholds.split(","))):
            name, sep, value = part.partition("=")
            if not sep or not name.strip() or not value.strip().isdigit():
                raise ValueError(f"room_report_thresholds: {part!r} is not room=number")


class GatewaySettings(CommonSettings):
    host: str = Field(default="127.0.0.1", description="address the gateway listens on")
    port: int = Field(default=8765, description="port of the overlay page and websocket")
    overlay_secret: SecretStr | None = Field(
        default=None, description="HMAC secret of room tokens (32+ bytes); `idolstream token` signs with it"
    )
    allowed_origins: str = Field(
        default="", description="comma-separated Origins allowed to open the websocket; empty allows any"
    )
    client_queue: int = Field(
        default=32, ge=1, description="replies waiting per overlay; when full the oldest is dropped and counted"
    )
    ack_timeout_s: float = Field(
        default=10.0, ge=0, description="how long a room's next reply waits for the overlay's ack; 0 = no pacing"
    )
    heartbeat_s: float = Field(default=5.0, gt=0, description="heartbeat and ping interval; dead peers go in 2x")
    history_per_room: int = Field(default=200, ge=1, description="replies kept per room for overlays that reconnect")
    history_max_age_s: float = Field(
        default=900.0, ge=0, description="how far back the room histories are rebuilt from Kafka at start"
    )
    history_max_mib: int = Field(default=256, ge=1, description="memory for all room histories together")
    max_rooms: int = Field(default=2000, ge=1, description="rooms remembered; the least recently active forgotten")
    recent_item_ids: int = Field(default=1024, ge=16, description="item ids remembered per room to drop duplicates")

    def secret(self) -> bytes:
        return _hmac_secret(self.overlay_secret, "IDOLSTREAM_OVERLAY_SECRET",
                            "overlays need a room token signed with it")

    def origins(self) -> frozenset[str]:
        return frozenset(o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip())


def load_settings(cls: type[BaseSettings], **overrides: Any) -> Any:
    """Build a settings object, turning validation errors into one clear ConfigError."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"invalid {cls.__name__}: {exc}") from exc


def describe_settings(*classes: type[BaseSettings]) -> str:
    """Every setting of the given classes once, with its environment variable and default."""
    lines, seen = [], set()
    for cls in classes:
        for name, field in cls.model_fields.items():
            if name in seen:
                continue
            seen.add(name)
            env = "KAFKA_BOOTSTRAP" if name == "kafka_bootstrap" else f"IDOLSTREAM_{name.upper()}"
            lines.append(f"  {env:<40} {field.description or ''} (default: {field.default})")
    return "settings (environment):\n" + "\n".join(lines)
