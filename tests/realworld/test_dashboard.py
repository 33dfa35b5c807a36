"""The status page in a real browser: ``GET /dashboard`` in headless Chromium, over the real server.

Chromium and its driver come from the distribution (``apt-get install chromium chromium-driver``;
``.ci/run`` installs them). Without them these browser tests skip locally and fail in CI (``CI``
set), so a CI run never passes by skipping them.

``$DASHBOARD_SCREENSHOT`` (a path) saves the page as the README shows it: ``DASHBOARD_SCREENSHOT=
docs/dashboard.png python -m pytest tests/realworld/test_dashboard.py``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.helpers import USER, entry, until

from hulumanage.sim import Profile

# the $0.02 daily budget is there to be shown, not to pace a burst of test traffic (it would shed it)
CHECKED = {"strategy": "round_robin", "pace_budget": False,
           "health_check": {"enabled": True, "interval": 0.1, "timeout": 0.2}}
PRICES = {"gpt-4": {"input": 2.5, "output": 10.0}}
PROVIDER_KEYS = {"a": "sk-dash-provider-a-5e1c", "b": "sk-dash-provider-b-77d0"}
CLIENT_KEY = "sk-dash-client-team-a-90ab"
REFRESH = 0.5
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"the dashboard's browser test needs {reason}: apt-get install chromium chromium-driver "
                    "and pip install selenium (.ci/run does both)", pytrace=False)
    pytest.skip(f"no headless browser: {reason}")


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium under Selenium, 1000x700, closed afterwards."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        _missing("the chromium and chromedriver commands")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("the selenium package")
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1000,700",
                 "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(driver_path)))
    try:
        yield driver
    finally:
        driver.quit()


async def _in_browser(call: Callable[[], Any]) -> Any:
    """Selenium blocks: run it off the event loop, which serves the page meanwhile."""
    return await asyncio.to_thread(call)


def _rows(driver: Any) -> dict[str, str]:
    """The providers the page shows, name -> ``data-state``."""
    found = driver.execute_script(
        "return Array.from(document.querySelectorAll('tr[data-provider]'))"
        ".map(r => [r.dataset.provider, r.dataset.state, r.querySelector('td.name').textContent]);")
    assert all(text.startswith(name) for name, _state, text in found)  # the name is shown, not only an attribute
    return {name: state for name, state, _text in found}


async def _page_shows(driver: Any, expected: dict[str, str], deadline: float) -> None:
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        seen = await _in_browser(lambda: _rows(driver))
        if seen == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the page shows {seen}, not {expected}")


async def _status(http: Any, url: str, **headers: str) -> tuple[int, Any]:
    async with http.get(f"{url}/dashboard/status.json", headers=headers) as resp:
        return resp.status, await resp.json()


async def _two_providers(fakes: Any, proxy: Any, **sections: Any) -> tuple[Any, Any, Any]:
    (a,) = await fakes("a", api_key=PROVIDER_KEYS["a"], profile=Profile(latency=(0.01, 0.04)), seed=1)
    (b,) = await fakes("b", api_key=PROVIDER_KEYS["b"], profile=Profile(latency=(0.03, 0.09)), seed=2)
    host = await proxy([entry(a, prices=PRICES), entry(b, prices=PRICES)], routing=CHECKED,
                       budget={"usd": 0.02, "period": "day"}, **sections)
    return a, b, host


async def _traffic(host: Any, count: int) -> None:
    async with host.client() as client:
        for _ in range(count):
            await client.chat.completions.create(model="gpt-4", messages=USER, max_tokens=20)


async def test_the_page_shows_both_providers_and_a_provider_going_down(fakes, proxy, http, browser, tmp_path) -> None:
    a, _b, host = await _two_providers(fakes, proxy)
    await _traffic(host, 6)
    await _in_browser(lambda: browser.get(f"{host.url}/dashboard?refresh={REFRESH}"))
    await _page_shows(browser, {"a": "up", "b": "up"}, time.monotonic() + 10)
    assert await _in_browser(lambda: browser.execute_script("return document.body.dataset.status")) == "ok"

    for _ in range(4):  # a few refreshes with traffic: rates, shares and the latency chart get points
        await _traffic(host, 5)
        await asyncio.sleep(REFRESH)
    figures = await _in_browser(lambda: browser.execute_script(
        "return ['rps', 'error-rate', 'cache-hit-rate', 'spend'].map(id => document.getElementById(id).textContent)"
        ".concat([document.querySelectorAll('tr[data-provider] polyline').length,"
        "         document.querySelectorAll('tr[data-budget]').length]);"))
    rps, error_rate, _cache, spend, lines, budgets = figures
    assert float(rps) > 0 and error_rate == "0.0 %" and spend.startswith("$") and float(spend[1:]) > 0
    assert lines == 4 and budgets == 1  # p50 and p95 of each provider; the global budget

    a.set_models_status(503)  # its health check fails: the server marks it down
    await until(lambda: _says_down(http, host.url), timeout=5)
    down_at = time.monotonic()
    await _page_shows(browser, {"a": "down", "b": "up"}, down_at + REFRESH + 1.5)  # one refresh, and slack

    screenshot = Path(os.environ.get("DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")
    assert await _in_browser(lambda: browser.save_screenshot(str(screenshot)))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def _says_down(http: Any, url: str) -> bool:
    _status_code, body = await _status(http, url)
    return {p["name"]: p["state"] for p in body["providers"]}["a"] == "down"


async def test_status_json_shape_and_no_secret_anywhere(fakes, proxy, http) -> None:
    _a, _b, host = await _two_providers(fakes, proxy, clients={"keys": [{"id": "team-a", "key": CLIENT_KEY}]})
    await _traffic_with_key(host)
    status, body = await _status(http, host.url)
    assert status == 200
    assert set(body) >= {"configured", "time", "timestamp", "strategy", "overall", "providers", "budgets", "spend_usd"}
    assert body["configured"] is True and body["strategy"] == "round_robin"
    assert set(body["overall"]) >= {"requests", "errors", "in_flight", "queue_limit", "cache"}
    assert body["overall"]["requests"] == 3 and body["overall"]["errors"] == 0
    assert set(body["overall"]["cache"]) == {"hits", "misses", "hit_rate"}
    assert [p["name"] for p in body["providers"]] == ["a", "b"]
    for provider in body["providers"]:
        assert provider["state"] == "up" and provider["circuit"] == "closed" and provider["healthy"] is True
        assert set(provider) >= {"in_flight", "max_concurrent", "requests", "failures", "latency_ms"}
        assert set(provider["latency_ms"]) == {"p50", "p95"}
    assert sum(p["requests"] for p in body["providers"]) == 3
    (budget,) = body["budgets"]
    assert budget["scope"] == "global" and budget["limit_usd"] == 0.02 and budget["spent_usd"] > 0
    assert body["spend_usd"] == pytest.approx(budget["spent_usd"])
    async with http.get(f"{host.url}/dashboard") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        page = await resp.text()
    assert "<script" in page and "src=" not in page.split("<script", 1)[1].split(">", 1)[0]  # inline, no CDN
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page
    for secret in (*PROVIDER_KEYS.values(), CLIENT_KEY):
        assert secret not in page and secret not in repr(body)
    assert "base_url" not in repr(body) and "127.0.0.1" not in repr(body)  # no provider address either


async def _traffic_with_key(host: Any) -> None:
    async with host.client(api_key=CLIENT_KEY) as client:
        for _ in range(3):
            await client.chat.completions.create(model="gpt-4", messages=USER, max_tokens=20)


async def test_the_dashboard_follows_the_admin_rule(fakes, proxy, http, monkeypatch) -> None:
    monkeypatch.setenv("HULUMANAGE_ADMIN_TOKEN", "dash-admin-secret")
    (a,) = await fakes("a")
    host = await proxy([entry(a)], clients={"keys": [{"id": "team-a", "key": CLIENT_KEY}]})
    for path in ("/dashboard", "/dashboard/status.json"):
        url = f"{host.url}{path}"
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {CLIENT_KEY}"}):
            async with http.get(url, headers=headers) as resp:
                assert resp.status == 403 and (await resp.json())["error"]["code"] == "forbidden"
        admin = {"Authorization": "Bearer dash-admin-secret"}
        async with http.get(url, headers=admin) as resp:
            assert resp.status == 200
            assert "dash-admin-secret" not in await resp.text()
        async with http.get(url, headers={**admin, "Host": "evil.example"}) as resp:
            assert resp.status == 421  # DNS rebinding: another name for this server
        async with http.get(url, headers={**admin, "Origin": "https://evil.example"}) as resp:
            assert resp.status == 403  # a page of another site
        async with http.get(url, headers={**admin, "Origin": host.url}) as resp:
            assert resp.status == 200  # the page's own fetches