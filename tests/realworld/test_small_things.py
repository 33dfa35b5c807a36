"""Small things a newcomer trips on: a misspelled approach, plural wording."""

from __future__ import annotations

import logging

import pytest
from support.harness import run_host
from support.helpers import entry

from hulumanage.app import StartupError


async def test_a_misspelled_default_approach_gets_a_did_you_mean(isolated_env) -> None:
    with pytest.raises(StartupError) as caught:
        async with run_host("--approach", "proxxy"):
            pass
    message = str(caught.value)
    assert "unknown --approach 'proxxy'" in message and "did you mean 'proxy'" in message


async def test_one_provider_is_one_provider(fakes, proxy, caplog: pytest.LogCaptureFixture) -> None:
    (a,) = await fakes("a")
    with caplog.at_level(logging.INFO, logger="proxy_plugin"):
        await proxy([entry(a)])
    ready = [r.getMessage() for r in caplog.records if r.getMessage().startswith("proxy ready")]
    assert ready and ready[0].startswith("proxy ready: 1 provider (a)")
