"""A model served over the OpenAI chat-completions API (vLLM, SGLang, ``transformers serve``).

``OpenAIRunner`` implements the ``ModelRunner`` protocol of ``stream.models.runtime``, so a
tier scales out to a serving fleet by changing its registry entry (``"backend": "openai"``,
``"endpoint": ...``) and nothing else. It sends each request of a batch concurrently to
``POST {endpoint}/v1/chat/completions`` with the chat messages the in-process runner gets,
every ``{"type": "image"}`` part replaced by a PNG data URL of the next image.

How the replies line up with ``TransformersRunner``'s:

* **Stop strings.** OpenAI servers drop a matched stop string from the text, while the
  in-process runner keeps it (the deep tier looks for ``</think>``). When a row ends on a
  stop string and the server says which one (vLLM ``stop_reason``, SGLang
  ``matched_stop``), it is appended back. ``transformers serve`` keeps stop strings in the
  text itself. A server that drops the string and does not say which one matched returns
  text without it: such a row reads like one that ended on its end-of-turn token.
* **Reasoning.** When the server splits a Thinking model's output (vLLM
  ``--reasoning-parser``, ``transformers serve``), the text is rebuilt as
  ``reasoning + "</think>" + content``, so ``stream.thinking.split_thinking`` works the same.
  A reply with reasoning and no content comes back as the reasoning alone (plus a matched
  stop string, see above): the servers report a thought cut off by the token limit and a
  closed thought followed by nothing in the same way, and either way there is no answer.
  So from ``transformers serve``, which names no matched stop string, a thought stopped at
  ``</think>`` comes back without the tag, and the caller closes it as if it had run over.
* **Wall time.** Replies are streamed; ``max_time_s`` is a deadline for the whole call.
  Rows still streaming then are cut off (their connections are closed, which aborts the
  work on vLLM) and end with ``finish_reason="length"``, as in-process. A server that has
  not even answered with its response headers by then is an error.
* **Token counts** come from the server's ``usage``. A row cut off by the deadline has
  none: its ``generated_tokens`` is the number of streamed text chunks (about one per
  token) and its ``prompt_tokens`` is 0.
* **Assistant prefix.** A non-empty ``assistant_prefix`` is sent as a final assistant
  message with ``"continue_final_message": true, "add_generation_prompt": false``, a vLLM
  (and SGLang) extension: the server renders that message with its own chat template and
  continues it. ``transformers serve`` refuses the request (HTTP 422), which fails the
  batch; a server that ignored the two fields would start a new turn instead.

Errors (refused connections, timeouts, HTTP 4xx/5xx, an error event in the stream) fail
the whole batch with ``ModelRuntimeError``, whose message names the request and carries the
server's own explanation. Nothing is retried here.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from PIL import Image

from stream.models.errors import ModelLoadError, ModelRuntimeError
from stream.models.registry import ModelSpec
from stream.models.runtime import GenerationOptions, GenerationRequest, GenerationResult

CHAT_COMPLETIONS = "/v1/chat/completions"
# What the in-process runner's thinking split looks for.
THINK_CLOSE = "</think>"
_ERROR_DETAIL_CHARS = 500


def image_data_url(image: Image.Image) -> str:
    """A PNG ``data:`` URL of ``image`` (lossless: the server sees the pixels the caller admitted)."""
    buffer = io.BytesIO()
    # Level 1: most of PNG's size win for a fraction of the default level's time.
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _is_image_part(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "image"


def openai_messages(request: GenerationRequest) -> list[dict[str, Any]]:
    """The request's chat messages in OpenAI's format: image parts become ``image_url`` parts.

    Raises ``ModelRuntimeError`` when the image parts and ``request.images`` differ in number.
    """
    slots = sum(
        _is_image_part(part)
        for message in request.messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
    )
    if slots != len(request.images):
        raise ModelRuntimeError(f"messages have {slots} image slots but {len(request.images)} images were given")
    images = iter(request.images)
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        content = message.get("content")
        if isinstance(content, list):
            content = [
                {"type": "image_url", "image_url": {"url": image_data_url(next(images))}}
                if _is_image_part(part)
                else part
                for part in content
            ]
            message = {**message, "content": content}
        messages.append(message)
    if request.assistant_prefix:
        messages.append({"role": "assistant", "content": request.assistant_prefix})
    return messages


@dataclass
class _StreamedReply:
    """One row's reply as its server-sent events arrive."""

    answered: bool = False  # the server sent its response headers
    cut_off: bool = False  # the deadline closed the stream
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    chunks: int = 0
    finish_reason: str | None = None
    matched_stop: Any = None
    usage: dict[str, Any] | None = None

    def add(self, event: dict[str, Any]) -> None:
        if event.get("usage"):
            self.usage = event["usage"]
        for choice in event.get("choices") or ():
            delta = choice.get("delta") or {}
            # vLLM renamed reasoning_content to reasoning; some versions send both.
            thought = delta.get("reasoning_content")
            if thought is None:
                thought = delta.get("reasoning")
            text = delta.get("content")
            if thought:
                self.reasoning.append(thought)
            if text:
                self.content.append(text)
            if thought or text:
                self.chunks += 1
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
                stop_reason = choice.get("stop_reason")  # vLLM; SGLang calls it matched_stop
                self.matched_stop = stop_reason if stop_reason is not None else choice.get("matched_stop")

    def result(self, stop: Sequence[str]) -> GenerationResult:
        truncated = self.cut_off or self.finish_reason == "length"
        content = "".join(self.content)
        if not self.reasoning:
            text = content
        elif content:
            text = "".join(self.reasoning) + THINK_CLOSE + content
        else:
            text = "".join(self.reasoning)
        matched = self.matched_stop
        if not truncated and isinstance(matched, str) and matched in stop and not text.endswith(matched):
            text += matched
        usage = self.usage or {}
        generated = usage.get("completion_tokens")
        return GenerationResult(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            generated_tokens=int(generated) if generated is not None else self.chunks,
            finish_reason="length" if truncated else "stop",
        )


