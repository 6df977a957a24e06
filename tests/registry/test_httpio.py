"""URL opening: credentials follow a redirect only to the same host."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from corral.registry.httpio import HttpOptions, read_url


@dataclass
class Server:
    url: str
    redirect_to: str = ""
    seen_auth: list[str | None] = field(default_factory=list)


@pytest.fixture
def servers() -> Iterator[tuple[Server, Server]]:
    """A hub that redirects /file to a storage server, both on loopback."""
    running: list[http.server.ThreadingHTTPServer] = []
    made: list[Server] = []
    for _ in range(2):
        state = Server("")

        class Handler(http.server.BaseHTTPRequestHandler):
            server_state = state

            def do_GET(self) -> None:
                self.server_state.seen_auth.append(self.headers.get("Authorization"))
                if self.server_state.redirect_to and self.path == "/file":
                    self.send_response(302)
                    self.send_header("Location", self.server_state.redirect_to)
                    self.end_headers()
                    return
                body = b"payload"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        state.url = f"http://127.0.0.1:{httpd.server_port}"
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        running.append(httpd)
        made.append(state)
    yield made[0], made[1]
    for httpd in running:
        httpd.shutdown()
        httpd.server_close()


def test_a_redirect_to_another_host_drops_the_credentials(servers: tuple[Server, Server]) -> None:
    hub, storage = servers
    storage_url = storage.url.replace("127.0.0.1", "localhost")  # another host name
    hub.redirect_to = f"{storage_url}/blob"
    body = read_url(f"{hub.url}/file", HttpOptions(), {"Authorization": "Bearer secret"})
    assert body == b"payload"
    assert hub.seen_auth == ["Bearer secret"]
    assert storage.seen_auth == [None]


def test_a_redirect_on_the_same_host_keeps_the_credentials(
    servers: tuple[Server, Server],
) -> None:
    hub, _ = servers
    hub.redirect_to = f"{hub.url}/other"
    assert read_url(f"{hub.url}/file", HttpOptions(), {"Authorization": "Bearer t"}) == b"payload"
    assert hub.seen_auth == ["Bearer t", "Bearer t"]
