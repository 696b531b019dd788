"""The direct write's arrays (``server.store.binary_arrays``), sent as the
direct write sends them (``server.store.events.run_prepared``), read back by
PostgreSQL as the values they were made of."""

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import pytest
from psycopg.adapt import Transformer

from server.store import binary_arrays as arrays
from server.store.binary_arrays import BinaryArray
from server.store.database import libpq_url
from server.store.events import run_prepared

CASES: list[tuple[str, Callable[[Any], BinaryArray], Sequence[Any], str]] = [
    ("text", arrays.text_array, ["org-1", "é ✓ 中", "", None, "tab\tand\nnewline"], "text[]"),
    ("utf8 text", arrays.utf8_text_array, [b'{"k": "\xc3\xa9"}', None, b""], "text[]"),
    ("bytea", arrays.bytea_array, [bytes(range(16)), b"", None, b"\x00\xff"], "bytea[]"),
    ("int2", arrays.int2_array, [1, 7, -32768, 32767], "int2[]"),
    ("int8", arrays.int8_array, [0, None, -(2**63), 2**63 - 1, 1_796_000_000_000_000], "int8[]"),
    ("float8", arrays.float8_array, [0.0, None, 1.5, -2.25e300, math.inf, 86_400.0], "float8[]"),
    ("bool", arrays.bool_array, [True, False, True], "bool[]"),
    ("empty", arrays.text_array, [], "text[]"),
    ("all NULL", arrays.int8_array, [None, None], "int8[]"),
]


async def _read_back(url: str, array: BinaryArray, cast: str) -> list[Any]:
    async with await psycopg.AsyncConnection.connect(libpq_url(url)) as conn:
        await conn.execute(f"PREPARE read_back AS SELECT $1::{cast}")
        result = await run_prepared(conn, "read_back", [array])
        transformer = Transformer(conn)
        transformer.set_pgresult(result)
        row = transformer.load_row(0, tuple)
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("encode", "values", "cast"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_an_array_reads_back_as_its_values(
    database_url: str, encode: Callable[[Any], BinaryArray], values: Sequence[Any], cast: str
) -> None:
    read = asyncio.run(_read_back(database_url, encode(values), cast))
    if encode is arrays.utf8_text_array:
        values = [None if v is None else v.decode() for v in values]
    assert read == list(values)
