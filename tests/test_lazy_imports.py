"""A server without ``state.backend: redis`` never loads the Redis client (about 7 MB of memory a process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_redis_client_is_loaded_only_for_a_redis_backend() -> None:
    code = ("import sys; import hulumanage.cli, hulumanage.server, proxy_plugin.plugin, proxy_plugin.runtime; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('redis', 'hiredis')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout
