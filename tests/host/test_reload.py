"""``POST /admin/reload`` is all or nothing across plugins (two-phase: prepare every plugin, then apply).

The real host serves the real proxy plugin; two more plugins are registered on its plugin
manager: one that prepares a reload (and records whether it was applied or discarded) and,
called after the proxy, one that rejects. The proxy's new providers file is valid, so only
the two phases keep it from applying.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pluggy
import pytest
from support.harness import run_host, write_config
from support.helpers import entry

from hulumanage.appkeys import PLUGIN_MANAGER

hookimpl = pluggy.HookimplMarker("hulumanage")


class Recording:
    """A plugin whose reload is prepared, then applied or discarded; it says which."""

    def __init__(self) -> None:
        self.events: list[str] = []

    @hookimpl(tryfirst=True)
    async def reload(self, app: Any) -> Any:
        events = self.events
        events.append("prepared")

        class Prepared:
            def apply(self) -> dict[str, Any]:
                events.append("applied")
                return {"recording": "applied"}

            def discard(self) -> None:
                events.append("discarded")

        return Prepared()


class Rejecting:
    """A plugin that rejects every reload, after the others prepared theirs."""

    @hookimpl(trylast=True)
    def reload(self, app: Any) -> Any:
        raise ValueError("rejecting.yaml: nope")


class Legacy:
    """A plugin of the old form: it reloads at once and returns a dict."""

    @hookimpl
    def reload(self, app: Any) -> Any:
        return {"legacy": True}


async def proxy_view(http, url: str) -> tuple[set[str], int]:
    async with http.get(f"{url}/health") as resp:
        proxy = (await resp.json())["proxy"]
    return set(proxy["providers"]), proxy["reloads"]


async def test_one_plugin_rejecting_means_no_plugin_applies(
    fakes, http, tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HULUMANAGE_ADMIN_TOKEN", raising=False)  # loopback callers only
    a, b = await fakes("a", "b")
    path = write_config(tmp_path / "proxy.yaml", [entry(a)])
    async with run_host("--approach", "proxy", "--proxy-config", str(path)) as host:
        pm = host.app[PLUGIN_MANAGER]
        recording, rejecting = Recording(), Rejecting()
        pm.register(recording, name="recording")
        pm.register(rejecting, name="rejecting")
        pm.register(Legacy(), name="legacy")
        write_config(path, [entry(b)])  # valid: the proxy would apply it on its own

        async with http.post(f"{host.url}/admin/reload") as resp:
            assert resp.status == 422
            error = (await resp.json())["error"]
        assert error["code"] == "reload_rejected" and "rejecting.yaml: nope" in error["message"]
        assert recording.events == ["prepared", "discarded"]
        assert await proxy_view(http, host.url) == ({"a"}, 0)

        pm.unregister(rejecting)
        async with http.post(f"{host.url}/admin/reload") as resp:
            assert resp.status == 200
            reloaded = (await resp.json())["reloaded"]
        assert recording.events == ["prepared", "discarded", "prepared", "applied"]
        assert {"recording": "applied"} in reloaded and {"legacy": True} in reloaded
        assert any(r.get("providers") == ["b"] for r in reloaded)
        assert await proxy_view(http, host.url) == ({"b"}, 1)
