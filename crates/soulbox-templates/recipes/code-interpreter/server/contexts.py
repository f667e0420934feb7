"""Code contexts: one Jupyter kernel each, driven with jupyter_client. A context runs one execution at a time
(its lock), in the order they came; different contexts run in parallel. Each language has a default context,
made on first use (Python's at start, so the service is ready only when Python is)."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from typing import Any, Awaitable, Callable, Mapping, Optional

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

import languages
import outputs
from languages import Language

log = logging.getLogger("code-interpreter")

Emit = Callable[[dict[str, Any]], Awaitable[None]]

KERNEL_READY_TIMEOUT_S = 60
# After an interrupt, how long the kernel gets to go idle before it is restarted (code that ignores SIGINT,
# e.g. a C extension in a tight loop, would otherwise hold the context forever).
INTERRUPT_GRACE_S = 10


class ContextNotFound(Exception):
    def __init__(self, context_id: str):
        super().__init__(f"context '{context_id}' not found")


class InvalidRequest(Exception):
    pass


class Context:
    def __init__(self, language: Language, cwd: str):
        self.id = str(uuid.uuid4())
        self.language = language
        self.cwd = cwd
        self._lock = asyncio.Lock()
        self._km = AsyncKernelManager(kernel_name=language.kernel)
        self._kc: Any = None
        # The next iopub message, kept across reads: cancelling a read could lose a message.
        self._next_iopub: Optional[asyncio.Future] = None

    def describe(self) -> dict[str, str]:
        return {"id": self.id, "language": self.language.name, "cwd": self.cwd}

    async def start(self) -> None:
        # Kernels inherit the service's environment: the sandbox's env vars (set at create) reach user code.
        env = dict(os.environ, PYDEVD_DISABLE_FILE_VALIDATION="1")
        await self._km.start_kernel(cwd=self.cwd, env=env)
        await self._connect()

    async def _connect(self) -> None:
        self._kc = self._km.client()
        self._kc.start_channels()
        await self._kc.wait_for_ready(timeout=KERNEL_READY_TIMEOUT_S)
        self._next_iopub = None

    async def restart(self) -> None:
        async with self._lock:
            await self._restart_locked()

    async def _restart_locked(self) -> None:
        self._kc.stop_channels()
        await self._km.restart_kernel(now=True)
        await self._connect()

    async def shutdown(self) -> None:
        async with self._lock:
            if self._kc is not None:
                self._kc.stop_channels()
            await self._km.shutdown_kernel(now=True)

    async def execute(self, code: str, envs: Optional[Mapping[str, str]], emit: Emit, abort: asyncio.Event) -> None:
        """Runs `code`, emitting each output line as the kernel produces it. `abort` (the client went away)
        interrupts the kernel; the context is usable again once this returns."""
        if envs:
            try:
                setup = self.language.set_env(envs)
            except languages.InvalidEnvName as e:
                raise InvalidRequest(str(e)) from e
        async with self._lock:
            if envs:
                await self._run(setup, None, None)
            try:
                await self._run(code, emit, abort)
            finally:
                if envs:
                    await self._run(self.language.restore_env, None, None)

    async def _run(self, code: str, emit: Optional[Emit], abort: Optional[asyncio.Event]) -> None:
        """One execute request, read until the kernel is idle for it. `emit` None: a silent helper cell."""
        # stop_on_error=False: after an error (an interrupt too) ipykernel would otherwise abort every execute
        # request that reaches it for a moment after, and the next client's code would end with no output at
        # all. Executions are queued here (the context's lock), so the kernel never needs to abort any.
        msg_id = self._kc.execute(
            code, silent=emit is None, store_history=emit is not None, allow_stdin=False, stop_on_error=False
        )
        aborted = asyncio.ensure_future(abort.wait()) if abort is not None else None
        died = self._kernel_exit()
        try:
            while True:
                msg = await self._next_message(aborted, died)
                if msg is None:  # the client disconnected
                    await self._interrupt(msg_id)
                    return
                if msg == "died":
                    await self._kernel_died(emit)
                    return
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue  # late output of an earlier, interrupted execution
                if outputs.is_idle(msg):
                    status = await self._shell_reply(msg_id)
                    if emit is not None:
                        if status == "aborted":  # never an execution that ends with nothing to say why
                            await emit(outputs.error_line("ExecutionAborted", "the kernel aborted the execution", ""))
                        await emit(outputs.END_OF_EXECUTION)
                    return
                line = outputs.translate(msg)
                if line is not None and emit is not None:
                    await emit(line)
        finally:
            for waiter in (aborted, died):
                if waiter is not None:
                    waiter.cancel()

    async def _next_message(self, aborted: Optional[asyncio.Future], died: Optional[asyncio.Future]) -> Any:
        if self._next_iopub is None:
            self._next_iopub = asyncio.ensure_future(self._kc.get_iopub_msg())
        waiting = {self._next_iopub} | {w for w in (aborted, died) if w is not None}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if self._next_iopub.done():
            msg = self._next_iopub.result()
            self._next_iopub = None
            return msg
        if died is not None and died.done():
            return "died"
        return None

    def _kernel_exit(self) -> Optional[asyncio.Future]:
        """A future done when the kernel process exits (a pidfd: no polling), None where that cannot be watched."""
        process = getattr(self._km.provisioner, "process", None)
        if process is None:
            return None
        return process_exit(process.pid)

    async def _shell_reply(self, msg_id: str) -> str:
        """The execute_reply's status; every reply is read so none pile up in the client's shell socket."""
        while True:
            reply = await self._kc.get_shell_msg(timeout=KERNEL_READY_TIMEOUT_S)
            if reply["parent_header"].get("msg_id") == msg_id:
                return str(reply["content"].get("status", ""))

    async def _interrupt(self, msg_id: str) -> None:
        log.info("context %s: client went away, interrupting the execution", self.id)
        await self._km.interrupt_kernel()
        try:
            await asyncio.wait_for(self._drain_until_idle(msg_id), INTERRUPT_GRACE_S)
        except asyncio.TimeoutError:
            log.warning("context %s: the kernel ignored the interrupt; restarting it", self.id)
            await self._restart_locked()

    async def _drain_until_idle(self, msg_id: str) -> None:
        while True:
            msg = await self._next_message(None, None)
            if msg["parent_header"].get("msg_id") == msg_id and outputs.is_idle(msg):
                await self._shell_reply(msg_id)
                return

    async def _kernel_died(self, emit: Optional[Emit]) -> None:
        log.warning("context %s: the kernel died; restarting it", self.id)
        if emit is not None:
            await emit(outputs.error_line("KernelDied", "the kernel died; the context was restarted and its state is lost", ""))
            await emit(outputs.END_OF_EXECUTION)
        await self._restart_locked()


def process_exit(pid: int) -> Optional[asyncio.Future]:
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    exited: asyncio.Future = loop.create_future()

    def close(_: asyncio.Future) -> None:
        loop.remove_reader(fd)
        os.close(fd)

    loop.add_reader(fd, lambda: exited.done() or exited.set_result(None))
    exited.add_done_callback(close)
    return exited


class Contexts:
    def __init__(self, default_cwd: str):
        self.default_cwd = default_cwd
        self._by_id: dict[str, Context] = {}
        self._defaults: dict[str, Context] = {}
        self._default_starting: dict[str, asyncio.Lock] = {}
        self._kernels = set(KernelSpecManager().find_kernel_specs())

    async def create(self, language: Optional[str], cwd: Optional[str]) -> Context:
        lang = languages.resolve(language, self._kernels)
        cwd = cwd or self.default_cwd
        if not os.path.isdir(cwd):
            raise InvalidRequest(f"cwd '{cwd}' is not a directory in the sandbox")
        context = Context(lang, cwd)
        await context.start()
        self._by_id[context.id] = context
        log.info("context %s (%s) started in %s", context.id, lang.name, cwd)
        return context

    async def default(self, language: Optional[str]) -> Context:
        lang = languages.resolve(language, self._kernels)
        # Two first executions of a language at once must not start two default kernels.
        starting = self._default_starting.setdefault(lang.name, asyncio.Lock())
        async with starting:
            if lang.name not in self._defaults:
                self._defaults[lang.name] = await self.create(lang.name, None)
        return self._defaults[lang.name]

    def get(self, context_id: str) -> Context:
        context = self._by_id.get(context_id)
        if context is None:
            raise ContextNotFound(context_id)
        return context

    def list(self) -> list[Context]:
        return list(self._by_id.values())

    async def remove(self, context_id: str) -> None:
        context = self.get(context_id)
        del self._by_id[context_id]
        for name, default in list(self._defaults.items()):
            if default is context:
                del self._defaults[name]
        await context.shutdown()

    async def shutdown(self) -> None:
        for context in list(self._by_id.values()):
            await context.shutdown()
        self._by_id.clear()
        self._defaults.clear()
