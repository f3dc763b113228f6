"""`modules.call_queue.queue_lock`: like the WebUI's FIFOLock, not re-entrant (a second acquire
in the same thread blocks), so a test that nests it hangs as the WebUI would; tests use a timeout."""

import threading


class FIFOLock:
    def __init__(self):
        self._lock = threading.Lock()
        self.acquired_count = 0

    def acquire(self, blocking=True):
        got = self._lock.acquire(blocking, 5.0 if blocking else -1)
        if blocking and not got:
            raise RuntimeError("queue_lock: acquired twice (the WebUI's FIFOLock would deadlock here)")
        if got:
            self.acquired_count += 1
        return got

    def release(self):
        self._lock.release()

    def locked(self):
        return self._lock.locked()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


queue_lock = FIFOLock()
