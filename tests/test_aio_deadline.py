"""``aio.Deadline``: asyncio.timeout's behaviour on a known loop."""

from __future__ import annotations

import asyncio

import pytest

from llmd_kserve.aio import Deadline


async def test_a_deadline_turns_its_cancellation_into_timeout_error() -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        async with Deadline(loop, 0.01):
            await asyncio.sleep(10)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]  # nothing left pending
    async with Deadline(loop, 10) as d:  # in time: no error, the timer is gone
        await asyncio.sleep(0)
    assert d.done and not d.expired and d.handle is not None and d.handle.cancelled()


async def test_expire_ends_the_wait_now_and_nothing_after_the_block() -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        async with Deadline(loop, 10) as d:
            loop.call_soon(d.expire)
            await asyncio.sleep(10)
    d.expire()  # over: nothing happens
    await asyncio.sleep(0)


async def test_an_outside_cancel_stays_a_cancel() -> None:
    loop = asyncio.get_running_loop()

    async def wait() -> None:
        async with Deadline(loop, 10):
            await asyncio.sleep(10)

    task = asyncio.create_task(wait())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
