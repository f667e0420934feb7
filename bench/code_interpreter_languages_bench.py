"""code-interpreter-v1's languages (issue 16): per language, how long a new context takes to create and the
`run_code` round trip p50/p90 over 50 executions in it; then the sandbox's memory with every kernel up.
Needs a soulbox server whose code-interpreter-v1 is built (`soulbox template prepare code-interpreter-v1`):

    E2B_API_URL=… E2B_SANDBOX_URL=… E2B_API_KEY=… E2B_DOMAIN=… NO_PROXY='*' python bench/code_interpreter_languages_bench.py
"""

import statistics
import time

from e2b_code_interpreter import Sandbox

RUNS = 50
SNIPPETS = [("python", "1+1"), ("bash", "echo 2"), ("javascript", "1+1"), ("typescript", "1+1"), ("r", "1+1")]


def main() -> None:
    sbx = Sandbox.create(timeout=300, request_timeout=600)
    try:
        for language, code in SNIPPETS:
            started = time.perf_counter()
            context = sbx.create_code_context(language=language)
            create_ms = (time.perf_counter() - started) * 1000
            times = []
            for _ in range(RUNS):
                started = time.perf_counter()
                execution = sbx.run_code(code, context=context)
                times.append((time.perf_counter() - started) * 1000)
                assert execution.error is None, execution.error
            times.sort()
            p90 = times[int(RUNS * 0.9) - 1]
            print(f"{language:10s} context create {create_ms:6.0f} ms   run_code p50 {statistics.median(times):5.1f} ms  p90 {p90:5.1f} ms")
        metrics = sbx.get_metrics()
        if metrics:
            print(f"memory with every kernel up: {metrics[-1].mem_used / 2**20:.0f} MiB")
    finally:
        sbx.kill()


if __name__ == "__main__":
    main()
