"""Which proxy a key takes, read once at load: the environment as curl and requests read
it, NO_PROXY's forms, a key's `proxy:` override, and clear errors for what is not spoken."""

from __future__ import annotations

import base64

import pytest

from router.config import parse_config
from router.config.proxies import NoProxy, ProxyEnvironment, ProxyError, parse_proxy
from router.errors import ConfigError
from router.types import Proxy
from tests.configs import key, model, route, routes_yaml


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("http://proxy.corp:3128", "proxy.corp", 3128),
        ("proxy.corp:3128", "proxy.corp", 3128),  # no scheme: http, as in curl
        ("http://proxy.corp", "proxy.corp", 1080),  # curl's default port
        ("HTTP://10.0.0.1:8080/", "10.0.0.1", 8080),
        ("http://[::1]:3128", "::1", 3128),
    ],
)
def test_proxy_urls(text, host, port):
    assert parse_proxy(text) == Proxy(host=host, port=port)


def test_credentials_become_basic_auth_and_are_never_shown():
    proxy = parse_proxy("http://al%40ice:p%3Ass@proxy:3128")
    assert proxy.authorization == "Basic " + base64.b64encode(b"al@ice:p:ss").decode()
    assert "p:ss" not in repr(proxy) and "cDpzcw" not in repr(proxy)
    assert proxy.shown == "proxy:3128"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("socks5://user:pw@proxy:1080", "SOCKS proxies are not supported"),
        ("socks5h://proxy:1080", "SOCKS proxies are not supported"),
        ("https://proxy:443", "https:// proxy (TLS to the proxy), which is not supported"),
        ("ftp://proxy:21", "not a proxy URL"),
        ("http://proxy:99999", "not a proxy URL"),
    ],
)
def test_unusable_proxies(text, said):
    with pytest.raises(ProxyError, match=said.replace("(", r"\(").replace(")", r"\)")) as caught:
        parse_proxy(text)
    assert "pw" not in str(caught.value)


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "bypassed"),
    [
        ("*", "api.openai.com", 443, True),
        ("openai.com", "api.openai.com", 443, True),
        ("openai.com", "openai.com", 443, True),
        (".openai.com", "api.openai.com", 443, True),
        (".openai.com", "openai.com", 443, True),
        ("*.openai.com", "api.openai.com", 443, True),
        ("openai.com", "notopenai.com", 443, False),
        ("OpenAI.COM", "API.openai.com", 443, True),
        ("localhost, 127.0.0.1", "127.0.0.1", 80, True),
        ("localhost 127.0.0.1", "localhost", 80, True),  # spaces separate too
        ("127.0.0.1", "localhost", 80, False),  # names are not resolved
        ("10.0.0.0/8", "10.1.2.3", 443, True),
        ("10.0.0.0/8", "11.1.2.3", 443, False),
        ("10.0.0.0/8", "ten.example", 443, False),
        ("::1", "::1", 443, True),
        ("[::1]:8080", "::1", 8080, True),
        ("[::1]:8080", "::1", 443, False),
        ("internal.corp:8443", "api.internal.corp", 8443, True),
        ("internal.corp:8443", "api.internal.corp", 443, False),
        ("", "api.openai.com", 443, False),
    ],
)
def test_no_proxy(no_proxy, host, port, bypassed):
    assert NoProxy.parse(no_proxy).covers(host, port) is bypassed


CORP = Proxy(host="corp", port=3128)
LOWER = Proxy(host="lower", port=3128)
ALL = Proxy(host="all", port=3128)


@pytest.mark.parametrize(
    ("environ", "url", "proxy"),
    [
        ({}, "https://api.openai.com/v1", None),
        ({"HTTPS_PROXY": "corp:3128"}, "https://api.openai.com/v1", CORP),
        ({"HTTPS_PROXY": "corp:3128"}, "http://vllm:8000/v1", None),  # https only
        ({"HTTP_PROXY": "corp:3128"}, "http://vllm:8000/v1", CORP),
        ({"HTTP_PROXY": "corp:3128"}, "https://api.openai.com/v1", None),
        ({"https_proxy": "lower:3128", "HTTPS_PROXY": "corp:3128"}, "https://x/v1", LOWER),
        ({"https_proxy": "", "HTTPS_PROXY": "corp:3128"}, "https://x/v1", CORP),  # empty: unset
        ({"ALL_PROXY": "all:3128"}, "https://x/v1", ALL),
        ({"all_proxy": "all:3128"}, "http://x/v1", ALL),
        ({"ALL_PROXY": "all:3128", "HTTPS_PROXY": "corp:3128"}, "https://x/v1", CORP),
        ({"HTTPS_PROXY": "corp:3128", "NO_PROXY": "x"}, "https://x/v1", None),
        ({"HTTPS_PROXY": "corp:3128", "no_proxy": "y", "NO_PROXY": "x"}, "https://x/v1", CORP),
    ],
)
def test_environment(environ, url, proxy):
    assert ProxyEnvironment.read(environ).proxy_for(url) == proxy


def config(**key_fields) -> str:
    return routes_yaml(
        keys=[key("main", api_key="sk-test-000000000001", **key_fields)],
        models={"gpt-4o": model(route("main", "gpt-4o"))},
    )


