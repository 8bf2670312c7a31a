"""The REST side: Binance's market-data endpoints, parameter checks, weights and errors.

Every answer carries `X-MBX-USED-WEIGHT-1M` and `X-MBX-USED-WEIGHT`. Parameters
are checked the way Binance checks them, with its codes and messages:
-1101 duplicate parameter, -1102 missing mandatory parameter, -1100 illegal
characters, -1120 invalid interval, -1121 invalid symbol, -1130 invalid value,
-1104 parameters sent but not read, -1003 too much weight (429, then 418).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import orjson
from aiohttp import web
from multidict import MultiMapping

from pipeline.fake_exchange._faults import Faults
from pipeline.fake_exchange._limits import Limits
from pipeline.fake_exchange._market import Market
from pipeline.fake_exchange._stats import Stats
from pipeline.fake_exchange._streams import REST_INTERVALS
from pipeline.fake_exchange._symbols import SYMBOL_PATTERN
from pipeline.fake_exchange._weights import Verdict, WeightLimiter, request_weight

__all__ = ["ApiError", "RestApi"]

_MAX_KLINES: Final = 1000
_MAX_DEPTH: Final = 5000
_INT_RANGE: Final = "^[0-9]{1,20}$"
_SYMBOL_RANGE: Final = "^[A-Z0-9-_.]{1,20}$"


class ApiError(Exception):
    """A Binance error answer: HTTP status and `{"code": ..., "msg": ...}`."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status


class _Params:
    """A request's query, read the way Binance reads it (and blamed the same way)."""

    def __init__(self, query: MultiMapping[str]) -> None:
        for key in query:
            if len(query.getall(key)) > 1:
                raise ApiError(-1101, "Duplicate values for a parameter detected.")
        self._values = {key: query[key] for key in query}
        self._read: set[str] = set()

    def text(self, name: str, *, required: bool = False) -> str | None:
        self._read.add(name)
        value = self._values.get(name)
        if value is None or value == "":
            if required:
                raise ApiError(
                    -1102,
                    f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
                )
            if value == "":
                raise ApiError(-1105, f"Parameter '{name}' was empty.")
            return None
        return value

    def integer(self, name: str) -> int | None:
        value = self.text(name)
        if value is None:
            return None
        if not value.isdigit() or len(value) > 20:
            raise ApiError(
                -1100,
                f"Illegal characters found in parameter '{name}'; legal range is '{_INT_RANGE}'.",
            )
        return int(value)

    def symbol_text(self, name: str = "symbol", *, required: bool = False) -> str | None:
        value = self.text(name, required=required)
        if value is not None and SYMBOL_PATTERN.match(value) is None:
            raise ApiError(
                -1100,
                f"Illegal characters found in parameter '{name}'; "
                f"legal range is '{_SYMBOL_RANGE}'.",
            )
        return value

    def symbol_list(self, name: str = "symbols") -> list[str] | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            symbols = orjson.loads(value)
        except orjson.JSONDecodeError:
            symbols = None
        if (
            not isinstance(symbols, list)
            or not symbols
            or not all(isinstance(s, str) and SYMBOL_PATTERN.match(s) for s in symbols)
        ):
            raise ApiError(
                -1100,
                f"Illegal characters found in parameter '{name}'; legal range is "
                f'\'^\\[("[A-Z0-9-_.]{{1,20}}"(,"[A-Z0-9-_.]{{1,20}}"){{0,}}){{0,1}}\\]$\'.',
            )
        return symbols

    def done(self) -> None:
        """Refuse parameters the endpoint never read (Binance's -1104)."""
        unread = self._values.keys() - self._read
        if unread:
            read = len(self._values) - len(unread)
            raise ApiError(
                -1104,
                f"Not all sent parameters were read; read '{read}' parameter(s) "
                f"but was sent '{len(self._values)}'.",
            )


_Handler = Callable[[_Params], object]


