"""Drives the runtime with the official `openai` Python SDK: list models, a plain and a streamed chat
completion, and a refused model. Prints one JSON document for the Rust test to check.

Usage: python3 openai_sdk.py BASE_URL  (the token is read from the TENANT_TOKEN environment variable,
so it never appears in a process listing).
"""

import json
import os
import sys

import openai

client = openai.OpenAI(base_url=sys.argv[1], api_key=os.environ["TENANT_TOKEN"], max_retries=0)
result = {}
result["models"] = sorted(m.id for m in client.models.list())
plain = client.chat.completions.create(
    model="fast", messages=[{"role": "user", "content": "hello from the sdk"}]
)
result["plain"] = {
    "content": plain.choices[0].message.content,
    "model": plain.model,
    "prompt_tokens": plain.usage.prompt_tokens,
    "completion_tokens": plain.usage.completion_tokens,
}
chunks = list(
    client.chat.completions.create(
        model="smart",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
)
result["stream"] = {
    "content": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
    "finish_reason": [c.choices[0].finish_reason for c in chunks if c.choices][-1],
    "completion_tokens": chunks[-1].usage.completion_tokens,
}
try:
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    result["refused"] = None
except openai.PermissionDeniedError as e:
    result["refused"] = {"status": e.status_code, "code": e.code}
print(json.dumps(result))
