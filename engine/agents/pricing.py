"""Estimated cost of Gemini calls, in US dollars.

These are ESTIMATES from the published pay-as-you-go list prices (standard tier,
text input, Gemini API; Vertex AI's are close) as of mid 2026. They are not a
bill: prices change, free tiers, batch and cached input are cheaper, and some
regions cost more. They exist so that `max_cost_usd` in program.md can stop a
loop before it spends more than intended. Thinking tokens are billed as output.
"""
from __future__ import annotations

import dataclasses

# Above this many prompt tokens, the models that have a long-context tier bill
# the whole request at the higher rate.
LONG_PROMPT_TOKENS = 200_000


@dataclasses.dataclass(frozen=True)
class Price:
    input_per_m: float  # USD per million prompt tokens
    output_per_m: float  # USD per million output tokens (thinking included)
    long_input_per_m: float | None = None  # prompts over LONG_PROMPT_TOKENS, where different
    long_output_per_m: float | None = None


PRICES: dict[str, Price] = {
    "gemini-3.1-pro-preview": Price(2.00, 12.00, 4.00, 18.00),
    "gemini-3-pro-preview": Price(2.00, 12.00, 4.00, 18.00),
    "gemini-3.5-flash": Price(1.50, 9.00),
    "gemini-3-flash-preview": Price(0.50, 3.00),
    "gemini-3.1-flash-lite": Price(0.25, 1.50),
    "gemini-2.5-pro": Price(1.25, 10.00, 2.50, 15.00),
    "gemini-2.5-flash": Price(0.30, 2.50),
    "gemini-2.5-flash-lite": Price(0.10, 0.40),
    "gemini-2.0-flash": Price(0.10, 0.40),
    "gemini-2.0-flash-lite": Price(0.075, 0.30),
}

# A model not in the table is priced as the dearest one we know, so that a cost
# limit errs on the side of stopping early.
UNKNOWN_MODEL_PRICE = Price(2.00, 12.00, 4.00, 18.00)


def price_of(model: str) -> Price:
    """The price of a model id, accepting "models/..." or Vertex "publishers/google/models/..."
    names and dated or suffixed versions ("gemini-2.5-flash-001" is priced as gemini-2.5-flash)."""
    name = model.rsplit("/", 1)[-1].lower()
    matches = [known for known in PRICES if name == known or name.startswith(known + "-")]
    if not matches:
        return UNKNOWN_MODEL_PRICE
    return PRICES[max(matches, key=len)]


def estimate_cost_usd(model: str, prompt_tokens: int, output_tokens: int) -> float:
    price = price_of(model)
    long_prompt = prompt_tokens > LONG_PROMPT_TOKENS
    input_rate = price.long_input_per_m if long_prompt and price.long_input_per_m else price.input_per_m
    output_rate = price.long_output_per_m if long_prompt and price.long_output_per_m else price.output_per_m
    return (prompt_tokens * input_rate + output_tokens * output_rate) / 1e6
