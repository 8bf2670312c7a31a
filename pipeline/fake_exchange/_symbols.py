"""What the fake exchange knows about a symbol: assets, tick and lot sizes, typical price.

Prices and quantities are integers of ticks and lots everywhere inside the fake
exchange, so sums are exact and REST and WebSocket print identical decimals;
`decimal_text` turns them into Binance's eight-decimal strings.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

__all__ = [
    "SYMBOL_PATTERN",
    "SymbolProfile",
    "decimal_text",
    "exchange_symbol_entry",
    "profile_for",
    "stable_hash",
]

SYMBOL_PATTERN: Final = re.compile(r"^[A-Z0-9\-_.]{1,20}$")
"""Binance's legal range for a `symbol` parameter (quoted in its -1100 message)."""

_QUOTE_ASSETS: Final = (
    "USDT", "USDC", "BUSD", "TUSD", "USDP", "FDUSD", "DAI",
    "USD", "EUR", "BTC", "ETH", "BNB", "DOGE", "TRY",
)  # fmt: skip


def _ms(year: int, month: int, day: int) -> int:
    return int(datetime(year, month, day, tzinfo=UTC).timestamp() * 1000)


@dataclass(frozen=True)
class SymbolProfile:
    """The fixed traits of one synthetic symbol."""

    symbol: str
    base_asset: str
    quote_asset: str
    price_decimals: int
    """A tick is `10 ** -price_decimals` of the quote asset."""
    qty_decimals: int
    """A lot is `10 ** -qty_decimals` of the base asset."""
    base_price: float
    """The price the random walk is pulled back to."""
    daily_volatility: float = 0.03
    """Standard deviation of the daily log-price change."""
    lots_per_second: float = 1000.0
    """Mean volume traded a second, in lots."""
    listed_ms: int = _ms(2019, 9, 1)
    """Open time of the first candle: klines before it do not exist."""

    @property
    def tick(self) -> float:
        return 10.0**-self.price_decimals

    def price_ticks(self, price: float) -> int:
        return max(1, round(price / self.tick))


_KNOWN: Final = {
    p.symbol: p
    for p in (
        SymbolProfile("HBARUSDT", "HBAR", "USDT", 5, 1, 0.07, 0.04, 1500.0),
        SymbolProfile("HBARUSD", "HBAR", "USD", 4, 1, 0.07, 0.04, 800.0),
        SymbolProfile("BTCUSDT", "BTC", "USDT", 2, 5, 60000.0, 0.025, 5000.0),
        SymbolProfile("ETHUSDT", "ETH", "USDT", 2, 4, 3000.0, 0.03, 3000.0),
        SymbolProfile("BNBUSDT", "BNB", "USDT", 2, 3, 500.0, 0.03, 800.0),
    )
}


def stable_hash(*parts: object) -> int:
    """A 32-bit hash that, unlike `hash()`, is the same in every process."""
    return zlib.crc32("\x1f".join(map(str, parts)).encode())


def _split(symbol: str) -> tuple[str, str]:
    for quote in sorted(_QUOTE_ASSETS, key=len, reverse=True):
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol[:-3] or symbol, symbol[-3:]


def profile_for(symbol: str) -> SymbolProfile:
    """The profile of `symbol`: a known one, or one derived from the symbol's name."""
    known = _KNOWN.get(symbol)
    if known is not None:
        return known
    base, quote = _split(symbol)
    h = stable_hash("profile", symbol)
    # Log-uniform between 0.01 and 10 000, about five significant digits.
    price = 10 ** (-2 + 6 * (h % 10_000) / 10_000)
    magnitude = len(str(int(price))) if price >= 1 else 0
    price_decimals = max(0, min(8, 5 - magnitude))
    qty_decimals = max(0, min(8, magnitude + 1))
    return SymbolProfile(symbol, base, quote, price_decimals, qty_decimals, price)


def decimal_text(units: int, decimals: int) -> str:
    """`units * 10**-decimals` as Binance prints it: eight decimals (truncated beyond)."""
    sign = "-" if units < 0 else ""
    units = abs(units)
    scaled = units * 10 ** (8 - decimals) if decimals <= 8 else units // 10 ** (decimals - 8)
    whole, frac = divmod(scaled, 100_000_000)
    return f"{sign}{whole}.{frac:08d}"


def exchange_symbol_entry(p: SymbolProfile) -> dict[str, object]:
    """The symbol's object in `/api/v3/exchangeInfo`, laid out as Binance.US sends it."""
    tick = decimal_text(1, p.price_decimals)
    step = decimal_text(1, p.qty_decimals)
    return {
        "symbol": p.symbol,
        "status": "TRADING",
        "baseAsset": p.base_asset,
        "baseAssetPrecision": 8,
        "quoteAsset": p.quote_asset,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": tick,
                "maxPrice": decimal_text(10 * p.price_ticks(p.base_price), p.price_decimals),
                "tickSize": tick,
            },
            {
                "filterType": "PERCENT_PRICE",
                "multiplierUp": "5",
                "multiplierDown": "0.2",
                "avgPriceMins": 5,
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": step,
                "maxQty": "9000000.00000000",
                "stepSize": step,
            },
            {
                "filterType": "MIN_NOTIONAL",
                "minNotional": "10.00000000",
                "applyToMarket": True,
                "avgPriceMins": 5,
            },
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0.00000000",
                "maxQty": "9000000.00000000",
                "stepSize": "0.00000000",
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
        "permissions": ["SPOT"],
        "defaultSelfTradePreventionMode": "NONE",
        "allowedSelfTradePreventionModes": ["NONE"],
    }
