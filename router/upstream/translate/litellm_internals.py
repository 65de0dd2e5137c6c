"""What the router reads or changes of litellm beyond its public calls, in one place.

The public surface (`acompletion`, `token_counter`, `litellm.exceptions`, module
settings such as `num_retries`) is used where it is needed. Everything else, which
litellm may move or rename between minor versions, is here, written for every version
in pyproject's `translate` range (CI runs the translation tests at both ends):

- the Anthropic Messages adapter and its stream wrapper, under
  `llms.anthropic.experimental_pass_through.adapters` in 1.104, `.pass_through.adapters`
  in 1.106 and `.messages.adapters` in 1.110 (where the 1.106 path still imports, with a
  DeprecationWarning): the first that exists is used;
- `AsyncHTTPHandler`, patched so that litellm's clients follow no redirect, and so that
  the transports of each client it makes (httpx's `_transport` and `_mounts`) read
  answers within the limits (bounded.py). Its
  `follow_redirects` argument is why the range starts at 1.104: 1.102 hard-codes
  redirects in `create_client` (and 1.100 has no Anthropic adapter);
- the `_skip_mcp_handler` call argument;
- `BaseLLMException`, the provider error litellm keeps down an exception chain;
- a stream's provider iterator and its line generator, to close the connection;
- `_hidden_params`, where a result keeps the provider's response headers;
- `AsyncHTTPHandler(transport=...)` and `get_ssl_configuration`, for the client a key's
  `proxy:` hands to litellm's Anthropic handler and its generic HTTP handler (Gemini,
  OpenRouter, Groq, ...: `proxied_handler`); and
  what its OpenAI-compatible handlers take from an OpenAI SDK client handed to them
  (`proxied_openai_client`).

Only ever called once litellm is imported (`runtime.load()`), except `hidden_headers`,
which only reads attributes.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from typing import Any

from router.types import Proxy
from router.upstream import keepalive

# litellm (1.104 to 1.110) checks every request with `tools` for its proxy's MCP
# gateway by importing a module that needs the optional `mcp` package, so without this
# any tool call fails with ModuleNotFoundError. The router has no MCP gateway.
SKIP_MCP: dict[str, Any] = {"_skip_mcp_handler": True}

_ADAPTER_PACKAGES = (
    "litellm.llms.anthropic.messages.adapters",  # 1.110
    "litellm.llms.anthropic.pass_through.adapters",  # 1.106
    "litellm.llms.anthropic.experimental_pass_through.adapters",  # 1.104
)
_PROVIDER_HEADER = "llm_provider-"


def _adapter_module(name: str) -> Any:
    """`<adapters package>.<name>`, from the first package path this litellm has."""
    for package in _ADAPTER_PACKAGES:
        module = f"{package}.{name}"
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if not module.startswith(exc.name or "-"):
                raise  # a module the adapter needs is missing, not the adapter itself
            continue
    raise ImportError(f"this litellm has no Anthropic adapter ({name}); see pyproject's range")


@functools.cache
def anthropic_adapter() -> Any:
    """litellm's `AnthropicAdapter`: Messages to chat and chat answers back."""
    return _adapter_module("transformation").AnthropicAdapter()


def anthropic_stream_wrapper(**arguments: Any) -> Any:
    """litellm's `AnthropicStreamWrapper`: chat chunks as Anthropic's events."""
    return _adapter_module("streaming_iterator").AnthropicStreamWrapper(**arguments)


def base_llm_exception() -> type[BaseException]:
    from litellm.llms.base_llm.chat.transformation import BaseLLMException

    return BaseLLMException


def follow_no_redirects() -> None:
    """litellm's HTTP clients (AsyncHTTPHandler, which its Anthropic and Gemini handlers
    use) follow redirects by default, and would carry the key to wherever a misconfigured
    or hostile base URL points. The router's own client never follows one: a redirect
    must come back as the provider's answer, so the route fails over (README "How it
    chooses and fails over"). Set before litellm makes its first client; a caller that
    asks for redirects by name still gets them."""
    from litellm.llms.custom_httpx import http_handler

    handler = http_handler.AsyncHTTPHandler
    original = handler.__init__
    if getattr(original, "_router_no_redirects", False):
        return

    @functools.wraps(original)
    def init(self: object, *args: object, follow_redirects: bool = False, **kwargs: object) -> None:
        original(self, *args, follow_redirects=follow_redirects, **kwargs)  # type: ignore[arg-type]

    init._router_no_redirects = True  # type: ignore[attr-defined]
    handler.__init__ = init  # type: ignore[method-assign]


