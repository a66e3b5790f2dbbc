"""Argon2 hashing under load (docs/security.md, B7): however many sign-ins arrive at once, at most four
hashes run at the same time, so memory stays bounded (each Argon2id run takes 19 MiB)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from server.security import passwords

CALLS = 24


def test_parallel_hashes_and_verifications_run_at_most_four_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored = passwords.hash_password("correct horse battery staple")
    running = 0
    peak = 0
    lock = threading.Lock()
    # Every hasher call waits at this gate until the test has seen how many entered: with the bound,
    # four at most; without it, all of them.
    gate = threading.Event()
    four_inside = threading.Event()
    hasher = passwords._HASHER

    def counted(fn):
        def run(*args, **kwargs):
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
                if running == 4:
                    four_inside.set()
            gate.wait(10)
            try:
                return fn(*args, **kwargs)
            finally:
                with lock:
                    running -= 1

        return run

    monkeypatch.setattr(hasher, "hash", counted(hasher.hash))
    monkeypatch.setattr(hasher, "verify_and_update", counted(hasher.verify_and_update))
    monkeypatch.setattr(hasher, "verify", counted(hasher.verify))

    arrived = threading.Semaphore(0)

    def call(i: int) -> object:
        arrived.release()
        if i % 3 == 0:
            return passwords.hash_password(f"another passphrase {i}")
        if i % 3 == 1:
            return passwords.verify_password("correct horse battery staple", stored)
        return passwords.burn_verify_time("a guess at an unknown account")

    with ThreadPoolExecutor(CALLS) as pool:
        results = [pool.submit(call, i) for i in range(CALLS)]
        for _ in range(CALLS):  # every call has started
            assert arrived.acquire(timeout=10)
        assert four_inside.wait(10)
        # The other twenty are queued on the bound, not inside the hasher.
        with lock:
            assert running == 4
        gate.set()
        outcomes = [r.result(30) for r in results]
    assert peak == 4
    assert [o for i, o in enumerate(outcomes) if i % 3 == 1] == [(True, None)] * (CALLS // 3)