def test_keys_take_the_environments_proxy_once_at_load():
    environ = {"HTTPS_PROXY": "http://bob:hunter2@corp:3128", "NO_PROXY": "localhost"}
    keys = parse_config(config(), source="routes.yaml", environ=environ).keys
    assert keys["main"].proxy == Proxy(
        host="corp", port=3128, authorization="Basic " + base64.b64encode(b"bob:hunter2").decode()
    )
    assert "hunter2" not in repr(keys["main"])
    local = parse_config(
        config(api_base="http://localhost:8000/v1"),
        source="routes.yaml",
        environ={**environ, "HTTP_PROXY": "corp:3128"},
    )
    assert local.keys["main"].proxy is None


def test_a_keys_proxy_overrides_the_environment():
    environ = {"HTTPS_PROXY": "corp:3128", "EGRESS": "http://egress:8080"}
    parsed = parse_config(config(proxy="none"), source="routes.yaml", environ=environ)
    assert parsed.keys["main"].proxy is None
    parsed = parse_config(config(proxy="${EGRESS}"), source="routes.yaml", environ=environ)
    assert parsed.keys["main"].proxy == Proxy(host="egress", port=8080)


def test_a_socks_proxy_in_the_environment_fails_at_load_naming_the_variable():
    environ = {"ALL_PROXY": "socks5://bob:hunter2@corp:1080"}
    with pytest.raises(ConfigError) as caught:
        parse_config(config(), source="routes.yaml", environ=environ)
    message = str(caught.value)
    assert "keys.main: the environment variable ALL_PROXY is a socks5:// proxy" in message
    assert "SOCKS proxies are not supported" in message and "hunter2" not in message
    # a key that goes direct does not care
    parse_config(config(proxy="none"), source="routes.yaml", environ=environ)


def test_a_bad_keys_proxy_fails_at_load():
    with pytest.raises(ConfigError, match=r"keys.main.proxy: the proxy is a socks5:// proxy"):
        parse_config(config(proxy="socks5://corp:1080"), source="routes.yaml", environ={})


def test_a_per_key_proxy_on_a_litellm_only_provider_is_taken():
    environ = {"HTTPS_PROXY": "http://env:3128"}
    yaml_text = config(provider="gemini", proxy="http://corp:3128")
    loaded = parse_config(yaml_text, source="routes.yaml", environ=environ)
    assert loaded.keys["main"].proxy == Proxy(host="corp", port=3128)
    assert loaded.keys["main"].proxy_given
    assert not [warning for warning in loaded.warnings if ".proxy" in warning]
    direct = parse_config(config(provider="gemini", proxy="none"), source="x", environ=environ)
    assert direct.keys["main"].proxy is None and direct.keys["main"].proxy_given
    # without proxy: litellm reads the environment itself, as before
    unset = parse_config(config(provider="gemini"), source="routes.yaml", environ=environ)
    assert unset.keys["main"].proxy is None and not unset.keys["main"].proxy_given


def test_a_key_whose_proxy_variable_is_unset_is_skipped_like_one_whose_key_is():
    with pytest.raises(ConfigError, match=r"every key the routes use is skipped \(main: EGRESS"):
        parse_config(config(proxy="${EGRESS}"), source="routes.yaml", environ={})


def test_a_keys_proxy_that_litellm_will_not_take_is_warned_about_at_load():
    # litellm's Anthropic and Gemini handlers take the key's proxy, and so do its generic
    # HTTP handler (OpenRouter, Groq, ...) and its OpenAI-compatible handlers (OpenAI and
    # Azure for Anthropic Messages clients, Perplexity and the like); its handlers for
    # other providers (Cohere) do not.
    yaml_text = routes_yaml(
        keys=[
            key("claude", api_key="sk-ant-000000000001", provider="anthropic", proxy="corp:3128"),
            key("plain", api_key="sk-ant-000000000002", provider="anthropic"),
            key("gpt", api_key="sk-test-000000000003", provider="openai", proxy="corp:3128"),
            key(
                "az",
                "https://res.openai.azure.com",
                api_key="az-000000000004",
                provider="azure",
                proxy="none",
            ),
            key("or", api_key="sk-or-000000000005", provider="openrouter", proxy="corp:3128"),
            key("gq", api_key="gsk-000000000006", provider="groq", proxy="none"),
            key("co", api_key="co-000000000007", provider="cohere", proxy="corp:3128"),
            key("px", api_key="pplx-000000000008", provider="perplexity", proxy="corp:3128"),
        ],
        models={
            "sonnet": model(route("claude", "claude-sonnet-4-6"), route("plain", "x")),
            "gpt-4o": model(route("gpt", "gpt-4o"), route("az", "gpt-4o")),
            "routed": model(route("or", "anthropic/claude-sonnet-4"), route("gq", "llama")),
            "command": model(route("co", "command-r")),
            "sonar": model(route("px", "sonar")),
        },
    )
    warnings = parse_config(yaml_text, source="routes.yaml", environ={}).warnings
    proxied = [warning for warning in warnings if ".proxy" in warning]
    assert proxied == [
        f"keys.co.proxy does not apply to its {operation} requests, which go through litellm: "
        "litellm follows HTTPS_PROXY/NO_PROXY from the environment instead"
        for operation in ("chat", "messages")
    ]
