"""`--agent gemini`: Gemini proposes each experiment as search/replace edits to train.py.

The client is google-genai's, configured only by its standard environment:
GEMINI_API_KEY (or GOOGLE_API_KEY) for the Gemini API, or
GOOGLE_GENAI_USE_VERTEXAI=true + GOOGLE_CLOUD_PROJECT + GOOGLE_CLOUD_LOCATION with
application-default credentials for Vertex AI; GOOGLE_GEMINI_BASE_URL /
GOOGLE_VERTEX_BASE_URL move the endpoint, as the client itself honours them.

One proposal is one conversation: the prompt (program.md, train.py, hardware and
budget, the recent ledger, the agent's notes, a crash's log tail when fixing) and
an answer in the JSON schema below. An answer that does not apply (bad JSON, a
search passage not found, a result that does not parse) goes back to the model
with the error, a bounded number of times, before the proposal is dropped.
Transient failures (429, 5xx, timeouts, empty candidates) back off and retry,
bounded; then propose returns None and the loop goes on. The client's own
retries are switched off so this policy is the one in force.
"""
from __future__ import annotations

import dataclasses
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Callable

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from engine.agents import notes
from engine.agents import pricing
from engine.agents.base import Proposal, ProposalRequest
from engine.errors import UserError
from engine.agents.edits import (EditError, apply_edits, parse_answer, primary_file, read_editable,
                                 retry_message, write_files)
from engine.agents.gemini_prompt import build_prompt, one_line
from engine.agents.task_prompt import system_instruction

DEFAULT_MODEL = "gemini-3.1-pro-preview"
SECRET_ENV_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
MAX_DESCRIPTION_CHARS = 200
MAX_HYPOTHESIS_CHARS = 1000
# Status codes worth another try; everything else in 4xx is a configuration
# problem (bad key, unknown model, no permission) that retrying cannot fix.
RETRIABLE_STATUS = {408, 429}
# A server's retry delay is honoured up to this; a longer one (a spent daily quota) is retried hourly.
MAX_SERVER_DELAY_S = 3600.0

ANSWER_SCHEMA = {
    "type": "OBJECT",
    "properties": {
        "description": {"type": "STRING", "description": "one line: what this experiment changes"},
        "hypothesis": {"type": "STRING", "description": "why it should improve the metric"},
        "edits": {
            "type": "ARRAY",
            "items": {
                "type": "OBJECT",
                "properties": {
                    "search": {"type": "STRING", "description": "exact passage of the current file, unique"},
                    "replace": {"type": "STRING", "description": "its new text"},
                    "file": {"type": "STRING", "description": "the file edited; default the first editable file"},
                },
                "required": ["search", "replace"],
            },
        },
        "notes": {"type": "STRING", "description": "optional: the full new research notes"},
    },
    "required": ["description", "hypothesis", "edits"],
    "propertyOrdering": ["description", "hypothesis", "edits", "notes"],
}

SYSTEM_INSTRUCTION = f"""\
You are an ML researcher running experiments on your own, overnight. Each experiment is one
change to train.py, a JAX/Flax training script. The engine (which you cannot change) compiles it,
trains it for a fixed budget, and scores val_bpb: validation bits per byte, lower is better. It
scores the model's `logits` with its own cross-entropy, in a process that never runs train.py, after
checking that each prediction uses only earlier tokens of its own row: a model that looks ahead or
across rows is recorded "invalid", and train.py's own loss never enters the score. A change that
lowers val_bpb is kept; anything else is reverted. Follow the protocol in program.md.

Answer with one JSON object:
- "description": one short line saying what this experiment changes (it names the row in the results).
- "hypothesis": why you expect it to lower val_bpb within the budget.
- "edits": a list of {{"search", "replace"}} pairs applied in order. "search" is a passage copied
  exactly from the current train.py (same whitespace and indentation), a few whole lines, that occurs
  exactly once; it is replaced by "replace". Keep edits small and focused; the result must be valid Python.
- "notes" (optional): the full new text of your research notes, Markdown, at most
  {notes.MAX_NOTES_CHARS} characters. They are shown to you in every future prompt: keep the lessons,
  open hypotheses and plans that matter, drop the rest. Omit the field to leave the notes as they are.
"""

