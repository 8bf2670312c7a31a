"""The REST source: a Binance-API client that stays inside the venue's limits.

`RestClient` fetches klines, depth snapshots, 24h tickers, exchange information
and the server time. Every response body, error bodies included, is also pushed
as a `RawMessage(kind="rest")` to `RestClient.messages`, so a capture holds the
exact bytes the pipeline folded and a replay folds them again.

Limits, as the venues document them (rest-api.md, "LIMITS"):
- Weight: each request costs a weight (`pipeline.venues.Venue.request_weight`);
  the server reports the IP's weight used in the current minute in
  `X-MBX-USED-WEIGHT-1M`. The client keeps its own count in step with that
  header and, when the next request would pass `weight_margin` short of the
  limit, waits for the next minute window rather than collect a 429.
- 429 (rate limited) and 418 (IP banned): the client waits the `Retry-After`
  seconds (the whole ban for a 418) and tries again; every request of this
  client waits, not only the one that was refused.
- Timeouts, connection errors and 5xx answers are retried with capped
  exponential backoff and full jitter. Other 4xx answers are the request's
  fault and are raised at once as typed errors naming the request.

`sleep`, `clock` and `rand` are injectable, so tests run the waits instantly and
check exactly how long the client would have waited.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, NamedTuple
from urllib.parse import urlencode

import aiohttp
import orjson
import reactivex
from yarl import URL

from operators.events import KIND_REST, RawMessage
from pipeline._hub import Hub
from pipeline._pacing import Sleep, backoff_delay
from pipeline.errors import (
    BannedError,
    BinanceAPIError,
    ExchangeError,
    ExchangeUnavailableError,
    RateLimitedError,
    UnknownSymbolError,
    UsageError,
)
from pipeline.venues import BINANCE_US, Venue

__all__ = ["MAX_KLINES_PER_REQUEST", "RestClient", "RestResponse", "RestStats"]

log = logging.getLogger(__name__)

MAX_KLINES_PER_REQUEST: Final = 1000
"""Rows `/api/v3/klines` returns at most; longer requests are paged."""

WEIGHT_HEADER: Final = "X-MBX-USED-WEIGHT-1M"
_LEGACY_WEIGHT_HEADER: Final = "X-MBX-USED-WEIGHT"
_INVALID_SYMBOL: Final = -1121
_ILLEGAL_CHARACTERS: Final = -1100
_WINDOW: Final = 60.0
# Wake a little after the minute turns: the server's minute is the one that counts.
_WINDOW_SLACK: Final = 0.5
_SHOWN_BODY: Final = 200


@dataclass
class RestStats:
    """Counters for the run summary (all cumulative)."""

    requests: int = 0
    """HTTP requests sent, retries included."""
    responses: int = 0
    """Responses received (any status)."""
    retries: int = 0
    rate_limited: int = 0
    """429 answers."""
    banned: int = 0
    """418 answers."""
    server_errors: int = 0
    """5xx answers."""
    timeouts: int = 0
    connection_errors: int = 0
    throttle_waits: int = 0
    """Times the client waited on its own for the next weight window."""
    wait_seconds: float = 0.0
    """Seconds spent waiting: weight windows, Retry-After and backoff."""
    weight_sent: int = 0
    """Predicted weight of every request sent."""
    used_weight: int = 0
    """The last `X-MBX-USED-WEIGHT-1M` the server reported."""
    max_used_weight: int = 0
    """The highest `X-MBX-USED-WEIGHT-1M` seen."""
    observer_errors: int = 0
    """Exceptions raised by subscribers of `messages` (logged, then ignored)."""

    def as_dict(self) -> dict[str, int | float]:
        """The counters as a plain dict (for logs and the CLI summary)."""
        return asdict(self)


class RestResponse(NamedTuple):
    """A successful (HTTP 200) response."""

    request: str
    """Path and query, as captured."""
    status: int
    text: str
    """The body exactly as received."""
    json: Any
    """The body parsed with orjson."""
    t: int
    """Receive time, ns since the epoch."""
    sent_at: float
    """`clock()` just before the request that succeeded was sent, seconds."""
    received_at: float
    """`clock()` just after its body was read, seconds."""


class _Retry(Exception):
    """Internal: the attempt failed in a way worth another try."""

    def __init__(self, problem: str, wait: float | None = None, error: ExchangeError | None = None):
        super().__init__(problem)
        self.problem = problem
        self.wait = wait
        """Seconds the exchange asked for (Retry-After); None means back off."""
        self.error = error
        """What to raise if this was the last attempt (default: unavailable)."""


class RestClient:
    """Binance-API REST client over one `aiohttp.ClientSession` per venue.

    `base_url` defaults to the venue's; pass a loopback URL for a fake exchange.
    A session passed in stays open on `close()`; one the client made is closed.
    Use as `async with RestClient(...) as rest:` or call `close()`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        venue: Venue = BINANCE_US,
        session: aiohttp.ClientSession | None = None,
        weight_limit: int | None = None,
        weight_margin: float = 0.1,
        timeout: float = 10.0,
        max_attempts: int = 6,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        max_retry_after: float = 900.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        """Create a client (no I/O happens until the first request).

        - `weight_limit`: REQUEST_WEIGHT per minute (default: the venue's).
        - `weight_margin`: share of the limit kept free for other users of the IP.
        - `timeout`: seconds for one whole request, body included.
        - `max_attempts`: tries per request before giving up (1 = no retries).
        - `backoff_base`, `backoff_cap`: full-jitter backoff, seconds.
        - `max_retry_after`: a 429/418 asking for a longer wait raises at once.
        - `sleep`, `clock` (wall seconds), `rand` (in [0, 1)): injectable for tests.
        - `clock_ns`: the receive time (ns) stamped on every response; a sped-up
          fake market passes its own clock so the final-kline rule compares like
          with like. Waits and weight windows stay on `clock`.
        """
        if max_attempts < 1:
            raise UsageError(f"max_attempts must be at least 1, not {max_attempts!r}")
        if not 0.0 <= weight_margin < 1.0:
            raise UsageError(f"weight_margin must be in [0, 1), not {weight_margin!r}")
        self.venue = venue
        self.base_url = (base_url or venue.rest_url).rstrip("/")
        self.weight_limit = weight_limit if weight_limit is not None else venue.weight_limit
        self.weight_budget = max(1, math.floor(self.weight_limit * (1.0 - weight_margin)))
        """Weight the client lets itself use per minute."""
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._max_retry_after = max_retry_after
        self._sleep = sleep
        self._clock = clock
        self._rand = rand
        self._clock_ns = clock_ns
        self._hub: Hub[RawMessage] = Hub(self._observer_failed)
        self._window = -1
        self._used = 0
        self._pending = 0
        """Weight of requests sent in the current window and not answered yet."""
        self._blocked_until = 0.0
        """Local `clock()` time before which no request goes (Retry-After)."""
        self.stats = RestStats()
        self.clock_offset_ms: float = 0.0
        """Server time minus local time, ms (from the last `server_time()`)."""
        self.round_trip_ms: float | None = None
        """Round trip of the last `server_time()` request, ms."""

    # ------------------------------------------------------------ plumbing

    @property
    def messages(self) -> reactivex.Observable[RawMessage]:
        """Every response body as a `RawMessage(kind="rest")`, in receive order."""
        return self._hub.observable

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Complete `messages` and close the session if the client made it."""
        self._hub.on_completed()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _observer_failed(self, exc: Exception, observer: object) -> None:
        # A subscriber's bug must not fail the fetch, nor be retried as one.
        self.stats.observer_errors += 1
        log.error("a subscriber of RestClient.messages raised", exc_info=exc)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _server_now(self) -> float:
        return self._clock() + self.clock_offset_ms / 1000.0

    async def _reserve(self, weight: int) -> int:
        """Wait until `weight` fits in this minute's budget; return the window it went in."""
        while True:
            local = self._clock()
            if local < self._blocked_until:
                await self._wait(self._blocked_until - local)
                continue
            now = self._server_now()
            window = int(now // _WINDOW)
            if window != self._window:
                # Weight counts in the minute a request was sent: a new minute starts empty.
                self._window = window
                self._used = 0
                self._pending = 0
            in_use = self._used + self._pending
            # A request heavier than the whole budget still goes, alone in its window.
            if in_use + weight <= self.weight_budget or in_use == 0:
                self._pending += weight
                return window
            wait = (window + 1) * _WINDOW - now + _WINDOW_SLACK
            self.stats.throttle_waits += 1
            log.info(
                "REST weight %d of %d budgeted this minute; waiting %.1f s for the next window",
                in_use,
                self.weight_budget,
                wait,
            )
            await self._wait(wait)

    async def _wait(self, seconds: float) -> None:
        self.stats.wait_seconds += seconds
        await self._sleep(seconds)

    def _note_weight(self, headers: Mapping[str, str], window: int, weight: int) -> None:
        raw = headers.get(WEIGHT_HEADER) or headers.get(_LEGACY_WEIGHT_HEADER)
        used: int | None = None
        if raw is not None:
            try:
                used = int(raw)
            except ValueError:
                log.warning("ignoring unreadable %s header %r", WEIGHT_HEADER, raw)
        if used is None:
            if window == self._window:
                self._used += weight
            return
        self.stats.used_weight = used
        self.stats.max_used_weight = max(self.stats.max_used_weight, used)
        # A header from a request sent in an earlier minute describes that minute.
        if window == self._window:
            # Concurrent answers arrive out of order; the largest count is the latest.
            self._used = max(self._used, used)

    # ------------------------------------------------------------ requests

    async def get(self, path: str, params: Mapping[str, str | int] | None = None) -> RestResponse:
        """GET `path` with `params`, within the limits, retrying what is worth retrying.

        Raises `BinanceAPIError` (or `UnknownSymbolError` for -1121) for a
        refused request, `RateLimitedError`/`BannedError` when 429/418 outlast
        the retries, `ExchangeUnavailableError` when timeouts, connection errors
        or 5xx answers do.
        """
        params = params or {}
        query = urlencode([(key, str(value)) for key, value in params.items()])
        request = f"{path}?{query}" if query else path
        # encoded=True: the URL sent is byte for byte the one captured.
        url = URL(self.base_url + request, encoded=True)
        weight = self.venue.request_weight(path, params)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt(url, request, params, weight, attempt)
            except _Retry as retry:
                # A wait longer than max_retry_after comes with no wait: give up at once.
                hopeless = retry.error is not None and retry.wait is None
                if hopeless or attempt >= self._max_attempts:
                    if retry.error is not None:
                        raise retry.error from None
                    raise ExchangeUnavailableError(request, attempt, retry.problem) from None
                self.stats.retries += 1
                if retry.wait is not None:
                    # Every request of this client waits, not only this one.
                    self._blocked_until = max(self._blocked_until, self._clock() + retry.wait)
                    log.warning("%s: %s; retrying in %.1f s", request, retry.problem, retry.wait)
                else:
                    delay = backoff_delay(
                        attempt - 1, self._backoff_base, self._backoff_cap, self._rand
                    )
                    log.warning(
                        "%s: %s; retry %d in %.2f s", request, retry.problem, attempt, delay
                    )
                    await self._wait(delay)

    async def _attempt(
        self,
        url: URL,
        request: str,
        params: Mapping[str, str | int],
        weight: int,
        attempt: int,
    ) -> RestResponse:
        window = await self._reserve(weight)
        self.stats.requests += 1
        self.stats.weight_sent += weight
        session = self._get_session()
        sent_at = self._clock()
        log.debug("GET %s (weight %d, attempt %d)", request, weight, attempt)
        try:
            async with session.get(url, timeout=self._timeout, allow_redirects=False) as resp:
                body = await resp.read()
                t = self._clock_ns()
                status = resp.status
                headers = resp.headers
        except TimeoutError:
            self.stats.timeouts += 1
            raise _Retry(f"no complete answer within {self._timeout.total:g} s") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            self.stats.connection_errors += 1
            raise _Retry(f"{type(exc).__name__}: {exc}") from None
        finally:
            if window == self._window:
                self._pending -= weight
        received_at = self._clock()
        self.stats.responses += 1
        self._note_weight(headers, window, weight)
        text = body.decode("utf-8", "replace")
        self._hub.on_next(RawMessage(t, KIND_REST, 0, text, request, status, "GET"))
        log.debug(
            "GET %s -> %d, %d bytes in %.0f ms (weight used %s)",
            request,
            status,
            len(body),
            (received_at - sent_at) * 1000.0,
            headers.get(WEIGHT_HEADER, "?"),
        )
        if status == 200:
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise BinanceAPIError(
                    None, f"response is not JSON: {text[:_SHOWN_BODY]!r}", request, status
                ) from None
            return RestResponse(request, status, text, parsed, t, sent_at, received_at)
        if status in (429, 418):
            raise self._limited(status, headers, text, request)
        if status >= 500:
            self.stats.server_errors += 1
            raise _Retry(f"HTTP {status}: {text[:_SHOWN_BODY]}")
        raise _error_from_body(status, text, request, params)

    def _limited(self, status: int, headers: Mapping[str, str], text: str, request: str) -> _Retry:
        retry_after = _retry_after(headers.get("Retry-After"))
        code, msg = _binance_error(text)
        detail = msg if code is None else f"code {code}: {msg}"
        if status == 429:
            self.stats.rate_limited += 1
            if retry_after is None:
                # No Retry-After (order-count limits): the minute window is what resets.
                now = self._server_now()
                retry_after = (math.floor(now / _WINDOW) + 1) * _WINDOW - now + _WINDOW_SLACK
            error: ExchangeError = RateLimitedError(request, retry_after, detail)
        else:
            self.stats.banned += 1
            if retry_after is None:
                retry_after = 120.0  # the shortest ban the venues document
            error = BannedError(request, retry_after, detail)
        problem = f"HTTP {status}, Retry-After {retry_after:g} s"
        if retry_after > self._max_retry_after:
            return _Retry(problem, None, error)
        return _Retry(problem, retry_after, error)

    # ------------------------------------------------------------ endpoints

    async def klines(
        self,
        symbol: str,
        interval: str,
        limit: int = 500,
        start_time: int | None = None,
        end_time: int | None = None,
    ) -> list[list[Any]]:
        """Kline rows `[open_time, open, high, low, close, volume, close_time, ...]`, oldest first.

        More than 1000 rows are fetched in pages: forward from `start_time`
        (`startTime` = last open time + 1) when it is given, otherwise backward
        from `end_time` or now. Each page is its own captured response. Rows come
        as Binance sends them: decimals stay strings.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise UsageError(f"klines limit must be a positive integer, not {limit!r}")
        symbol = symbol.upper()
        if start_time is not None or limit <= MAX_KLINES_PER_REQUEST:
            return await self._klines_forward(symbol, interval, limit, start_time, end_time)
        return await self._klines_backward(symbol, interval, limit, end_time)

    async def _klines_page(
        self, symbol: str, interval: str, n: int, start: int | None, end: int | None
    ) -> list[list[Any]]:
        params: dict[str, str | int] = {"symbol": symbol, "interval": interval}
        if start is not None:
            params["startTime"] = start
        if end is not None:
            params["endTime"] = end
        params["limit"] = n
        response = await self.get("/api/v3/klines", params)
        page = response.json
        if not isinstance(page, list) or not all(
            isinstance(row, list) and row and isinstance(row[0], int) for row in page
        ):
            raise BinanceAPIError(
                None,
                f"expected an array of kline rows, got {response.text[:_SHOWN_BODY]!r}",
                response.request,
                response.status,
            )
        return page

    async def _klines_forward(
        self, symbol: str, interval: str, limit: int, start: int | None, end: int | None
    ) -> list[list[Any]]:
        rows: list[list[Any]] = []
        while len(rows) < limit:
            n = min(MAX_KLINES_PER_REQUEST, limit - len(rows))
            page = await self._klines_page(symbol, interval, n, start, end)
            rows.extend(page)
            if len(page) < n or start is None:
                break
            start = page[-1][0] + 1
        return rows

    async def _klines_backward(
        self, symbol: str, interval: str, limit: int, end: int | None
    ) -> list[list[Any]]:
        pages: list[list[list[Any]]] = []
        remaining = limit
        while remaining > 0:
            n = min(MAX_KLINES_PER_REQUEST, remaining)
            page = await self._klines_page(symbol, interval, n, None, end)
            if page:
                pages.append(page)
            remaining -= len(page)
            if len(page) < n:
                break
            end = page[0][0] - 1
        return [row for page in reversed(pages) for row in page]

    async def depth(self, symbol: str, limit: int = 100) -> dict[str, Any]:
        """Order book snapshot `{"lastUpdateId", "bids", "asks"}` (levels as strings)."""
        response = await self.get("/api/v3/depth", {"symbol": symbol.upper(), "limit": limit})
        return _object(response)

    async def ticker_24hr(self, symbol: str) -> dict[str, Any]:
        """The 24h rolling ticker of one symbol."""
        response = await self.get("/api/v3/ticker/24hr", {"symbol": symbol.upper()})
        return _object(response)

    async def exchange_info(self, symbols: Sequence[str] | None = None) -> dict[str, Any]:
        """Exchange information, for `symbols` only when given (one request either way)."""
        params: dict[str, str | int] = {}
        if symbols:
            upper = [symbol.upper() for symbol in symbols]
            params["symbols"] = orjson.dumps(upper).decode()
        response = await self.get("/api/v3/exchangeInfo", params)
        return _object(response)

    async def check_symbols(self, symbols: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Check that the venue lists and trades every symbol; return their exchangeInfo entries.

        Raises `UnknownSymbolError` naming each symbol that is not listed or whose
        status is not `TRADING`. Call it before subscribing to anything.
        """
        wanted = list(dict.fromkeys(symbol.upper() for symbol in symbols))
        request = "/api/v3/exchangeInfo"
        try:
            info = await self.exchange_info(wanted)
        except BinanceAPIError as exc:
            if exc.code != _ILLEGAL_CHARACTERS:
                raise
            info = await self.exchange_info()  # the whole list names the bad ones
        except UnknownSymbolError:
            info = await self.exchange_info()
        listed: dict[str, dict[str, Any]] = {}
        for entry in info.get("symbols") or ():
            if isinstance(entry, dict) and isinstance(entry.get("symbol"), str):
                listed[entry["symbol"]] = entry
        problems: dict[str, str] = {}
        for symbol in wanted:
            entry = listed.get(symbol)
            if entry is None:
                problems[symbol] = "not listed in exchangeInfo"
            elif entry.get("status") != "TRADING":
                problems[symbol] = f"status is {entry.get('status')!r}, not 'TRADING'"
        if problems:
            raise UnknownSymbolError(problems, f"{self.base_url}{request}")
        return {symbol: listed[symbol] for symbol in wanted}

    async def server_time(self) -> int:
        """The server's time in ms; also updates `clock_offset_ms` and `round_trip_ms`.

        The offset assumes the server read its clock halfway through the round trip.
        """
        response = await self.get("/api/v3/time")
        body = response.json
        server_ms = body.get("serverTime") if isinstance(body, dict) else None
        if isinstance(server_ms, bool) or not isinstance(server_ms, int):
            raise BinanceAPIError(
                None,
                f"no integer serverTime in {response.text[:_SHOWN_BODY]!r}",
                response.request,
                response.status,
            )
        midpoint = (response.sent_at + response.received_at) / 2.0
        self.clock_offset_ms = server_ms - midpoint * 1000.0
        self.round_trip_ms = (response.received_at - response.sent_at) * 1000.0
        return server_ms


def _object(response: RestResponse) -> dict[str, Any]:
    if not isinstance(response.json, dict):
        raise BinanceAPIError(
            None,
            f"expected a JSON object, got {response.text[:_SHOWN_BODY]!r}",
            response.request,
            response.status,
        )
    return response.json


def _retry_after(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None
    return seconds if seconds >= 0 and math.isfinite(seconds) else None


def _binance_error(text: str) -> tuple[int | None, str]:
    """`(code, msg)` of a `{"code":..,"msg":..}` body, else `(None, start of the body)`."""
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None, text[:_SHOWN_BODY]
    if isinstance(body, dict):
        code = body.get("code")
        if isinstance(code, int) and not isinstance(code, bool):
            return code, str(body.get("msg", ""))
    return None, text[:_SHOWN_BODY]


def _error_from_body(
    status: int, text: str, request: str, params: Mapping[str, str | int]
) -> ExchangeError:
    code, msg = _binance_error(text)
    if code == _INVALID_SYMBOL:
        symbol = params.get("symbol", params.get("symbols", "?"))
        return UnknownSymbolError({str(symbol): msg or "Invalid symbol."}, request, code)
    return BinanceAPIError(code, msg, request, status)
