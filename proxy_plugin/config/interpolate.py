"""``${VAR}`` interpolation of one config string: ``${VAR}``, ``${VAR:-default}`` (nested), ``$$``.

An unset ``${VAR}`` (without a default) is an error, never kept as literal text. The
environment comes from the context (passed in, never read from ``os.environ`` here);
errors quote the raw string unless the field is secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Protocol

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class EnvContext(Protocol):
    """What interpolation needs: the environment and a way to build an error."""

    @property
    def environ(self) -> Mapping[str, str]:
        """The environment variables references are looked up in."""

    def error(self, path: str, problem: str) -> Exception:
        """Return the exception to raise for ``problem`` at key ``path``."""


def interpolate(raw: str, ctx: EnvContext, path: str, secret: bool) -> tuple[str, bool]:
    """Return ``raw`` (the value at ``path``) with references expanded, and whether it held any."""
    it = _Interpolator(raw, ctx, path, secret)
    value, _ = it.text(0, nested=False, active=True)
    return value, it.used


class _Interpolator:
    """Expand ``${VAR}``, ``${VAR:-default}`` (nested), and ``$$`` in one string."""

    def __init__(self, raw: str, ctx: EnvContext, path: str, secret: bool) -> None:
        """Prepare to expand ``raw``, the value at ``path``."""
        self.raw, self.ctx, self.path, self.secret = raw, ctx, path, secret
        self.used = False

    def fail(self, problem: str) -> Exception:
        """An interpolation error; the raw string is quoted unless it is a secret."""
        return self.ctx.error(self.path, problem if self.secret else f"{problem} in {self.raw!r}")

    def text(self, i: int, nested: bool, active: bool) -> tuple[str, int]:
        """Expand from ``i`` to the end (or to the ``}`` closing a default if ``nested``)."""
        s, out = self.raw, []
        while i < len(s):
            c = s[i]
            if c == "$" and s.startswith("$$", i):
                out.append("$")
                i += 2
            elif c == "$" and s.startswith("${", i):
                value, i = self.reference(i + 2, active)
                out.append(value)
            elif c == "}" and nested:
                return "".join(out), i
            else:
                out.append(c)
                i += 1
        if nested:
            raise self.fail("unterminated '${' (missing '}')")
        return "".join(out), i

    def reference(self, i: int, active: bool) -> tuple[str, int]:
        """Expand one reference whose name starts at ``i``; only look it up if ``active``."""
        self.used = True
        s, env = self.raw, self.ctx.environ
        match = _NAME.match(s, i)
        if match is None:
            if i >= len(s) or "}" not in s[i:]:
                raise self.fail("unterminated '${' (missing '}')")
            raise self.fail("expected a variable name after '${'")
        name, i = match.group(), match.end()
        if s.startswith("}", i):
            if active and name not in env:
                raise self.ctx.error(
                    self.path, f"environment variable {name} is not set (set it, or write ${{{name}:-default}})"
                )
            return (env.get(name, "") if active else ""), i + 1
        if s.startswith(":-", i):
            is_set = active and bool(env.get(name))
            default, i = self.text(i + 2, nested=True, active=active and not is_set)
            return (env[name] if is_set else default), i + 1
        if i >= len(s):
            raise self.fail("unterminated '${' (missing '}')")
        raise self.fail(f"expected '}}' or ':-' after ${{{name}")
