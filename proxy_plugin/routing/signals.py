"""What routing learns about one (provider, model): peak-EWMA latency and a decayed success window.

Both read time from the caller (the pool's injectable clock), so a test or the simulator
moves them without sleeping. Fed by :meth:`ProviderState.observe` for every attempt
the dispatch loop makes, whatever the strategy.

- :class:`PeakEwma` (Finagle's and Linkerd's): a sample above the average replaces it at
  once (the *peak*), one below pulls it down with weight ``1 - exp(-dt / decay)``, and
  the value decays toward zero while no sample comes, so an idle provider is tried
  again rather than avoided for ever.
- :class:`SuccessWindow`: success and failure counts that halve every ``half_life``
  seconds, at two speeds (slow: the rate; fast: the trend), so one failure does not
  move a provider, and a sustained fall does within a few seconds. The slow window also
  keeps the seconds its successes and its failures took, so ``cost`` can tell failures
  that waste little time (a quick 503) from those that waste much (a timeout).
"""

from __future__ import annotations

import math

#: the latency sample a failure counts as (seconds), unless it took longer itself
FAILURE_PENALTY = 5.0
SLOW_HALF_LIFE = 30.0
FAST_HALF_LIFE = 5.0
#: evidence needed (decayed counts) before a rate is trusted; below it a provider is presumed fine
MIN_EVIDENCE = 10.0
#: answers (decayed count) needed before their mean time is a yardstick (``answer_seconds``)
MIN_ANSWERS = 1.0


class PeakEwma:
    """Peak-sensitive exponentially weighted latency (seconds) with time constant ``decay``."""

    __slots__ = ("decay", "stamp", "value")

    def __init__(self, decay: float = 10.0) -> None:
        self.decay = decay
        self.value: float | None = None  # None: no sample yet
        self.stamp = 0.0

    def observe(self, sample: float, now: float) -> None:
        """Fold in one latency sample taken at ``now``."""
        value = self.value
        if value is None or sample >= value:
            self.value = sample
        else:
            w = math.exp(-max(0.0, now - self.stamp) / self.decay)
            self.value = value * w + sample * (1.0 - w)
        self.stamp = now

    def get(self, now: float) -> float | None:
        """The current estimate, decayed toward zero since the last sample (None: never sampled)."""
        value = self.value
        if value is None:
            return None
        return value * math.exp(-max(0.0, now - self.stamp) / self.decay)


class _Decayed:
    """Success and failure counts, and the seconds each took, that halve every ``half_life`` seconds."""

    __slots__ = ("fail", "fail_s", "half_life", "ok", "ok_s", "stamp")

    def __init__(self, half_life: float) -> None:
        self.half_life = half_life
        self.ok = 0.0
        self.fail = 0.0
        self.ok_s = 0.0
        self.fail_s = 0.0
        self.stamp = 0.0

    def _age(self, now: float) -> None:
        dt = now - self.stamp
        if dt > 0:
            k = 0.5 ** (dt / self.half_life)
            self.ok *= k
            self.fail *= k
            self.ok_s *= k
            self.fail_s *= k
            self.stamp = now

    def add(self, ok: bool, now: float, seconds: float = 0.0) -> None:
        self._age(now)
        if ok:
            self.ok += 1.0
            self.ok_s += seconds
        else:
            self.fail += 1.0
            self.fail_s += seconds

    def rate(self, now: float) -> tuple[float, float]:
        """(success rate, evidence) now; the rate is 1.0 without evidence."""
        self._age(now)
        n = self.ok + self.fail
        return (self.ok / n if n else 1.0), n


class SuccessWindow:
    """A recent success rate (slow) and its trend (fast)."""

    __slots__ = ("fast", "slow")

    def __init__(self) -> None:
        self.slow = _Decayed(SLOW_HALF_LIFE)
        self.fast = _Decayed(FAST_HALF_LIFE)

    def add(self, ok: bool, now: float, seconds: float = 0.0) -> None:
        """One attempt's result, and how long it took."""
        self.slow.add(ok, now, seconds)
        self.fast.add(ok, now)

    def rate(self, now: float) -> float:
        """The slow success rate (1.0 without evidence)."""
        return self.slow.rate(now)[0]

    def degraded(self, now: float, min_success: float) -> bool:
        """Sustained degradation: the rate, with enough evidence, below ``min_success``; or a
        falling trend (the fast rate below both the slow one and ``min_success``) on enough
        recent evidence. One failure among few attempts is not enough evidence."""
        slow, slow_n = self.slow.rate(now)
        if slow_n >= MIN_EVIDENCE and slow < min_success:
            return True
        fast, fast_n = self.fast.rate(now)
        return fast_n >= MIN_EVIDENCE and fast < min_success and fast < slow

    def answer_seconds(self, now: float) -> float | None:
        """The mean seconds an answer took over the slow window (None: no answers in it)."""
        slow = self.slow
        slow._age(now)
        if slow.ok < MIN_ANSWERS or slow.ok_s <= 0.0:
            return None
        return slow.ok_s / slow.ok

    def quick_failures(self, now: float, share: float) -> bool:
        """Whether the time its failures take, per answer it gives, is at most ``share`` of an answer's time.

        At success rate ``p`` there are ``(1 - p) / p`` failures per answer, so the rule is
        ``(1 - p) / p x mean failure seconds <= share x mean answer seconds``, which is simply
        ``seconds spent failing <= share x seconds spent answering`` over the slow window: true
        for a provider failing half its attempts with quick 503s, false for one that times out,
        or that gives (almost) no answers (none at all: False).
        """
        slow = self.slow
        slow._age(now)
        if slow.ok <= 0.0:
            return False
        return slow.fail_s <= share * slow.ok_s


class Signals:
    """Everything routing keeps for one (provider, model)."""

    __slots__ = ("latency", "success")

    def __init__(self, decay: float) -> None:
        self.latency = PeakEwma(decay)
        self.success = SuccessWindow()

    def observe(self, ok: bool, seconds: float, now: float, penalty: bool) -> None:
        """One attempt: ``penalty`` (a failure that is the provider's fault) counts as a heavy latency sample."""
        self.latency.observe(max(seconds, FAILURE_PENALTY) if penalty else seconds, now)
        self.success.add(ok, now, seconds)
