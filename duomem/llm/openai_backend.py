"""OpenAI-compatible backend: a (large) model served by vLLM, SGLang, llama.cpp's server or a hosted API.

Settings are constructor arguments (a run's spec passes them: ``request_timeout``, ``request_retries``,
``request_concurrency``, ``n_ctx``); their defaults come from ``duomem.settings`` (``DUOMEM_OPENAI_TIMEOUT``,
``_RETRIES``, ``_BACKOFF``, ``_CONCURRENCY``; the key from the variable named by ``DUOMEM_OPENAI_KEY_ENV``,
default ``OPENAI_API_KEY``; local servers that check no key get a placeholder). Connection errors, timeouts, 429
and 5xx are retried with exponential backoff. The context is the server's where it reports one, capped by
``context_length``. ``complete_batch`` sends up to ``concurrency`` requests at once.

Token counts: the server's tokenizer where it has an endpoint for it (vLLM's ``/tokenize`` with the chat
template applied; llama-cpp-python's ``/extras/tokenize/count`` and llama.cpp server's ``/tokenize`` on each
message's text, plus :data:`MESSAGE_OVERHEAD` tokens per message for the template); otherwise an estimate of
one token per :data:`CHARS_PER_TOKEN` characters plus the same overhead. Completions report the server's
``usage``.

Action selection (issue 13). ``score`` renders the conversation with the model's chat template (the
``chat_template`` argument, else the one llama.cpp's server reports at ``/props``, else that of the packaged
model of the same name) and asks the completions endpoint for the prompt's log-probabilities (``echo`` with
``logprobs``, one new token): once for the prompt alone and once per candidate with its continuation appended;
a candidate's log-probability is the sum over the tokens after the prompt's. vLLM and llama-cpp-python's server
(``logits_all``, its default) return them; a server that does not ends in a :class:`ModelError` that says to use
``--actions free``. Constrained ``complete`` sends a GBNF ``grammar`` (llama.cpp's servers honour it) and checks
the answer: a server that ignored it ends in a :class:`ModelError` too.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from duomem import settings
from duomem.errors import ModelError
from duomem.llm.base import Batching, Candidate, Completion, Constraint, Message, Scores

T = TypeVar("T")

PLACEHOLDER_KEY = "sk-no-key-required"
DEFAULT_CONTEXT = 8192
MESSAGE_OVERHEAD = 5
"""Template tokens per message (role markers, separators) added to counts of the message text."""
GENERATION_OVERHEAD = 3
"""Template tokens that open the assistant's turn."""
CHARS_PER_TOKEN = 3.0
"""The estimate when the server cannot tokenize (English with markup runs at about 3-4 characters a token)."""
MAX_SERVER_STOPS = 4
"""Stop sequences sent to the server (OpenAI accepts at most 4); all of them are enforced client-side."""
_CONTEXT_KEYS = ("max_model_len", "context_length", "context_window", "max_context_length", "n_ctx")

def env_api_key() -> str:
    """The key from the variable named by ``DUOMEM_OPENAI_KEY_ENV`` (default ``OPENAI_API_KEY``), or a
    placeholder for local servers that need none."""
    return settings.openai_api_key() or PLACEHOLDER_KEY


