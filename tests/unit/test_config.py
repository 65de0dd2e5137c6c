"""routes.yaml -> Config: the example loads, every bad file names file:line: field."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest

from router.config import catalog, format_route_table, load_config, mask_key, parse_config
from router.errors import ConfigError
from router.types import Config

EXAMPLE = """\
server:
  host: 127.0.0.1          # loopback by default
  port: 4000
keys:                      # provider credentials, referred to by name everywhere else
  openai-main:
    provider: openai
    api_key: ${OPENAI_API_KEY}
  openai-backup:
    provider: openai
    api_key: ${OPENAI_API_KEY_2}
  groq:
    provider: openai       # any OpenAI-compatible API: set api_base
    api_base: https://api.groq.com/openai/v1
    api_key: ${GROQ_API_KEY}
models:                    # the names clients send as "model"
  gpt-4o:
    routes:
      - {key: openai-main, model: gpt-4o}                 # priority defaults to 1
      - {key: openai-backup, model: gpt-4o, weight: 2}    # weight spreads load
    fallback: [gpt-4o-mini]                              # tried when every route is out
  gpt-4o-mini:
    routes:
      - {key: openai-main, model: gpt-4o-mini}
      - {key: groq, model: llama-3.3-70b-versatile, priority: 2}
"""

# Distinctive enough that finding it in any message means a leak.
PLANTED = "sk-PLANTEDsecret0123456789zyxw"
ENV = {
    "OPENAI_API_KEY": "sk-proj-mainmainmainmainmain1111",
    "OPENAI_API_KEY_2": "sk-proj-backupbackupbackup2222",
    "GROQ_API_KEY": "gsk_groqgroqgroqgroqgroq3333",
}

# The smallest valid file; error cases below add one mistake to something like it.
MINIMAL_KEYS = """\
keys:
  main: {provider: openai, api_key: "${OPENAI_API_KEY}"}
