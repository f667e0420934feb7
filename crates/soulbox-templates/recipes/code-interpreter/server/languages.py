"""The languages a context can run: which Jupyter kernel runs each, and how one execution's env vars are set
and restored in it (env vars are per execution in E2B, so they must be undone when the execution ends)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional

# What E2B's SDKs and users call a language → the name this service uses.
ALIASES = {"py": "python", "python3": "python", "js": "javascript", "ts": "typescript", "sh": "bash"}
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


@dataclass(frozen=True)
class Language:
    name: str
    kernel: str
    set_env: Callable[[Mapping[str, str]], str]
    restore_env: str


LANGUAGES: dict[str, Language] = {
    "python": Language("python", "python3", _python_set_env, _PYTHON_RESTORE_ENV),
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