def _one_line(text: object, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class OpenAIChatModel(Batching):
    """A chat model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Greedy with ``temperature=0``; ``seed`` is passed on, so servers that honour it (vLLM, llama.cpp) sample
    reproducibly. Every failure ends in a one-line :class:`ModelError`: unreachable server (after the
    retries), rejected key, unknown model, a server that stops answering mid-run, or a request it refuses.
    """

    def __init__(self, model: str, base_url: str, seed: int = 0, api_key: str | None = None,
                 context_length: int | None = None, timeout: float | None = None,
                 max_tries: int | None = None, backoff: float | None = None, name: str | None = None,
                 check: bool = True, concurrency: int | None = None, chat_template: str | None = None) -> None:
        try:
            import openai
        except ImportError as exc:  # pragma: no cover - an optional dependency
            raise ModelError("the openai backend needs its client: pip install 'openai>=1.40'") from exc
        self._openai = openai
        self.model = model
        self.name = name or model
        self.base_url = base_url.rstrip("/")
        self.root_url = self.base_url.removesuffix("/v1")
        self.seed = seed
        self.timeout = timeout if timeout is not None else settings.openai_timeout()
        self.max_tries = max_tries or settings.openai_retries()
        self.backoff = backoff if backoff is not None else settings.openai_backoff()
        self.concurrency = concurrency or settings.openai_concurrency()
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._key = api_key if api_key is not None else env_api_key()
        self._client = openai.OpenAI(api_key=self._key, base_url=self.base_url, timeout=self.timeout,
                                     max_retries=0)
        self._answered = False
        self._tokenizer: str | None = None  # "messages", "extras", "llamacpp" or "estimate" once probed
        self._text_counts: dict[str, int] = {}
        self.chat_template = chat_template
        self._template_probed = chat_template is not None
        user_context = context_length
        served = self._check_server() if check else None
        if served and user_context:
            self.context_length = min(served, user_context)
        else:
            self.context_length = served or user_context or DEFAULT_CONTEXT

    # --- requests -------------------------------------------------------------------------------------------
    def _retrying(self, fn: Callable[[], T], what: str) -> T:
        """``fn()``, retried on transient failures; others become a one-line :class:`ModelError`."""
        openai = self._openai
        delay = self.backoff
        reason = ""
        for attempt in range(self.max_tries):
            try:
                with self._slots:
                    result = fn()
                self._answered = True
                return result
            except openai.APITimeoutError:
                reason = f"no answer within {self.timeout:g} s"
                retry_after = None
            except openai.APIConnectionError as exc:
                reason = _one_line(f"connection failed: {exc.__cause__ or exc}", 120)
                retry_after = None
            except openai.APIStatusError as exc:
                status = exc.status_code
                if status not in (408, 409, 429) and status < 500:
                    raise self._status_error(exc, what) from None
                reason = f"HTTP {status}: {_detail(exc, 120)}"
                retry_after = _retry_after(exc)
            if attempt + 1 < self.max_tries:
                wait = retry_after if retry_after is not None else delay * (1 + 0.25 * random.random())
                time.sleep(min(wait, 60.0))
                delay = min(delay * 2, 30.0)
        if self._answered:
            raise ModelError(f"the model server at {self.base_url} stopped answering mid-run ({reason}; "
                             f"{self.max_tries} tries); finished episodes are saved: restart the server and "
                             "rerun the same command to resume")
        raise ModelError(f"cannot reach the model server at {self.base_url} ({reason}; {self.max_tries} "
                         "tries); is it running, and is the URL right (e.g. http://host:8000/v1)?")

    def _status_error(self, exc: Any, what: str) -> ModelError:
        status = exc.status_code
        detail = _detail(exc)
        if status in (401, 403):
            var = settings.openai_key_env()
            return ModelError(f"the model server at {self.base_url} rejected the API key (HTTP {status}); "
                              f"set {var} (or name another variable in DUOMEM_OPENAI_KEY_ENV)")
        if status == 404:
            return ModelError(f"the model server at {self.base_url} does not serve {self.model!r} (HTTP 404 "
                              f"on {what}: {detail}); check the name in openai:MODEL@URL")
        hint = ("; lower the history budget or the run's context setting (n_ctx) to the server's context"
                if "context" in detail.lower() else "")
        return ModelError(f"the model server at {self.base_url} refused the {what} request (HTTP {status}): "
                          f"{detail}{hint}")

    def _check_server(self) -> int | None:
        """Check the endpoint, key and model name on the model listing; the context length if it says."""
        openai = self._openai

        def listing() -> list[dict] | None:
            try:
                return [m.model_dump() for m in self._client.models.list().data]
            except openai.NotFoundError:
                return None  # a server without a listing

        models = self._retrying(listing, "model listing")
        if not models:
            return self._props_context()
        ids = [str(m.get("id")) for m in models]
        entry = next((m for m in models if m.get("id") == self.model), None)
        if entry is None:
            if len(ids) > 1:
                shown = ", ".join(ids[:8]) + (", ..." if len(ids) > 8 else "")
                raise ModelError(f"the model server at {self.base_url} does not serve {self.model!r}; it "
                                 f"serves: {shown}")
            entry = models[0]  # single-model servers (llama.cpp) answer to any name
        for source in (entry, entry.get("meta") or {}):
            for key in _CONTEXT_KEYS:
                value = source.get(key)
                if isinstance(value, int) and value > 0:
                    return value
        return self._props_context()

    def _props_context(self) -> int | None:
        """llama.cpp server's ``/props`` holds the context it was started with."""
        try:
            props = self._http_json("GET", f"{self.root_url}/props", None)
        except (OSError, ValueError):
            return None
        settings = props.get("default_generation_settings") or {}
        value = settings.get("n_ctx") or props.get("n_ctx")
        return value if isinstance(value, int) and value > 0 else None

    def _http_json(self, method: str, url: str, body: dict | None, timeout: float | None = None) -> dict:
        """A small JSON request outside the OpenAI API (tokenizer endpoints); raises OSError or ValueError."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self._key}", "Content-Type": "application/json"})
        wait = timeout or min(self.timeout, 10.0)
        with self._slots, urllib.request.urlopen(request, timeout=wait) as response:
            out = json.loads(response.read().decode("utf-8"))
        if not isinstance(out, dict):
            raise ValueError("not a JSON object")
        return out

    # --- the protocol ---------------------------------------------------------------------------------------
    def complete(self, messages: Sequence[Message], max_tokens: int = 64, stop: Sequence[str] = (),
                 temperature: float = 0.0, seed: int | None = None, choices: Constraint | None = None) -> Completion:
        payload = [{"role": m["role"], "content": m["content"]} for m in messages]
        kwargs: dict[str, Any] = {"model": self.model, "messages": payload, "max_tokens": max_tokens,
                                  "temperature": temperature, "seed": self.seed if seed is None else seed}
        if stop:
            kwargs["stop"] = list(stop)[:MAX_SERVER_STOPS]
        if choices is not None:
            from duomem.llm.constrain import gbnf

            kwargs["extra_body"] = {"grammar": gbnf(choices)}
        start = time.perf_counter()
        response = self._retrying(lambda: self._client.chat.completions.create(**kwargs), "chat completion")
        seconds = time.perf_counter() - start
        if not getattr(response, "choices", None):
            raise ModelError(f"the model server at {self.base_url} answered without a completion: "
                             f"{_one_line(response, 160)}")
        choice = response.choices[0]
        text, cut = _cut_at_stop(choice.message.content or "", stop)
        finish = "stop" if cut else (choice.finish_reason or "stop")
        usage = response.usage
        if usage is not None:
            prompt_tokens, completion_tokens = usage.prompt_tokens or 0, usage.completion_tokens or 0
            details = getattr(usage, "prompt_tokens_details", None)
            cached = (getattr(details, "cached_tokens", 0) or 0) if details is not None else 0
        else:  # a server that reports no usage: estimates
            prompt_tokens, completion_tokens, cached = self.count_tokens(messages), self._estimate(text), 0
        if choices is not None and finish == "stop" and not choices.accepts(text):
            raise ModelError(f"the model server at {self.base_url} ignored the grammar (it answered "
                             f"{_one_line(text, 80)!r}, not one of the commands); grammar-constrained actions need "
                             "llama.cpp's server: use --actions free or score")
        return Completion(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                          seconds=seconds, cached_tokens=cached, finish_reason=finish)

    def complete_batch(self, conversations: Sequence[Sequence[Message]], max_tokens: int = 64,
                       stop: Sequence[str] = (), temperature: float = 0.0,
                       seeds: Sequence[int | None] | None = None,
                       choices: Sequence[Constraint | None] | None = None) -> list[Completion]:
        """Up to ``concurrency`` requests in flight at once; answers in the order of ``conversations``."""
        if len(conversations) <= 1:
            return super().complete_batch(conversations, max_tokens, stop, temperature, seeds, choices)
        from concurrent.futures import ThreadPoolExecutor

        n = len(conversations)
        seeds = list(seeds) if seeds is not None else [None] * n
        rows = list(choices) if choices is not None else [None] * n
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda c, s, k: self.complete(c, max_tokens, stop, temperature, s, k),
                                 conversations, seeds, rows))

    # --- scoring --------------------------------------------------------------------------------------------
    def score(self, messages: Sequence[Message], candidates: Sequence[Candidate]) -> Scores:
        """Score each candidate from the server's prompt log-probabilities (see the module's notes). The server
        evaluates prompt + candidate once per candidate (its own prefix cache, where it has one, serves the
        shared prompt); ``cached_tokens`` and ``evaluated_tokens`` are what the server reported, where it did."""
        from duomem.llm.chat_template import render_chat
        from duomem.llm.constrain import turn_shape

        start = time.perf_counter()
        template = self._chat_template()

        def render(msgs: Sequence[Message], gen: bool) -> str:
            return render_chat(template, msgs, "", "", gen)

        prompt_text = render(messages, True)
        shape = turn_shape(render, messages, prompt_text, True)
        base, _, n_prompt, cached = self._echo(prompt_text)
        logprobs, n_tokens, evaluated = [], [], n_prompt - cached
        for cand in candidates:
            tokens, lps, n_full, hit = self._echo(prompt_text + shape.text_to_end(cand))
            if tokens[:len(base)] != base:
                raise ModelError(f"the server tokenizes the prompt differently when {cand.text!r} follows it, so it "
                                 "cannot be scored as a continuation; use --actions free")
            tail = lps[len(base):]
            logprobs.append(float(sum(tail)))
            n_tokens.append(len(tail))
            evaluated += n_full - hit
            cached += hit
        return Scores(logprobs=logprobs, n_tokens=n_tokens, prompt_tokens=n_prompt, cached_tokens=cached,
                      evaluated_tokens=evaluated, seconds=time.perf_counter() - start)

    def _echo(self, text: str) -> tuple[list[str], list[float], int, int]:
        """The tokens of ``text`` as the server echoes them, each one's log-probability (the first, which has
        none, as 0), the prompt's token count and how many of them the server says it had cached."""
        openai = self._openai

        def request() -> Any:
            try:
                return self._client.completions.create(model=self.model, prompt=text, max_tokens=1, temperature=0.0,
                                                       echo=True, logprobs=1, seed=self.seed)
            except openai.APIStatusError as exc:
                if exc.status_code < 500 or "logprob" in _detail(exc).lower() or "logits_all" in _detail(exc):
                    raise ModelError(f"the model server at {self.base_url} does not return prompt log-probabilities "
                                     f"(HTTP {exc.status_code}: {_detail(exc, 120)}); use --actions free") from None
                raise

        response = self._retrying(request, "scoring completion")
        choice = response.choices[0] if getattr(response, "choices", None) else None
        logprobs = getattr(choice, "logprobs", None)
        tokens = list(getattr(logprobs, "tokens", None) or [])
        values = list(getattr(logprobs, "token_logprobs", None) or [])
        if not tokens or len(values) != len(tokens) or all(v is None for v in values[1:]):
            raise ModelError(f"the model server at {self.base_url} does not return prompt log-probabilities "
                             "(echo with logprobs); use --actions free")
        usage = getattr(response, "usage", None)
        generated = int(getattr(usage, "completion_tokens", 0) or 0) if usage is not None else 1
        if generated:
            tokens, values = tokens[:-generated], values[:-generated]
        details = getattr(usage, "prompt_tokens_details", None) if usage is not None else None
        hit = int(getattr(details, "cached_tokens", 0) or 0) if details is not None else 0
        n_prompt = int(getattr(usage, "prompt_tokens", 0) or 0) if usage is not None else 0
        return tokens, [float(v) if v is not None else 0.0 for v in values], n_prompt or len(tokens), hit

    def _chat_template(self) -> str:
        """The model's chat template: given, else from llama.cpp server's ``/props``, else the packaged model's."""
        if not self._template_probed:
            self._template_probed = True
            try:
                found = self._http_json("GET", f"{self.root_url}/props", None).get("chat_template")
                self.chat_template = found if isinstance(found, str) and found else None
            except (OSError, ValueError):
                self.chat_template = None
            if self.chat_template is None:
                self.chat_template = _packaged_template(self.model)
        if not self.chat_template:
            raise ModelError(f"scoring commands with the model server at {self.base_url} needs the model's chat "
                             "template, which the server does not report; pass chat_template, or use --actions free")
        return self.chat_template

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """The server's count where it can tokenize (see the module's notes), else an estimate."""
        if self._tokenizer is None:
            self._probe_tokenizer(messages)
        if self._tokenizer == "messages":
            try:
                return int(self._http_json("POST", f"{self.root_url}/tokenize", {
                    "model": self.model, "messages": [dict(m) for m in messages]})["count"])
            except (OSError, ValueError, KeyError, TypeError):
                return self._estimate_messages(messages)
        overhead = MESSAGE_OVERHEAD * len(messages) + GENERATION_OVERHEAD
        return overhead + sum(self._count_text(m["content"]) for m in messages)

    def close(self) -> None:
        self._client.close()

    # --- token counting -------------------------------------------------------------------------------------
    def _probe_tokenizer(self, messages: Sequence[Message]) -> None:
        """Find which tokenizer endpoint the server has; settles on estimates when it has none."""
        text = messages[0]["content"] if messages else "hello"
        probes: list[tuple[str, str, dict, Callable[[dict], bool]]] = [
            ("messages", "/tokenize", {"model": self.model, "messages": [dict(m) for m in messages[:1]]},
             lambda r: isinstance(r.get("count"), int)),
            ("extras", "/extras/tokenize/count", {"model": self.model, "input": text},
             lambda r: isinstance(r.get("count"), int)),
            ("llamacpp", "/tokenize", {"content": text}, lambda r: isinstance(r.get("tokens"), list)),
        ]
        for method, path, body, ok in probes:
            try:
                if ok(self._http_json("POST", f"{self.root_url}{path}", body)):
                    self._tokenizer = method
                    return
            except urllib.error.HTTPError:
                continue  # no such endpoint (or it wants other input)
            except (OSError, ValueError):
                return  # the server is unreachable now: estimate this time, probe again next time
        self._tokenizer = "estimate"

    def _count_text(self, text: str) -> int:
        if text in self._text_counts:
            return self._text_counts[text]
        try:
            if self._tokenizer == "extras":
                count = int(self._http_json("POST", f"{self.root_url}/extras/tokenize/count",
                                            {"model": self.model, "input": text})["count"])
            elif self._tokenizer == "llamacpp":
                count = len(self._http_json("POST", f"{self.root_url}/tokenize", {"content": text})["tokens"])
            else:
                return self._estimate(text)
        except (OSError, ValueError, KeyError, TypeError):
            return self._estimate(text)
        if len(self._text_counts) > 4096:
            self._text_counts.clear()
        self._text_counts[text] = count
        return count

    @staticmethod
    def _estimate(text: str) -> int:
        return int(len(text) / CHARS_PER_TOKEN + 0.999)

    def _estimate_messages(self, messages: Sequence[Message]) -> int:
        return (MESSAGE_OVERHEAD * len(messages) + GENERATION_OVERHEAD
                + sum(self._estimate(m["content"]) for m in messages))


def _packaged_template(model: str) -> str | None:
    """The chat template of the packaged model called ``model`` (when a server serves one of them), if installed."""
    try:
        from duomem.llm.registry import PACKAGED, gguf_metadata, resolve

        if model not in PACKAGED:
            return None
        path = resolve(model).path
        found = gguf_metadata(path, ("tokenizer.chat_template",)).get("tokenizer.chat_template") if path else None
    except Exception:  # not installed, or gguf missing: no template from here
        return None
    return found if isinstance(found, str) and found else None


def _detail(exc: Any, limit: int = 200) -> str:
    """The server's own error message from an ``APIStatusError``, on one line."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body.get("message")))
        if isinstance(error, dict):
            error = error.get("message") or error.get("detail")
        if error:
            return _one_line(error, limit)
    return _one_line(getattr(exc, "message", exc), limit)


def _retry_after(exc: Any) -> float | None:
    try:
        value = exc.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None
