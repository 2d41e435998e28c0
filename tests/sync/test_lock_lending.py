"""Lending the run lock: a fresh cycle borrows the store from a long job at its checkpoints."""

from __future__ import annotations

import threading
import time

import pytest

from connector.errors import Busy
from sync.lock import RunLock, checkpoint, lendable, lock_path


def test_a_borrower_gets_the_lock_at_the_holders_next_checkpoint(tmp_path):
    path = lock_path(tmp_path / "s.duckdb")
    held, done = threading.Event(), threading.Event()
    lent: list[bool] = []
    order: list[str] = []

    def holder() -> None:
        with RunLock(path, "sync"):
            held.set()
            while not done.is_set():
                time.sleep(0.05)  # a page of work
                order.append("page")
                if checkpoint(path):
                    lent.append(True)
            order.append("holder done")

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    started = time.monotonic()
    with RunLock(path, "fresh", wait_seconds=5, borrow=True):
        waited = time.monotonic() - started
        pages = order.count("page")
        time.sleep(0.2)  # the holder is parked while the borrower works
        assert order.count("page") == pages
    done.set()
    thread.join(5)
    assert waited < 1.0 and lent == [True]
    assert order[-1] == "holder done"
    # the lock is free again afterwards
    with RunLock(path, "push", wait_seconds=0):
        pass


def test_a_lendable_stretch_lends_at_once_and_waits_for_the_lock_back(tmp_path):
    path = lock_path(tmp_path / "s.duckdb")
    inside, returned = threading.Event(), []

    def trainer() -> None:
        with RunLock(path, "train"), lendable(path):
            inside.set()
            time.sleep(0.1)  # the fit
        returned.append(time.monotonic())

    thread = threading.Thread(target=trainer)
    thread.start()
    inside.wait(5)
    with RunLock(path, "fresh", wait_seconds=2, borrow=True):
        time.sleep(0.3)
        given_back = time.monotonic()
    thread.join(5)
    assert returned and returned[0] >= given_back  # the trainer waited for the borrower


def test_a_holder_without_checkpoints_makes_the_borrower_give_up_in_time(tmp_path):
    path = lock_path(tmp_path / "s.duckdb")
    held, done = threading.Event(), threading.Event()

    def holder() -> None:
        with RunLock(path, "train"):
            held.set()
            done.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    started = time.monotonic()
    with pytest.raises(Busy, match=r"did not reach a checkpoint within 0\.3 s"):
        RunLock(path, "fresh", wait_seconds=0.3, borrow=True).acquire()
    assert time.monotonic() - started < 1.0
    done.set()
    thread.join(5)
