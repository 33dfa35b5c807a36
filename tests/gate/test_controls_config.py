"""The controls' config sections are validated as strictly as the rest: paths, duplicates, secrets never echoed."""

from __future__ import annotations

import hashlib

import pytest

from proxy_plugin.config import ConfigError, parse_config

PROVIDER = {"name": "a", "base_url": "http://127.0.0.1:1/v1"}
SECRET = "sk-very-secret-client-key"


def parse(**sections: object):
    return parse_config({"providers": [PROVIDER], **sections}, {"TEAM_KEY": SECRET})


@pytest.mark.parametrize(("sections", "path", "problem"), [
    ({"clients": {"keys": [{"id": "t", "key": "${TEAM_KEY}"}, {"id": "t", "key": "other"}]}},
     "clients.keys[1].id", "duplicate client id 't'"),
    ({"clients": {"keys": [{"id": "t", "key": "${TEAM_KEY}"},
                           {"id": "u", "key_sha256": hashlib.sha256(SECRET.encode()).hexdigest()}]}},
     "clients.keys[1].key_sha256", "the same key as clients.keys[0]"),
    ({"clients": {"keys": [{"id": "t", "key_sha256": "abc"}]}}, "clients.keys[0].key_sha256", "64 hexadecimal"),
    ({"clients": {"keys": [{"id": "t"}]}}, "clients.keys[0]", "exactly one of 'key' or 'key_sha256'"),
    ({"clients": {"keys": [{"id": "t", "key": "${TEAM_KEY}", "rpm": 0}]}}, "clients.keys[0].rpm", ">= 1"),
    ({"clients": {"keys": [{"id": "t", "key": "${TEAM_KEY}", "modles": ["x"]}]}}, "clients.keys[0].modles",
     "did you mean 'models'"),
    ({"clients": {"anonymous": {"rpm": "many"}}}, "clients.anonymous.rpm", "expected an integer"),
    ({"budget": {"usd": 5, "period": "year"}}, "budget.period", "unknown period 'year'"),
    ({"budget_reserve_tokens": 0}, "budget_reserve_tokens", ">= 1"),
    ({"state": {"backend": "postgres"}}, "state.backend", "unknown state backend"),
])
def test_bad_controls_config_names_the_key_path(sections, path, problem) -> None:
    with pytest.raises(ConfigError) as error:
        parse(**sections)
    assert error.value.key_path == path and problem in error.value.problem
    assert SECRET not in str(error.value)


def test_prices_are_per_provider_and_a_key_stays_out_of_repr() -> None:
    config = parse_config({"providers": [{**PROVIDER, "prices": {"gpt-4": {"input": 1, "output": 2}}}],
                           "clients": {"keys": [{"id": "t", "key": "${TEAM_KEY}", "models": ["gpt-*"]}]}},
                          {"TEAM_KEY": SECRET})
    assert config.providers[0].prices["gpt-4"].output == 2.0
    assert config.clients.keys[0].models == ("gpt-*",)
    assert SECRET not in repr(config)
    with pytest.raises(ConfigError) as error:
        parse_config({"providers": [{**PROVIDER, "prices": {"gpt-4": {"input": -1, "output": 2}}}]}, {})
    assert error.value.key_path == "providers[0].prices['gpt-4'].input"
