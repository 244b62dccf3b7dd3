"""EngineFeed: stream bytes into `ImageStore.load` on a thread of its own, as they are approved.

The inspector's gate puts bytes; the engine reads them at its own pace (the bounded queue passes
its back-pressure on to the uploading client). `finish` ends the stream and returns the image id
the engine reports; `abort` makes the stream fail, so the engine discards what it received and
creates nothing.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator

_COALESCE_BYTES = 256 * 1024
_ABORT_WAIT_S = 60.0


class FeedAbortedError(Exception):
    """Raised inside the engine's body stream: the upload was refused or abandoned."""


class FeedError(Exception):
    """The feed cannot take more bytes: the engine's load ended early (see __cause__)."""


class _End:
    pass


class _Abort:
    pass


class EngineFeed:
    def __init__(self, load: Callable[[Iterable[bytes]], str], depth: int = 8) -> None:
        self._queue: queue.Queue[bytes | _End | _Abort] = queue.Queue(maxsize=depth)
        self._buf = bytearray()
        self._closed = False
        self._result: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(load,), name="image-load")
        self._thread.daemon = True
        self._thread.start()

    def _chunks(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if isinstance(item, _End):
                return
            if isinstance(item, _Abort):
                raise FeedAbortedError("the upload was refused or abandoned")
            yield item

    def _run(self, load: Callable[[Iterable[bytes]], str]) -> None:
        try:
            self._result = load(self._chunks())
        except BaseException as exc:  # handed to the uploading thread in put/finish
            self._error = exc

    def _send(self, item: bytes | _End | _Abort, give_up_s: float | None = None) -> bool:
        deadline = None if give_up_s is None else time.monotonic() + give_up_s
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.2)
            except queue.Full:
                if deadline is not None and time.monotonic() > deadline:
                    return False
            else:
                return True
        return False

    def _dead(self) -> FeedError:
        error = FeedError("the engine stopped reading the image")
        error.__cause__ = self._error
        return error

    def put(self, data: bytes) -> None:
        if self._closed:
            raise FeedError("the feed is closed")
        if not self._buf and len(data) >= _COALESCE_BYTES:
            if not self._send(data):
                raise self._dead()
            return
        self._buf += data
        if len(self._buf) >= _COALESCE_BYTES:
            chunk = bytes(self._buf)
            self._buf.clear()
            if not self._send(chunk):
                raise self._dead()

    def finish(self) -> str:
        """End the stream; the loaded image's id, or the engine's error."""
        self._closed = True
        if self._buf:
            self._send(bytes(self._buf))
            self._buf.clear()
        self._send(_End())
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise FeedError("the engine reported no image")
        return self._result

    def abort(self) -> None:
        """Fail the stream so the engine keeps nothing; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._buf.clear()
        self._send(_Abort(), give_up_s=_ABORT_WAIT_S)
        self._thread.join(timeout=_ABORT_WAIT_S)
