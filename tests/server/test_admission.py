"""Admission: at most ``capacity`` events held; unary calls refused at once
beyond it, streams waiting in turn; room given back however a call ends."""

import asyncio

import pytest

from server.errors import ResourceExhausted
from server.ingest.admission import Admission
from server.ingest.turns import Turns


def test_a_call_that_does_not_fit_is_refused_with_a_retry_hint() -> None:
    admission = Admission(1_000)
    admission.take_now(600)
    with pytest.raises(ResourceExhausted) as refused:
        admission.take_now(500)
    assert refused.value.retry_after == 1.0
    assert admission.events == 600 and admission.refused_calls == 1
    admission.take_now(400)
    admission.release(600)
    admission.release(400)
    assert admission.events == 0


def test_a_call_larger_than_the_capacity_is_taken_when_nothing_is_held() -> None:
    admission = Admission(100)
    admission.take_now(500)
    with pytest.raises(ResourceExhausted):
        admission.take_now(1)
    admission.release(500)
    admission.take_now(1)


def test_streams_wait_in_turn_and_unary_calls_do_not_pass_them() -> None:
    async def scenario() -> list[str]:
        admission = Admission(1_000)
        admission.take_now(900)
        order: list[str] = []

        async def stream(name: str, count: int) -> None:
            await admission.take(count)
            order.append(name)

        first = asyncio.create_task(stream("first", 500))
        second = asyncio.create_task(stream("second", 100))
        await asyncio.sleep(0)
        # Room for 100 is there, but streams wait: a unary call is refused.
        with pytest.raises(ResourceExhausted):
            admission.take_now(50)
        admission.release(900)
        await asyncio.gather(first, second)
        assert admission.events == 600
        return order

    assert asyncio.run(scenario()) == ["first", "second"]


def test_a_cancelled_wait_takes_nothing_and_lets_the_next_one_in() -> None:
    async def scenario() -> int:
        admission = Admission(1_000)
        admission.take_now(800)
        big = asyncio.create_task(admission.take(900))
        small = asyncio.create_task(admission.take(100))
        await asyncio.sleep(0)
        assert not small.done()  # behind the big one
        big.cancel()
        await asyncio.wait([big])
        await asyncio.wait_for(small, 1)
        return admission.events

    assert asyncio.run(scenario()) == 900


def test_turns_work_through_every_slice_one_call_at_a_time() -> None:
    async def scenario() -> list[tuple[str, int]]:
        turns = Turns(slice_events=2)
        seen: list[tuple[str, int]] = []

        async def call(name: str) -> None:
            await turns.run(list(range(5)), lambda part: seen.extend((name, i) for i in part))

        await asyncio.gather(call("a"), call("b"))
        return seen

    seen = asyncio.run(scenario())
    assert seen == [("a", i) for i in range(5)] + [("b", i) for i in range(5)]
