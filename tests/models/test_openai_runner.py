"""The OpenAI-compatible runner: what it sends, how it reads replies, how it fails.

The request body and the reply mapping for vLLM/SGLang-only fields (``stop_reason``,
``reasoning_content``) are checked against an ``httpx.MockTransport`` fake. The rest runs
against a real server: ``transformers serve`` (the OpenAI-compatible server that ships with
transformers) in a subprocess, serving tiny random-weight checkpoints built here.

Why text-only checkpoints: ``transformers serve`` builds a Qwen3-VL model's processor with
``AutoProcessor``, and ``Qwen3VLProcessor`` cannot be built without torchvision (its video
processor needs it), which has no working CPU build here. So the server gets tiny Qwen3
*text* models that reuse the tiny Qwen3-VL checkpoints' tokenizers and chat templates, and
image encoding is covered by the fake above only.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from stream.local_kafka import find_free_port
from stream.models.errors import ModelRuntimeError
from stream.models.openai_runner import OpenAIRunner
from stream.models.registry import ModelSpec
from stream.models.runtime import GenerationOptions, GenerationRequest

FLEET_SPEC = ModelSpec(
    id="fleet-fast",
    source="Qwen/Qwen3-VL-8B-Instruct",
    architecture="dense",
    mode="instruct",
    tier="fast",
    dtype="bfloat16",
    max_pixels=65536,
    min_pixels=4096,
    max_new_tokens=24,
    temperature=0.0,
    backend="openai",
    endpoint="http://fleet.test:8000",
)


def sse(*events: dict, done: bool = True) -> bytes:
    lines = [f"data: {json.dumps(event)}\n\n" for event in events]
    return ("".join(lines) + ("data: [DONE]\n\n" if done else "")).encode()


def delta(content: str | None = None, reasoning: str | None = None) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": content, "reasoning_content": reasoning}}]}


def finish(reason: str, usage: dict | None = None, **extra) -> dict:
    return {"choices": [{"index": 0, "delta": {}, "finish_reason": reason, **extra}], "usage": usage}


USAGE = {"prompt_tokens": 31, "completion_tokens": 3, "total_tokens": 34}


class FakeServer:
    """Records request bodies and answers every request with the same event stream."""

    def __init__(self, body: bytes = sse(delta("Hi!"), finish("stop", USAGE)), status: int = 200) -> None:
        self.body = body
        self.status = status
        self.requests: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append({"url": str(request.url), **json.loads(request.content)})
        return httpx.Response(self.status, content=self.body, headers={"content-type": "text/event-stream"})


def runner_for(handler, spec: ModelSpec = FLEET_SPEC) -> OpenAIRunner:
    return OpenAIRunner(spec, transport=httpx.MockTransport(handler))


def image_request(*images: Image.Image, text: str = "I drew you!") -> GenerationRequest:
    return GenerationRequest(
        messages=[
            {"role": "system", "content": "You are Mika."},
            {"role": "user", "content": [*({"type": "image"} for _ in images), {"type": "text", "text": text}]},
        ],
        images=list(images),
    )


def decode_data_url(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))


def test_images_travel_as_png_data_urls_in_order_with_the_same_pixels():
    server = FakeServer()
    red, noise = Image.new("RGB", (40, 30), (255, 0, 0)), Image.effect_noise((64, 48), 40).convert("RGB")

    runner_for(server).generate([image_request(red, noise)])

    (body,) = server.requests
    assert body["url"] == "http://fleet.test:8000/v1/chat/completions"
    system, user = body["messages"]
    assert system == {"role": "system", "content": "You are Mika."}
    first, second, text = user["content"]
    assert text == {"type": "text", "text": "I drew you!"}
    assert [first["type"], second["type"]] == ["image_url", "image_url"]
    for part, sent in ((first, red), (second, noise)):
        received = decode_data_url(part["image_url"]["url"])
        assert (received.mode, received.size, received.tobytes()) == (sent.mode, sent.size, sent.tobytes())


def test_spec_defaults_and_call_options_become_request_fields():
    server = FakeServer()
    runner = runner_for(server, FLEET_SPEC.model_copy(update={"served_model": "qwen-fast", "temperature": 0.7}))

    runner.generate([image_request()])
    runner.generate([image_request()], GenerationOptions(max_new_tokens=5, stop=("</think>", "\n\n")))

    plain, limited = server.requests
    assert (plain["model"], plain["max_tokens"], plain["temperature"]) == ("qwen-fast", 24, 0.7)
    assert "stop" not in plain and "continue_final_message" not in plain
    assert (limited["max_tokens"], limited["stop"]) == (5, ["</think>", "\n\n"])


def test_assistant_prefix_is_continued_as_the_final_assistant_message():
    server = FakeServer()
    request = GenerationRequest(
        messages=[{"role": "user", "content": "what is 12 + 30?"}], assistant_prefix="12 + 30 = 42.</think>\n\n"
    )

    runner_for(server).generate([request])

    (body,) = server.requests
    assert body["messages"][-1] == {"role": "assistant", "content": "12 + 30 = 42.</think>\n\n"}
    assert (body["continue_final_message"], body["add_generation_prompt"]) == (True, False)


def test_image_count_mismatch_fails_before_anything_is_sent():
    server = FakeServer()
    one_slot = image_request(Image.new("RGB", (8, 8)))
    two_images = GenerationRequest(messages=one_slot.messages, images=one_slot.images * 2)

    with pytest.raises(ModelRuntimeError, match="request 1: .*1 image slots but 2 images"):
        runner_for(server).generate([image_request(), two_images])
    assert server.requests == []


def test_reply_text_and_token_counts_come_from_the_stream():
    server = FakeServer(sse(delta("Thank "), delta("you!"), finish("stop", USAGE)))

    (result,) = runner_for(server).generate([image_request()])

    assert (result.text, result.prompt_tokens, result.generated_tokens, result.finish_reason) == (
        "Thank you!",
        31,
        3,
        "stop",
    )


def test_token_limit_reads_as_length():
    server = FakeServer(sse(delta("Thank you so"), finish("length", USAGE)))

    (result,) = runner_for(server).generate([image_request()])

    assert (result.text, result.finish_reason) == ("Thank you so", "length")


@pytest.mark.parametrize("field", ["stop_reason", "matched_stop"])
def test_a_stop_string_the_server_dropped_is_put_back(field):
    # vLLM and SGLang drop the stop string from the text but say which one matched.
    server = FakeServer(sse(delta(reasoning="The fan drew a cat."), finish("stop", USAGE, **{field: "</think>"})))

    (result,) = runner_for(server).generate([image_request()], GenerationOptions(stop=("</think>",)))

    assert result.text == "The fan drew a cat.</think>"


def test_a_stop_string_the_server_kept_is_not_doubled():
    server = FakeServer(sse(delta("cat ears</think>"), finish("stop", USAGE, stop_reason="</think>")))

    (result,) = runner_for(server).generate([image_request()], GenerationOptions(stop=("</think>",)))

    assert result.text == "cat ears</think>"


def test_end_of_turn_is_not_mistaken_for_a_stop_string():
    server = FakeServer(sse(delta("Bye!"), finish("stop", USAGE, stop_reason=None)))

    (result,) = runner_for(server).generate([image_request()], GenerationOptions(stop=("</think>",)))

    assert result.text == "Bye!"


def test_split_reasoning_is_joined_back_with_the_closing_tag():
    thought = [delta(reasoning="A maths question. "), delta(reasoning="42.")]
    server = FakeServer(sse(*thought, delta("It is 42!"), finish("stop")))

    (result,) = runner_for(server).generate([image_request()])

    assert result.text == "A maths question. 42.</think>It is 42!"


def test_a_thought_cut_off_by_the_token_limit_stays_open():
    server = FakeServer(sse(delta(reasoning="Let me count the"), finish("length", USAGE)))

    (result,) = runner_for(server).generate([image_request()])

    assert (result.text, result.finish_reason) == ("Let me count the", "length")


def test_reasoning_under_its_newer_vllm_name_is_read_too():
    event = {"choices": [{"index": 0, "delta": {"reasoning": "Hmm."}}]}
    server = FakeServer(sse(event, delta("Cute!"), finish("stop")))

    (result,) = runner_for(server).generate([image_request()])

    assert result.text == "Hmm.</think>Cute!"


def test_without_usage_prompt_tokens_are_zero_and_generated_tokens_are_counted_chunks():
    server = FakeServer(sse(delta("a"), delta("b"), delta("c"), finish("stop")))

    (result,) = runner_for(server).generate([image_request()])

    assert (result.prompt_tokens, result.generated_tokens) == (0, 3)


def test_a_refused_request_fails_the_batch_with_the_servers_reason():
    def handler(request: httpx.Request) -> httpx.Response:
        if b"bad" in request.content:
            return httpx.Response(400, json={"detail": "This model's maximum context length is 8 tokens"})
        return FakeServer()(request)

    with pytest.raises(ModelRuntimeError, match="request 1 .*HTTP 400.*maximum context length") as caught:
        runner_for(handler).generate([image_request(text="fine"), image_request(text="bad")])
    assert "fleet-fast" in str(caught.value)


def test_an_error_event_mid_stream_fails_the_batch():
    server = FakeServer(sse(delta("Hel"), {"error": "CUDA out of memory"}, done=False))

    with pytest.raises(ModelRuntimeError, match="CUDA out of memory"):
        runner_for(server).generate([image_request()])


def test_the_requests_of_a_batch_are_in_flight_together():
    arrived: list[str] = []
    all_here = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        arrived.append(json.loads(request.content)["messages"][-1]["content"][-1]["text"])
        if len(arrived) == 3:
            all_here.set()
        # A runner that sent one request at a time would never get past this.
        await asyncio.wait_for(all_here.wait(), timeout=5)
        return httpx.Response(200, content=sse(delta(f"reply to {arrived[-1]}"), finish("stop", USAGE)))

    results = runner_for(handler).generate([image_request(text=name) for name in ("a", "b", "c")])

    assert sorted(arrived) == ["a", "b", "c"]
    assert len(results) == 3


def test_deadline_cuts_off_a_slow_stream_and_keeps_what_arrived():
    async def slow_tokens():
        yield sse(delta("The answer"), done=False)
        await asyncio.sleep(30)
        yield sse(delta(" is never sent"), finish("stop", USAGE))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=slow_tokens())

    started = time.monotonic()
    (result,) = runner_for(handler).generate([image_request()], GenerationOptions(max_time_s=0.3))

    assert time.monotonic() - started < 5
    assert (result.text, result.finish_reason, result.generated_tokens) == ("The answer", "length", 1)


def test_deadline_with_no_answer_at_all_is_an_error():
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return FakeServer()(request)

    started = time.monotonic()
    with pytest.raises(ModelRuntimeError, match="did not answer within max_time_s"):
        runner_for(handler).generate([image_request()], GenerationOptions(max_time_s=0.3))
    assert time.monotonic() - started < 5


def test_closed_runner_refuses_to_generate():
    runner = runner_for(FakeServer())
    runner.close()

    with pytest.raises(ModelRuntimeError, match="closed"):
        runner.generate([image_request()])


def test_empty_batch_sends_nothing():
    server = FakeServer()

    assert runner_for(server).generate([]) == []
    assert server.requests == []


# --- against `transformers serve` ----------------------------------------------------

SERVER_START_TIMEOUT_S = 120.0


def build_text_checkpoint(tokenizer_dir: Path, out_dir: Path) -> Path:
    """A tiny random-weight Qwen3 text model with the tokenizer and chat template of `tokenizer_dir`."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.save_pretrained(out_dir)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = Qwen3Config(
        vocab_size=-(-len(tokenizer) // 64) * 64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=im_end,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=[im_end, tokenizer.pad_token_id], pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    model.save_pretrained(out_dir)
    return out_dir


def health_ok(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def served_checkpoints(tmp_path_factory, moe_dir, thinking_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("served")
    return {
        "instruct": build_text_checkpoint(moe_dir, root / "tiny-qwen3-instruct"),
        "thinking": build_text_checkpoint(thinking_dir, root / "tiny-qwen3-thinking"),
    }


@pytest.fixture(scope="module")
def server_url(tmp_path_factory) -> Iterator[str]:
    """`transformers serve` on a free port; no model is pinned, so each request names its checkpoint."""
    port = find_free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1"}
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve"]
    command += ["--device", "cpu", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not health_ok(base_url):
            if process.poll() is not None:
                pytest.fail(f"transformers serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve not healthy in {SERVER_START_TIMEOUT_S} s:\n{log_path.read_text()}")
            time.sleep(0.2)  # a poll interval between health checks, not a guess at readiness
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def served_spec(checkpoint: Path, endpoint: str, **update) -> ModelSpec:
    # transformers serve knows a local checkpoint by its path: the source is the served name.
    fields = FLEET_SPEC.model_dump() | {"id": checkpoint.name, "source": str(checkpoint), "endpoint": endpoint}
    return ModelSpec(**(fields | update))


def chat(text: str, system: str = "You are Mika.") -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "system", "content": system}, {"role": "user", "content": text}])


def test_served_model_answers_a_batch_of_two(served_checkpoints, server_url):
    runner = OpenAIRunner(served_spec(served_checkpoints["instruct"], server_url))

    results = runner.generate([chat("hello!"), chat("a much longer question about the merch table, please")])

    assert len(results) == 2
    for result in results:
        assert result.text
        assert result.prompt_tokens > 0
        assert 1 <= result.generated_tokens <= runner.spec.max_new_tokens
        assert result.finish_reason in ("stop", "length")
    assert results[0].prompt_tokens < results[1].prompt_tokens


def test_max_new_tokens_limits_the_served_reply(served_checkpoints, server_url):
    runner = OpenAIRunner(served_spec(served_checkpoints["instruct"], server_url))

    (short,) = runner.generate([chat("hello!")], GenerationOptions(max_new_tokens=3))
    (default,) = runner.generate([chat("hello!")])

    assert 1 <= short.generated_tokens <= 3
    assert short.generated_tokens < default.generated_tokens
    assert short.finish_reason == "length"


def test_stop_string_kept_by_the_server_ends_the_reply_once(served_checkpoints, server_url):
    runner = OpenAIRunner(served_spec(served_checkpoints["instruct"], server_url))
    (full,) = runner.generate([chat("hello!")])
    # A word from the middle of the greedy reply: the same request must now stop there.
    stop = next(word for word in full.text.split()[1:] if word.isascii() and word.isalpha() and len(word) > 2)

    (stopped,) = runner.generate([chat("hello!")], GenerationOptions(stop=(stop,)))

    assert stopped.finish_reason == "stop"
    assert stopped.generated_tokens < full.generated_tokens
    assert stopped.text.count(stop) == 1
    assert full.text.startswith(stopped.text.split(stop)[0] + stop)


def test_thinking_models_reasoning_comes_back_as_reply_text(served_checkpoints, server_url):
    checkpoint = served_checkpoints["thinking"]
    runner = OpenAIRunner(served_spec(checkpoint, server_url, mode="thinking", tier="deep"))
    request = chat("what is 12 + 30?")

    (result,) = runner.generate([request], GenerationOptions(max_new_tokens=4))

    body = {"model": str(checkpoint), "messages": request.messages, "max_tokens": 4, "temperature": 0}
    plain = httpx.post(f"{server_url}/v1/chat/completions", json=body, timeout=60).json()["choices"][0]

    # The server split the (random) thought off; cut off by the token limit, it stays open.
    # (Its non-streamed decode may end in a U+FFFD that the stream holds back.)
    assert plain["message"]["reasoning_content"] and not plain["message"]["content"]
    assert result.text.strip() and plain["message"]["reasoning_content"].strip().startswith(result.text.strip())
    assert "</think>" not in result.text and result.finish_reason == "length"


def test_server_without_continue_final_message_fails_the_batch_clearly(served_checkpoints, server_url):
    runner = OpenAIRunner(served_spec(served_checkpoints["instruct"], server_url))
    continued = GenerationRequest(messages=chat("hi").messages, assistant_prefix="Hello, I am")

    with pytest.raises(ModelRuntimeError, match="request 1 .*HTTP 422.*continue_final_message"):
        runner.generate([chat("hi"), continued])


def test_closed_port_is_a_runtime_error(served_checkpoints):
    runner = OpenAIRunner(served_spec(served_checkpoints["instruct"], f"http://127.0.0.1:{find_free_port()}"))

    with pytest.raises(ModelRuntimeError, match="ConnectError") as caught:
        runner.generate([chat("anyone there?")])
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
