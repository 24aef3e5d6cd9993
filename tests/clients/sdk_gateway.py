"""Drives the gateway with the official `openai` and `anthropic` Python SDKs, as their users would:
plain, streamed and tool-calling completions, embeddings, the Anthropic Messages surface, and every
error a client can get, each of which must surface as the SDK's own typed exception. Prints one JSON
document for the Rust test to check.

Usage: python3 sdk_gateway.py BASE_URL  (the tenant's token is read from TENANT_TOKEN and a token
without the chat scope from NARROW_TOKEN, so neither appears in a process listing).
"""

import json
import os
import sys

import anthropic
import httpx
import openai

base = sys.argv[1]
token = os.environ["TENANT_TOKEN"]
narrow = os.environ["NARROW_TOKEN"]
oa = openai.OpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0)
# The Anthropic SDK's default credential header (`x-api-key`) carries the same token.
an = anthropic.Anthropic(base_url=base, api_key=token, max_retries=0)
an_bearer = anthropic.Anthropic(base_url=base, api_key=None, auth_token=token, max_retries=0)
out = {}

# --- OpenAI surface ---
out["models"] = sorted(m.id for m in oa.models.list())
out["model_get"] = oa.models.retrieve("gpt-4o-mini").id
plain = oa.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "hello from the openai sdk"}]
)
out["plain"] = {
    "content": plain.choices[0].message.content,
    "model": plain.model,
    "usage": [plain.usage.prompt_tokens, plain.usage.completion_tokens],
    "id": plain.id,
}
chunks = list(
    oa.chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
)
out["stream"] = {
    "content": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
    "finish_reason": [c.choices[0].finish_reason for c in chunks if c.choices][-1],
    "usage": [chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens],
    "chunks": len(chunks),
}
tools = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather by city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
tool = oa.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "weather in Paris?"}], tools=tools
)
call = tool.choices[0].message.tool_calls[0]
out["tool"] = {
    "name": call.function.name,
    "arguments": json.loads(call.function.arguments),
    "finish_reason": tool.choices[0].finish_reason,
}
stream_calls = {}
for c in oa.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "weather?"}],
    tools=tools,
    stream=True,
):
    for d in (c.choices[0].delta.tool_calls or []) if c.choices else []:
        entry = stream_calls.setdefault(d.index, {"name": None, "arguments": ""})
        if d.function and d.function.name:
            entry["name"] = d.function.name
        if d.function and d.function.arguments:
            entry["arguments"] += d.function.arguments
out["tool_stream"] = {k: {"name": v["name"], "arguments": json.loads(v["arguments"])} for k, v in stream_calls.items()}
json_mode = oa.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "answer in json"}],
    response_format={"type": "json_object"},
)
out["json_mode"] = json.loads(json_mode.choices[0].message.content)
emb = oa.embeddings.create(model="text-embedding-3-small", input=["one two", "three"])
out["embeddings"] = {"count": len(emb.data), "dims": len(emb.data[0].embedding), "tokens": emb.usage.prompt_tokens}


def typed(call):
    """The SDK exception class, status and error code a call ends in."""
    try:
        call()
        return None
    except (openai.APIStatusError, anthropic.APIStatusError) as e:
        body = e.body if isinstance(e.body, dict) else {}
        code = body.get("code") if "code" in body else (body.get("error") or {}).get("type")
        return {"class": type(e).__name__, "status": e.status_code, "code": code}


msgs = [{"role": "user", "content": "x"}]
out["errors"] = {
    "bad_request": typed(lambda: oa.chat.completions.create(model="gpt-4o-mini", messages=msgs, extra_body={"api_base": "http://evil.example"})),
    "unauthenticated": typed(lambda: openai.OpenAI(base_url=f"{base}/v1", api_key="not-a-token", max_retries=0).models.list()),
    "forbidden_model": typed(lambda: oa.chat.completions.create(model="gpt-4o", messages=msgs)),
    "forbidden_scope": typed(lambda: openai.OpenAI(base_url=f"{base}/v1", api_key=narrow, max_retries=0).chat.completions.create(model="gpt-4o-mini", messages=msgs)),
    "not_found": typed(lambda: oa.models.retrieve("gpt-4o")),
    "too_large": typed(lambda: oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x" * (5 << 20)}])),
    "too_many_tokens": typed(lambda: oa.chat.completions.create(model="gpt-4o-mini", messages=msgs, max_tokens=100000)),
}
r = httpx.put(f"{base}/v1/chat/completions", headers={"authorization": f"Bearer {token}"})
out["errors"]["method_not_allowed"] = {"status": r.status_code, "body": r.json()}

# --- Anthropic surface ---
m = an.messages.create(
    model="claude-haiku-4-5",
    max_tokens=64,
    system="be brief",
    messages=[{"role": "user", "content": "hello from the anthropic sdk"}],
)
out["messages"] = {
    "text": m.content[0].text,
    "model": m.model,
    "stop_reason": m.stop_reason,
    "usage": [m.usage.input_tokens, m.usage.output_tokens],
}
with an.messages.stream(
    model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "stream it"}]
) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
out["messages_stream"] = {
    "text": text,
    "stop_reason": final.stop_reason,
    "usage": [final.usage.input_tokens, final.usage.output_tokens],
}
# The Anthropic surface over an OpenAI model: the client sees Anthropic's format either way.
cross = an.messages.create(model="gpt-4o-mini", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
out["messages_bearer"] = an_bearer.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}]).stop_reason
out["messages_cross"] = {"text": cross.content[0].text, "stop_reason": cross.stop_reason}
atool = an.messages.create(
    model="claude-haiku-4-5",
    max_tokens=64,
    tools=[{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
    messages=[{"role": "user", "content": "weather?"}],
)
out["messages_tool"] = [
    {"type": b.type, "name": getattr(b, "name", None), "input": getattr(b, "input", None)} for b in atool.content
]
out["messages_errors"] = {
    "bad_request": typed(lambda: an.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=msgs, extra_body={"base_url": "http://evil.example"})),
    "unauthenticated": typed(lambda: anthropic.Anthropic(base_url=base, api_key=None, auth_token="not-a-token", max_retries=0).messages.create(model="claude-haiku-4-5", max_tokens=5, messages=msgs)),
    "forbidden_model": typed(lambda: an.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=msgs)),
    "too_large": typed(lambda: an.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "x" * (5 << 20)}])),
}
print(json.dumps(out))
