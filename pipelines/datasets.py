"""The public click logs the project is measured on: where each comes from, under what terms,
the files it holds, and the `gru4rec prepare` command for it; and fetching one.

Most of them are published behind a sign-in (Kaggle, a challenge's registration): for those
`fetch` says where to download them by hand. Where a direct download exists it is streamed
into a temporary file beside the target, checked against a SHA-256 when one is given, and
renamed into place only when complete: an interrupted or refused download leaves nothing.
No checksum is published by these sources; the one of every download is printed and kept
beside the file (NAME.sha256), so that a later download can be checked against it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gru4rec.errors import InputDataError

CHUNK = 1 << 20  # bytes read and hashed at a time


@dataclass(frozen=True)
class PublicLog:
    """A public click log: what it is, where it comes from, and how to prepare it."""

    name: str
    title: str
    domain: str
    source: str  # the page that publishes it
    licence: str
    files: tuple[str, ...]  # what `prepare` reads, after unpacking
    prepare: str  # the command, with {dir} the folder holding `files`
    download: str | None = None  # a direct download (no sign-in), if there is one
    archive: str | None = None  # the downloaded file's name, when it is an archive
    unpack: str | None = None  # how to unpack it
    by_hand: str = ""  # how to get it where there is no direct download


CATALOGUE: dict[str, PublicLog] = {
    log.name: log
    for log in (
        PublicLog(
            name="yoochoose",
            title="YOOCHOOSE (RecSys Challenge 2015)",
            domain="e-commerce clicks, 6 months, 9.2M sessions",
            source="https://recsys.acm.org/recsys15/challenge/",
            licence="released by YOOCHOOSE for the RecSys Challenge 2015; research use, no "
            "redistribution",
            files=("yoochoose-clicks.dat",),
            prepare="gru4rec prepare {dir}/yoochoose-clicks.dat --format yoochoose --out data/yoochoose",
            download="https://s3-eu-west-1.amazonaws.com/yc-rdata/yoochoose-data.7z",
            archive="yoochoose-data.7z",
            unpack="7z x yoochoose-data.7z (Debian: apt-get install p7zip-full)",
            by_hand="the same archive is on Kaggle as 'recsys-challenge-2015' (sign-in)",
        ),
        PublicLog(
            name="diginetica",
            title="DIGINETICA (CIKM Cup 2016, personalised e-commerce search)",
            domain="e-commerce item views, 5 months, 573k sessions",
            source="https://competitions.codalab.org/competitions/11161",
            licence="released by DIGINETICA for the CIKM Cup 2016; research use, no redistribution",
            files=("train-item-views.csv",),
            prepare="gru4rec prepare {dir}/train-item-views.csv --format diginetica "
            "--out data/diginetica",
            by_hand="download dataset-train-diginetica.zip from the competition's data page "
            "(sign-in) and unzip it",
        ),
        PublicLog(
            name="retailrocket",
            title="RetailRocket e-commerce dataset",
            domain="e-commerce events (view, addtocart, transaction), 4.5 months",
            source="https://www.kaggle.com/datasets/retailrocket/ecommerce-dataset",
            licence="CC BY-NC-SA 4.0",
            files=("events.csv",),
            prepare="gru4rec prepare {dir}/events.csv --format retailrocket --out data/retailrocket",
            by_hand="download the dataset from Kaggle (sign-in; or `kaggle datasets download "
            "retailrocket/ecommerce-dataset`) and unzip it",
        ),
        PublicLog(
            name="trivago",
            title="trivago (RecSys Challenge 2019, hotel search sessions)",
            domain="travel: clickouts and item interactions, 910k sessions",
            source="https://recsys.trivago.cloud/challenge/dataset/",
            licence="released by trivago for the RecSys Challenge 2019; research use, no "
            "redistribution",
            files=("train.csv",),
            prepare="gru4rec prepare {dir}/train.csv --format trivago --out data/trivago",
            by_hand="register on the challenge's site, download the data set and unzip it",
        ),
    )
}


def public_log(name: str) -> PublicLog:
    """The catalogue's entry for `name`, or an error that lists the names."""
    if name not in CATALOGUE:
        raise InputDataError(
            f"no public log named {name!r}; `gru4rec datasets` lists {', '.join(CATALOGUE)}."
        )
    return CATALOGUE[name]


def download_source(name: str, directory: Path, url: str | None = None) -> str:
    """Where `fetch` downloads the log `name` from: `url`, else its direct download; an
    error saying how to get it by hand where it has none."""
    log = public_log(name)
    source = url or log.download
    if source is None:
        raise InputDataError(
            f"{log.title} has no direct download: {log.by_hand} ({log.source}); put "
            f"{', '.join(log.files)} in {directory}, then run: {log.prepare.format(dir=directory)}"
        )
    return source


def fetch(
    name: str,
    directory: Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
    progress: Callable[[int, int | None], None] | None = None,
) -> tuple[Path, str]:
    """Download the log `name` (from its direct download, or `url`, a mirror) into
    `directory`; returns the file and its SHA-256.

    sha256: the expected digest (hex); a download that differs is refused and removed.
    Without it, a digest kept from an earlier download (NAME.sha256 beside the file) is
    checked. progress(bytes so far, total or None) is called as the download goes.
    """
    log = public_log(name)
    source = download_source(name, directory, url)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / (log.archive or Path(source).name or log.files[0])
    kept = target.with_name(target.name + ".sha256")
    expected = (sha256 or (kept.read_text().split()[0] if kept.exists() else "")).lower()
    staging = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(source, timeout=timeout) as answer, staging.open("wb") as out:
            total = int(answer.headers.get("Content-Length") or 0) or None
            done = 0
            while chunk := answer.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        if total is not None and done != total:
            raise InputDataError(f"{source}: the download stopped at {done:,} of {total:,} bytes.")
        found = digest.hexdigest()
        if expected and found != expected:
            raise InputDataError(
                f"{source}: the download's SHA-256 is {found}, not the expected {expected}; "
                "nothing was kept. Check the URL (a mirror may serve another version)."
            )
        os.replace(staging, target)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise InputDataError(
            f"could not download {source} ({reason}). Where this machine cannot reach it, "
            f"download it by hand ({log.source}; {log.by_hand}), put {', '.join(log.files)} "
            f"in {directory}, then run: {log.prepare.format(dir=directory)}"
        ) from None
    finally:
        staging.unlink(missing_ok=True)
    kept.write_text(f"{found}  {target.name}\n")
    return target, found


__all__ = ["CATALOGUE", "PublicLog", "download_source", "fetch", "public_log"]
