"""One configured provider as a pool serves it: its config, resolved settings and run-time state."""

from __future__ import annotations

import fnmatch
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from proxy_plugin.config import ProviderConfig, TimeoutConfig
from proxy_plugin.provider_state import ProviderState

if TYPE_CHECKING:
    from proxy_plugin.upstream import Endpoint, UpstreamClient


#: The paths besides chat completions that the pool relays, each with its own endpoint per provider.
ROUTES = ("/embeddings", "/completions")


class Provider:
    """A provider of one configuration: what the config says, resolved once, plus its :class:`ProviderState`.

    ``timeouts`` are the global timeouts with this provider's overrides; ``endpoint`` is
    ``client``'s endpoint for its chat completions, ``endpoints`` its endpoint for each of
    the other routes the pool serves (:data:`ROUTES`, by path). All are fixed for the life
    of the configuration. ``state`` may be shared with the provider of an earlier
    configuration (see :mod:`proxy_plugin.provider_state`).
    """

    __slots__ = ("_serves", "chat_url", "config", "endpoint", "endpoints", "headers", "hint_404", "index", "models_url",
                 "name", "state", "timeouts")

    def __init__(
        self, config: ProviderConfig, index: int, state: ProviderState, timeouts: TimeoutConfig,
        client: UpstreamClient,
    ) -> None:
        self.config = config
        self.name = config.name
        self.index = index
        self.state = state
        self.timeouts = timeouts
        self.headers = provider_headers(config)
        self.chat_url = provider_url(config, "/chat/completions")
        self.models_url = provider_url(config, "/models")
        self.endpoint: Endpoint = client.endpoint(self.chat_url, self.headers)
        self.endpoints: dict[str, Endpoint] = {
            path: client.endpoint(provider_url(config, path), self.headers) for path in ROUTES}
        self.hint_404 = missing_version_hint(config)  # what a 404 from it may mean, said where it shows
        self._serves = served_pattern(config)

    def serves(self, model: str) -> bool:
        """Whether a request for ``model`` may go here: ``models`` (globs) or a ``model_map`` key; no list: any."""
        return self._serves is None or self._serves.fullmatch(model) is not None

    def map_model(self, model: str) -> str:
        """The provider's name for the model the client asked for."""
        return self.config.model_map.get(model, model)

    def available(self, model: str) -> bool:
        """Healthy, and neither the provider's nor the model's circuit is open."""
        return self.state.available(model)

    @property
    def ewma(self) -> float | None:
        """Moving average of recent successful latencies (None before the first)."""
        return self.state.ewma

    @property
    def load(self) -> float:
        """Share of capacity in use (in-flight requests when unlimited)."""
        return self.state.load

    @property
    def last_failure(self) -> float:
        """Monotonic time of the last failure charged to this provider (0: none)."""
        return self.state.last_failure

    @property
    def models(self) -> tuple[str, ...]:
        """The model ids its last health check reported."""
        return self.state.models

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able, secret-free view for ``/health``."""
        state = self.state.snapshot()
        return {
            "healthy": state.pop("healthy"),
            "available": state.pop("available"),
            "fallback_only": self.config.fallback_only,
            "weight": self.config.weight,
            "in_flight": state.pop("in_flight"),
            "max_concurrent": self.config.max_concurrent,
            **state,
        }


def provider_headers(config: ProviderConfig) -> dict[str, str]:
    """The headers every request to this provider carries (its key among them: never logged)."""
    headers = {"Content-Type": "application/json", **dict(config.headers)}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    return headers


def provider_url(config: ProviderConfig, path: str) -> str:
    """``path`` under the provider's base URL, with the base URL's query and ``query`` kept as the query.

    ``https://x.openai.azure.com/openai/deployments/gpt-4o?api-version=2024-06-01`` and
    ``/chat/completions`` give ``.../deployments/gpt-4o/chat/completions?api-version=2024-06-01``.
    """
    parts = urlsplit(config.base_url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update((k, v) for k, v in config.query.items() if k not in query)  # the URL's own win
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + path, urlencode(query), ""))


_VERSION = re.compile(r"v\d+(\.\d+)?([a-z]+\d*)?", re.IGNORECASE)  # v1, v2, v1beta, v1.1


def missing_version_hint(config: ProviderConfig) -> str:
    """A hint for a 404 from a provider whose base URL has no version segment (``/v1``), else ``""``."""
    parts = urlsplit(config.base_url)
    last = parts.path.rstrip("/").rpartition("/")[2]
    if _VERSION.fullmatch(last) or "api-version" in parts.query or "api-version" in config.query:
        return ""
    return (f" (its base_url {parts.scheme}://{parts.netloc}{parts.path or '/'} does not end in a version segment: "
            "most OpenAI-compatible servers want one, such as /v1)")


def served_pattern(config: ProviderConfig) -> re.Pattern[str] | None:
    """One regular expression for the models a provider serves (None: every model).

    Its ``models`` globs (``fnmatch``, case-sensitive) and its ``model_map`` keys, compiled
    once per configuration: matching a request costs one regex match.
    """
    if config.models is None:
        return None
    parts = [fnmatch.translate(glob) for glob in config.models] + [re.escape(alias) + r"\Z" for alias in config.model_map]
    return re.compile("|".join(f"(?:{part})" for part in parts) or r"(?!)")
