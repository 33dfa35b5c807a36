"""The SQLite state store: counters kept in an embedded file across restarts, written off the event loop.

Reads are served from memory (every counter is loaded at :meth:`SQLiteStore.open`); each
change also goes into a batch of deltas that a background task writes every
:data:`FLUSH_INTERVAL` seconds in a worker thread (``asyncio.to_thread``), so the hot path
never waits on disk. A crash loses at most the last interval; :meth:`close` (the
runtime's stop, SIGTERM) writes the rest. Deltas are added in SQL (``value = value +
excluded.value``), so two processes sharing a file do not overwrite each other's
counts (each reads the other's only at its next start). Reservations stay in memory:
they belong to requests in flight, which a restart ends anyway.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from pathlib import Path

from proxy_plugin.state.memory import BatchedStore

logger = logging.getLogger(__name__)

#: seconds between two background writes (the most a crash can lose)
FLUSH_INTERVAL = 0.5

_SCHEMA = "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value REAL NOT NULL)"
_UPSERT = ("INSERT INTO counters (name, value) VALUES (?, ?) "
           "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value")


class SQLiteStore(BatchedStore):
    """A :class:`~proxy_plugin.state.memory.MemoryStore` whose counters are kept in the SQLite file at ``path``."""

    def __init__(self, path: str, interval: float = FLUSH_INTERVAL) -> None:
        super().__init__()
        self.path = path
        self.interval = interval
        self._db: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()  # one writer at a time on the one connection
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Open (create) the file, load every counter, start the background writer."""
        self._db, loaded = await asyncio.to_thread(self._connect)
        for name, value in loaded:
            self._counters[name] = self._counters.get(name, 0.0) + value
        self._task = asyncio.create_task(self._writer(), name="hulumanage-state-writer")

    def _connect(self) -> tuple[sqlite3.Connection, list[tuple[str, float]]]:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(_SCHEMA)
        return db, [(str(n), float(v)) for n, v in db.execute("SELECT name, value FROM counters")]

    async def _writer(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval)
            except TimeoutError:
                pass
            try:
                await self.flush()
            except (sqlite3.Error, OSError):  # a full disk must not stop the server: logged, kept for the next try
                logger.exception("could not write the state file %s (will retry)", self.path)

    async def flush(self) -> None:
        """Write the changes batched so far, in a worker thread."""
        if not self._pending or self._db is None:
            return
        batch, self._pending = self._pending, {}
        try:
            await asyncio.to_thread(self._write, list(batch.items()))
        except (sqlite3.Error, OSError):
            for name, amount in batch.items():  # not written: back in the next batch
                self._pending[name] = self._pending.get(name, 0.0) + amount
            raise

    def _write(self, rows: list[tuple[str, float]]) -> None:
        assert self._db is not None
        with self._write_lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(_UPSERT, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    async def close(self) -> None:
        """Write everything left, stop the writer, close the file."""
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.flush()
        if self._db is not None:
            db, self._db = self._db, None
            with self._write_lock:
                db.close()
