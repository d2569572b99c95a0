"""Credentials never leave the driver: a tracking URI given as `http://user:pass@host` is split,
the user name and password go to the variables MLflow reads for basic auth
(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD) in the driver's own environment, and only
the bare URI is printed, saved in study.json and best.yaml, or logged. A resumed study needs the
credentials again, the same way. The driver alone talks to MLflow, so the Ray processes it starts
(gcs_server, raylet, the trial workers they spawn) are started without those variables
(`withheld`), whoever set them."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from urllib.parse import unquote, urlsplit, urlunsplit

# user:password@ inside any URL-looking word, e.g. in the command line that is logged
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """(uri without user info, user, password)."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri, None, None
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return (
        clean,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
    )


def adopt_credentials(uri: str | None) -> str | None:
    """The bare URI; its credentials, if any, become MLflow's basic-auth variables."""
    if uri is None:
        return None
    clean, user, password = split_credentials(uri)
    if user is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"] = user
    if password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    return clean


def redact(text: str) -> str:
    """`text` with the user info of every URL in it replaced by `***`."""
    return _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", text)


# MLflow's credential variables: the basic-auth pair and a bearer token.
CREDENTIAL_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


@contextmanager
def withheld():
    """MLflow's credentials out of the environment for the duration (processes started meanwhile
    inherit none), then back for the driver's MLflow client."""
    saved = {k: os.environ.pop(k) for k in CREDENTIAL_VARIABLES if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)
