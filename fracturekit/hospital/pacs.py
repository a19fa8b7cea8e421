"""predict's PACS source: find films with QIDO-RS, fetch them with WADO-RS, store findings back with STOW-RS.

`--source dicomweb://HOST:PORT/PATH` (plain HTTP) or `dicomwebs://HOST:PORT/PATH` (HTTPS, certificate verified
by requests against its CA bundle; REQUESTS_CA_BUNDLE names a hospital's own CA). Credentials come from the
environment only, never the command line (a shell history and `ps` keep those): FRACTUREKIT_DICOMWEB_TOKEN
(a bearer token) or FRACTUREKIT_DICOMWEB_USER + FRACTUREKIT_DICOMWEB_PASSWORD (HTTP basic). dicomweb-client
does the DICOMweb requests; this module chooses the films and turns a server that does not answer into one
sentence (UserError) and a film that cannot be fetched into a FetchError (predict writes it as a row).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fracturekit.core.errors import UserError

log = logging.getLogger(__name__)

SCHEMES = {"dicomweb://": "http://", "dicomwebs://": "https://"}
ENV_TOKEN = "FRACTUREKIT_DICOMWEB_TOKEN"
ENV_USER = "FRACTUREKIT_DICOMWEB_USER"
ENV_PASSWORD = "FRACTUREKIT_DICOMWEB_PASSWORD"
DEFAULT_MODALITIES = ("CR", "DX")
RETRIES, RETRY_WAIT_MS = 3, 250
TIMEOUT_S = 30  # one request; a study of radiographs is a few MB, seconds on a hospital LAN
_TAGS = {"study": "0020000D", "series": "0020000E", "sop": "00080018", "number": "00200013"}


def is_dicomweb(source: object) -> bool:
    """True when --source names a DICOMweb server rather than files."""
    return isinstance(source, str) and source.startswith(tuple(SCHEMES))


@dataclass(frozen=True)
class Instance:
    """One film on the server, by its three UIDs."""

    study: str
    series: str
    sop: str


class FetchError(Exception):
    """One instance could not be retrieved; the message is the reason written in its predictions.csv row."""


def _value(item: dict[str, Any], key: str) -> str:
    values = item.get(_TAGS[key], {}).get("Value") or [""]
    return str(values[0])


def parse_since(text: str | None) -> str | None:
    """`--since 2026-01-31` as a DICOM date range from that day on ("20260131-"), or None."""
    if not text:
        return None
    import datetime

    try:
        day = datetime.date.fromisoformat(text)
    except ValueError:
        raise UserError(f"--since {text}: not a date; pass it as YYYY-MM-DD, e.g. --since 2026-01-31.") from None
    return f"{day:%Y%m%d}-"


def parse_modalities(text: str | None) -> tuple[str, ...]:
    """`--modality CR,DX` -> ("CR", "DX"); the default when empty."""
    found = tuple(m.strip().upper() for m in (text or "").split(",") if m.strip())
    return found or DEFAULT_MODALITIES


class Pacs:
    """A DICOMweb server: the client, and the address to name in messages (never with credentials)."""

    def __init__(self, source: str) -> None:
        import requests

        try:
            from dicomweb_client.api import DICOMwebClient
        except ImportError:
            raise UserError(
                f"{source}: reading a PACS needs dicomweb-client; pip install 'fracturekit[dicom]'."
            ) from None
        scheme = next(s for s in SCHEMES if source.startswith(s))
        self.address = source
        self.url = SCHEMES[scheme] + source[len(scheme) :].rstrip("/")
        session = requests.Session()
        session.verify = True  # never switched off: a hospital CA goes in REQUESTS_CA_BUNDLE
        token, user = os.environ.get(ENV_TOKEN), os.environ.get(ENV_USER)
        if token:
            session.headers["Authorization"] = f"Bearer {token}"
        elif user:
            session.auth = (user, os.environ.get(ENV_PASSWORD, ""))
        self.client = DICOMwebClient(self.url, session=session, timeout=TIMEOUT_S)
        # dicomweb-client retries every failed request 5 times, waiting 2+4+8+16 s: 30 s before a down server is
        # reported. 3 attempts 0.5 + 1 s apart still ride out a busy server's 503; a down one is told in ~1.5 s.
        self.client.set_http_retry_params(max_attempts=RETRIES, wait_exponential_multiplier=RETRY_WAIT_MS)
        # `retrying` logs each failed attempt as a WARNING with a traceback; the error that follows says it once.
        logging.getLogger("retrying").setLevel(logging.ERROR)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one request; a server that does not answer or refuses us is a UserError (one sentence)."""
        import requests

        try:
            return fn(*args, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise UserError(
                f"{self.address}: the DICOMweb server does not answer ({what}: {type(exc).__name__}); "
                "check the address and that the server is running, then run again with --resume."
            ) from None
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status in (401, 403):
                raise UserError(
                    f"{self.address}: the server refused {what} (HTTP {status}); set {ENV_USER} and "
                    f"{ENV_PASSWORD}, or {ENV_TOKEN}, in the environment."
                ) from None
            raise

    def find(self, studies: list[str], modalities: tuple[str, ...], since: str | None) -> list[Instance]:
        """QIDO-RS: the instances of series of `modalities` in `studies` (all when empty) from `since` on, sorted."""
        import requests

        filters = {"StudyDate": since} if since else {}
        try:
            if studies:
                found = [
                    s
                    for uid in studies
                    for s in self._call(
                        "a study search",
                        self.client.search_for_studies,
                        search_filters={**filters, "StudyInstanceUID": uid},
                    )
                ]
            else:
                found = self._call(
                    "a study search", self.client.search_for_studies, search_filters=filters, get_remaining=True
                )
            out: set[tuple[Instance, int]] = set()
            for study in {_value(s, "study") for s in found}:
                for modality in modalities:
                    series = self._call(
                        "a series search",
                        self.client.search_for_series,
                        study_instance_uid=study,
                        search_filters={"Modality": modality},
                        get_remaining=True,
                    )
                    for se in series:
                        for inst in self._call(
                            "an instance search",
                            self.client.search_for_instances,
                            study_instance_uid=study,
                            series_instance_uid=_value(se, "series"),
                            get_remaining=True,
                        ):
                            number = _value(inst, "number")
                            key = Instance(study, _value(se, "series"), _value(inst, "sop"))
                            out.add((key, int(number) if number.isdigit() else 0))
        except requests.HTTPError as exc:
            raise UserError(f"{self.address}: the search was refused ({exc}); check --study and the address.") from None
        missing = sorted(set(studies) - {_value(s, "study") for s in found})
        if missing:
            log.warning("%d --study UIDs not on the server (or before --since): %s", len(missing), ", ".join(missing))
        return [i for i, _ in sorted(out, key=lambda t: (t[0].study, t[0].series, t[1], t[0].sop))]

    def fetch(self, inst: Instance, path: Path) -> None:
        """WADO-RS: the instance saved to `path` as a DICOM file; FetchError with the reason when it fails."""
        import requests

        try:
            ds = self._call("a retrieve", self.client.retrieve_instance, inst.study, inst.series, inst.sop)
        except requests.HTTPError as exc:
            raise FetchError(f"not retrieved from {self.address} ({exc})") from None
        except Exception as exc:  # a malformed multipart body or DICOM stream: this film only
            if isinstance(exc, UserError):
                raise
            raise FetchError(f"not retrieved from {self.address} ({type(exc).__name__}: {exc})") from None
        ds.save_as(path, enforce_file_format=False)

    def push(self, paths: list[Path]) -> None:
        """STOW-RS: store the written objects (files) into their study on the server."""
        import pydicom
        import requests

        datasets = [pydicom.dcmread(p) for p in paths]
        if not datasets:
            return
        try:
            self._call("a store", self.client.store_instances, datasets, datasets[0].StudyInstanceUID)
        except requests.HTTPError as exc:
            raise UserError(f"{self.address}: the server refused to store {paths[0].name} ({exc}).") from None