@dataclasses.dataclass
class Usage:
    prompt_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, model: str, metadata) -> None:
        if metadata is None:
            return
        prompt = metadata.prompt_token_count or 0
        output = (metadata.candidates_token_count or 0) + (metadata.thoughts_token_count or 0)
        self.prompt_tokens += prompt
        self.output_tokens += output
        self.cost_usd += pricing.estimate_cost_usd(model, prompt, output)


class GeminiAgent:
    name = "gemini"
    fixes_crashes = True

    def __init__(self, model: str | None = None, max_edit_retries: int = 3, *,
                 max_tries: int = 8, base_delay_s: float = 2.0, max_delay_s: float = 300.0,
                 request_timeout_s: float = 600.0, run_dir: Path | None = None,
                 sleep: Callable[[float], None] = time.sleep, log: Callable[[str], None] | None = None):
        self.model = model or DEFAULT_MODEL
        self.max_edit_retries = max_edit_retries
        self.max_tries = max_tries
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.run_dir = run_dir  # notes go to request.run_dir; this is only a fallback
        self._sleep = sleep
        self._log_sink = log or (lambda message: print(message, file=sys.stderr, flush=True))
        # Spend of dropped proposals, carried into the next Proposal so the ledger's sum is the bill.
        self._unreported = Usage()
        # Why the last propose returned what it did: "proposed", "unavailable" (the tries ran out
        # on 429/5xx/timeouts: worth waiting for) or "dropped" (answers that never applied).
        self.last_outcome = ""
        self._client = _make_client(request_timeout_s)

    def propose(self, request: ProposalRequest) -> Proposal | None:
        run_dir = Path(request.run_dir or self.run_dir)
        files = read_editable(Path(request.repo_root), request.editable)
        self._system = system_instruction(request, SYSTEM_INSTRUCTION)
        contents = [types.Content(role="user", parts=[types.Part(text=build_prompt(request, files, notes.read_notes(run_dir)))])]
        for _ in range(1 + self.max_edit_retries):
            reply = self._generate(contents)
            if reply is None:
                self.last_outcome = "unavailable"
                return None
            text = _text_of(reply)
            try:
                answer = parse_answer(text, list(files))
                changed = apply_edits(files, answer["edits"], default_file=primary_file(files))
            except EditError as error:
                self._log(f"gemini: answer not applied ({one_line(str(error))}); asking again")
                contents += [reply, types.Content(role="user", parts=[types.Part(text=retry_message(error))])]
                continue
            write_files(Path(request.repo_root), changed)
            if (answer.get("notes") or "").strip():
                notes.write_notes(run_dir, redact(answer["notes"]))
            self.last_outcome = "proposed"
            return self._proposal(answer)
        self.last_outcome = "dropped"
        self._log(f"gemini: dropped the proposal after {1 + self.max_edit_retries} answers that did not apply")
        return None

    def _proposal(self, answer: dict) -> Proposal:
        usage, self._unreported = self._unreported, Usage()
        return Proposal(description=one_line(redact(answer["description"]))[:MAX_DESCRIPTION_CHARS],
                        hypothesis=redact(str(answer.get("hypothesis") or "")).strip()[:MAX_HYPOTHESIS_CHARS],
                        prompt_tokens=usage.prompt_tokens, output_tokens=usage.output_tokens,
                        cost_usd=usage.cost_usd)

    def _generate(self, contents: list) -> types.Content | None:
        """One answer's content, retrying transient failures; None once the tries are spent."""
        config = types.GenerateContentConfig(system_instruction=getattr(self, "_system", SYSTEM_INSTRUCTION),
                                             response_mime_type="application/json",
                                             response_schema=ANSWER_SCHEMA)
        reason = "no try made"
        for attempt in range(1, self.max_tries + 1):
            server_delay = None
            try:
                response = self._client.models.generate_content(model=self.model, contents=contents, config=config)
            except genai_errors.APIError as error:
                _raise_if_permanent(error, self.model)
                reason, server_delay = f"HTTP {error.code} {error.status or ''}".strip(), server_retry_delay(error)
            except TRANSIENT_ERRORS as error:
                reason = f"{type(error).__name__}: {one_line(str(error))[:200]}"
            else:
                self._unreported.add(self.model, response.usage_metadata)
                content, reason = _answer_content(response)
                if content is not None:
                    return content
            if attempt < self.max_tries:
                delay = self.backoff_delay(attempt, server_delay)
                self._log(f"gemini: {reason}; try {attempt} of {self.max_tries}, again in {delay:.1f} s")
                self._sleep(delay)
        self._log(f"gemini: no answer after {self.max_tries} tries ({reason}); no experiment this time")
        return None

    def backoff_delay(self, attempt: int, server_delay: float | None = None) -> float:
        """Exponential with jitter up to max_delay_s, but never shorter than the server asked."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        if server_delay is not None:
            delay = max(delay, min(server_delay, MAX_SERVER_DELAY_S) * random.uniform(1.0, 1.1))
        return delay

    def _log(self, message: str) -> None:
        self._log_sink(redact(message))


# ---------------------------------------------------------------- client and errors

def _transient_errors() -> tuple[type[BaseException], ...]:
    """Network failures and timeouts of whichever HTTP stack the client uses."""
    found: list[type[BaseException]] = [TimeoutError, ConnectionError]
    for module_name, attribute in (("httpx", "TransportError"), ("httpx2", "TransportError"),
                                   ("requests", "ConnectionError"), ("requests", "Timeout"),
                                   ("google.auth.exceptions", "TransportError")):
        try:
            module = __import__(module_name, fromlist=[attribute])
            found.append(getattr(module, attribute))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


TRANSIENT_ERRORS = _transient_errors()


def _make_client(request_timeout_s: float) -> genai.Client:
    options = types.HttpOptions(timeout=int(request_timeout_s * 1000),
                                retry_options=types.HttpRetryOptions(attempts=1))
    try:
        return genai.Client(http_options=options)
    except Exception as error:  # the client raises ValueError or google.auth errors; all mean "not configured"
        raise UserError(
            f"Gemini is not configured ({redact(one_line(str(error)))}): set GEMINI_API_KEY, or for Vertex AI "
            "set GOOGLE_GENAI_USE_VERTEXAI=true, GOOGLE_CLOUD_PROJECT and GOOGLE_CLOUD_LOCATION with "
            "application-default credentials (gcloud auth application-default login); or use --agent offline"
        ) from None


def _raise_if_permanent(error: genai_errors.APIError, model: str) -> None:
    if error.code in RETRIABLE_STATUS or (error.code or 0) >= 500:
        return
    message = redact(one_line(error.message or str(error)))[:300]
    hint = {400: "check the API key and the model's support for JSON output",
            401: "check the API key or application-default credentials",
            403: "check that the key or project may use this model",
            404: "check --model against the models your key can use"}.get(error.code, "check the Gemini setup")
    raise UserError(f"Gemini refused the request for model {model!r} (HTTP {error.code}: {message}): {hint}")


def server_retry_delay(error: genai_errors.APIError) -> float | None:
    """Seconds the server asked us to wait: google.rpc.RetryInfo's retryDelay, or a Retry-After header."""
    details = error.details.get("error", error.details) if isinstance(error.details, dict) else {}
    for detail in details.get("details", []) if isinstance(details, dict) else []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            match = re.fullmatch(r"\s*([0-9.]+)s\s*", str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    headers = getattr(getattr(error, "response", None), "headers", None) or {}
    try:
        return float(headers.get("retry-after"))
    except (TypeError, ValueError):
        return None


def _answer_content(response) -> tuple[types.Content | None, str]:
    """The first candidate's content when it holds answer text, else why not."""
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason:
        return None, f"prompt blocked ({feedback.block_reason})"
    if not response.candidates:
        return None, "empty answer (no candidates)"
    candidate = response.candidates[0]
    if candidate.content is None or not _text_of(candidate.content).strip():
        return None, f"empty answer (finish reason {candidate.finish_reason})"
    return candidate.content, "ok"


def _text_of(content: types.Content) -> str:
    return "".join(part.text or "" for part in content.parts or [] if not part.thought)


def redact(text: str) -> str:
    """Remove any API key the environment holds, wherever it might have leaked into text."""
    for name in SECRET_ENV_VARS:
        secret = os.environ.get(name, "").strip()
        if len(secret) >= 8:
            text = text.replace(secret, "[redacted]")
    return text