def bound_answers() -> None:
    """Every httpx client litellm's `AsyncHTTPHandler` makes (its own, cached per
    provider, and the one a key's `proxy:` hands it) reads answers within the process's
    limits (bounded.py). Its clients' transports (`_transport`, `_mounts`: httpx 0.28)
    are wrapped as each client is made (`create_client`: 1.104 to 1.110); on a litellm
    without that method, nothing."""
    from litellm.llms.custom_httpx import http_handler

    from router.upstream.translate.bounded import bounded_client

    handler = http_handler.AsyncHTTPHandler
    original = getattr(handler, "create_client", None)
    if original is None or getattr(original, "_router_bounded", False):
        return

    @functools.wraps(original)
    def create_client(self: object, *args: object, **kwargs: object) -> Any:
        client = original(self, *args, **kwargs)
        bounded_client(client)
        return client

    create_client._router_bounded = True  # type: ignore[attr-defined]
    handler.create_client = create_client  # type: ignore[method-assign]


def close_failed_tunnels() -> None:
    """httpcore (1.0.x, `AsyncTunnelHTTPConnection`) keeps the connection to the proxy
    when anything fails between its CONNECT and a usable tunnel: a TLS handshake cut
    short by the router's `connect` deadline or the client leaving (which
    `AnyIOStream.start_tls` does not close either), or one timing out. Its socket stayed
    open, and the pool kept the entry as active for good, so after 500 such attempts
    (the key's pool) the key's translated requests waited on the pool until they timed
    out (helper-56, helper-58; encode/httpcore#1023, open). Here such a tunnel closes
    its connection to the proxy, and the pool drops the entry at once. A close
    cancelled again is cancelled; any other error of it is the tunnel's own, which
    goes up. On another httpcore, without that class, method or attribute, nothing."""
    try:
        from httpcore._async.http_proxy import AsyncTunnelHTTPConnection
    except ImportError:  # pragma: no cover - another httpcore
        return
    original = getattr(AsyncTunnelHTTPConnection, "handle_async_request", None)
    if original is None or getattr(original, "_router_closes_failed", False):
        return

    @functools.wraps(original)
    async def handle_async_request(self: Any, request: Any) -> Any:
        try:
            return await original(self, request)
        except BaseException:
            if getattr(self, "_connected", True) is False:
                with contextlib.suppress(Exception):
                    await self._connection.aclose()
            raise

    handle_async_request._router_closes_failed = True  # type: ignore[attr-defined]
    AsyncTunnelHTTPConnection.handle_async_request = handle_async_request  # type: ignore[method-assign]


def _proxy_transport(proxy: Proxy | None) -> Any:
    """An httpx transport whose every request goes through `proxy` (None: direct), with
    litellm's TLS settings (`get_ssl_configuration`: SSL_VERIFY, SSL_CERT_FILE,
    `litellm.ssl_verify`) and its cap on connections to one host (its aiohttp clients'
    `AIOHTTP_CONNECTOR_LIMIT_PER_HOST`, 500 unless set; 0: none) rather than httpx's 100,
    past which a key's requests would queue."""
    import httpx
    from litellm import constants
    from litellm.llms.custom_httpx.http_handler import get_ssl_configuration

    through = None
    if proxy is not None:
        credentials = {"Proxy-Authorization": proxy.authorization} if proxy.authorization else None
        through = httpx.Proxy(f"http://{proxy.shown}", headers=credentials)
    cap = int(getattr(constants, "AIOHTTP_CONNECTOR_LIMIT_PER_HOST", 500))
    limits = httpx.Limits(
        max_connections=cap if cap > 0 else None, max_keepalive_connections=cap if cap > 0 else None
    )
    return httpx.AsyncHTTPTransport(
        proxy=through,
        verify=get_ssl_configuration(None),
        limits=limits,
        socket_options=keepalive.SOCKET_OPTIONS,  # as the router's own connections
    )


async def close_expired(client: Any) -> None:
    """Close the idle connections of `client` (one `proxied_handler` or
    `proxied_openai_client` made) that are past httpx's keep-alive expiry (5 s), or that
    their server closed. httpcore does this only when the pool is next used, so a key
    whose translated traffic stopped kept its connections open (or half closed by the
    provider, CLOSE-WAIT) for good. This is what httpcore's pool runs when a request
    ends (`_assign_requests_to_connections`, then `_close_connections`, 1.0.x), with no
    request queued; on another httpcore, whose pool lacks them, nothing."""
    transport = getattr(client, "_router_transport", None)  # a handler's (_kept_transport)
    if transport is None:
        http = getattr(client, "client", None) or getattr(client, "_client", None)
        transport = getattr(http, "_transport", None)
    pool = getattr(transport, "_pool", None)
    assign = getattr(pool, "_assign_requests_to_connections", None)
    lock = getattr(pool, "_optional_thread_lock", None)
    close = getattr(pool, "_close_connections", None)
    if assign is None or lock is None or close is None:
        return
    with lock:
        closing = assign()
    await close(closing)


def proxied_handler(proxy: Proxy | None) -> Any:
    """litellm's `AsyncHTTPHandler` whose every request goes through `proxy` (None: direct,
    whatever HTTPS_PROXY says), for the `client=` argument of a call to litellm's
    Anthropic handler or its generic HTTP handler (Gemini, OpenRouter, Groq, ...:
    egress.py).

    Given a `transport`, the handler builds each of its httpx clients on it with
    `trust_env=False` (no proxy variables read) and its `follow_redirects`: the client it
    keeps and the one it makes to retry after a connection error alike, so the retry
    takes the same proxy (1.104 to 1.110)."""
    from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

    kept = _kept_transport(_proxy_transport(proxy))
    handler = AsyncHTTPHandler(transport=kept, follow_redirects=False)
    handler._router_transport = kept.inner  # closed by close_client(), with the handler
    return handler


