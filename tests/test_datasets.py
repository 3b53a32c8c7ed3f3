"""`gru4rec datasets`: the public logs listed with what a user needs to get and prepare them;
`fetch` against a local HTTP server: checksum checked, a wrong one refused, an interrupted
download refused, nothing partial left; where there is no direct download, what to do."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from typer.testing import CliRunner

from gru4rec.cli import app
from gru4rec.pipelines.datasets import CATALOGUE

runner = CliRunner()
BODY = b"SessionId\tItemId\tTime\n" + b"1\t10\t0\n1\t11\t5\n" * 2000


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        cut = self.path.endswith("/cut")  # says 2x the bytes it sends, then closes
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY) * (2 if cut else 1)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:  # quiet
        pass


@contextmanager
def serving() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def fetch(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["datasets", "fetch", *args])
    assert "Traceback" not in result.output
    return result.exit_code, " ".join(result.output.split())


def test_the_list_names_source_licence_files_and_the_prepare_command(tmp_path: Path) -> None:
    result = runner.invoke(app, ["datasets", "--json", str(tmp_path / "logs.json")])
    assert result.exit_code == 0, result.output
    listed = json.loads((tmp_path / "logs.json").read_text())
    assert set(listed) == set(CATALOGUE) >= {"yoochoose", "diginetica", "retailrocket", "trivago"}
    for name, log in listed.items():
        assert log["source"].startswith("https://") and log["licence"] and log["files"]
        assert (
            log["prepare"].startswith("gru4rec prepare {dir}/")
            and f"--format {name}" in log["prepare"]
        )
        assert name in result.output and log["source"] in result.output


def test_fetch_checks_the_checksum_and_keeps_it(tmp_path: Path) -> None:
    digest = hashlib.sha256(BODY).hexdigest()
    with serving() as url:
        code, said = fetch(
            "yoochoose", "--dir", str(tmp_path), "--url", f"{url}/y.7z", "--sha256", digest
        )
        assert code == 0, said
        written = tmp_path / "yoochoose-data.7z"
        assert written.read_bytes() == BODY and digest in said
        assert "7z x yoochoose-data.7z" in said and "gru4rec prepare" in said
        assert (tmp_path / "yoochoose-data.7z.sha256").read_text().split()[0] == digest
        # Again, without --sha256: checked against the kept digest.
        assert fetch("yoochoose", "--dir", str(tmp_path), "--url", f"{url}/y.7z")[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "yoochoose-data.7z",
        "yoochoose-data.7z.sha256",
    ]


def test_a_wrong_checksum_or_a_cut_download_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    with serving() as url:
        code, said = fetch(
            "yoochoose", "--dir", str(tmp_path), "--url", f"{url}/y.7z", "--sha256", "0" * 64
        )
        assert code == 2 and "not the expected" in said and "nothing was kept" in said
        code, said = fetch("yoochoose", "--dir", str(tmp_path), "--url", f"{url}/cut")
        assert code == 2 and f"the download stopped at {len(BODY):,} of {2 * len(BODY):,}" in said
    assert list(tmp_path.iterdir()) == []


def test_without_a_way_to_download_it_says_what_to_do(tmp_path: Path) -> None:
    code, said = fetch("diginetica", "--dir", str(tmp_path))
    assert code == 2 and "has no direct download" in said
    assert f"gru4rec prepare {tmp_path}/train-item-views.csv --format diginetica" in said
    # A server that does not answer: the same advice, nothing left.
    code, said = fetch("yoochoose", "--dir", str(tmp_path / "y"), "--url", "http://127.0.0.1:9/x")
    assert code == 2 and "could not download" in said and "download it by hand" in said
    assert not (tmp_path / "y").exists() or not any((tmp_path / "y").iterdir())
    assert fetch("nope")[1].startswith("error: no public log named 'nope'")
