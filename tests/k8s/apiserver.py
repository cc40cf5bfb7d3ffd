"""A small Kubernetes API server on 127.0.0.1 for the launcher's waiting, Ctrl-C and log
tests: the few endpoints `featurizer submit k8s`, `status --wait` and `logs --follow` call,
answered as the real API server answers them (no operator behind it: an application stays
in the state the test gives it). Every request is recorded, so a test asserts what the
launcher sent. The full API server with the spark-operator is the cluster harness
(tests/cluster, `make cluster-e2e`)."""

from __future__ import annotations

import json
import queue
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml

GROUP_VERSION = "sparkoperator.k8s.io/v1beta2"
APPS = re.compile(
    r"^/apis/sparkoperator\.k8s\.io/v1beta2/namespaces/(?P<ns>[^/]+)/sparkapplications"
    r"(?:/(?P<name>[^/]+))?$"
)
SERVICE_ACCOUNT = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/serviceaccounts/(?P<name>[^/]+)$")
POD_LOG = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<pod>[^/]+)/log$")
END = None  # put into a log queue: the stream ends


class ApiServer:
    """The server: `apps` by name (what a create stored, with the `state` set by the test),
    `logs[pod]` a queue of text chunks a follow request streams, `requests` what was asked."""

    def __init__(self) -> None:
        self.apps: dict[str, dict] = {}
        self.state = "RUNNING"  # the applicationState a created application gets
        self.logs: dict[str, queue.Queue] = {}
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self.watching = threading.Event()  # set once a watch request is held open
        self._stop = threading.Event()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"

    def __enter__(self) -> ApiServer:
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for chunks in self.logs.values():
            chunks.put(END)
        self._http.shutdown()
        self._http.server_close()

    def add(self, name: str, namespace: str = "featurizer", state: str = "RUNNING") -> dict:
        app = {
            "apiVersion": GROUP_VERSION,
            "kind": "SparkApplication",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
            "spec": {"driver": {}},
            "status": {"applicationState": {"state": state}},
        }
        self.apps[name] = app
        return app

    def sent(self, method: str, path_pattern: str) -> list[dict[str, list[str]]]:
        """The query strings of the requests of `method` whose path matches the pattern."""
        return [q for m, p, q in self.requests if m == method and re.fullmatch(path_pattern, p)]

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "test",
                    "clusters": [{"name": "test", "cluster": {"server": self.url}}],
                    "users": [{"name": "test", "user": {"token": "not-a-real-token"}}],
                    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
                }
            )
        )
        return path


def status_body(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    """A Kubernetes `Status` object, as the API server sends with an error."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
        **({"details": details} if details else {}),
    }


def _status(code: int, reason: str, message: str, name: str | None = None) -> dict:
    details = {"name": name, "group": "sparkoperator.k8s.io"} if name else None
    return status_body(code, reason, message, details)


def _handler(server: ApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            server.requests.append((method, url.path, query))
            body = None
            if method == "POST":
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if url.path == f"/apis/{GROUP_VERSION}":
                return self._send(200, _resources())
            if match := SERVICE_ACCOUNT.match(url.path):
                account = {"apiVersion": "v1", "kind": "ServiceAccount"}
                return self._send(200, {**account, "metadata": {"name": match["name"]}})
            if match := POD_LOG.match(url.path):
                return self._log(match["pod"], query)
            match = APPS.match(url.path)
            if not match:
                return self._send(404, _status(404, "NotFound", "404 page not found"))
            name = match["name"]
            if method == "GET" and name is None and query.get("watch") == ["true"]:
                return self._watch(float(query.get("timeoutSeconds", ["300"])[0]))
            if method == "POST":
                name = body["metadata"]["name"]
                body["metadata"]["resourceVersion"] = "1"
                body["status"] = {"applicationState": {"state": server.state}}
                server.apps[name] = body
                return self._send(201, body)
            if name not in server.apps:
                message = f'sparkapplications.sparkoperator.k8s.io "{name}" not found'
                return self._send(404, _status(404, "NotFound", message, name))
            if method == "DELETE":
                return self._send(200, _status(200, "Success", "deleted") | {"status": "Success"})
            return self._send(200, server.apps[name])

        def _watch(self, seconds: float) -> None:
            """A watch that sees no change: open for timeoutSeconds, then ended, as the real
            server ends it (no events: the application never changes here)."""
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            server.watching.set()
            server._stop.wait(seconds)
            self._chunk(b"")

        def _log(self, pod: str, query: dict[str, list[str]]) -> None:
            """The pod's log: the chunks the test puts into logs[pod], sent as they come
            until END (a follow request is held open until then)."""
            chunks = server.logs.setdefault(pod, queue.Queue())
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while (text := chunks.get()) is not END:
                self._chunk(text.encode())
            self._chunk(b"")

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_DELETE(self) -> None:
            self._route("DELETE")

    return Handler


def _resources() -> dict:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [
            {
                "name": "sparkapplications",
                "singularName": "sparkapplication",
                "namespaced": True,
                "kind": "SparkApplication",
                "verbs": ["create", "delete", "get", "list", "watch"],
            }
        ],
    }