def _kept_transport(inner: Any) -> Any:
    """`inner` as the handler's clients see it: one of them closing does not close it.
    The handler's retry after a connection error builds a client on the same transport
    and closes that client once the retry returns (`post`, 1.104 to 1.110), which closed
    the key's pool: every other request of the key in flight was cut, and a stream the
    retry returned too. The key's own close (`close_client`) closes `inner`."""
    import httpx

    class KeptTransport(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = inner

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return await inner.handle_async_request(request)

        async def aclose(self) -> None:
            pass  # the key's, not one client's: close_client() closes it

    return KeptTransport()


async def close_client(client: Any) -> None:
    """Close a client `proxied_handler` or `proxied_openai_client` made, with its
    connections."""
    await client.close()
    inner = getattr(client, "_router_transport", None)
    if inner is not None:
        await inner.aclose()


# Azure API versions that litellm sends to the resource's OpenAI-style `/openai/v1/`
# surface with a plain OpenAI client (`BaseAzureLLM._is_azure_v1_api_version`).
_AZURE_V1_VERSIONS = frozenset({"v1", "latest", "preview"})


def proxied_openai_client(
    proxy: Proxy | None,
    *,
    azure: bool,
    api_key: str,
    api_base: str | None,
    api_version: str | None,
) -> Any:
    """An OpenAI SDK client (`AsyncAzureOpenAI` for an Azure key) whose every request goes
    through `proxy` (None: direct), for the `client=` argument of a call to litellm's
    OpenAI-compatible handlers (`openai`, `azure`, and the providers it sends as
    custom OpenAI ones: egress.py).

    Given a client, those handlers send with it as it is: its key and base URL, not the
    call's (`OpenAIChatCompletion._get_openai_client`, `get_azure_openai_client`), so
    it is built with the key's own, as litellm would build it (Azure: litellm's default
    API version, and `/openai/v1/` for the v1 versions). Its httpx client reads no proxy
    variable (`trust_env=False`), follows no redirect (litellm's own follows them), and
    keeps litellm's TLS settings. The SDK retries nothing: the router fails over."""
    import httpx
    import litellm
    import openai

    from router.upstream.translate.bounded import bounded_client

    inner = _proxy_transport(proxy)
    http_client = httpx.AsyncClient(transport=inner, trust_env=False, follow_redirects=False)
    bounded_client(http_client)  # its answers within the limits, as litellm's own clients'
    version = api_version or litellm.AZURE_DEFAULT_API_VERSION
    client: Any
    if not azure:
        client = openai.AsyncOpenAI(
            api_key=api_key, base_url=api_base, http_client=http_client, max_retries=0
        )
    elif version in _AZURE_V1_VERSIONS:
        base = f"{(api_base or '').rstrip('/')}/openai/v1/"
        client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base, http_client=http_client, max_retries=0
        )
    else:
        client = openai.AsyncAzureOpenAI(
            api_key=api_key,
            azure_endpoint=api_base,
            api_version=version,
            http_client=http_client,
            max_retries=0,
        )
    client._router_transport = inner  # its pool, for close_expired() and close_client()
    return client


def provider_api_base(provider: str) -> str | None:
    """litellm's default base URL for an OpenAI-compatible `provider` (Perplexity,
    DeepInfra, ...), as `get_llm_provider` resolves it before a call; None when it has
    none. A client of ours handed to such a call is sent to its own base URL, so it
    must carry this one when the key gives none."""
    import litellm

    try:
        return litellm.get_llm_provider(model=f"{provider}/default")[3] or None
    except Exception:  # litellm raises its BadRequestError for a provider it lacks
        return None


def stream_lines(stream: Any) -> Any | None:
    """The line generator under a litellm stream's provider iterator, when it has one.

    Anthropic's iterator has no `aclose`; it reads httpx's `aiter_lines()` generator,
    and closing that generator unwinds httpx's generators down to litellm's aiohttp
    stream, whose `finally` closes the connection."""
    iterator = getattr(stream, "completion_stream", None)
    lines = getattr(iterator, "streaming_response", None)
    return lines if lines is not None and hasattr(lines, "aclose") else None


def hidden_headers(result: Any) -> dict[str, str]:
    """The provider's response headers, which litellm keeps prefixed in `_hidden_params`
    (its documented way to read them): rate-limit headroom and request ids."""
    hidden = getattr(result, "_hidden_params", None)
    extra = hidden.get("additional_headers") if isinstance(hidden, dict) else None
    if not isinstance(extra, dict):
        return {}
    return {
        name[len(_PROVIDER_HEADER) :]: str(value)
        for name, value in extra.items()
        if name.startswith(_PROVIDER_HEADER)
    }