class RestApi:
    """The REST endpoints of one fake exchange."""

    def __init__(
        self,
        market: Market,
        limits: Limits,
        stats: Stats,
        faults: Faults,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.market = market
        self.limits = limits
        self.stats = stats
        self.limiter = WeightLimiter(
            limits.weight_limit, window_s=limits.weight_window_s, ban_s=limits.ban_s, now=wall_clock
        )
        self._throttle_left = 0
        self._ban_left = 0
        self._retry_after = 1
        self.arm(faults)
        self._endpoints: dict[str, _Handler] = {
            "/api/v3/ping": self._ping,
            "/api/v3/time": self._time,
            "/api/v3/exchangeInfo": self._exchange_info,
            "/api/v3/klines": self._klines,
            "/api/v3/depth": self._depth,
            "/api/v3/ticker/24hr": self._ticker_24hr,
            "/api/v3/ticker/bookTicker": self._book_ticker,
            "/api/v3/ticker/price": self._price,
        }

    def arm(self, faults: Faults) -> None:
        """(Re)start the injected REST faults: the next K requests get 429, then K get 418."""
        self._throttle_left = faults.rest_throttle
        self._ban_left = faults.rest_ban
        self._retry_after = faults.retry_after

    def add_routes(self, app: web.Application) -> None:
        for path in self._endpoints:
            app.router.add_get(path, self._serve)

    # ------------------------------------------------------------------ plumbing
    async def _serve(self, request: web.Request) -> web.Response:
        stats = self.stats
        path = request.path
        stats.rest_requests += 1
        stats.rest_paths[path] += 1
        response = self._answer(request, path)
        stats.rest_statuses[response.status] += 1
        return response

    def _answer(self, request: web.Request, path: str) -> web.Response:
        ip = request.remote or "?"
        injected = self._injected()
        if injected is not None:
            status, retry_after = injected
            return self._refusal(status, retry_after, self.limiter.used(ip), 0)
        query = request.query
        verdict = self.limiter.charge(ip, request_weight(self.limits.venue, path, query))
        if verdict.status != 200:
            self.stats.rate_limited[verdict.status] += 1
            return self._refusal(
                verdict.status, verdict.retry_after, verdict.used, verdict.banned_until_ms
            )
        recorded = self.market.recorded_rest(path, query)
        if recorded is not None:
            return self._response(recorded[0], recorded[1].encode(), verdict)
        try:
            body = self._endpoints[path](_Params(query))
        except ApiError as err:
            return self._response(
                err.status, orjson.dumps({"code": err.code, "msg": err.msg}), verdict
            )
        return self._response(200, orjson.dumps(body), verdict)

    def _injected(self) -> tuple[int, int] | None:
        if self._throttle_left > 0:
            self._throttle_left -= 1
            self.stats.faults["rest_throttle"] += 1
            return 429, self._retry_after
        if self._ban_left > 0:
            self._ban_left -= 1
            self.stats.faults["rest_ban"] += 1
            return 418, self._retry_after
        return None

    def _refusal(
        self, status: int, retry_after: int, used: int, banned_until_ms: int
    ) -> web.Response:
        if status == 429:
            msg = (
                f"Too much request weight used; current limit is {self.limiter.limit} request "
                "weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid "
                "polling the API."
            )
        else:
            until = banned_until_ms or int(self.market.clock.now_ms() + retry_after * 1000)
            msg = (
                f"Way too much request weight used; IP banned until {until}. Please use "
                "WebSocket Streams for live updates to avoid bans."
            )
        response = self._response(
            status, orjson.dumps({"code": -1003, "msg": msg}), Verdict(200, used, 0)
        )
        response.headers["Retry-After"] = str(retry_after)
        return response

    @staticmethod
    def _response(status: int, body: bytes, verdict: Verdict) -> web.Response:
        response = web.Response(
            status=status, body=body, content_type="application/json", charset="UTF-8"
        )
        response.headers["X-MBX-USED-WEIGHT-1M"] = str(verdict.used)
        response.headers["X-MBX-USED-WEIGHT"] = str(verdict.used)
        return response

    # ----------------------------------------------------------------- endpoints
    def _known(self, symbol: str) -> str:
        if not self.market.has_symbol(symbol):
            raise ApiError(-1121, "Invalid symbol.")
        return symbol

    def _ping(self, params: _Params) -> object:
        params.done()
        return {}

    def _time(self, params: _Params) -> object:
        params.done()
        return {"serverTime": self.market.clock.now_ms()}

    def _exchange_info(self, params: _Params) -> object:
        symbol = params.symbol_text()
        symbols = params.symbol_list()
        params.text("permissions")
        params.done()
        if symbol is not None and symbols is not None:
            raise ApiError(-1128, "Combination of optional parameters invalid.")
        wanted = [symbol] if symbol is not None else symbols
        names = [self._known(s) for s in wanted] if wanted else self.market.listed_symbols()
        return {
            "timezone": "UTC",
            "serverTime": self.market.clock.now_ms(),
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": self.limiter.limit,
                },
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                {
                    "rateLimitType": "RAW_REQUESTS",
                    "interval": "MINUTE",
                    "intervalNum": 5,
                    "limit": 6100,
                },
            ],
            "exchangeFilters": [],
            "symbols": [self.market.symbol_entry(s) for s in names],
            "permissions": ["SPOT"],
            "defaultSelfTradePreventionMode": "NONE",
            "allowedSelfTradePreventionModes": ["NONE"],
        }

    def _klines(self, params: _Params) -> object:
        symbol = params.symbol_text(required=True)
        interval = params.text("interval", required=True)
        start = params.integer("startTime")
        end = params.integer("endTime")
        limit = params.integer("limit")
        params.text("timeZone")
        params.done()
        assert symbol is not None
        assert interval is not None
        if interval not in REST_INTERVALS:
            raise ApiError(-1120, "Invalid interval.")
        self._known(symbol)
        if limit is None:
            limit = 500
        if not 1 <= limit <= _MAX_KLINES:
            raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
        if start is not None and end is not None and start > end:
            raise ApiError(-1023, "Start time is greater than end time.")
        return self.market.klines(symbol, interval, start, end, limit)

    def _depth(self, params: _Params) -> object:
        symbol = params.symbol_text(required=True)
        limit = params.integer("limit")
        params.done()
        assert symbol is not None
        self._known(symbol)
        if limit is None:
            limit = 100
        if limit < 1:
            raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
        return self.market.depth(symbol, min(limit, _MAX_DEPTH))

    def _symbols_of(self, params: _Params) -> tuple[str | None, list[str]]:
        """`symbol` or `symbols` (or neither: every listed symbol)."""
        symbol = params.symbol_text()
        symbols = params.symbol_list()
        if symbol is not None and symbols is not None:
            raise ApiError(-1128, "Combination of optional parameters invalid.")
        if symbol is not None:
            return self._known(symbol), [symbol]
        return None, [self._known(s) for s in symbols] if symbols else self.market.listed_symbols()

    def _ticker_24hr(self, params: _Params) -> object:
        kind = params.text("type") or "FULL"
        single, names = self._symbols_of(params)
        params.done()
        if kind not in ("FULL", "MINI"):
            raise ApiError(-1130, "Data sent for parameter 'type' is not valid.")
        bodies = [self.market.ticker_24hr(s) for s in names]
        if kind == "MINI":
            bodies = [{k: v for k, v in b.items() if k in _MINI_FIELDS} for b in bodies]
        return bodies[0] if single is not None else bodies

    def _book_ticker(self, params: _Params) -> object:
        single, names = self._symbols_of(params)
        params.done()
        bodies = [self.market.book_ticker(s) for s in names]
        return bodies[0] if single is not None else bodies

    def _price(self, params: _Params) -> object:
        single, names = self._symbols_of(params)
        params.done()
        bodies = [{"symbol": s, "price": self.market.ticker_24hr(s)["lastPrice"]} for s in names]
        return bodies[0] if single is not None else bodies


_MINI_FIELDS: Final = frozenset(
    {
        "symbol", "openPrice", "highPrice", "lowPrice", "lastPrice", "volume", "quoteVolume",
        "openTime", "closeTime", "firstId", "lastId", "count",
    }
)  # fmt: skip
