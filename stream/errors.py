"""Errors raised by idolstream, and the one place DLQ reason codes come from.

    IdolstreamError
    ├── ConfigError              bad settings, persona or registry file; raised at start
    ├── LocalKafkaError          the project's own broker could not be set up or reached
    ├── SwitchRefused            a model switch request was refused (unknown, busy, too soon)
    └── RejectedItem             an item that goes to the dead-letter topic; carries `reason`
        ├── InvalidEnvelope      invalid_json, schema_violation, unsupported_schema_version
        ├── InvalidImage         image_corrupt, image_too_large, image_bomb,
        │                        image_unsupported_format, image_bad_shape
        ├── ModelFailure         model_error: the model failed on this item alone
        └── UndecodableBatch     undecodable_batch: the consumer could not decode a record
                                 batch (unknown codec, corrupt data); only its offsets are known

Third-party errors (pydantic, Pillow, transformers) are translated into these at the
boundary with ``raise ... from exc``, so a reason code is decided in one place.
"""

from __future__ import annotations

from enum import StrEnum


class ReasonCode(StrEnum):
    INVALID_JSON = "invalid_json"
    SCHEMA_VIOLATION = "schema_violation"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    IMAGE_CORRUPT = "image_corrupt"
    IMAGE_TOO_LARGE = "image_too_large"
    IMAGE_BOMB = "image_bomb"
    IMAGE_UNSUPPORTED_FORMAT = "image_unsupported_format"
    IMAGE_BAD_SHAPE = "image_bad_shape"
    MODEL_ERROR = "model_error"
    UNDECODABLE_BATCH = "undecodable_batch"
    WRONG_KEY = "wrong_key"  # a record not keyed by its room: it would be counted on the wrong partition


class IdolstreamError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(IdolstreamError):
    """A settings, persona or registry file is wrong; the service refuses to start."""


class LocalKafkaError(IdolstreamError):
    """The local broker cannot be prepared, started, reached or stopped."""


class SwitchRefused(IdolstreamError):
    """A model switch that cannot happen now; `code` is machine-readable, `retry_after_s` set when waiting helps."""

    def __init__(self, code: str, detail: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.retry_after_s = retry_after_s


class RejectedItem(IdolstreamError):
    """An item that cannot be answered; it goes to the dead-letter topic with `reason`."""

    reason: ReasonCode

    def __init__(self, reason: ReasonCode, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class InvalidEnvelope(RejectedItem):
    """The bytes on the topic are not a valid submission."""


class InvalidImage(RejectedItem):
    """The submission is valid but its image cannot be admitted."""


class UndecodableBatch(RejectedItem):
    """Records the consumer could not decode at all: only their partition and offsets are known."""

    def __init__(self, detail: str) -> None:
        super().__init__(ReasonCode.UNDECODABLE_BATCH, detail)


class ModelFailure(RejectedItem):
    """The model failed on this item even when run on its own."""

    def __init__(self, detail: str) -> None:
        super().__init__(ReasonCode.MODEL_ERROR, detail)
