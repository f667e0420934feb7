"""The languages a context can run: which Jupyter kernel runs each, and how one execution's env vars are set
and restored in it (env vars are per execution in E2B, so they must be undone when the execution ends)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

# What E2B's SDKs and users call a language → the name this service uses.
ALIASES = {"py": "python", "python3": "python", "js": "javascript", "ts": "typescript", "sh": "bash"}
# Names that are valid in every language's environment (bash cannot export any other).
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
DEFAULT_LANGUAGE = "python"


class UnsupportedLanguage(Exception):
    def __init__(self, language: str, available: list[str]):
        super().__init__(
            f"language '{language}' is not available in this sandbox's code interpreter "
            f"(available: {', '.join(available)})"
        )


def _python_set_env(envs: Mapping[str, str]) -> str:
    # repr() of a dict of str is a valid Python literal: no quoting of user values by hand.
    keys = list(envs)
    return (
        "import os as __sbx_os\n"
        f"__sbx_saved_env = {{k: __sbx_os.environ.get(k) for k in {keys!r}}}\n"
        f"__sbx_os.environ.update({dict(envs)!r})\n"
    )


# Run after the user's code, even when it failed or was interrupted; removes every name the setup made.
_PYTHON_RESTORE_ENV = (
    "for __sbx_k, __sbx_v in __sbx_saved_env.items():\n"
    "    if __sbx_v is None:\n"
    "        __sbx_os.environ.pop(__sbx_k, None)\n"
    "    else:\n"
    "        __sbx_os.environ[__sbx_k] = __sbx_v\n"
    "del __sbx_saved_env, __sbx_os\n"
    "try:\n"
    "    del __sbx_k, __sbx_v\n"
    "except NameError:\n"
    "    pass\n"
)


def _env_names(envs: Mapping[str, str]) -> list[str]:
    bad = [k for k in envs if not ENV_NAME.match(k)]
    if bad:
        raise InvalidEnvName(bad)
    return list(envs)


class InvalidEnvName(Exception):
    def __init__(self, names: list[str]):
        super().__init__(f"env var names must be letters, digits and '_' (not starting with a digit): {names!r}")


def _bash_set_env(envs: Mapping[str, str]) -> str:
    # `${K+x}` tells unset from empty; the saved value is restored exactly (shlex quotes the user's values).
    lines = []
    for k in _env_names(envs):
        lines.append(f'__sbx_had_{k}="${{{k}+x}}"; __sbx_old_{k}="${{{k}-}}"; export {k}={shlex.quote(envs[k])}')
    return "\n".join(lines) + "\n__sbx_env_names=" + shlex.quote(" ".join(envs)) + "\n"


_BASH_RESTORE_ENV = (
    "for __sbx_k in $__sbx_env_names; do\n"
    '  __sbx_had="__sbx_had_$__sbx_k"; __sbx_old="__sbx_old_$__sbx_k"\n'
    '  if [ -n "${!__sbx_had}" ]; then export "$__sbx_k=${!__sbx_old}"; else unset "$__sbx_k"; fi\n'
    '  unset "$__sbx_had" "$__sbx_old"\n'
    "done\n"
    "unset __sbx_k __sbx_had __sbx_old __sbx_env_names\n"
)


def _node_set_env(envs: Mapping[str, str]) -> str:
    values = json.dumps(dict(envs))
    return (
        f"globalThis.__sbx_saved_env = Object.fromEntries(Object.keys({values}).map((k) => [k, process.env[k]]));\n"
        f"Object.assign(process.env, {values});\n"
        "undefined\n"
    )


_NODE_RESTORE_ENV = (
    "for (const [k, v] of Object.entries(globalThis.__sbx_saved_env)) {\n"
    "  if (v === undefined) { delete process.env[k]; } else { process.env[k] = v; }\n"
    "}\n"
    "delete globalThis.__sbx_saved_env;\n"
    "undefined\n"
)


def _r_string(value: str) -> str:
    # A JSON string is a valid R string literal (R reads \", \\, \n and \uXXXX the same way).
    return json.dumps(value)


def _r_set_env(envs: Mapping[str, str]) -> str:
    names = _env_names(envs)
    keys = ", ".join(_r_string(k) for k in names)
    values = ", ".join(f"{_r_string(k)} = {_r_string(envs[k])}" for k in names)
    return (
        f".sbx_saved_env <- Sys.getenv(c({keys}), unset = NA, names = TRUE)\n"
        f"invisible(do.call(Sys.setenv, list({values})))\n"
    )


_R_RESTORE_ENV = (
    "for (.sbx_k in names(.sbx_saved_env)) {\n"
    "  if (is.na(.sbx_saved_env[[.sbx_k]])) Sys.unsetenv(.sbx_k)\n"
    "  else do.call(Sys.setenv, stats::setNames(list(.sbx_saved_env[[.sbx_k]]), .sbx_k))\n"
    "}\n"
    "rm(.sbx_saved_env, .sbx_k)\n"
)


@dataclass(frozen=True)
class Language:
    name: str
    kernel: str
    set_env: Callable[[Mapping[str, str]], str]
    restore_env: str


# The kernels: ipykernel for Python (kernelspec soulbox-python: Debian's, plus python_startup.py), IRkernel (Debian's r-cran-irkernel, kernelspec `ir`) for R, and SoulBox's
# own for bash and JavaScript/TypeScript (kernel_bash.py, kernel_node.py; kernelspecs written by the recipe).
# Java has no kernel in the registries a build can reach: it stays unavailable, a clear error.
LANGUAGES: dict[str, Language] = {
    "python": Language("python", "soulbox-python", _python_set_env, _PYTHON_RESTORE_ENV),
    "bash": Language("bash", "soulbox-bash", _bash_set_env, _BASH_RESTORE_ENV),
    "javascript": Language("javascript", "soulbox-javascript", _node_set_env, _NODE_RESTORE_ENV),
    "typescript": Language("typescript", "soulbox-typescript", _node_set_env, _NODE_RESTORE_ENV),
    "r": Language("r", "ir", _r_set_env, _R_RESTORE_ENV),
}


def normalize(language: Optional[str]) -> str:
    if not language:
        return DEFAULT_LANGUAGE
    name = language.strip().lower()
    return ALIASES.get(name, name)


def resolve(language: Optional[str], installed_kernels: set[str]) -> Language:
    """The language to run, or UnsupportedLanguage naming it and what this sandbox has."""
    name = normalize(language)
    available = sorted(n for n, lang in LANGUAGES.items() if lang.kernel in installed_kernels)
    found = LANGUAGES.get(name)
    if found is None or found.kernel not in installed_kernels:
        raise UnsupportedLanguage(name, available)
    return found
