"""The proxy configuration: the public entry point (``load_config``, ``parse_config``, the typed sections).

Layout: ``loader`` finds and reads the file and checks what spans sections;
``interpolate`` expands ``${VAR}``; ``schema`` declares the sections as frozen
dataclasses; ``engine`` validates parsed YAML into them; ``checks`` holds the field
checks. Import from here; the submodules are the implementation.
"""

from __future__ import annotations

from proxy_plugin.config.loader import DEFAULT_PATH, ENV_VAR, ConfigError, find_config_path, load_config, parse_config
from proxy_plugin.config.schema import (
    AdaptiveConfig,
    CacheConfig,
    CircuitBreakerConfig,
    HealthCheckConfig,
    MetricsConfig,
    MonitoringConfig,
    ProviderConfig,
    ProxyConfig,
    QueueConfig,
    RetryConfig,
    RoutingConfig,
    TimeoutConfig,
    TimeoutOverrides,
)

__all__ = [
    "DEFAULT_PATH",
    "ENV_VAR",
    "AdaptiveConfig",
    "CacheConfig",
    "CircuitBreakerConfig",
    "ConfigError",
    "HealthCheckConfig",
    "MetricsConfig",
    "MonitoringConfig",
    "ProviderConfig",
    "ProxyConfig",
    "QueueConfig",
    "RetryConfig",
    "RoutingConfig",
    "TimeoutConfig",
    "TimeoutOverrides",
    "find_config_path",
    "load_config",
    "parse_config",
]
