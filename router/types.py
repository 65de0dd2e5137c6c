"""The parsed config: value types every layer reads (what an attempt produced is in
`router/outcomes.py`).

Everything here is frozen. `config.py` builds these once at startup; nothing on the
request path mutates them. Secrets are `repr=False` so that a logged or printed value
never carries a key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntFlag, StrEnum

# The distribution's name for `pip install` (the command is `llm-router`; `llm-router` is
# another project's name on PyPI), and the extra that brings translation (litellm).
DISTRIBUTION = "llm-keypool-router"
TRANSLATE_EXTRA = f"pip install '{DISTRIBUTION}[translate]'"

# The providers a key may name, with the api_base each defaults to. Each follows its own
# SDK's convention: OpenAI-compatible bases end in /v1, Anthropic's is the host only (as
# ANTHROPIC_BASE_URL), Azure's is the resource endpoint and has no default.
DEFAULT_API_BASES: Mapping[str, str | None] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "azure": None,
    # Through litellm (translate/): Google AI Studio, host only; litellm adds /v1beta.
    "gemini": "https://generativelanguage.googleapis.com",
}


class Operation(StrEnum):
    """A client-facing API; each is served by routes whose provider speaks it natively."""

    CHAT = "chat"  # OpenAI /v1/chat/completions
    EMBEDDINGS = "embeddings"  # OpenAI /v1/embeddings
    RESPONSES = "responses"  # OpenAI /v1/responses
    MESSAGES = "messages"  # Anthropic /v1/messages
    COUNT_TOKENS = "count_tokens"  # Anthropic /v1/messages/count_tokens


class Capability(IntFlag):
    """What a request may need of a route beyond its API (README "Capabilities").

    A route holds the set as a plain int bitmask (`Route.capabilities`), and so does a
    request (`Call.needs`): the request path only ands two ints."""

    TOOLS = 1  # tools / functions
    IMAGES = 2  # image parts in the input
    JSON_OBJECT = 4  # JSON mode: response_format {"type": "json_object"}
    JSON_SCHEMA = 8  # structured output: a json_schema format


ALL_CAPABILITIES = sum(capability.value for capability in Capability)
# routes.yaml's names for them, and how an error message says each is missing.
CAPABILITY_NAMES: Mapping[str, Capability] = {
    "tools": Capability.TOOLS,
    "images": Capability.IMAGES,
    "json_object": Capability.JSON_OBJECT,
    "json_schema": Capability.JSON_SCHEMA,
}
CAPABILITY_WORDS: Mapping[Capability, str] = {
    Capability.TOOLS: "tools",
    Capability.IMAGES: "images in the input",
    Capability.JSON_OBJECT: "JSON mode (json_object)",
    Capability.JSON_SCHEMA: "structured output (json_schema)",
}


@dataclass(frozen=True, slots=True)
class Price:
    """USD per token: input, output, and input read from the provider's prompt cache
    (`cached_input`) or written to it (`cache_write`, Anthropic's cache_creation). None
    for either: not known, charged as fresh input (no discount)."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None

    def cost(
        self, input_tokens: int, output_tokens: int, cached_tokens: int = 0, written_tokens: int = 0
    ) -> float:
        """`input_tokens`: every input token, those read from or written to the cache included."""
        cost = input_tokens * self.input + output_tokens * self.output
        if cached_tokens and self.cached_input is not None:
            cost += cached_tokens * (self.cached_input - self.input)
        if written_tokens and self.cache_write is not None:
            cost += written_tokens * (self.cache_write - self.input)
        return cost

    @property
    def blended(self) -> float:
        """One number to rank models by: input and output price together."""
        return self.input + self.output


@dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    """Spend caps in USD; a key or model that reaches one is out until the period turns
    (UTC midnight, or the first of the month)."""

    usd_per_day: float | None = None
    usd_per_month: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Proxy:
    """An HTTP proxy the router reaches providers through: CONNECT tunnels for https://
    targets, absolute-form requests for http:// ones (config/proxies.py reads it)."""

    host: str
    port: int
    # "Basic ..." from the URL's user:password, sent as Proxy-Authorization; never shown.
    authorization: str | None = field(default=None, repr=False)

    @property
    def shown(self) -> str:
        """host:port, for messages and logs (no credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Key:
    """One credential at one provider, referred to by `name` everywhere else."""

    name: str
    provider: str
    api_base: str
    api_key: str = field(repr=False)
    api_version: str | None = None  # Azure's api-version query parameter
    budget: Budget | None = None
    # Ask this key's streams for their usage chunk when the client did not (failover/usage_ask.py).
    stream_usage: bool = True
    # The proxy this key's api_base is reached through (None: direct), resolved once at
    # load from `proxy:` or HTTP(S)_PROXY/ALL_PROXY/NO_PROXY.
    proxy: Proxy | None = None
    # Whether routes.yaml set `proxy:` (a URL or none). Requests translated through
    # litellm then take `proxy` too; otherwise litellm reads the environment itself.
    proxy_given: bool = False
    # routes.yaml `headers:`, sent on every upstream request of this key (passthrough and
    # litellm's extra_headers); never shown. `header_secrets`: the values from ${VAR}s,
    # redacted like api_key.
    headers: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    header_secrets: tuple[str, ...] = field(default=(), repr=False, compare=False)
    # Which account this is, as a short digest of what makes one (provider, address,
    # credential, api-version, headers): the health state of a key and its routes is
    # kept under it, so a new credential under the same name starts clean on every
    # replica sharing Redis and across a snapshot, while the old one keeps its blocks.
    account: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        identity = [self.provider, self.api_base, self.api_key, self.api_version]
        identity.append(sorted((name.lower(), value) for name, value in self.headers.items()))
        digest = hashlib.blake2b(json.dumps(identity).encode(), digest_size=6).hexdigest()
        object.__setattr__(self, "account", digest)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Route:
    """One way to serve a client model: a key plus the model name the upstream knows.

    Compared and hashed by identity (eq=False): each route is built once from the
    config, and route sets key caches on the request path, where hashing every field
    (the Key's included) on each lookup would cost more than the lookup saves.
    """

    key: Key
    model: str
    priority: int = 1
    weight: float = 1.0
    price: Price | None = None  # routes.yaml's, else litellm's model data, else unknown
    max_input_tokens: int | None = None  # the context window, the same way
    # Capability bits (a Capability mask): routes.yaml's, else litellm's model data,
    # else all of them (a model nobody describes is assumed capable).
    capabilities: int = ALL_CAPABILITIES
    # The timeouts of attempts on this route when routes.yaml sets any on the route or
    # its model (merged at load: route over model over global); None: the global ones.
    timeouts: Timeouts | None = None
    # The provider's announced retirement of `model` (litellm's model data), YYYY-MM-DD;
    # None when none is known or the key reaches another API (config/retirements.py).
    retires: str | None = None
    # "key name / upstream model": the route's name in state, headers, logs and metrics.
    # Computed once; it is read many times per request.
    id: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", f"{self.key.name}/{self.model}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """A name clients send as `model`, its routes in config order and its fallbacks.

    `chain` is this model followed by every model reachable through `fallback`,
    depth-first, each once; it is resolved (and checked for cycles) at load.
    """

    name: str
    routes: tuple[Route, ...]
    fallback: tuple[str, ...] = ()
    chain: tuple[str, ...] = ()
    context_fallback: tuple[str, ...] = ()  # where a prompt too long for every route goes
    budget: Budget | None = None
    price: Price | None = None  # its preferred routes' price, for `fallback: cheaper`
    max_wait: float | None = None  # overrides failover.max_wait for requests to it
    affinity: bool = True  # keep a conversation on one key (rules/affinity.py)
    # The model's own `timeouts:` merged over the global ones (None: the global ones);
    # its `request` bounds requests to it. Its routes carry their merged copies.
    timeouts: Timeouts | None = None
    # Per operation, the routes whose provider serves it (natively or through litellm),
    # in config order: fixed at load, so the request path never works it out again.
    routes_for: Mapping[Operation, tuple[Route, ...]] = field(default_factory=dict)
    # Per operation, the Capability bits some route a request may reach lacks: only these
    # are looked for in a request (wire/needs.py); absent or 0, none is.
    checked_needs: Mapping[Operation, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Seconds. `first_byte`: until the response head (non-streaming) or the first SSE
    event (streaming); `idle`: between two stream chunks (for a stream, without a whole
    event); `request`: the whole client request, every failover included, until its
    answer or its stream's first event; `stream`: a stream from then to its end (Envoy's
    max_stream_duration), so that one trickling bytes cannot hold its client and its
    connection for ever."""

    connect: float = 5.0
    first_byte: float = 120.0
    idle: float = 60.0
    request: float = 600.0
    stream: float = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """What one upstream response may make the router hold. A response over a limit is
    that upstream's failure: the router fails over before the client has a byte, and
    ends the stream with an error event after. Defaults in the spirit of Envoy's."""

    max_head_bytes: int = 64 * 1024  # status line and headers (Envoy: 60 KiB)
    max_headers: int = 100  # header fields in one response head (Envoy: 100)
    max_body_bytes: int = 64 * 1024 * 1024  # a non-stream body, decoded
    max_event_bytes: int = 8 * 1024 * 1024  # one SSE event
    max_inflate_ratio: int = 200  # decoded bytes per compressed byte, past the first MiB
    max_connections_per_host: int = 512  # open to one scheme, host and port; more wait
    idle_connection_seconds: float = 30.0  # an unused keep-alive connection is closed


@dataclass(frozen=True, slots=True, kw_only=True)
class StateSettings:
    """Where cooldowns, disabled keys, open circuits, headroom and spend live: this
    process (`memory`) or Redis, shared by every replica that names the same prefix."""

    backend: str = "memory"  # or "redis"
    url: str = field(default="", repr=False)  # redis://[:password@]host:port/db; may hold a secret
    prefix: str = "llm-router"
    snapshot: str = ""  # memory only: a file the state is saved to and loaded from


@dataclass(frozen=True, slots=True, kw_only=True)
class FailoverSettings:
    """How hard the router tries and how long it stays away from a failing route."""

    max_attempts: int = 5
    cooldown_initial: float = 2.0  # 429 without a hint: 2, 4, 8, ... seconds
    cooldown_max: float = 300.0
    # The circuit opens when, within `breaker_window` seconds of a route's first transient
    # failure, at least `breaker_failures` of its calls failed and they were at least
    # `breaker_failure_rate` of its calls then.
    breaker_failures: int = 5
    breaker_failure_rate: float = 0.5
    breaker_window: float = 10.0
    breaker_open: float = 5.0  # first open period; doubles on each failed probe ...
    breaker_open_max: float = 120.0  # ... up to this
    key_disable: float = 3600.0  # quota / auth: key out of rotation for this long
    # Every route of the chain rate limited, the earliest back within this many seconds:
    # hold the request until then (at most this long in all) rather than answer 429.
    # 0 turns it off; a model's own `max_wait` overrides it.
    max_wait: float = 15.0
    max_waiting: int = 100  # requests held at once; more get the 429 at once


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 4000
    client_keys: tuple[str, ...] = field(default=(), repr=False)
    # When set, /metrics, /admin, /status and /admin/routes need one of these (and a
    # client key no longer opens them); unset, they stay as client auth leaves them.
    admin_keys: tuple[str, ...] = field(default=(), repr=False)
    allow_unauthenticated: bool = False
    max_body_bytes: int = 10 * 1024 * 1024
    # The bodies of every request in flight together (handlers/body_room.py); more: 503.
    # Unset in routes.yaml: this, or twice max_body_bytes when that is more.
    max_body_bytes_total: int = 64 * 1024 * 1024
    # A request head (request line and header fields) at most; a larger one gets 431.
    max_header_bytes: int = 64 * 1024
    # The front door (README "Front door"): seconds a client may take to send a request
    # head once it has begun one, and may sit idle between requests; open client
    # connections at most (clamped at start to what the open-files limit can hold).
    header_timeout: float = 30.0
    body_timeout: float = 60.0  # without a byte of a request body still due
    send_timeout: float = 60.0  # an answer's bytes piling up unread by the client
    idle_timeout: float = 75.0
    max_connections: int = 1024
    # Host names (any port) and Origins answered besides loopback ones; "*" allows any.
    # None: not set, so only checked without client_keys.
    allowed_hosts: tuple[str, ...] | None = None
    allowed_origins: tuple[str, ...] = ()
    # Shutdown (README "Signals and startup"): seconds the listener keeps accepting after
    # SIGTERM while /readyz says 503, then seconds requests and streams in flight get.
    drain_grace: float = 0.0
    drain_timeout: float = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceSettings:
    """OpenTelemetry traces (telemetry/tracing.py): where to send them and how many.
    Unset fields leave the standard OTEL_* variables in charge."""

    # An OTLP/HTTP collector, as OTEL_EXPORTER_OTLP_ENDPOINT (spans go to /v1/traces);
    # it may hold credentials: never logged.
    endpoint: str = field(default="", repr=False)
    sample_rate: float | None = None  # a fraction of new traces; None: OTEL_TRACES_SAMPLER


@dataclass(frozen=True, slots=True, kw_only=True)
class SkippedKey:
    """A key left out at load (its variable unset, say), reported by `check` and at start."""

    name: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    source: str
    server: ServerSettings
    keys: Mapping[str, Key]
    models: Mapping[str, ModelSpec]
    timeouts: Timeouts = Timeouts()
    failover: FailoverSettings = FailoverSettings()
    limits: Limits = Limits()
    state: StateSettings = StateSettings()
    traces: TraceSettings = TraceSettings()  # routes.yaml's telemetry.traces
    skipped_keys: tuple[SkippedKey, ...] = ()
    warnings: tuple[str, ...] = ()  # said once at start: literal keys, unset variables

    def all_routes(self) -> tuple[Route, ...]:
        seen: dict[str, Route] = {}
        for model in self.models.values():
            for route in model.routes:
                seen.setdefault(route.id, route)
        return tuple(seen.values())
