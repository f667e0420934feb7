"""Jupyter kernel messages → the NDJSON lines of E2B's `/execute` stream (the shapes `e2b_code_interpreter`'s
`parse_output` reads: `stdout`, `stderr`, `result`, `error`, `number_of_executions`, `end_of_execution`)."""

from __future__ import annotations

import time
from typing import Any, Optional

# MIME type → the `Result` field the SDK has for it; any other MIME type goes to `extra`.
RESULT_FIELDS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
    "e2b/data": "data",
    "e2b/chart": "chart",  # python_startup.py's formatter: a matplotlib figure's data (charts.py)
}


def result_line(data: dict[str, Any], is_main_result: bool) -> dict[str, Any]:
    line: dict[str, Any] = {"type": "result", "is_main_result": is_main_result}
    extra: dict[str, Any] = {}
    for mime, value in data.items():
        field = RESULT_FIELDS.get(mime)
        if field is None:
            extra[mime] = value
        else:
            line[field] = value
    text = line.get("text")
    # E2B's server shows a string result without its repr quotes ('hi' → hi); SDK users compare against that.
    if isinstance(text, str) and len(text) >= 2 and text.startswith("'") and text.endswith("'"):
        line["text"] = text[1:-1]
    if extra:
        line["extra"] = extra
    return line


def error_line(name: str, value: str, traceback: str) -> dict[str, Any]:
    return {"type": "error", "name": name, "value": value, "traceback": traceback}


END_OF_EXECUTION: dict[str, Any] = {"type": "end_of_execution"}


def translate(msg: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The line for one iopub message of an execution, or None for messages the SDK has no line for."""
    kind = msg["msg_type"]
    content = msg["content"]
    if kind == "stream":
        stream = "stderr" if content.get("name") == "stderr" else "stdout"
        return {"type": stream, "text": content.get("text", ""), "timestamp": time.time_ns()}
    if kind == "execute_result":
        return result_line(content.get("data", {}), True)
    if kind in ("display_data", "update_display_data"):
        return result_line(content.get("data", {}), False)
    if kind == "error":
        return error_line(content.get("ename", ""), content.get("evalue", ""), "\n".join(content.get("traceback", [])))
    if kind == "execute_input":
        return {"type": "number_of_executions", "execution_count": content.get("execution_count")}
    return None


def is_idle(msg: dict[str, Any]) -> bool:
    return msg["msg_type"] == "status" and msg["content"].get("execution_state") == "idle"
