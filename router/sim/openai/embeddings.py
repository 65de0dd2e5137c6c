"""OpenAI embeddings (`POST /v1/embeddings`, Azure's `/embeddings`) as a `WireFormat`.

Vectors are deterministic: a hash of (model, text) spread over `dimensions` floats (8
unless the request asks for more) and scaled to unit length, as OpenAI's are. The
official SDK asks for `encoding_format: "base64"` unless told otherwise
(`openai/resources/embeddings.py`) and decodes little-endian float32, so both encodings
carry the same float32 values: a float answer and a base64 answer agree exactly.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from typing import Any

from aiohttp import web

from router.sim.openai import errors as openai_errors
from router.sim.openai.base import OpenAIWireFormat
from router.sim.openai.chat import object_with_model
from router.sim.tokens import estimate_tokens
from router.sim.wire_format import (
    EmbeddingInput,
    ErrorReply,
    FormatName,
    InvalidRequest,
    ModelCall,
    StreamEncoder,
    Usage,
    dumps,
)

DEFAULT_DIMENSIONS = 8
MAX_DIMENSIONS = 3072
_MAX_INPUTS = 2048


def parse_embeddings_request(body: bytes, *, deployment: str | None = None) -> ModelCall:
    data, model = object_with_model(body, deployment)
    if "input" not in data:
        raise InvalidRequest(openai_errors.missing_parameter("input"))
    texts, tokens = _inputs(data["input"])
    encoding = data.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise InvalidRequest(
            openai_errors.invalid_value("encoding_format", encoding, "'float', 'base64'")
        )
    dimensions = data.get("dimensions", DEFAULT_DIMENSIONS)
    if isinstance(dimensions, bool) or not isinstance(dimensions, int):
        raise InvalidRequest(openai_errors.invalid_type("dimensions", "an integer"))
    if dimensions < 1:
        raise InvalidRequest(openai_errors.below_min("dimensions", dimensions))
    if dimensions > MAX_DIMENSIONS:
        raise InvalidRequest(
            openai_errors.invalid_value("dimensions", dimensions, f"1 to {MAX_DIMENSIONS}")
        )
    return ModelCall(
        model=model,
        prompt_tokens=tokens,
        embedding=EmbeddingInput(texts=texts, encoding_format=encoding, dimensions=dimensions),
    )


def _inputs(value: Any) -> tuple[tuple[str, ...], int]:
    """The texts to embed and their token count: a string, strings, tokens, token arrays."""
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        items = [value]
    elif isinstance(value, list) and 0 < len(value) <= _MAX_INPUTS:
        items = value
    else:
        raise InvalidRequest(_invalid_input())
    texts: list[str] = []
    tokens = 0
    for item in items:
        if isinstance(item, str) and item:
            texts.append(item)
            tokens += estimate_tokens(item)
        elif isinstance(item, list) and item and all(_is_token(t) for t in item):
            texts.append(json.dumps(item))
            tokens += len(item)
        else:
            raise InvalidRequest(_invalid_input())
    return tuple(texts), tokens


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _invalid_input() -> ErrorReply:
    # OpenAI's wording for an empty string, an empty list or a wrongly typed input.
    return openai_errors.invalid_type("input", "a string, an array of strings or tokens")


def embedding_vector(model: str, text: str, dimensions: int) -> list[float]:
    """A unit-length vector from a hash of (model, text), exact in float32."""
    seed = hashlib.sha256(f"{model}\0{text}".encode()).digest()
    raw = b"".join(
        hashlib.sha256(seed + block.to_bytes(4, "big")).digest()
        for block in range(math.ceil(dimensions * 2 / 32))
    )
    values = [
        int.from_bytes(raw[2 * i : 2 * i + 2], "big") / 32767.5 - 1.0 for i in range(dimensions)
    ]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dimensions}f", packed))


def encode_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def embeddings_body(call: ModelCall, usage: Usage) -> bytes:
    assert call.embedding is not None
    request = call.embedding
    data = []
    for index, text in enumerate(request.texts):
        vector = embedding_vector(call.model, text, request.dimensions)
        encoded = encode_base64(vector) if request.encoding_format == "base64" else vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return dumps(
        {
            "object": "list",
            "data": data,
            "model": call.model,
            "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
        }
    )


class OpenAIEmbeddings(OpenAIWireFormat):
    name: FormatName = "openai_embeddings"

    def parse(self, request: web.Request, body: bytes, request_id: str) -> ModelCall:
        return parse_embeddings_request(body)

    def body(self, call: ModelCall, text: str, usage: Usage) -> bytes:
        return embeddings_body(call, usage)

    def encoder(self, call: ModelCall, text: str, usage: Usage) -> StreamEncoder:
        raise TypeError("embeddings are never streamed")
