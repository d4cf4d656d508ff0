"""The HTTP/2 :authority the client sends: an ingress (KServe's Knative gateway, an nginx or Istio
ingress) routes gRPC on it, so through an ingress the client must send the InferenceService's host
while connecting to the ingress's address. Checked on the wire: a loopback socket records the
client's first bytes (gRPC C-core sends :authority as a plain HPACK literal)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from xception_client import Client, cli
from xception_client.errors import XceptionClientError

# An empty HTTP/2 SETTINGS frame: enough for the client to send its request HEADERS.
_SETTINGS = bytes.fromhex("000000040000000000")


class _Recorder:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        conn.settimeout(1.0)
        conn.sendall(_SETTINGS)
        try:
            while data := conn.recv(4096):
                self.received.extend(data)
        except OSError:
            pass
        conn.close()


@pytest.fixture
def recorder() -> Iterator[_Recorder]:
    rec = _Recorder()
    yield rec
    rec.sock.close()


def test_cli_authority_is_sent_as_the_http2_authority(
    recorder: _Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    host = "xception.models.example.com"
    status = cli.main(
        ["status", "--server", f"127.0.0.1:{recorder.port}", "--authority", host,
         "--timeout", "1"]
    )  # fmt: skip
    assert status == 1  # the recorder never answers: a deadline, reported in one line
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert host.encode() in recorder.received


def test_without_authority_the_client_sends_its_target(
    recorder: _Recorder,
) -> None:
    with (
        Client(f"127.0.0.1:{recorder.port}", timeout=1) as client,
        pytest.raises(XceptionClientError),
    ):
        client.status()
    assert f"127.0.0.1:{recorder.port}".encode() in recorder.received
    assert b"example.com" not in recorder.received
