"""The /v1 model id rule (services/gateway.py) and the request mapping (services/gateway_chat.py)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta

import httpx
import pytest

from server.errors import NotFound
from server.providers.base import ChatMessage, ChatRequest, Delta
from server.providers.ollama import OllamaProvider
from server.providers.openai_compat import OpenAICompatProvider
from server.schemas.v1 import ChatCompletionCreate
from server.services import gateway, gateway_chat
from server.services import models as models_service
from server.services.models import ResolvedModel


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Work GPU #2", "work-gpu-2"),
        ("  OpenAI  ", "openai"),
        ("vLLM_box.lan", "vllm-box-lan"),
        ("### ", "provider"),
    ],
)
def test_provider_slug(name: str, slug: str) -> None:
    assert gateway.provider_slug(name) == slug


def test_slug_clashes_go_to_the_oldest_first() -> None:
    now = datetime(2026, 1, 1)
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    slugs = gateway.provider_slugs(
        [(b, "GPU box", now + timedelta(1)), (a, "gpu-box", now), (c, "GPU  Box", now + timedelta(2))]
    )
    assert slugs == {a: "gpu-box", b: "gpu-box-2", c: "gpu-box-3"}


def make_map() -> tuple[gateway.IdMap, uuid.UUID, uuid.UUID, uuid.UUID, uuid.UUID]:
    default, other, cloud, preset = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    id_map = gateway.IdMap(
        default_ollama=default,
        providers={
            default: ("ollama-local", "ollama", "Ollama (local)"),
            other: ("gpu", "ollama", "GPU"),
            cloud: ("cloud", "openai", "Cloud"),
        },
        presets={"Pirate": preset},
    )
    return id_map, default, other, cloud, preset


def test_ids_map_both_ways() -> None:
    id_map, default, other, cloud, preset = make_map()
    assert id_map.v1_id(default, "llama3.2:latest") == "llama3.2:latest"
    assert id_map.v1_id(other, "llama3.2:latest") == "gpu/llama3.2:latest"
    assert id_map.catalog_id("llama3.2:latest") == models_service.ollama_model_id(default, "llama3.2:latest")
    assert id_map.catalog_id("hf.co/org/model:Q4") == models_service.ollama_model_id(
        default, "hf.co/org/model:Q4"
    )
    assert id_map.catalog_id("gpu/qwen3:0.6b") == models_service.ollama_model_id(other, "qwen3:0.6b")
    assert id_map.catalog_id("cloud/org/model") == models_service.openai_model_id(cloud, "org/model")
    assert id_map.catalog_id("Pirate") == models_service.config_model_id(preset)
    for model_id in ("", "gpu/", "cloud/ bad", "Not A Model!"):
        with pytest.raises(NotFound):
            id_map.catalog_id(model_id)


def resolved(**defaults) -> ResolvedModel:
    return ResolvedModel(
        provider=None,  # type: ignore[arg-type]
        adapter=None,  # type: ignore[arg-type]
        upstream_model="llama3.2:latest",
        defaults={"system_prompt": "", "options": {}, **defaults},
    )


def test_request_options_and_formats() -> None:
    body = ChatCompletionCreate.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": "sys"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            ],
            "temperature": 0.5,
            "max_tokens": 10,
            "max_completion_tokens": 20,
            "stop": "x",
            "seed": 3,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": {"type": "object"}},
            },
            "whatever": True,
        }
    )
    request = gateway_chat.build_request(body, resolved(options={"temperature": 1.0, "top_p": 0.9}))
    assert [(m.role, m.content) for m in request.messages] == [("system", "sys"), ("user", "ab")]
    assert request.options == {"temperature": 0.5, "top_p": 0.9, "max_tokens": 20, "stop": "x", "seed": 3}
    ollama = OllamaProvider("http://x", None).build_body(request)  # type: ignore[arg-type]
    assert ollama["format"] == {"type": "object"} and ollama["options"]["num_predict"] == 20
    compat = OpenAICompatProvider("http://x/v1", None).build_body(request)  # type: ignore[arg-type]
    assert compat["response_format"]["type"] == "json_schema"


def test_json_mode_is_ollama_format_json() -> None:
    body = ChatCompletionCreate.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "a"}],
            "response_format": {"type": "json_object"},
        }
    )
    request = gateway_chat.build_request(body, resolved())
    assert OllamaProvider("http://x", None).build_body(request)["format"] == "json"  # type: ignore[arg-type]
    plain = ChatRequest(model="m", messages=[])
    assert "format" not in OllamaProvider("http://x", None).build_body(plain)  # type: ignore[arg-type]


def test_openai_tool_call_fragments_are_joined() -> None:
    """An OpenAI-compatible upstream streams a tool call in fragments keyed by index: one whole call."""
    events = [
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": ""},
                            }
                        ],
                    },
                }
            ]
        },
        {
            "choices": [
                {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}}
            ]
        },
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
                    "finish_reason": "tool_calls",
                }
            ]
        },
    ]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    sent: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, text=body, headers={"Content-Type": "text/event-stream"})

    async def run() -> list:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            adapter = OpenAICompatProvider("http://upstream/v1", http)
            request = ChatRequest(
                model="m",
                messages=[ChatMessage("user", "hi", images=("https://example.com/cat.png",))],
                tools=[{"type": "function", "function": {"name": "get_weather"}}],
                tool_choice="auto",
            )
            return [event async for event in adapter.stream_chat(request)]

    got = asyncio.run(run())
    calls = [call for event in got if isinstance(event, Delta) for call in event.tool_calls]
    assert calls == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
    ]
    assert sent[0]["tools"][0]["function"]["name"] == "get_weather" and sent[0]["tool_choice"] == "auto"
    assert sent[0]["messages"][0]["content"] == [
        {"type": "text", "text": "hi"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
