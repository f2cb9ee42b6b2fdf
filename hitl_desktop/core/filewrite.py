"""Writing a large file once, durably, while hashing it: the import's Arrow file of originals.

`DurableHashingFile` is a writable, binary file object (what `pa.PythonFile` wraps) that

* copies what it is given into one of two staging buffers and hands each full buffer to two background threads,
  one hashing it (sha256), one writing it to the descriptor; hashlib and `os.write` release the GIL, so hashing,
  writing and Arrow's serialising into the other buffer run at once and the hash costs no second pass over the
  file;
* reserves the expected size up front (`posix_fallocate`), so a full disk is usually found before anything is
  written;
* on `commit()` writes the tail, trims the file to the exact size, fsyncs it and returns the sha256 of exactly
  the bytes written.

Writes go through the page cache. O_DIRECT was tried: it made the import itself faster on a virtual machine
(no freshly allocated page-cache pages), but the checks that read the file right after the import then read it
from disk, and the import + first full read took as long as before; the cost only moved.

Any error (ENOSPC included) is raised in the caller's thread at the next write or at commit; the caller removes
the partial file.
"""
from __future__ import annotations

import errno
import hashlib
import mmap
import os
import queue
import threading
from typing import Any

_STAGE = 8 << 20  # bytes per staging buffer


class DurableHashingFile:
    def __init__(self, path: str | os.PathLike, expected_size: int = 0) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o644)
        self._fd = fd
        self._hash = hashlib.sha256()
        self._size = 0
        self.closed = False
        try:
            if expected_size > 0 and hasattr(os, "posix_fallocate"):
                try:
                    os.posix_fallocate(fd, 0, expected_size)
                except OSError as exc:
                    if exc.errno == errno.ENOSPC:
                        raise
                    # filesystems without fallocate: writing extends the file as usual
            self._buffers = [mmap.mmap(-1, _STAGE), mmap.mmap(-1, _STAGE)]
        except BaseException:
            os.close(fd)
            raise
        self._current = 0
        self._fill = 0
        self._error: BaseException | None = None
        # A buffer may be refilled once both the hasher and the writer are done with it.
        self._hashed = [threading.Semaphore(1) for _ in self._buffers]
        self._written = [threading.Semaphore(1) for _ in self._buffers]
        self._hashed[0].acquire()  # buffer 0 is being filled
        self._written[0].acquire()
        self._hash_jobs: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self._write_jobs: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._hash_loop, name="hitl-hash", daemon=True),
            threading.Thread(target=self._write_loop, name="hitl-write", daemon=True),
        ]
        for t in self._threads:
            t.start()

    # --- the file interface pa.PythonFile needs -------------------------------------------------------------------

    def write(self, data: Any) -> int:
        self._raise_pending()
        view = memoryview(data).cast("B")
        n = len(view)
        done = 0
        while done < n:
            room = _STAGE - self._fill
            take = min(room, n - done)
            self._buffers[self._current][self._fill:self._fill + take] = view[done:done + take]
            self._fill += take
            done += take
            if self._fill == _STAGE:
                self._submit(_STAGE)
        self._size += n
        return n

    def tell(self) -> int:
        return self._size

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def close(self) -> None:  # pa.PythonFile closes its wrapped file; the real end is commit()/abort()
        pass

    # --- ending -----------------------------------------------------------------------------------------------------

    def commit(self) -> str:
        """Write the tail, trim to the exact size, fsync; return the sha256 of the bytes written."""
        self._raise_pending()
        if self.closed:
            raise ValueError("the file was already committed or aborted")
        try:
            if self._fill:
                self._submit(self._fill)
            self._stop_worker()
            self._raise_pending()
            os.ftruncate(self._fd, self._size)  # give back what the reservation held beyond the end
            os.fsync(self._fd)
        finally:
            self._close_fd()
        return self._hash.hexdigest()

    def abort(self) -> None:
        self._stop_worker()
        self._close_fd()

    # --- internals --------------------------------------------------------------------------------------------------

    def _submit(self, length: int) -> None:
        self._hash_jobs.put((self._current, length))
        self._write_jobs.put((self._current, length))
        self._current ^= 1
        self._fill = 0
        self._hashed[self._current].acquire()  # wait until the other buffer is hashed and written
        self._written[self._current].acquire()
        self._raise_pending()

    def _hash_loop(self) -> None:
        while (job := self._hash_jobs.get()) is not None:
            index, length = job
            try:
                with memoryview(self._buffers[index]) as view:
                    self._hash.update(view[:length])
            except BaseException as exc:  # handed to the caller's thread (without frames holding the buffer)
                self._error = exc.with_traceback(None)
            finally:
                self._hashed[index].release()

    def _write_loop(self) -> None:
        while (job := self._write_jobs.get()) is not None:
            index, length = job
            try:
                if self._error is None:
                    with memoryview(self._buffers[index]) as view:
                        written = 0
                        while written < length:
                            k = os.write(self._fd, view[written:length])
                            if k <= 0:
                                raise OSError(errno.ENOSPC, "No space left on device")
                            written += k
            except BaseException as exc:  # handed to the caller's thread (without frames holding the buffer)
                self._error = exc.with_traceback(None)
            finally:
                self._written[index].release()

    def _stop_worker(self) -> None:
        if any(t.is_alive() for t in self._threads):
            self._hash_jobs.put(None)
            self._write_jobs.put(None)
            for t in self._threads:
                t.join()

    def _raise_pending(self) -> None:
        if self._error is not None:  # stays set: every later call fails too
            raise self._error

    def _close_fd(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._fd)
            for b in self._buffers:
                try:
                    b.close()
                except BufferError:  # a view still alive somewhere: the mapping goes with the last reference
                    pass
