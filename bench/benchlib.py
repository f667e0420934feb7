"""What the bench scripts share: percentiles, a kept-alive connection, the server's REST API with the key from
E2B_API_KEY, the ids of every running sandbox, and work spread over threads. Imported by the `bench/*_bench.py`
scripts (run from bench/)."""
import http.client
import json
import os
import threading
import urllib.parse

API = urllib.parse.urlparse(os.environ.get("E2B_API_URL", "http://127.0.0.1:3000"))
KEY = os.environ.get("E2B_API_KEY", "")


def pct(values, p):
    """The p-quantile (0..1) of `values` by nearest rank; NaN for none."""
    values = sorted(values)
    return values[min(len(values) - 1, round((len(values) - 1) * p))] if values else float("nan")


def conn(host=None, port=None, timeout=60):
    """A kept-alive connection with TCP_NODELAY, to the server unless `host`/`port` say otherwise."""
    c = http.client.HTTPConnection(host or API.hostname, port or API.port, timeout=timeout)
    c.connect()
    c.sock.setsockopt(6, 1, 1)  # TCP_NODELAY
    return c


def request(c, method, path, body=None, headers=None):
    """One REST call with the API key; (status, body bytes)."""
    h = {"X-API-Key": KEY, "Content-Type": "application/json"}
    h.update(headers or {})
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse()
    return r.status, r.read()


def api(c, method, path, body=None):
    """One REST call; its JSON answer, or RuntimeError for a status of 300 and up."""
    status, data = request(c, method, path, body)
    if status >= 300:
        raise RuntimeError(f"{method} {path}: {status} {data[:300]!r}")
    return json.loads(data) if data else None


def all_ids(connect=conn):
    """The ids of every running sandbox, page by page through GET /v2/sandboxes (one connection from `connect`)."""
    c, ids, token = connect(), [], ""
    try:
        while True:
            path = "/v2/sandboxes?limit=100" + (f"&nextToken={urllib.parse.quote(token)}" if token else "")
            c.request("GET", path, headers={"X-API-Key": KEY})
            r = c.getresponse()
            page = json.loads(r.read())
            ids += [s["sandboxID"] for s in page]
            token = r.getheader("x-next-token") or ""
            if not token or not page:
                return ids
    finally:
        c.close()


def in_parallel(items, work, concurrency, connect=conn):
    """work(conn, item) over items on `concurrency` threads, each with its own connection (a new one after an
    error); returns (results, errors)."""
    lock, results, errors, queue = threading.Lock(), [], [], list(items)

    def worker():
        c = connect()
        while True:
            with lock:
                if not queue:
                    break
                item = queue.pop()
            try:
                out = work(c, item)
                with lock:
                    results.append(out)
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(f"{item}: {e}")
                c.close()
                c = connect()
        c.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors
