"""Config errors that say what the mistake probably is: a near name, a tab, an unquoted
variable in a flow list, a section indented wrong. Each message in full."""

from __future__ import annotations

import pytest

from router.config import parse_config
from router.errors import ConfigError

KEYS = "keys:\n  main: {provider: openai, api_key: sk-test-aaaaaaaaaaaaaaaa1234}\n"
MODELS = "models:\n  gpt-4o:\n    routes: [{key: main, model: gpt-4o}]\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            KEYS + "models:\n  gpt-4o:\n    routes: [{key: mian, model: gpt-4o}]\n",
            "routes.yaml:5: models.gpt-4o.routes[0].key: unknown key 'mian' (did you mean 'main'?)",
            id="key-reference",
        ),
        pytest.param(
            KEYS + MODELS + "  mini:\n    fallback: [gpt-4e]\n",
            "routes.yaml:7: models.mini.fallback[0]: unknown model 'gpt-4e' "
            "(did you mean 'gpt-4o'?)",
            id="model-reference",
        ),
        pytest.param(
            KEYS + MODELS + "  mini:\n    fallback: [gpt-4o]\n    context_fallback: [gtp-4o]\n",
            "routes.yaml:8: models.mini.context_fallback[0]: unknown model 'gtp-4o' "
            "(did you mean 'gpt-4o'?)",
            id="context-model-reference",
        ),
        pytest.param(
            "keys:\n\tmain: {provider: openai}\n",
            "routes.yaml:2: YAML syntax error: while scanning for the next token, found "
            "character '\\t' that cannot start any token; a tab character: YAML indents "
            "with spaces only",
            id="tab",
        ),
        pytest.param(
            KEYS + MODELS + "server:\n  client_keys: [${A}, ${B}]\n",
            "routes.yaml:7: YAML syntax error: while parsing a flow sequence, expected ',' "
            "or ']', but got '{'; inside [ ] or { }, quote a variable reference: \"${VAR}\"",
            id="variable-in-flow-list",
        ),
        pytest.param(
            "keys:\n  main: {provider: openai, api_key: ${KEY}}\n" + MODELS,
            "routes.yaml:2: YAML syntax error: while parsing a flow mapping, expected ',' "
            "or '}', but got '{'; inside [ ] or { }, quote a variable reference: \"${VAR}\"",
            id="variable-in-flow-mapping",
        ),
        pytest.param(
            KEYS + "models:\ngpt-4o:\n  routes: [{key: main, model: gpt-4o}]\n",
            "routes.yaml:4: unknown field 'gpt-4o' "
            "(is it meant to be indented under 'models:', which has no value?)",
            id="section-contents-not-indented",
        ),
        pytest.param(
            KEYS + MODELS + "server:\nport: 4000\n",
            "routes.yaml:7: unknown field 'port' "
            "(is it meant to be indented under 'server:', which has no value?)",
            id="setting-not-indented",
        ),
        pytest.param(
            KEYS + "models:\n  gpt-4o:\n  routes:\n    - {key: main, model: gpt-4o}\n",
            "routes.yaml:4: models.gpt-4o: expected a mapping, got nothing; "
            "indent its fields under it",
            id="model-fields-not-indented",
        ),
        pytest.param(
            KEYS + "".join(f"  {line}\n" for line in MODELS.splitlines()),
            "routes.yaml:1: missing required field 'models' "
            "(line 3 has 'models:' indented under 'keys:'; indent it less)",
            id="section-indented-too-far",
        ),
    ],
)
def test_the_error_says_what_the_mistake_probably_is(text: str, message: str):
    with pytest.raises(ConfigError) as raised:
        parse_config(text, source="routes.yaml", environ={"A": "a", "B": "b", "KEY": "k"})
    assert raised.value.message == message


def test_an_empty_required_section_still_says_it_needs_a_value():
    with pytest.raises(ConfigError) as raised:
        parse_config(KEYS + "models:\n", source="routes.yaml", environ={})
    assert raised.value.message == "routes.yaml:3: models: needs a value"


def test_no_hint_quotes_the_line_it_is_about():
    secret = "sk-PLANTEDsecret0123456789zyxw"
    text = f"keys:\n  main: {{provider: openai, api_key: {secret}, api_base: ${{B}}}}\n"
    with pytest.raises(ConfigError) as raised:
        parse_config(text + MODELS, source="routes.yaml", environ={})
    assert "quote a variable reference" in raised.value.message
    assert secret not in raised.value.message
