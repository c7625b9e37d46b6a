"""Any OpenAI-compatible chat server (vLLM, Ollama, llama.cpp server) over httpx, streamed as server-sent events."""

from __future__ import annotations

import json
import time
from typing import Iterable, Iterator

import httpx

from assistant.errors import ModelError
from assistant.models import Usage, cut_at_stops

RETRY_DELAYS = (0.5, 1.0, 2.0)
RETRY_STATUS = {502, 503, 504}
# --server-grammar auto: what /models says serves the model ("owned_by") -> how to ask it for the grammar.
SERVER_KINDS = {"llamacpp": "gbnf", "vllm": "vllm"}


class OpenAIModel:
    def __init__(self, base_url: str, model_name: str | None, *, api_key: str | None = None,
                 timeout: float = 120.0, context_window: int | None = None, retry_delays=RETRY_DELAYS,
                 grammar_mode: str = "auto"):
        self.base_url = base_url.rstrip("/")
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=10.0))
        self.retry_delays = tuple(retry_delays)
        self.context_window = int(context_window or 8192)
        self.last_usage: Usage | None = None
        self._listing: list[dict] | None = None
        self.model_name = model_name or self._first_model()
        self.name = f"{self.model_name} @ {self.base_url}"
        self._grammar_mode = None if grammar_mode == "auto" else grammar_mode

    def describe(self) -> dict:
        return {"backend": "openai-compatible", "url": self.base_url, "context_window": self.context_window}

    @property
    def grammar_mode(self) -> str:
        """How this server is asked to follow the tool grammar: gbnf (llama.cpp server's `grammar`), vllm
        (`structured_outputs`), json (`response_format` with a JSON schema) or off. `auto` asks /models once."""
        if self._grammar_mode is None:
            try:
                owners = {str(m.get("owned_by", "")).lower() for m in self._models() if isinstance(m, dict)}
            except ModelError:
                owners = set()
            self._grammar_mode = next((SERVER_KINDS[o] for o in owners if o in SERVER_KINDS), "off")
        return self._grammar_mode

    @property
    def supports_grammar(self) -> bool:
        return self.grammar_mode != "off"

    def _grammar_fields(self, grammar) -> dict:
        mode = self.grammar_mode
        if grammar is None or mode == "off":
            return {}
        if mode == "gbnf":
            return {"grammar": grammar.gbnf}
        if mode == "vllm":
            return {"structured_outputs": {"grammar": grammar.gbnf}}
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "reply", "schema": grammar.json_schema()}}}

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """Send with retries and backoff on connection errors and 502/503/504 (safe: nothing streamed yet)."""
        url = self.base_url + path
        for attempt in range(len(self.retry_delays) + 1):
            try:
                resp = self.client.send(self.client.build_request(method, url, **kwargs), stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt == len(self.retry_delays):
                    raise ModelError(f"cannot reach the model server at {self.base_url} ({_reason(exc)}); is it running?") from None
            except httpx.TimeoutException:
                raise ModelError(f"the model server at {self.base_url} did not answer in time") from None
            except httpx.HTTPError as exc:
                raise ModelError(f"request to {url} failed: {exc}") from None
            else:
                if resp.status_code in RETRY_STATUS and attempt < len(self.retry_delays):
                    resp.close()
                elif resp.status_code >= 400:
                    body = resp.read().decode("utf-8", "replace")
                    resp.close()
                    raise ModelError(f"the model server answered HTTP {resp.status_code}: {_error_message(body)}")
                else:
                    return resp
            time.sleep(self.retry_delays[attempt])
        raise AssertionError("unreachable")

    def _models(self) -> list:
        """The server's /models listing (asked once)."""
        if self._listing is None:
            resp = self._request("GET", "/models")
            try:
                data = json.loads(resp.read())
                self._listing = list(data["data"])
            except (ValueError, KeyError, TypeError):
                self._listing = []
            except httpx.HTTPError as exc:
                raise ModelError(f"reading {self.base_url}/models failed: {exc}") from None
            finally:
                resp.close()
        return self._listing

    def _first_model(self) -> str:
        try:
            return self._models()[0]["id"]
        except (IndexError, KeyError, TypeError):
            raise ModelError(f"{self.base_url}/models lists no model; pass --model-name") from None

    def stream(self, messages: list[dict], *, max_new_tokens: int = 256, stop: Iterable[str] = (),
               temperature: float = 0.0, grammar: object | None = None) -> Iterator[str]:
        return cut_at_stops(self._stream(messages, max_new_tokens, temperature, grammar), stop)

    def _stream(self, messages: list[dict], max_new_tokens: int, temperature: float,
                grammar: object | None = None) -> Iterator[str]:
        body = {"model": self.model_name, "messages": messages, "stream": True,
                "max_tokens": max_new_tokens, "temperature": temperature, **self._grammar_fields(grammar)}
        start = time.monotonic()
        first = None
        count = 0
        resp = self._request("POST", "/chat/completions", json=body)
        try:
            for line in resp.iter_lines():
                line = line.strip()
                if not line or line.startswith(":"):
                    continue
                if not line.startswith("data:"):
                    raise ModelError(f"the model server sent something that is not a server-sent event: {line[:80]!r}")
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                try:
                    chunk = json.loads(payload)
                except json.JSONDecodeError:
                    raise ModelError(f"the model server sent malformed JSON: {payload[:80]!r}") from None
                if "error" in chunk:
                    raise ModelError(f"the model server reported: {_error_message(json.dumps(chunk))}")
                try:
                    delta = chunk["choices"][0].get("delta") or {}
                except (KeyError, IndexError, TypeError, AttributeError):
                    continue  # e.g. a usage-only chunk
                text = delta.get("content") or ""
                if text:
                    count += 1
                    first = first or time.monotonic() - start
                    self.last_usage = Usage(0, count, time.monotonic() - start, first)
                    yield text
        except httpx.TimeoutException:
            raise ModelError(f"the model server at {self.base_url} stopped answering (timeout)") from None
        except httpx.HTTPError as exc:
            raise ModelError(f"the stream from {self.base_url} broke: {exc}") from None
        finally:
            resp.close()
            self.last_usage = Usage(0, count, time.monotonic() - start, first)


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.split("] ")[-1] if "]" in text else text


def _error_message(body: str) -> str:
    try:
        data = json.loads(body)
        err = data.get("error", data)
        msg = err.get("message") if isinstance(err, dict) else str(err)
        return (msg or body)[:200]
    except (ValueError, AttributeError):
        return body.strip()[:200] or "(empty body)"
