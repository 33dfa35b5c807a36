"""Tests for proxy_plugin.config: finding, reading, interpolating and validating the config."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Any

import pytest

from proxy_plugin.config import (
    ConfigError,
    ProviderConfig,
    ProxyConfig,
    TimeoutConfig,
    find_config_path,
    load_config,
    parse_config,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "proxy_config.example.yaml"
SECRET = "sk-super-secret-value-123"


def one(**provider: Any) -> dict[str, Any]:
    """A minimal config dict with one provider, fields overridden by ``provider``."""
    return {"providers": [{"name": "p", "base_url": "http://127.0.0.1:9/v1", **provider}]}


def error(data: Any, environ: dict[str, str] | None = None) -> ConfigError:
    """Parse ``data`` expecting a ConfigError, and return it."""
    with pytest.raises(ConfigError) as info:
        parse_config(data, environ or {}, "cfg.yaml")
    return info.value


def write(tmp_path: Path, text: str) -> Path:
    """Write ``text`` to a config file in ``tmp_path``."""
    path = tmp_path / "proxy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults and the example file ---------------------------------------------------


def test_defaults() -> None:
    config = parse_config(one(), {})
    p = config.providers[0]
    assert (p.name, p.base_url, p.api_key, p.weight) == ("p", "http://127.0.0.1:9/v1", None, 1.0)
    assert (p.fallback_only, p.max_concurrent, p.slot_wait, p.supports_prefill) == (False, None, 0.5, False)
    assert dict(p.model_map) == {} and dict(p.headers) == {}
    assert config.routing.strategy == "weighted"
    hc = config.routing.health_check
    assert (hc.enabled, hc.interval, hc.timeout, hc.unhealthy_after, hc.healthy_after) == (True, 30.0, 5.0, 1, 1)
    assert config.timeouts == TimeoutConfig(connect=5.0, request=120.0, first_token=30.0, idle=30.0, total=None)
    assert (config.queue.max_concurrent, config.queue.timeout) == (100, 30.0)
    assert (config.monitoring.log_level, config.monitoring.track_latency) == ("INFO", True)
    r = config.retries
    assert (r.attempts_per_provider, r.backoff_base, r.backoff_max, r.retry_after_max) == (2, 0.1, 2.0, 2.0)
    assert (r.budget_ratio, r.budget_min) == (0.2, 100)
    cb = config.circuit_breaker
    assert (cb.enabled, cb.consecutive_failures, cb.failure_rate, cb.window) == (True, 5, 0.5, 30.0)
    assert (cb.min_requests, cb.open_base, cb.open_max, cb.time_weighted) == (10, 5.0, 60.0, True)
    assert config.source == "<config>"


def test_objects_are_frozen_and_hashable() -> None:
    config = parse_config(one(model_map={"a": "b"}, headers={"x": "y"}), {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.providers[0].weight = 2.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.providers[0].model_map["c"] = "d"  # type: ignore[index]
    assert isinstance(config.providers, tuple)
    assert hash(config) == hash(parse_config(one(model_map={"a": "b"}, headers={"x": "y"}), {}))
    assert {config.providers[0]: 1}[config.providers[0]] == 1


def test_example_file_loads() -> None:
    env = {"OPENAI_API_KEY": "sk-openai", "TOGETHER_API_KEY": "tg-key"}
    config = load_config(EXAMPLE, env)
    assert config.source == str(EXAMPLE)
    openai, together, local = config.providers
    assert (openai.name, openai.base_url, openai.api_key, openai.weight) == (
        "openai",
        "https://api.openai.com/v1",
        "sk-openai",
        3.0,
    )
    assert together.api_key == "tg-key"
    assert together.model_map["llama-3.1-70b"] == "meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo"
    assert (local.fallback_only, local.api_key, local.base_url) == (True, None, "http://127.0.0.1:11434/v1")
    assert not openai.fallback_only and not together.fallback_only
    assert config.timeouts_for(local).connect == 1.0
    assert config.routing.strategy == "weighted"


def test_example_file_takes_env_overrides() -> None:
    env = {
        "OPENAI_API_KEY": "a",
        "TOGETHER_API_KEY": "b",
        "TOGETHER_WEIGHT": "2.5",
        "LOCAL_LLM_HOST": "gpu-box",
        "LOCAL_LLM_PORT": "11434",
        "LOCAL_LLM_KEY": "ollama",
    }
    together, local = load_config(EXAMPLE, env).providers[1:]
    assert together.weight == 2.5
    assert (local.base_url, local.api_key) == ("http://gpu-box:11434/v1", "ollama")


def test_example_file_needs_its_keys() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(EXAMPLE, {"OPENAI_API_KEY": "a"})
    assert info.value.key_path == "providers[1].api_key"
    assert "TOGETHER_API_KEY" in info.value.problem


def test_example_documents_every_option() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for cls in (ProviderConfig, ProxyConfig, TimeoutConfig):
        for f in dataclasses.fields(cls):
            if f.name != "source":
                assert f"{f.name}:" in text, f.name
    for section in ("health_check", "unhealthy_after", "retry_after_max", "budget_min", "open_max", "log_level"):
        assert f"{section}:" in text


# --- interpolation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "env", "expected"),
    [
        ("${KEY}", {"KEY": "k1"}, "k1"),
        ("${KEY:-dflt}", {}, "dflt"),
        ("${KEY:-dflt}", {"KEY": ""}, "dflt"),
        ("${KEY:-dflt}", {"KEY": "set"}, "set"),
        ("${KEY}", {"KEY": ""}, None),
        ("${A:-${B}}", {"B": "from-b"}, "from-b"),
        ("${A:-${B}}", {"A": "from-a"}, "from-a"),
        ("${A:-${B:-literal}}", {}, "literal"),
        ("${A:-${B:-literal}}", {"B": "bb"}, "bb"),
        ("pre-${A}-mid-${B:-x}-post", {"A": "1"}, "pre-1-mid-x-post"),
        ("cost$$5", {}, "cost$5"),
        ("$${KEY}", {"KEY": "no"}, "${KEY}"),
        ("a$b $", {}, "a$b $"),
        ("${A:-}", {}, None),
        ("${A:-x}}", {}, "x}"),
    ],
)
def test_interpolation_forms(raw: str, env: dict[str, str], expected: str | None) -> None:
    assert parse_config(one(api_key=raw), env).providers[0].api_key == expected


def test_interpolation_in_url_with_several_references() -> None:
    data = {"providers": [{"name": "p", "base_url": "http://${HOST}:${PORT:-8000}/v1/"}]}
    assert parse_config(data, {"HOST": "h"}).providers[0].base_url == "http://h:8000/v1"
    assert parse_config(data, {"HOST": "h", "PORT": "1"}).providers[0].base_url == "http://h:1/v1"


def test_interpolation_in_maps_values_not_keys() -> None:
    p = parse_config(one(model_map={"${X}": "${M:-real}"}, headers={"api-key": "${K}"}), {"X": "no", "K": "hk"})
    assert dict(p.providers[0].model_map) == {"${X}": "real"}
    assert dict(p.providers[0].headers) == {"api-key": "hk"}


def test_unset_variable_names_variable_and_path() -> None:
    e = error(one(api_key="${OPENAI_API_KEY}"))
    assert e.key_path == "providers[0].api_key"
    assert str(e) == (
        "cfg.yaml: providers[0].api_key: environment variable OPENAI_API_KEY is not set "
        "(set it, or write ${OPENAI_API_KEY:-default})"
    )


def test_nested_default_with_unset_inner_variable() -> None:
    e = error(one(name="${A:-${B}}"))
    assert (e.key_path, "environment variable B is not set" in e.problem) == ("providers[0].name", True)


def test_default_not_evaluated_when_variable_is_set() -> None:
    assert parse_config(one(name="${A:-${UNSET}}"), {"A": "a"}).providers[0].name == "a"


@pytest.mark.parametrize("raw", ["${KEY", "${KEY:-x", "${A:-${B}", "x ${", "${"])
def test_unterminated_reference(raw: str) -> None:
    e = error(one(name=raw), {"KEY": "k", "A": "a", "B": "b"})
    assert e.key_path == "providers[0].name"
    assert "unterminated '${'" in e.problem


@pytest.mark.parametrize(
    ("raw", "problem"), [("${}", "expected a variable name"), ("${A:x}", "':-'"), ("${1A}", "expected a variable name")]
)
def test_bad_reference_syntax(raw: str, problem: str) -> None:
    assert problem in error(one(name=raw), {"A": "a"}).problem


def test_interpolation_error_on_secret_does_not_echo_it() -> None:
    e = error(one(api_key=SECRET + "${"))
    assert "unterminated" in e.problem and SECRET not in str(e)


def test_typed_interpolation() -> None:
    env = {"W": "2", "F": "0.25", "B": "yes", "N": "7", "OFF": "0"}
    data = one(weight="${W}", max_concurrent="${N}", fallback_only="${B}", supports_prefill="${OFF}", slot_wait="${F}")
    data["timeouts"] = {"total": "${TOTAL:-}", "idle": "${IDLE:-null}", "request": "${REQ:-60}"}
    data["monitoring"] = {"track_errors": "${TE:-False}"}
    config = parse_config(data, env)
    p = config.providers[0]
    assert (p.weight, p.max_concurrent, p.fallback_only, p.supports_prefill, p.slot_wait) == (2.0, 7, True, False, 0.25)
    assert isinstance(p.max_concurrent, int) and isinstance(p.weight, float)
    assert (config.timeouts.total, config.timeouts.idle, config.timeouts.request) == (None, None, 60.0)
    assert config.monitoring.track_errors is False


def test_typed_interpolation_default_and_errors() -> None:
    assert parse_config(one(weight="${W:-2}"), {}).providers[0].weight == 2.0
    e = error(one(weight="${W}"), {"W": "abc"})
    assert str(e) == "cfg.yaml: providers[0].weight: expected a number, got 'abc' (from '${W}')"
    assert "expected an integer" in error(one(max_concurrent="${N}"), {"N": "2.5"}).problem
    assert "expected true or false" in error(one(fallback_only="${B}"), {"B": "maybe"}).problem
    assert "must be >= 0" in error(one(weight="${W}"), {"W": "-1"}).problem


def test_plain_string_is_not_converted() -> None:
    e = error(one(weight="2"))
    assert e.key_path == "providers[0].weight"
    assert e.problem.startswith("expected a number, got '2'")
    assert "expected true or false" in error(one(fallback_only="true")).problem


# --- validation ----------------------------------------------------------------------


def test_unknown_key_with_suggestion() -> None:
    e = error(one(wieght=2))
    assert str(e) == "cfg.yaml: providers[0].wieght: unknown key (did you mean 'weight'?)"
    assert error({**one(), "rouitng": {}}).problem == "unknown key (did you mean 'routing'?)"
    assert error({**one(), "routing": {"health_check": {"intervall": 3}}}).key_path == "routing.health_check.intervall"
    e = error({**one(), "queue": {"zzz": 1}})
    assert e.key_path == "queue.zzz" and "allowed: max_concurrent, timeout" in e.problem


@pytest.mark.parametrize(
    ("provider", "path", "problem"),
    [
        ({"weight": "abc"}, "weight", "expected a number, got 'abc'"),
        ({"weight": True}, "weight", "expected a number, got true"),
        ({"weight": -1}, "weight", "must be >= 0, got -1"),
        ({"max_concurrent": 0}, "max_concurrent", "must be >= 1, got 0"),
        ({"max_concurrent": 1.5}, "max_concurrent", "expected an integer, got 1.5"),
        ({"fallback_only": 1}, "fallback_only", "expected true or false, got 1"),
        ({"name": 5}, "name", "expected a string, got 5"),
        ({"name": " "}, "name", "must not be empty"),
        ({"base_url": "ftp://x"}, "base_url", "expected an http:// or https:// URL, got 'ftp://x'"),
        ({"base_url": "localhost:8000"}, "base_url", "expected an http:// or https:// URL"),
        ({"base_url": "http://h:99999/v1"}, "base_url", "expected an http:// or https:// URL"),
        ({"model_map": ["a"]}, "model_map", "expected a mapping, got a list"),
        ({"model_map": {"a": 3}}, "model_map['a']", "expected a string, got 3"),
        ({"model_map": {3.5: "x"}}, "model_map", "keys must be non-empty strings, got 3.5"),
        ({"timeouts": {"connect": 0}}, "timeouts.connect", "must be > 0, got 0"),
        ({"timeouts": {"connnect": 1}}, "timeouts.connnect", "unknown key (did you mean 'connect'?)"),
    ],
)
def test_wrong_provider_values(provider: dict[str, Any], path: str, problem: str) -> None:
    e = error(one(**provider))
    assert e.key_path == f"providers[0].{path}"
    assert e.problem.startswith(problem), e.problem


@pytest.mark.parametrize(
    ("data", "path", "problem"),
    [
        ({"routing": {"strategy": "fastest"}}, "routing.strategy", "unknown strategy 'fastest'"),
        ({"routing": {"health_check": {"interval": 0}}}, "routing.health_check.interval", "must be > 0"),
        ({"timeouts": {"request": -5}}, "timeouts.request", "must be > 0, got -5"),
        ({"queue": {"max_concurrent": 0}}, "queue.max_concurrent", "must be >= 1"),
        ({"queue": []}, "queue", "expected a mapping, got a list"),
        ({"monitoring": {"log_level": "loud"}}, "monitoring.log_level", "unknown log level 'loud'"),
        ({"retries": {"budget_ratio": 1.5}}, "retries.budget_ratio", "must be <= 1, got 1.5"),
        ({"retries": {"backoff_base": 3, "backoff_max": 1}}, "retries.backoff_max", "must be >= backoff_base (3.0)"),
        ({"circuit_breaker": {"failure_rate": 0}}, "circuit_breaker.failure_rate", "must be > 0"),
        ({"circuit_breaker": {"time_weighted": "yes"}}, "circuit_breaker.time_weighted", "expected true or false"),
        ({"circuit_breaker": {"open_max": 1}}, "circuit_breaker.open_max", "must be >= open_base (5.0), got 1.0"),
    ],
)
def test_wrong_section_values(data: dict[str, Any], path: str, problem: str) -> None:
    e = error({**one(), **data})
    assert e.key_path == path
    assert e.problem.startswith(problem), e.problem


def test_bad_strategy_lists_allowed_values() -> None:
    e = error({**one(), "routing": {"strategy": "round-robin"}})
    assert "(did you mean 'round_robin'?)" in e.problem
    for name in ("weighted", "round_robin", "failover", "least_latency", "least_busy"):
        assert repr(name) in e.problem


def test_every_strategy_and_log_level_accepted() -> None:
    for name in ("weighted", "round_robin", "failover", "least_latency", "least_busy"):
        assert parse_config({**one(), "routing": {"strategy": name}}, {}).routing.strategy == name
    assert parse_config({**one(), "monitoring": {"log_level": "debug"}}, {}).monitoring.log_level == "DEBUG"


def test_duplicate_provider_names() -> None:
    url = "https://x/v1"
    data = {
        "providers": [
            {"name": "openai", "base_url": url},
            {"name": "b", "base_url": url},
            {"name": "openai", "base_url": url},
        ]
    }
    assert str(error(data)) == "cfg.yaml: providers[2].name: duplicate provider name 'openai' (also providers[0])"


@pytest.mark.parametrize(
    ("data", "path", "problem"),
    [
        ({}, "providers", "required key is missing"),
        ({"providers": []}, "providers", "must list at least one provider"),
        ({"providers": None}, "providers", "must list at least one provider"),
        ({"providers": {"name": "x"}}, "providers", "expected a list of providers, got a mapping"),
        ({"providers": ["openai"]}, "providers[0]", "expected a mapping, got 'openai'"),
        ({"providers": [{"name": "x"}]}, "providers[0].base_url", "required key is missing"),
        (None, "", "the file is empty"),
        (["a"], "", "expected a mapping at the top level, got a list"),
    ],
)
def test_structure_errors(data: Any, path: str, problem: str) -> None:
    e = error(data)
    assert (e.key_path, e.file) == (path, "cfg.yaml")
    assert e.problem.startswith(problem), e.problem


def test_null_sections_mean_defaults() -> None:
    config = parse_config({**one(model_map=None), "routing": None, "timeouts": {"total": None}}, {})
    assert config.routing.strategy == "weighted" and config.timeouts.total is None
    assert dict(config.providers[0].model_map) == {}


def test_url_trailing_slash_stripped_and_https_kept() -> None:
    assert parse_config(one(base_url="https://api.example.com/v1//"), {}).providers[0].base_url == (
        "https://api.example.com/v1"
    )


# --- secrets -------------------------------------------------------------------------


def test_repr_has_no_secrets() -> None:
    config = parse_config(one(api_key=SECRET, headers={"api-key": SECRET + "-h"}), {})
    assert config.providers[0].api_key == SECRET
    assert config.providers[0].headers["api-key"] == SECRET + "-h"
    for text in (repr(config), str(config), repr(config.providers[0]), str(config.providers)):
        assert "sk-super-secret" not in text
    assert "name='p'" in repr(config.providers[0])


@pytest.mark.parametrize(
    "provider",
    [
        {"api_key": 12345678},
        {"api_key": [SECRET]},
        {"api_key": SECRET + "\n"},
        {"headers": {"api-key": 12345678}},
        {"headers": {"api-key": SECRET + "\r\nX-Evil: 1"}},
        {"api_key": "\u201c" + SECRET + "\u201d"},
        {"headers": {"api-key": SECRET + "\u20ac"}},
    ],
)
def test_errors_never_echo_secrets(provider: dict[str, Any]) -> None:
    e = error(one(**provider))
    assert e.key_path.startswith(("providers[0].api_key", "providers[0].headers"))
    assert "12345678" not in str(e) and "sk-super-secret" not in str(e)


def test_a_key_that_cannot_be_sent_in_a_header_is_refused_at_startup() -> None:
    assert str(error(one(api_key="\u201c" + SECRET + "\u201d"))) == (
        "cfg.yaml: providers[0].api_key: must be Latin-1 text (it is sent in an HTTP header); "
        "check for pasted quotes or spaces"
    )
    assert str(error(one(headers={"X-Team": "\u20ac"}))).startswith(
        "cfg.yaml: providers[0].headers['X-Team']: header names and values must be Latin-1 text")


def test_api_key_type_error_message() -> None:
    assert str(error(one(api_key=42))) == "cfg.yaml: providers[0].api_key: expected a string, got a number"


def test_yaml_error_does_not_quote_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, f"providers:\n  - name: a\n    api_key: {SECRET}: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.key_path == "line 3, column 39"
    assert "sk-super-secret" not in str(info.value)


# --- files ---------------------------------------------------------------------------


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  - name: a\n    base_url: http://h/v1\n    weight: ${W:-4}\n")
    config = load_config(str(path), {})
    assert (config.providers[0].weight, config.source) == (4.0, str(path))


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  - name: a\n    base_url: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    e = info.value
    assert e.file == str(path) and str(e).startswith(f"{path}: line ")
    assert "YAML syntax error" in e.problem
    assert e.key_path.startswith("line ") and "column" in e.key_path


def test_yaml_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  - name: a\n    base_url: http://h\n    name: b\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert "duplicate key 'name'" in info.value.problem and info.value.key_path == "line 4, column 5"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "the file is empty"),
        ("# only comments\n", "the file is empty"),
        ("- a\n- b\n", "expected a mapping at the top level"),
    ],
)
def test_empty_or_non_mapping_file(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.file == str(path) and info.value.problem.startswith(problem)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.yaml", {})
    assert info.value.file == str(tmp_path / "missing.yaml")
    assert info.value.problem.startswith("cannot read the file")
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path, {})
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "bin.yaml", {})


def test_config_error_fields_and_pickle() -> None:
    e = ConfigError("/etc/p.yaml", "providers[1].wieght", "unknown key (did you mean 'weight'?)")
    assert str(e) == "/etc/p.yaml: providers[1].wieght: unknown key (did you mean 'weight'?)"
    copy = pickle.loads(pickle.dumps(e))
    assert (copy.file, copy.key_path, copy.problem, str(copy)) == (e.file, e.key_path, e.problem, str(e))


# --- find_config_path ----------------------------------------------------------------


def test_find_config_path_precedence(tmp_path: Path) -> None:
    home = tmp_path / "home"
    default = home / ".hulumanage" / "proxy_config.yaml"
    cli, env_file = write(tmp_path, "x"), tmp_path / "env.yaml"
    env_file.write_text("x")
    environ = {"HOME": str(home), "HULUMANAGE_PROXY_CONFIG": str(env_file)}

    assert find_config_path(None, {"HOME": str(home)}) == (None, [str(default)])
    default.parent.mkdir(parents=True)
    default.write_text("x")
    assert find_config_path(None, {"HOME": str(home)}) == (default, [str(default)])
    assert find_config_path(None, environ) == (env_file, [str(env_file)])
    assert find_config_path(str(cli), environ) == (cli, [str(cli)])
    assert find_config_path(None, {**environ, "HULUMANAGE_PROXY_CONFIG": ""})[0] == default


def test_find_config_path_expands_home_from_environ(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("x")
    environ = {"HOME": str(tmp_path)}
    assert find_config_path("~/c.yaml", environ)[0] == tmp_path / "c.yaml"
    assert find_config_path(None, {**environ, "HULUMANAGE_PROXY_CONFIG": "~/c.yaml"})[0] == tmp_path / "c.yaml"


def test_find_config_path_explicit_missing_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        find_config_path(str(missing), {"HOME": str(tmp_path)})
    assert (info.value.file, info.value.key_path) == (str(missing), "--proxy-config")
    assert "does not exist" in info.value.problem
    with pytest.raises(ConfigError) as info:
        find_config_path(None, {"HOME": str(tmp_path), "HULUMANAGE_PROXY_CONFIG": str(missing)})
    assert info.value.key_path == "$HULUMANAGE_PROXY_CONFIG"
    with pytest.raises(ConfigError, match="not a regular file"):
        find_config_path(str(tmp_path), {})


# --- timeouts_for --------------------------------------------------------------------


def test_timeouts_for_merges_overrides() -> None:
    data = {
        "providers": [
            {"name": "a", "base_url": "http://a", "timeouts": {"connect": 1, "first_token": 99}},
            {"name": "b", "base_url": "http://b"},
        ],
        "timeouts": {"connect": 4, "request": 50, "first_token": None, "idle": 7, "total": 200},
    }
    config = parse_config(data, {})
    a, b = config.providers
    assert config.timeouts_for(a) == TimeoutConfig(connect=1.0, request=50.0, first_token=99.0, idle=7.0, total=200.0)
    assert config.timeouts_for(b) == config.timeouts
    assert config.timeouts_for(b).first_token is None


def test_per_provider_total_timeout_is_refused_because_it_is_global() -> None:
    data = {"providers": [{"name": "a", "base_url": "http://127.0.0.1:1/v1", "timeouts": {"total": 5}}]}
    with pytest.raises(ConfigError) as err:
        parse_config(data, {}, "p.yaml")
    assert err.value.key_path == "providers[0].timeouts.total"
    assert "unknown key" in err.value.problem
