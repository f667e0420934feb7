"""SoulBox's code execution service for the `code-interpreter-v1` template: the HTTP API E2B's
`e2b_code_interpreter` SDKs call on port 49999 (`/execute`, `/contexts`, `/health`), on Jupyter kernels.

Started by the template's start command; `GET /health` answers only once the default Python context is up, so
the template's ready command makes a sandbox create return with Python ready."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any, Optional

import tornado.web
from tornado.iostream import StreamClosedError

import access
import languages
from contexts import ContextNotFound, Contexts, InvalidRequest

PORT = 49999
log = logging.getLogger("code-interpreter")


class BadRequest(Exception):
    pass


def _json_body(handler: tornado.web.RequestHandler) -> dict[str, Any]:
    if not handler.request.body:
        return {}
    try:
        body = json.loads(handler.request.body)
    except ValueError as e:
        raise BadRequest(f"the body is not JSON: {e}") from e
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _optional_str(body: dict[str, Any], key: str) -> Optional[str]:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"'{key}' must be a string")
    return value


def _env_vars(body: dict[str, Any]) -> Optional[dict[str, str]]:
    envs = body.get("env_vars")
    if envs is None:
        return None
    if not isinstance(envs, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in envs.items()):
        raise BadRequest("'env_vars' must be an object of string values")
    return envs


class Handler(tornado.web.RequestHandler):
    """Errors in one plain-text shape (the SDKs show the body text in their exception)."""

    @property
    def contexts(self) -> Contexts:
        return self.application.settings["contexts"]

    def check_xsrf_cookie(self) -> None:  # an API, not a browser form
        pass

    def fail(self, status: int, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(message)

    async def guarded(self, action) -> None:
        try:
            await action()
        except ContextNotFound as e:
            self.fail(404, str(e))
        except (BadRequest, InvalidRequest, languages.UnsupportedLanguage) as e:
            self.fail(400, str(e))


class Health(Handler):
    def get(self) -> None:
        self.finish("OK")


class Execute(Handler):
    def initialize(self) -> None:
        self.client_gone = asyncio.Event()

    def on_connection_close(self) -> None:
        # The SDK's `timeout` (and any client that goes away) ends here: the execution is interrupted.
        self.client_gone.set()

    async def post(self) -> None:
        # Only /execute demands the token: E2B's SDKs (Python 2.11, JS 2.8) send X-Access-Token with /execute
        # alone, so demanding it on /contexts would break their context calls on every sandbox that has a token.
        # Without the token a context can be made, listed, restarted or removed, but nothing runs in it.
        refused = access.refusal(self.request.headers.get("X-Access-Token"))
        if refused is not None:
            self.fail(*refused)
            return
        await self.guarded(self._run_code)

    async def _run_code(self) -> None:
        body = _json_body(self)
        code = body.get("code")
        if not isinstance(code, str):
            raise BadRequest("'code' (a string) is required")
        context_id = _optional_str(body, "context_id")
        language = _optional_str(body, "language")
        if context_id and language:
            raise BadRequest("give either 'context_id' or 'language', not both")
        envs = _env_vars(body)
        context = self.contexts.get(context_id) if context_id else await self.contexts.default(language)

        self.set_header("Content-Type", "application/x-ndjson")

        async def emit(line: dict[str, Any]) -> None:
            if self.client_gone.is_set():
                return
            self.write(json.dumps(line) + "\n")
            try:
                await self.flush()  # each line leaves as soon as the kernel produced it
            except StreamClosedError:
                self.client_gone.set()

        await context.execute(code, envs, emit, self.client_gone)
        if not self.client_gone.is_set():
            self.finish()


class ContextList(Handler):
    async def post(self) -> None:
        async def create() -> None:
            body = _json_body(self)
            context = await self.contexts.create(_optional_str(body, "language"), _optional_str(body, "cwd"))
            self.finish(context.describe())

        await self.guarded(create)

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps([c.describe() for c in self.contexts.list()]))


class ContextItem(Handler):
    async def delete(self, context_id: str) -> None:
        async def remove() -> None:
            await self.contexts.remove(context_id)
            self.set_status(204)
            self.finish()

        await self.guarded(remove)


class ContextRestart(Handler):
    async def post(self, context_id: str) -> None:
        async def restart() -> None:
            await self.contexts.get(context_id).restart()
            self.set_status(204)
            self.finish()

        await self.guarded(restart)


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    contexts = Contexts(default_cwd=os.environ.get("SOULBOX_CODE_INTERPRETER_CWD", os.getcwd()))
    await contexts.default(languages.DEFAULT_LANGUAGE)
    app = tornado.web.Application(
        [
            (r"/health", Health),
            (r"/execute", Execute),
            (r"/contexts", ContextList),
            (r"/contexts/([^/]+)", ContextItem),
            (r"/contexts/([^/]+)/restart", ContextRestart),
        ],
        contexts=contexts,
    )
    app.listen(PORT, address="0.0.0.0")
    log.info("listening on port %d", PORT)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