"""


def parse(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(
        textwrap.dedent(text), source="routes.yaml", environ=ENV if env is None else env
    )


def error_of(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text, env)
    return str(caught.value)


def minimal(models: str = "  m:\n    routes: [{key: main, model: up}]\n", extra: str = "") -> str:
    return f"{MINIMAL_KEYS}models:\n{models}{extra}"


def own_warnings(config: Config) -> tuple[str, ...]:
    """The config's warnings less those litellm's model data makes: EXAMPLE's gpt-4o has
    a retirement date there (tests/unit/test_model_data.py tests those on a table of its
    own; test_the_example_loads_with_every_value_resolved checks they match the data)."""
    return tuple(warning for warning in config.warnings if "(litellm's model data)" not in warning)


def test_an_unset_body_total_makes_room_for_two_of_the_largest_bodies():
    """A config from before the total existed, with max_body_bytes past 64 MiB, starts."""
    config = parse(minimal(extra="server: {max_body_bytes: 100000000}\n"))
    assert config.server.max_body_bytes_total == 200_000_000


# --- the example ---------------------------------------------------------------------


def test_the_example_loads_with_every_value_resolved() -> None:
    config = parse(EXAMPLE)

    assert config.source == "routes.yaml"
    assert (config.server.host, config.server.port) == ("127.0.0.1", 4000)
    assert config.server.client_keys == ()
    assert config.server.max_body_bytes == 10 * 1024 * 1024
    assert config.server.max_body_bytes_total == 64 * 1024 * 1024
    assert config.server.max_header_bytes == 64 * 1024
    server = config.server
    assert (server.header_timeout, server.body_timeout, server.idle_timeout) == (30, 60, 75)
    assert config.server.max_connections == 1024
    assert (config.server.allowed_hosts, config.server.allowed_origins) == (None, ())
    gpt4o = config.models["gpt-4o"]
    assert [(r.key.name, r.model, r.priority, r.weight) for r in gpt4o.routes] == [
        ("openai-main", "gpt-4o", 1, 1.0),
        ("openai-backup", "gpt-4o", 1, 2.0),
    ]
    assert gpt4o.fallback == ("gpt-4o-mini",)
    assert gpt4o.chain == ("gpt-4o", "gpt-4o-mini")
    mini = config.models["gpt-4o-mini"]
    assert mini.chain == ("gpt-4o-mini",)
    groq_route = mini.routes[1]
    assert (groq_route.key.name, groq_route.model, groq_route.priority) == (
        "groq",
        "llama-3.3-70b-versatile",
        2,
    )
    assert groq_route.key.api_base == "https://api.groq.com/openai/v1"
    assert groq_route.key.api_key == ENV["GROQ_API_KEY"]
    assert config.keys["openai-main"].api_base == "https://api.openai.com/v1"
    assert config.keys["openai-main"].api_key == ENV["OPENAI_API_KEY"]
    assert config.skipped_keys == ()
    assert own_warnings(config) == ()
    # One warning per upstream model the model data dates, on the routes that reach it.
    dated = {m: catalog.facts("openai", m).retires for m in ("gpt-4o", "gpt-4o-mini")}
    retiring = [w for w in config.warnings if w not in own_warnings(config)]
    assert len(retiring) == sum(date is not None for date in dated.values())
    for model, date in dated.items():
        if date is not None:
            assert sum(w.startswith(f"openai retires {model} on {date} ") for w in retiring) == 1


def test_load_config_reads_the_file_and_names_it_by_basename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "routes.yaml"
    path.write_text(EXAMPLE)

    config = load_config(path)
    assert config.source == str(path)
    assert config.keys["groq"].api_key == ENV["GROQ_API_KEY"]

    path.write_text(EXAMPLE.replace("weight: 2", "wieght: 2"))
    with pytest.raises(ConfigError, match=r"^routes\.yaml:19: "):
        load_config(path, environ=ENV)


def test_load_config_says_when_the_file_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", environ=ENV)


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda path: os.mkfifo(path), "not a regular file (a FIFO)"),  # a read waits for ever
        (lambda path: path.symlink_to("/dev/zero"), "not a regular file (a character device)"),
        (lambda path: path.mkdir(), "not a regular file (a directory)"),
        (lambda path: path.write_bytes(b"#" * (16 * 1024 * 1024 + 1)), "larger than 16777216"),
    ],
    ids=["fifo", "endless", "directory", "too-large"],
)
def test_load_config_reads_only_a_regular_file_of_a_sane_size(tmp_path: Path, make, said) -> None:
    """A FIFO at the path hung `check`, and a reload for good (its lock held, the
    process unable to stop); /dev/zero was read until memory ran out."""
    path = tmp_path / "routes.yaml"
    make(path)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: cannot read: {said}")):
        load_config(path, environ=ENV)


@pytest.mark.parametrize(
    "text",
    [
        "keys: " + "[" * 100_000 + "]" * 100_000 + "\nmodels: {}\n",
        "keys:\n" + "".join(" " * depth + "a:\n" for depth in range(1, 3000)) + "models: {}\n",
    ],
    ids=["flow", "block"],
)
def test_a_config_nested_past_the_parsers_recursion_is_a_config_error(text: str) -> None:
    """It raised RecursionError: `check` printed a traceback, a reload answered 500."""
    with pytest.raises(ConfigError, match=r"^routes\.yaml: nested too deeply"):
        parse_config(text, source="routes.yaml", environ=ENV)


def test_config_mappings_are_read_only() -> None:
    config = parse(EXAMPLE)
    with pytest.raises(TypeError):
        config.models["new"] = config.models["gpt-4o"]  # type: ignore[index]


# --- errors: file:line: path: message ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            EXAMPLE.replace("{key: openai-backup", "{key: openai-bakup"),
            "routes.yaml:19: models.gpt-4o.routes[1].key: unknown key 'openai-bakup'",
            id="unknown-route-key",
        ),
        pytest.param(
            EXAMPLE.replace("weight: 2", "wieght: 2"),
            "routes.yaml:19: models.gpt-4o.routes[1]: unknown field 'wieght' "
            "(did you mean 'weight'?)",
            id="misspelt-field",
        ),
        pytest.param(
            EXAMPLE.replace("  port: 4000", "  port: 4000\n  port: 4001"),
            "routes.yaml:4: server: duplicate key 'port' (first on line 3)",
            id="duplicate-field",
        ),
        pytest.param(
            EXAMPLE + "  gpt-4o:\n    routes: [{key: groq, model: x}]\n",
            "routes.yaml:25: models: duplicate key 'gpt-4o' (first on line 16)",
            id="duplicate-model",
        ),
        pytest.param(
            EXAMPLE.replace("priority: 2", "priority: 0"),
            "routes.yaml:24: models.gpt-4o-mini.routes[1].priority: must be >= 1, got 0",
            id="priority-zero",
        ),
        pytest.param(
            EXAMPLE.replace("    api_base: https://api.groq.com/openai/v1\n", ""),
            None,
            id="api-base-is-optional",
        ),
        pytest.param(
            EXAMPLE.replace("      - {key: openai-main, model: gpt-4o}  ", "      - {key: x}"),
            "routes.yaml:18: models.gpt-4o.routes[0]: missing required field 'model'",
            id="missing-route-model",
        ),
        pytest.param(
            EXAMPLE.replace("    provider: openai       # any", "    provider: opnai  # any"),
            "routes.yaml:12: keys.groq.provider: unknown provider 'opnai' "
            "(did you mean 'openai'?); supported: anthropic, azure, gemini, openai, "
            "or any provider litellm knows",
            id="unknown-provider",
        ),
        pytest.param(
            EXAMPLE.replace("fallback: [gpt-4o-mini]", "fallback: [gpt-4o-mimi]"),
            "routes.yaml:20: models.gpt-4o.fallback[0]: unknown model 'gpt-4o-mimi'",
            id="unknown-fallback-model",
        ),
        pytest.param(
            EXAMPLE.replace("  port: 4000", "  port: [4000"),
            "routes.yaml:4: YAML syntax error: ",
            id="yaml-syntax-error",
        ),
    ],
)
def test_errors_name_the_file_the_line_and_the_field(text: str, message: str | None) -> None:
    if message is None:
        parse(text)
    else:
        assert error_of(text).startswith(message), error_of(text)


def test_the_unknown_key_message_is_exactly_file_line_path_message() -> None:
    text = EXAMPLE.replace("{key: openai-backup", "{key: openai-bakup")
    assert error_of(text) == (
        "routes.yaml:19: models.gpt-4o.routes[1].key: unknown key 'openai-bakup' "
        "(did you mean 'openai-backup'?)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # --- the document itself
        pytest.param("", "routes.yaml: the file is empty", id="empty-file"),
        pytest.param("# only a comment\n", "routes.yaml: the file is empty", id="comments-only"),
        pytest.param("- a\n- b\n", "routes.yaml:1: the top level must be a mapping", id="top-list"),
        pytest.param("just text\n", "the top level must be a mapping, got a string", id="top-str"),
        pytest.param("a: [1\n", "routes.yaml:2: YAML syntax error", id="unclosed-flow-list"),
        pytest.param("a: b: c\n", "routes.yaml:1: YAML syntax error", id="mapping-in-scalar"),
        pytest.param(
            minimal() + "---\nkeys: {}\n",
            "routes.yaml:6: YAML syntax error: expected a single document in the stream (line 1), "
            "but found another document",
            id="two-documents",
        ),
        pytest.param(
            "keys: {}\n", "routes.yaml:1: missing required field 'models'", id="no-models"
        ),
        pytest.param(
            "models: {m: {fallback: []}}\n", "missing required field 'keys'", id="no-keys"
        ),
        pytest.param(
            minimal(extra="bogus: 1\n"), "routes.yaml:6: unknown field 'bogus'", id="unknown-top"
        ),
        pytest.param(
            minimal(extra="timeout:\n  connect: 1\n"),
            "unknown field 'timeout' (did you mean 'timeouts'?)",
            id="unknown-top-close-match",
        ),
        pytest.param(
            MINIMAL_KEYS + "models: {}\n",
            "routes.yaml:3: models: no models are defined",
            id="models-empty",
        ),
        pytest.param(
            MINIMAL_KEYS + "models: [a]\n",
            "models: expected a mapping, got a list",
            id="models-list",
        ),
        pytest.param(
            minimal(extra="<<: {a: 1}\n"), "merge keys (<<) are not supported", id="merge-key"
        ),
        # --- server
        pytest.param(
            minimal(extra="server: {port: '4000'}\n"),
            "server.port: expected an integer, got a string",
            id="port-quoted",
        ),
        pytest.param(
            minimal(extra="server: {port: 70000}\n"),
            "server.port: must be between 0 and 65535, got 70000",
            id="port-out-of-range",
        ),
        pytest.param(
            minimal(extra="server: {prot: 1}\n"),
            "server: unknown field 'prot' (did you mean 'port'?)",
            id="server-unknown-field",
        ),
        pytest.param(
            minimal(extra="server: {allow_unauthenticated: maybe}\n"),
            "server.allow_unauthenticated: expected true or false, got a string",
            id="allow-unauthenticated-not-bool",
        ),
        pytest.param(
            minimal(extra="server: {max_body_bytes: 0}\n"),
            "server.max_body_bytes: must be >= 1, got 0",
            id="max-body-zero",
        ),
        pytest.param(
            minimal(extra="server: {max_body_bytes_total: 1000000}\n"),
            "server.max_body_bytes_total: max_body_bytes_total (1000000) is less than "
            "max_body_bytes (10485760)",
            id="max-body-total-under-one-body",
        ),
        pytest.param(
            minimal(extra="server: {max_header_bytes: 512}\n"),
            "server.max_header_bytes: must be >= 1024, got 512",
            id="max-header-under-1024",
        ),
        pytest.param(
            minimal(extra="server: {header_timeout: 0}\n"),
            "server.header_timeout: must be a number >= 0.001, got 0",
            id="header-timeout-zero",
        ),
        pytest.param(
            minimal(extra="server: {max_connections: 0}\n"),
            "server.max_connections: must be >= 1, got 0",
            id="max-connections-zero",
        ),
        pytest.param(
            minimal(extra="server: {allowed_hosts: ['router.example:4000']}\n"),
            "server.allowed_hosts[0]: expected a host name or address without scheme or port",
            id="allowed-host-with-port",
        ),
        pytest.param(
            minimal(extra="server: {allowed_origins: ['app.example']}\n"),
            "server.allowed_origins[0]: expected an origin like https://app.example.com",
            id="allowed-origin-without-scheme",
        ),
        pytest.param(
            minimal(extra="server: {client_keys: abc}\n"),
            "server.client_keys: expected a list, got a string",
            id="client-keys-not-a-list",
        ),
        pytest.param(
            minimal(extra="server: {client_keys: ['']}\n"),
            "server.client_keys[0]: a client key must not be empty",
            id="client-key-empty",
        ),
        pytest.param(
            minimal(extra="server: {host: ''}\n"),
            "server.host: must not be empty",
            id="host-empty",
        ),
        pytest.param(
            minimal(extra="server: {host: '${BIND_HOST}'}\n"),
            "routes.yaml:6: server.host: BIND_HOST is not set",
            id="unset-variable-outside-keys",
        ),
        pytest.param(
            minimal(extra="server: {host: '${BIND_HOST'}\n"),
            "server.host: malformed variable reference",
            id="malformed-variable",
        ),
        pytest.param(
            minimal(extra="server: {host: '${A:-${B}}'}\n"),
            "server.host: malformed variable reference",
            id="nested-variable-default",
        ),
        # --- keys
        pytest.param(
            "keys:\n  main: {api_key: x}\nmodels: {}\n",
            "routes.yaml:2: keys.main: missing required field 'provider'",
            id="key-without-provider",
        ),
        pytest.param(
            "keys:\n  main:\n    provider: openai\nmodels: {}\n",
            "routes.yaml:2: keys.main: missing required field 'api_key'",
            id="key-without-api-key",
        ),
        pytest.param(
            "keys:\n  main:\n    provider: openai\n    api_key:\nmodels: {}\n",
            "routes.yaml:4: keys.main.api_key: needs a value",
            id="key-with-empty-api-key",
        ),
        pytest.param(
            "keys:\n  main: {provider: openai, api_key: 12345678901234}\nmodels: {}\n",
            "keys.main.api_key: expected a string, got an integer",
            id="api-key-not-a-string",
        ),
        pytest.param(
            "keys:\n  main: {provider: openai, api_key: x, api_base: api.groq.com}\nmodels: {}\n",
            "keys.main.api_base: must be a URL starting with http:// or https://",
            id="api-base-without-scheme",
        ),
        pytest.param(
            "keys:\n  main: {provider: openai, api_key: x, apikey: y}\nmodels: {}\n",
            "keys.main: unknown field 'apikey' (did you mean 'api_key'?)",
            id="key-unknown-field",
        ),
        pytest.param(
            "keys:\n  a/b: {provider: openai, api_key: x}\nmodels: {}\n",
            "keys.a/b: a key name may not hold '/'",
            id="key-name-with-slash",
        ),
        pytest.param(
            "keys: [main]\nmodels: {}\n", "routes.yaml:1: keys: expected a mapping", id="keys-list"
        ),
        # --- models and routes
        pytest.param(
            minimal("  m:\n    routes: []\n"),
            "routes.yaml:4: models.m: needs at least one route or a fallback",
            id="no-routes-no-fallback",
        ),
        pytest.param(
            minimal("  m: {}\n"),
            "models.m: needs at least one route or a fallback",
            id="model-empty",
        ),
        pytest.param(
            minimal("  m:\n    routes: {key: main, model: up}\n"),
            "models.m.routes: expected a list, got a mapping",
            id="routes-not-a-list",
        ),
        pytest.param(
            minimal("  m:\n    routes: [main]\n"),
            "models.m.routes[0]: expected a mapping, got a string",
            id="route-not-a-mapping",
        ),
        pytest.param(
            minimal("  m:\n    routes: [{model: up}]\n"),
            "models.m.routes[0]: missing required field 'key'",
            id="route-without-key",
        ),
        pytest.param(
            minimal("  m:\n    routes: [{key: main, model: up, weight: 0}]\n"),
            "models.m.routes[0].weight: must be a positive number, got 0",
            id="weight-zero",
        ),
        pytest.param(
            minimal("  m:\n    routes: [{key: main, model: up, weight: -1.5}]\n"),
            "models.m.routes[0].weight: must be a positive number, got -1.5",
            id="weight-negative",
        ),
        pytest.param(
            minimal("  m:\n    routes: [{key: main, model: up, weight: true}]\n"),
            "models.m.routes[0].weight: expected a number, got true/false",
            id="weight-bool",
        ),
        pytest.param(
            minimal("  m:\n    routes: [{key: main, model: up, priority: 1.5}]\n"),
            "models.m.routes[0].priority: expected an integer, got a number",
            id="priority-float",
        ),
        pytest.param(
            minimal("  m:\n    routes: [{key: main, model: up, key: main}]\n"),
            "routes.yaml:5: models.m.routes[0]: duplicate key 'key' (first on line 5)",
            id="duplicate-key-in-flow-mapping",
        ),
        pytest.param(
            minimal("  m:\n    routes: [{key: main, model: up}, {key: main, model: up}]\n"),
            "models.m.routes[1]: route main/up is already listed at models.m.routes[0]",
            id="route-listed-twice",
        ),
        pytest.param(
            minimal("  m:\n    routes: [{key: main, model: ''}]\n"),
            "models.m.routes[0].model: must not be empty",
            id="route-model-empty",
        ),
        pytest.param(
            minimal('  m:\n    routes: [{key: main, model: "up\\r\\nx-injected: 1"}]\n'),
            "models.m.routes[0].model: must not hold control characters",
            id="route-model-with-a-line-break",
        ),
        pytest.param(
            minimal("  m:\n    routes: [{key: main, model: '${UPSTREAM_MODEL}'}]\n"),
            "models.m.routes[0].model: UPSTREAM_MODEL is not set",
            id="unset-variable-in-route",
        ),
        # --- fallback
        pytest.param(
            minimal(
                "  a:\n    routes: [{key: main, model: up}]\n    fallback: [b]\n"
                "  b:\n    routes: [{key: main, model: up2}]\n    fallback: [a]\n"
            ),
            "routes.yaml:6: models.a.fallback: fallback cycle a -> b -> a",
            id="fallback-cycle",
        ),
        pytest.param(
            minimal("  a:\n    routes: [{key: main, model: up}]\n    fallback: [a]\n"),
            "models.a.fallback: fallback cycle a -> a",
            id="fallback-to-itself",
        ),
        pytest.param(
            minimal(
                "  a: {routes: [{key: main, model: up}], fallback: [b]}\n"
                "  b: {fallback: [c]}\n"
                "  c: {fallback: [b]}\n"
            ),
            "routes.yaml:5: models.b.fallback: fallback cycle b -> c -> b",
            id="fallback-cycle-behind-a-model",
        ),
        pytest.param(
            minimal("  a:\n    routes: [{key: main, model: up}]\n    fallback: [nope]\n"),
            "routes.yaml:6: models.a.fallback[0]: unknown model 'nope'",
            id="fallback-unknown-model",
        ),
        pytest.param(
            minimal("  a:\n    routes: [{key: main, model: up}]\n    fallback: b\n"),
            "models.a.fallback: expected a list, got a string",
            id="fallback-not-a-list",
        ),
        pytest.param(
            minimal(
                "  a: {routes: [{key: main, model: up}], fallback: [b, b]}\n  b: {fallback: [a]}\n"
            ),
            "models.a.fallback[1]: 'b' is listed twice",
            id="fallback-listed-twice",
        ),
        # --- timeouts and failover
        pytest.param(
            minimal(extra="timeouts: {connect: -1}\n"),
            "routes.yaml:6: timeouts.connect: must be a positive number, got -1",
            id="timeout-negative",
        ),
        pytest.param(
            minimal(extra="timeouts: {connect: .inf}\n"),
            "timeouts.connect: must be a positive number, got inf",
            id="timeout-infinite",
        ),
        pytest.param(
            minimal(extra="timeouts: {first_token: 5}\n"),
            "timeouts: unknown field 'first_token' (did you mean 'first_byte'?)",
            id="timeout-unknown-field",
        ),
        pytest.param(
            minimal(extra="failover: {max_attempts: 0}\n"),
            "failover.max_attempts: must be >= 1, got 0",
            id="max-attempts-zero",
        ),
        pytest.param(
            minimal(extra="failover: {breaker_failures: 2.5}\n"),
            "failover.breaker_failures: expected an integer, got a number",
            id="breaker-failures-float",
        ),
        pytest.param(
            minimal(extra="failover: {breaker_failure_rate: 1.5}\n"),
            "failover.breaker_failure_rate: must be a fraction up to 1, got 1.5",
            id="breaker-rate-over-one",
        ),
        pytest.param(
            minimal(extra="failover: {cooldown_max: fast}\n"),
            "failover.cooldown_max: expected a number, got a string",
            id="cooldown-not-a-number",
        ),
        pytest.param(
            minimal(extra="failover: [1]\n"),
            "failover: expected a mapping, got a list",
            id="failover-list",
        ),
    ],
)
def test_a_bad_file_is_refused_with_its_line_and_field(text: str, expected: str) -> None:
    message = error_of(text)
    assert expected in message, message
    assert message.startswith("routes.yaml")


def test_a_syntax_error_keeps_pyyaml_problem_but_not_the_quoted_line() -> None:
    text = f"keys:\n  main: {{provider: openai, api_key: {PLANTED}\nmodels: {{}}\n"
    message = error_of(text)
    assert message.startswith("routes.yaml:3: YAML syntax error: ")
    assert PLANTED not in message


# --- ${VAR} expansion and skipped keys -----------------------------------------------


def test_variables_expand_with_defaults_and_typed_like_yaml() -> None:
    text = """\
        server:
          host: ${BIND_HOST:-localhost}
          port: ${PORT:-4100}
          allow_unauthenticated: ${OPEN:-false}
        keys:
          main:
            provider: openai
            api_base: ${BASE:-http://127.0.0.1:9000/v1/}
            api_key: ${OPENAI_API_KEY}
        models:
          ${NOT_EXPANDED_IN_NAMES}:
            routes: [{key: main, model: "${UPSTREAM:-gpt-4o}-${SUFFIX:-mini}"}]
        timeouts:
          connect: ${CONNECT_TIMEOUT:-2.5}
    """
    config = parse(text, {**ENV, "PORT": "4200", "SUFFIX": ""})

    assert config.server.host == "localhost"
    assert config.server.port == 4200
    assert config.server.allow_unauthenticated is False
    assert config.keys["main"].api_base == "http://127.0.0.1:9000/v1"  # trailing / stripped
    (spec,) = config.models.values()
    assert spec.name == "${NOT_EXPANDED_IN_NAMES}"
    assert spec.routes[0].model == "gpt-4o-mini"  # an empty value counts as unset
    assert config.timeouts.connect == 2.5
    assert config.warnings == ()


def test_a_variable_that_expands_to_the_wrong_type_is_refused() -> None:
    message = error_of(minimal(extra="server: {port: '${PORT}'}\n"), {**ENV, "PORT": "http"})
    assert message == "routes.yaml:6: server.port: expected an integer, got a string"


def test_a_key_with_an_unset_variable_is_skipped_and_its_routes_left_out() -> None:
    env = {name: value for name, value in ENV.items() if name != "GROQ_API_KEY"}
    config = parse(EXAMPLE, env)

    assert "groq" not in config.keys
    assert config.skipped_keys[0].name == "groq"
    assert config.skipped_keys[0].reason == "GROQ_API_KEY is not set"
    assert [route.key.name for route in config.models["gpt-4o-mini"].routes] == ["openai-main"]
    assert all(route.key.name != "groq" for route in config.all_routes())
    assert own_warnings(config) == (
        "keys.groq is skipped: GROQ_API_KEY is not set; its routes are left out",
    )


def test_an_empty_variable_counts_as_unset() -> None:
    config = parse(EXAMPLE, {**ENV, "OPENAI_API_KEY_2": ""})
    assert [key.name for key in config.skipped_keys] == ["openai-backup"]
    assert [route.key.name for route in config.models["gpt-4o"].routes] == ["openai-main"]


def test_an_unset_api_base_variable_skips_the_key_too() -> None:
    text = EXAMPLE.replace("https://api.groq.com/openai/v1", "${GROQ_BASE}")
    config = parse(text)
    assert config.skipped_keys[0].reason == "GROQ_BASE is not set"
    config = parse(text, {"OPENAI_API_KEY": "sk-proj-x" * 3})
    assert config.skipped_keys[-1].reason == "GROQ_BASE, GROQ_API_KEY are not set"


def test_a_model_whose_routes_are_all_skipped_keeps_its_fallback_with_a_warning() -> None:
    config = parse(EXAMPLE, {"GROQ_API_KEY": "gsk_groqgroqgroqgroq"})
    assert config.models["gpt-4o"].routes == ()
    assert config.models["gpt-4o"].chain == ("gpt-4o", "gpt-4o-mini")
    assert [route.key.name for route in config.models["gpt-4o-mini"].routes] == ["groq"]
    assert (
        "models.gpt-4o: every route uses a skipped key; requests go to its fallbacks"
        in config.warnings
    )


def test_a_model_left_with_no_usable_route_and_no_fallback_stays_with_a_warning() -> None:
    text = EXAMPLE.replace("    fallback: [gpt-4o-mini]", "")
    config = parse(text, {"GROQ_API_KEY": "gsk_groqgroqgroqgroq"})
    assert config.models["gpt-4o"].routes == ()
    assert (
        "models.gpt-4o: every route uses a skipped key and there is no fallback; "
        "requests for it will get 503"
    ) in config.warnings


def test_every_key_unset_is_an_error_that_lists_the_reasons() -> None:
    message = error_of(EXAMPLE, {})
    assert message == (
        "routes.yaml: no usable route: every key the routes use is skipped ("
        "openai-main: OPENAI_API_KEY is not set; openai-backup: OPENAI_API_KEY_2 is not set; "
        "groq: GROQ_API_KEY is not set)"
    )


def test_a_literal_api_key_loads_with_a_warning_that_never_quotes_it() -> None:
    text = EXAMPLE.replace("${OPENAI_API_KEY}", PLANTED)
    config = parse(text)
    assert config.keys["openai-main"].api_key == PLANTED
    assert own_warnings(config) == (
        "keys.openai-main.api_key is a literal key in routes.yaml; "
        "prefer ${VAR} so the file holds no secret",
    )
    assert not any(PLANTED in warning for warning in config.warnings)


def test_a_key_with_a_line_end_in_it_is_refused_without_quoting_it() -> None:
    message = error_of(EXAMPLE, {**ENV, "OPENAI_API_KEY": PLANTED + "\n"})
    assert message.startswith("routes.yaml:")
    assert "keys.openai-main.api_key: the key holds whitespace or a control character" in message
    assert PLANTED not in message


# --- server: client keys and the bind rule -------------------------------------------


def test_client_keys_expand_and_an_unset_entry_is_dropped_with_a_warning() -> None:
    text = minimal(
        extra="server:\n  client_keys: ['${CLIENT_A}', '${CLIENT_B}', literal-key-0123456789]\n"
    )
    config = parse(text, {**ENV, "CLIENT_A": "client-a-secret-0123"})
    assert config.server.client_keys == ("client-a-secret-0123", "literal-key-0123456789")
    assert config.warnings == ("server.client_keys[1] is dropped: CLIENT_B is not set",)


def test_a_short_client_or_admin_key_loads_with_a_warning_that_never_quotes_it() -> None:
    text = minimal(extra="server:\n  client_keys: [dev-key1]\n  admin_keys: [adm]\n")
    config = parse(text)
    assert config.server.client_keys == ("dev-key1",)
    assert config.warnings == (
        "server.client_keys[0] is 8 characters long: a key that short can be guessed; "
        "use 16 or more (openssl rand -hex 16)",
        "server.admin_keys[0] is 3 characters long: a key that short can be guessed and "
        "is never redacted from logs; use 16 or more (openssl rand -hex 16)",
    )


def test_client_keys_all_unset_refuses_to_start_open() -> None:
    message = error_of(minimal(extra="server:\n  client_keys: ['${CLIENT_A}', '${CLIENT_B}']\n"))
    assert message == (
        "routes.yaml:7: server.client_keys: every client key is unset "
        "(CLIENT_A is not set; CLIENT_B is not set); refusing to start without client auth"
    )


def test_admin_keys_expand_like_client_keys_and_all_unset_refuses_to_start() -> None:
    text = minimal(extra="server:\n  admin_keys: ['${ADMIN_A}', '${ADMIN_B}']\n")
    config = parse(text, {**ENV, "ADMIN_A": "admin-a-secret-0123"})
    assert config.server.admin_keys == ("admin-a-secret-0123",)
    assert config.warnings == ("server.admin_keys[1] is dropped: ADMIN_B is not set",)
    assert "admin-a-secret-0123" not in repr(config.server)
    assert error_of(text) == (
        "routes.yaml:7: server.admin_keys: every admin key is unset "
        "(ADMIN_A is not set; ADMIN_B is not set); refusing to start without admin auth"
    )


@pytest.mark.parametrize(
    ("server", "error"),
    [
        pytest.param("{host: 0.0.0.0}", True, id="any-ipv4"),
        pytest.param("{host: '::'}", True, id="any-ipv6"),
        pytest.param("{host: 10.1.2.3}", True, id="private-address"),
        pytest.param("{host: router.internal}", True, id="hostname"),
        pytest.param("{host: 0.0.0.0, client_keys: []}", True, id="empty-client-keys"),
        pytest.param("{host: 0.0.0.0, allow_unauthenticated: false}", True, id="explicit-false"),
        pytest.param("{host: 0.0.0.0, client_keys: [k]}", False, id="with-client-keys"),
        pytest.param("{host: 0.0.0.0, allow_unauthenticated: true}", False, id="explicitly-open"),
        pytest.param("{host: 127.0.0.1}", False, id="loopback-v4"),
        pytest.param("{host: 127.8.9.10}", False, id="loopback-range"),
        pytest.param("{host: '::1'}", False, id="loopback-v6"),
        pytest.param("{host: LocalHost}", False, id="localhost"),
        pytest.param("{port: 8080}", False, id="default-host"),
    ],
)
def test_binding_beyond_loopback_needs_client_keys_or_an_explicit_opt_out(
    server: str, error: bool
) -> None:
    text = minimal(extra=f"server: {server}\n")
    if not error:
        parse(text)
        return
    message = error_of(text)
    assert message.startswith("routes.yaml:6: server.host: ")
    assert "set server.client_keys or server.allow_unauthenticated: true" in message


# --- fallback chains and route order -------------------------------------------------


def test_the_chain_is_depth_first_in_list_order_with_each_model_once() -> None:
    config = parse(
        minimal(
            "  a: {routes: [{key: main, model: a}], fallback: [b, c]}\n"
            "  b: {routes: [{key: main, model: b}], fallback: [d, c]}\n"
            "  c: {routes: [{key: main, model: c}], fallback: [d]}\n"
            "  d: {routes: [{key: main, model: d}]}\n"
            "  alias: {fallback: [c]}\n"
        )
    )
    assert config.models["a"].chain == ("a", "b", "d", "c")
    assert config.models["b"].chain == ("b", "d", "c")
    assert config.models["alias"].chain == ("alias", "c", "d")
    assert config.models["alias"].routes == ()
    assert config.warnings == ()  # an alias with no routes of its own is intended


def test_routes_keep_file_order_whatever_their_priority() -> None:
    config = parse(
        minimal(
            "  m:\n    routes:\n"
            "      - {key: main, model: late, priority: 3}\n"
            "      - {key: main, model: early, priority: 1, weight: 0.5}\n"
        )
    )
    routes = config.models["m"].routes
    assert [(r.model, r.priority, r.weight) for r in routes] == [
        ("late", 3, 1.0),
        ("early", 1, 0.5),
    ]


def test_timeouts_and_failover_settings_override_only_what_is_given() -> None:
    config = parse(
        minimal(
            extra="timeouts: {connect: 1, first_byte: 30.5}\n"
            "failover: {max_attempts: 3, key_disable: 60}\n"
        )
    )
    assert (config.timeouts.connect, config.timeouts.first_byte) == (1.0, 30.5)
    assert config.timeouts.idle == 60.0
    assert (config.failover.max_attempts, config.failover.key_disable) == (3, 60.0)
    assert config.failover.breaker_failures == 5
    assert (config.failover.breaker_open, config.failover.breaker_failure_rate) == (5.0, 0.5)


def test_route_timeouts_override_the_models_which_override_the_top_level_ones() -> None:
    config = parse(
        minimal(
            models="  m:\n"
            "    timeouts: {first_byte: 300, request: 900}\n"
            "    routes:\n"
            "      - {key: main, model: up, timeouts: {first_byte: 600, idle: 90}}\n"
            "      - {key: main, model: other}\n"
            "  plain:\n"
            "    routes: [{key: main, model: up2}]\n",
            extra="timeouts: {connect: 2, first_byte: 30}\n",
        )
    )
    own, inherited = config.models["m"].routes
    assert own.timeouts is not None and inherited.timeouts is not None
    assert (own.timeouts.connect, own.timeouts.first_byte, own.timeouts.idle) == (2.0, 600.0, 90.0)
    assert (inherited.timeouts.first_byte, inherited.timeouts.idle) == (300.0, 60.0)
    model_timeouts = config.models["m"].timeouts
    assert model_timeouts is not None and model_timeouts.request == 900.0
    # Nothing overridden: the top-level timeouts apply, and nothing is copied.
    assert config.models["plain"].timeouts is None
    assert config.models["plain"].routes[0].timeouts is None


def test_a_route_may_not_set_the_whole_requests_timeout_nor_a_bad_one() -> None:
    def one_route(timeouts: str, model_extra: str = "") -> str:
        return minimal(
            models=f"  m:\n    routes: [{{key: main, model: up{timeouts}}}]\n{model_extra}"
        )

    on_route = one_route(", timeouts: {request: 5}")
    assert error_of(on_route).startswith(
        "routes.yaml:5: models.m.routes[0].timeouts.request: bounds the whole client request"
    )
    assert "on the model or in the top-level timeouts" in error_of(on_route)
    negative = one_route("", "    timeouts: {idle: 0}\n")
    assert "models.m.timeouts.idle: must be a positive number" in error_of(negative)
    typo = one_route(", timeouts: {first_bite: 5}")
    assert "unknown field 'first_bite' (did you mean 'first_byte'?)" in error_of(typo)


def _with_headers(headers: str) -> str:
    return minimal().replace('"${OPENAI_API_KEY}"}', f'"${{OPENAI_API_KEY}}", headers: {headers}}}')


def test_key_headers_expand_variables_and_their_values_are_secrets() -> None:
    text = _with_headers('{HTTP-Referer: "https://app.example", OpenAI-Organization: "${ORG}"}')
    assert "headers:" in text
    config = parse(text, {**ENV, "ORG": "org-secret-123456"})
    key = config.keys["main"]
    assert dict(key.headers) == {  # by lowercase name, as the client's headers go
        "http-referer": "https://app.example",
        "openai-organization": "org-secret-123456",
    }
    assert key.header_secrets == ("org-secret-123456",)  # the literal value is no secret
    assert "org-secret-123456" not in repr(key)
    other_key = "  other: {provider: openai, api_key: sk-other-key-123456}\nmodels:"
    other_model = "  n:\n    routes: [{key: other, model: up}]\n"
    skipped = parse(text.replace("models:", other_key) + other_model)
    assert "keys.main is skipped: ORG is not set" in " ".join(skipped.warnings)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ("{Authorization: x}", "headers.Authorization: a credential header is not allowed"),
        ("{x-goog-api-key: x}", "a credential header is not allowed here: put the credential in"),
        ("{API-Key: x}", "a credential header"),
        ("{X-API-KEY: x}", "a credential header"),
        ("{Connection: close}", "a hop-by-hop header belongs to one connection"),
        ("{Transfer-Encoding: chunked}", "a hop-by-hop header"),
        ("{Host: example.com}", "the router sets this header itself"),
        ("{Content-Length: '5'}", "the router sets this header itself"),
        ("{X-Router-Route: x}", "x-router-* headers are the router's own"),
        ('{"Bad Name": x}', "not a valid header name"),
        ("{X-A: a, x-a: b}", "given twice (as 'X-A' too); header names ignore case"),
        ('{X-A: "a\\r\\nX-Injected: 1"}', "the value holds a line end, a control"),
        ("{X-A: 5}", "expected a string"),
        ("[X-A]", "expected a mapping"),
    ],
)
def test_key_headers_the_router_owns_or_that_carry_a_credential_are_refused(
    headers: str, message: str
) -> None:
    error = error_of(_with_headers(headers))
    assert message in error
    assert error.startswith("routes.yaml:2: keys.main.headers")


def test_max_wait_may_be_0_globally_and_per_model_but_not_negative() -> None:
    config = parse(minimal(extra="failover: {max_wait: 0, max_waiting: 7}\n"))
    assert (config.failover.max_wait, config.failover.max_waiting) == (0.0, 7)
    assert config.models["m"].max_wait is None
    assert parse(minimal()).failover.max_wait == 15.0
    own = parse(minimal(models="  m:\n    routes: [{key: main, model: up}]\n    max_wait: 0\n"))
    assert own.models["m"].max_wait == 0.0
    assert "must be a number >= 0" in error_of(minimal(extra="failover: {max_wait: -1}\n"))
    assert "must be >= 1" in error_of(minimal(extra="failover: {max_waiting: 0}\n"))


def test_limits_are_integers_and_seconds_any_positive_number() -> None:
    config = parse(minimal(extra="limits: {max_event_bytes: 1024, idle_connection_seconds: 2.5}\n"))
    assert (config.limits.max_event_bytes, config.limits.idle_connection_seconds) == (1024, 2.5)
    assert config.limits.max_headers == 100
    assert "expected an integer" in error_of(minimal(extra="limits: {max_headers: 1.5}\n"))


def test_the_state_section() -> None:
    shared = parse(minimal(extra='state: {backend: redis, url: "redis://r:6379/0"}\n'))
    assert (shared.state.backend, shared.state.prefix) == ("redis", "llm-router")
    assert parse(minimal(extra="state: {snapshot: /var/lib/r.json}\n")).state.snapshot
    assert parse(minimal()).state.backend == "memory"


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ("{backend: postgres}", "must be memory or redis"),
        ("{backend: redis}", "backend redis needs url"),
        ('{backend: redis, url: "http://r"}', "expected a redis://"),
        ('{backend: redis, url: "redis://r", snapshot: s.json}', "applies to backend: memory"),
        ('{url: "redis://r"}', "applies to backend: redis only"),
        ('{backend: redis, url: "redis://r", prefix: ""}', "must not be empty"),
        ('{backend: redis, url: "redis://r:notaport/0"}', "is not a Redis URL redis-py can use"),
        ('{backend: redis, url: "redis://r/0?socket_timeout=abc"}', "socket_timeout"),
        ('{backend: redis, url: "redis://:pw@r:6379/abc"}', "the database after the host"),
    ],
)
def test_a_state_section_that_cannot_work_is_refused(state: str, message: str) -> None:
    error = error_of(minimal(extra=f"state: {state}\n"))
    assert message in error and ":pw@" not in error


def test_the_telemetry_section() -> None:
    traces = parse(
        minimal(extra='telemetry: {traces: {endpoint: "http://otel:4318", sample_rate: 0.25}}\n')
    ).traces
    assert (traces.endpoint, traces.sample_rate) == ("http://otel:4318", 0.25)
    assert parse(minimal()).traces.endpoint == ""  # the OTEL_* variables decide
    assert parse(minimal(extra="telemetry: {traces: {}}\n")).traces.sample_rate is None
    assert "expected an http:// or https:// URL" in error_of(
        minimal(extra="telemetry: {traces: {endpoint: otel:4318}}\n")
    )
    assert "a fraction up to 1" in error_of(
        minimal(extra="telemetry: {traces: {sample_rate: 5}}\n")
    )


def test_optional_sections_given_as_null_take_their_defaults() -> None:
    config = parse(minimal(extra="server:\ntimeouts:\n"))
    assert config.server.port == 4000
    assert config.timeouts.request == 600.0


# --- masking and the route table -----------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "masked"),
    [
        pytest.param("sk-proj-abcdefghijklmnopqrstuvwxyz", "sk-...wxyz", id="openai-project"),
        pytest.param("sk-ant-" + "api03-abcdefghijklmnop", "sk-...mnop", id="anthropic"),
        pytest.param("gsk_abcdefghijklmnopqrstuv", "...stuv", id="no-dash"),
        pytest.param("abcdefghij-klmnopqrstuv", "...stuv", id="dash-after-8"),
        pytest.param("sk-abcdefghijk", "sk-...hijk", id="fourteen-chars"),
        pytest.param("abcdefg-ijkl", "...ijkl", id="prefix-would-show-it-all"),
        pytest.param("abcdefghijk", "***", id="eleven-chars"),
        pytest.param("", "***", id="empty"),
    ],
)
def test_mask_key_shows_a_prefix_and_the_last_four(secret: str, masked: str) -> None:
    assert mask_key(secret) == masked


def test_the_route_table_shows_routes_chains_skips_and_warnings_with_masked_keys() -> None:
    env = {**ENV, "OPENAI_API_KEY_2": ""}
    text = EXAMPLE.replace("${OPENAI_API_KEY}", PLANTED).replace(
        "  port: 4000", "  port: 4000\n  client_keys: [client-secret-0123456789]"
    )
    table = format_route_table(parse(text, env))

    assert "listen  127.0.0.1:4000" in table
    assert "auth    on (1 client key)" in table
    assert "model gpt-4o  (fallback chain: gpt-4o -> gpt-4o-mini)" in table
    assert "model gpt-4o-mini  (no fallback)" in table
    assert mask_key(PLANTED) in table
    assert mask_key(ENV["GROQ_API_KEY"]) in table
    assert "https://api.groq.com/openai/v1" in table
    assert "llama-3.3-70b-versatile" in table
    assert "openai-backup: OPENAI_API_KEY_2 is not set" in table
    assert "literal key in routes.yaml" in table
    assert "\x1b" not in table
    for secret in (PLANTED, ENV["GROQ_API_KEY"], "client-secret-0123456789"):
        assert secret not in table
    groq_line = next(line for line in table.splitlines() if "llama" in line)
    assert groq_line.split()[:4] == ["2", "1", "groq", "openai"]


# --- no message ever carries a key ---------------------------------------------------

LEAK_CASES = [
    pytest.param(EXAMPLE.replace("${OPENAI_API_KEY}", PLANTED), id="literal-key-warning"),
    pytest.param(
        EXAMPLE.replace("${OPENAI_API_KEY}", PLANTED).replace("weight: 2", "weight: 0"),
        id="error-next-to-a-literal-key",
    ),
    pytest.param(EXAMPLE.replace("${GROQ_API_KEY}", f"[{PLANTED}]"), id="key-as-list"),
    pytest.param(EXAMPLE.replace("${GROQ_API_KEY}", f"{PLANTED}\n    api_kye: x"), id="typo-field"),
    pytest.param(
        EXAMPLE.replace("${GROQ_API_KEY}", f"{PLANTED}\n    api_key: {PLANTED}"), id="duplicate"
    ),
    pytest.param(EXAMPLE.replace("${GROQ_API_KEY}", f"{PLANTED}${{"), id="malformed-variable"),
    pytest.param(EXAMPLE.replace("${GROQ_API_KEY}", f"'{PLANTED}"), id="yaml-error-on-key-line"),
    pytest.param(
        EXAMPLE.replace("https://api.groq.com/openai/v1", f"ftp://{PLANTED}@x"), id="bad-base"
    ),
    pytest.param(EXAMPLE.replace("${GROQ_API_KEY}", f"!!binary {PLANTED}"), id="tagged"),
    pytest.param(
        EXAMPLE.replace("  port: 4000", f"  port: 4000\n  client_keys: [{PLANTED}]\n  host: ::"),
        id="client-key-then-bind",
    ),
    pytest.param(
        EXAMPLE.replace("  port: 4000", f"  port: '${{PORT:-{PLANTED}}}'"), id="default-as-port"
    ),
]


@pytest.mark.parametrize("text", LEAK_CASES)
def test_no_error_or_warning_ever_contains_a_key(text: str) -> None:
    env = {**ENV, "OPENAI_API_KEY_2": PLANTED}
    try:
        config = parse(text, env)
    except ConfigError as exc:
        messages = [str(exc), repr(exc), str(exc.__cause__ or "")]
    else:
        messages = [*config.warnings, format_route_table(config), repr(config)]
    for message in messages:
        assert PLANTED not in message


def test_front_door_lists_are_normalised() -> None:
    extra = (
        "server:\n  allowed_hosts: ['Router.Example.', '[::1]', '*']\n"
        "  allowed_origins: ['HTTPS://App.Example/', 'http://localhost:3000']\n"
    )
    server = parse(minimal(extra=extra)).server
    assert server.allowed_hosts == ("router.example", "::1", "*")
    assert server.allowed_origins == ("https://app.example", "http://localhost:3000")


def test_affinity_is_on_by_default_and_off_when_asked() -> None:
    assert parse(minimal()).models["m"].affinity is True
    off = parse(minimal("  m:\n    routes: [{key: main, model: up}]\n    affinity: false\n"))
    assert off.models["m"].affinity is False
    message = error_of(minimal("  m:\n    routes: [{key: main, model: up}]\n    affinity: 3\n"))
    assert message == "routes.yaml:6: models.m.affinity: expected true or false, got an integer"


@pytest.mark.parametrize("prefix", ["team?", "team*", "team[ab]", "team\\\\x"])
def test_a_redis_prefix_with_a_pattern_character_is_refused(prefix: str) -> None:
    """The prefix is matched as a SCAN pattern when the state is read back: `team?` would
    read `teamB`'s state too."""
    text = minimal(
        extra=f"state: {{backend: redis, url: 'redis://127.0.0.1:6379', prefix: '{prefix}'}}\n"
    )
    assert "it is matched as a pattern" in error_of(text)