class OpenAIRunner:
    """Generation on an OpenAI-compatible server; the weights live there, not in this process.

    ``timeout_s`` bounds each connect/read/write when a call has no ``max_time_s``;
    ``max_concurrency`` bounds the connections one ``generate`` call opens (more requests
    than that wait for a free one). ``transport`` replaces the network, for tests.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        timeout_s: float = 120.0,
        max_concurrency: int = 16,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if spec.backend != "openai" or spec.endpoint is None:
            raise ModelLoadError(f"model {spec.id!r} is not served over HTTP (backend {spec.backend!r})")
        self.spec = spec
        self.endpoint = spec.endpoint.rstrip("/")
        self._timeout_s = timeout_s
        self._limits = httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency)
        self._transport = transport
        # Built once: httpx would load a CA bundle for every client, ~20 ms each.
        self._ssl = ssl.create_default_context()
        self._closed = False

    def generate(
        self, requests: Sequence[GenerationRequest], options: GenerationOptions | None = None
    ) -> list[GenerationResult]:
        """Answer a batch; blocking (runs its own event loop, so never call it from one)."""
        if not requests:
            return []
        if self._closed:
            raise ModelRuntimeError(f"model {self.spec.id!r} was closed")
        opts = options or GenerationOptions()
        bodies = []
        for index, request in enumerate(requests):
            try:
                bodies.append(self._body(request, opts))
            except ModelRuntimeError as exc:
                raise ModelRuntimeError(f"request {index}: {exc}") from exc
        return asyncio.run(self._generate(bodies, opts))

    def close(self) -> None:
        """Refuse further calls. Connections live only as long as one call, so nothing else is held."""
        self._closed = True

    def _body(self, request: GenerationRequest, opts: GenerationOptions) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.spec.served_model_name,
            "messages": openai_messages(request),
            "max_tokens": opts.max_new_tokens or self.spec.max_new_tokens,
            "temperature": self.spec.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if opts.stop:
            body["stop"] = list(opts.stop)
        if request.assistant_prefix:
            body |= {"continue_final_message": True, "add_generation_prompt": False}
        return body

    async def _generate(self, bodies: list[dict[str, Any]], opts: GenerationOptions) -> list[GenerationResult]:
        loop = asyncio.get_running_loop()
        deadline = None if opts.max_time_s is None else loop.time() + max(0.001, opts.max_time_s)
        # Past the deadline the asyncio timeout ends the call; httpx's only guards a hung server.
        timeout = self._timeout_s if opts.max_time_s is None else opts.max_time_s + self._timeout_s
        async with httpx.AsyncClient(
            base_url=self.endpoint,
            timeout=timeout,
            limits=self._limits,
            transport=self._transport,
            verify=self._ssl,
        ) as client:
            tasks = [
                asyncio.create_task(self._complete(client, index, body, opts.stop, deadline))
                for index, body in enumerate(bodies)
            ]
            try:
                return list(await asyncio.gather(*tasks))
            finally:
                # One failed row fails the batch: stop the others' work on the server too.
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _complete(
        self,
        client: httpx.AsyncClient,
        index: int,
        body: dict[str, Any],
        stop: Sequence[str],
        deadline: float | None,
    ) -> GenerationResult:
        reply = _StreamedReply()
        try:
            async with asyncio.timeout_at(deadline):
                await self._stream(client, index, body, reply)
        except TimeoutError:
            if not reply.answered:
                raise ModelRuntimeError(
                    f"request {index}: {self.endpoint} did not answer within max_time_s on {self.spec.id!r}"
                ) from None
            reply.cut_off = True
        return reply.result(stop)

    async def _stream(self, client: httpx.AsyncClient, index: int, body: dict[str, Any], reply: _StreamedReply) -> None:
        where = f"request {index} to {self.endpoint}{CHAT_COMPLETIONS} for {self.spec.id!r}"
        try:
            async with client.stream("POST", CHAT_COMPLETIONS, json=body) as response:
                if response.status_code >= 400:
                    detail = (await response.aread()).decode("utf-8", "replace")[:_ERROR_DETAIL_CHARS]
                    raise ModelRuntimeError(f"{where}: HTTP {response.status_code}: {detail}")
                reply.answered = True
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # blank separators, SSE comments and keep-alives
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
                        break
                    event = json.loads(data)
                    # transformers serve: {"error": "..."}; vLLM: {"object": "error", "message": "..."}.
                    if event.get("error") or event.get("object") == "error":
                        problem = event.get("error") or event.get("message")
                        raise ModelRuntimeError(f"{where}: the server reported an error mid-stream: {problem}")
                    reply.add(event)
        except httpx.HTTPError as exc:
            raise ModelRuntimeError(f"{where}: {type(exc).__name__}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise ModelRuntimeError(f"{where}: the server sent an event that is not JSON: {exc}") from exc
