"""Per-message cost of `operators.parse` next to a bare `orjson.loads` of the same frame.

    python -m benchmarks.parse_costs [--repeats 60] [--number 2000]   (from the repository root)

For each frame type the pipeline folds (kline, depth20, 24h ticker, depth diff)
and one it ignores (bookTicker), prints the microseconds per message of
`orjson.loads`, of `Parser.parse`, and of the `parse()` operator fed through a
`Subject`, with the parser's cost as a multiple of the bare parse. Each figure
is the best of `--repeats` runs of `--number` messages, timed in process CPU
time, so other processes on a shared machine inflate them less.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import orjson
from reactivex.subject import Subject

from operators import BadMessage, Parser, RawMessage, parse

_LEVELS = ",".join(f'["0.0{6000 - i * 3:04d}000","{1000 + i * 37}.12000000"]' for i in range(20))
FRAMES = {
    "kline": (
        '{"stream":"hbarusdt@kline_1m","data":{"e":"kline","E":1700000061000,"s":"HBARUSDT",'
        '"k":{"t":1700000040000,"T":1700000099999,"s":"HBARUSDT","i":"1m","f":100,"L":200,'
        '"o":"0.06010000","c":"0.06020000","h":"0.06050000","l":"0.06000000",'
        '"v":"12345.00000000","n":101,"x":false,"q":"742.50000000","V":"500.00000000",'
        '"Q":"30.10000000","B":"0"}}}'
    ),
    "depth20": (
        '{"stream":"hbarusdt@depth20@100ms","data":{"lastUpdateId":4000000123,'
        f'"bids":[{_LEVELS}],"asks":[{_LEVELS}]}}}}'
    ),
    "ticker": (
        '{"stream":"hbarusdt@ticker","data":{"e":"24hrTicker","E":1700000061234,'
        '"s":"HBARUSDT","p":"-0.00050000","P":"-0.823","w":"0.06050000","x":"0.06070000",'
        '"c":"0.06020000","Q":"150.00000000","b":"0.06010000","B":"1500.00000000",'
        '"a":"0.06020000","A":"900.00000000","o":"0.06070000","h":"0.06200000",'
        '"l":"0.05900000","v":"98765432.10000000","q":"5975308.64205000",'
        '"O":1699913661234,"C":1700000061234,"F":1,"L":2,"n":2}}'
    ),
    "diff": (
        '{"stream":"hbarusdt@depth@100ms","data":{"e":"depthUpdate","E":1700000061100,'
        '"s":"HBARUSDT","U":4000000124,"u":4000000130,'
        '"b":[["0.06010000","1500.00000000"],["0.06000000","0.00000000"]],'
        '"a":[["0.06020000","900.00000000"]]}}'
    ),
    "bookTicker": (
        '{"stream":"hbarusdt@bookTicker","data":{"u":4000000130,"s":"HBARUSDT",'
        '"b":"0.06010000","B":"1500.00000000","a":"0.06020000","A":"900.00000000"}}'
    ),
}


def best_us(call: Callable[[Any], object], arg: Any, number: int, repeats: int) -> float:
    """The best time of `repeats` runs of `number` calls `call(arg)`, in µs per call."""
    best = float("inf")
    calls = range(number)
    for _ in range(repeats):
        start = time.process_time()
        for _ in calls:
            call(arg)
        best = min(best, time.process_time() - start)
    return best / number * 1e6


def measure(text: str, number: int, repeats: int) -> tuple[float, float, float]:
    """µs per message: `orjson.loads`, `Parser.parse`, the `parse()` operator."""
    raw = RawMessage(1_700_000_061_500_000_000, "ws", 1, text)
    parser = Parser()
    if isinstance(parser.parse(raw), BadMessage):
        raise AssertionError(f"the benchmark frame is malformed: {text[:80]}")
    subject: Subject[RawMessage] = Subject()
    subject.pipe(parse()).subscribe(lambda event: None)
    return (
        best_us(orjson.loads, text, number, repeats),
        best_us(parser.parse, raw, number, repeats),
        best_us(subject.on_next, raw, number, repeats),
    )


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--repeats", type=int, default=60)
    options.add_argument("--number", type=int, default=2000)
    args = options.parse_args()

    print(f"{'frame':<11} {'loads µs':>9} {'parse µs':>9} {'ratio':>6} {'operator µs':>12}")
    for name, text in FRAMES.items():
        loads_us, parse_us, operator_us = measure(text, args.number, args.repeats)
        ratio = parse_us / loads_us
        print(f"{name:<11} {loads_us:9.2f} {parse_us:9.2f} {ratio:6.2f} {operator_us:12.2f}")


if __name__ == "__main__":
    main()
