"""Watch a study's trials live in optuna-dashboard (read-only).

STUDY is a study's name in the results directory, or its folder; its trials show as they run,
from the Optuna store the search writes (the folder's optuna.db, or the database given to
`hpsearch run --optuna-storage`). optuna-dashboard has no login and its page can rename and
delete studies, so the server listens on 127.0.0.1 only (from another machine, tunnel: ssh -L
8080:127.0.0.1:8080 HOST), answers only requests addressed to 127.0.0.1 or localhost, and changes
nothing unless started with --allow-edits. Also `python -m search.dashboard`.
"""

# Read-only by default: a viewer beside a running search, or any local process that finds the
# port, cannot change the study the search is writing; a rebound DNS name is refused.
# This module imports neither Ray nor torch (search.results.optuna_store needs neither), so the view starts in a
# second beside a running search, on a laptop that only has the results folder.

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from search.cli import Parser, describe, entry_prog, run_cli
from search.results.locate import RESULTS_DIR_HELP, STUDY_HELP, find_study
from search.results.optuna_store import Store
from search.util.credentials import redact
from trainables.errors import UserError

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8080  # optuna-dashboard's own default
VIEWING = frozenset({"GET", "HEAD", "OPTIONS"})  # every optuna-dashboard route that changes a study is another method


def study_store(folder: Path) -> Store:
    """The store study.json names (none given: the folder's own optuna.db, which moves with it)."""
    store = Store.of_folder(folder)
    if store.in_folder and not store.file.is_file():
        # A grid study (fashion_grid) runs its points in order and keeps no Optuna study; a TPE
        # study's file appears when its search phase starts.
        raise UserError(f"study {store.name!r} has no Optuna store ({store.file} does not exist): a grid study "
                        "keeps none, and a TPE study writes it once its search starts")
    return store


def open_storage(store: Store):
    """(the store opened for reading, the study's name in it)."""
    storage = store.storage(read_only=True)
    name = store.study_name(storage)
    if name is None:
        raise UserError(f"the Optuna store {redact(store.url)} has no study named {store.name!r} yet; "
                        "its search may not have started")
    return storage, name


def read_only(app):
    """`app` answering only the methods that view; any other gets 403 with a reason the page shows."""
    body = json.dumps({"reason": "this dashboard is read-only; to change the study, restart it with "
                                 "--allow-edits"}).encode()

    def guarded(environ, start_response):
        if environ.get("REQUEST_METHOD", "GET").upper() in VIEWING:
            return app(environ, start_response)
        start_response("403 Forbidden", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    return guarded


def own_host_only(app, port: int):
    """`app` answering only requests addressed to this server by its loopback name. A web page
    from another site that rebinds its DNS name to 127.0.0.1 reaches the port with its own name
    in the Host header (DNS rebinding); refused, it cannot read the study through the victim's
    browser."""
    allowed = {f"{host}:{port}" for host in (LOOPBACK, "localhost")} | \
        ({LOOPBACK, "localhost"} if port == 80 else set())

    def guarded(environ, start_response):
        host = environ.get("HTTP_HOST", "").strip().lower()
        if host in allowed:
            return app(environ, start_response)
        body = json.dumps({"reason": f"this dashboard answers only http://{LOOPBACK}:{port} or "
                                     f"http://localhost:{port}, not a request for host {host[:100]!r}"}).encode()
        start_response("403 Forbidden", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    return guarded


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    # The page polls while a slow request (a plot over many trials) is served; threads keep it live.
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code="-", size="-") -> None:
        # The page polls every few seconds: logging each request would bury the lines that matter.
        if str(code).isdigit() and int(code) >= 500:
            super().log_request(code, size)


def bare_command(url: str, port: int) -> str:
    """optuna-dashboard's own command for the same view (credentials in the URL redacted)."""
    exe = "optuna-dashboard"
    if shutil.which(exe) is None and (Path(sys.executable).parent / exe).is_file():
        exe = str(Path(sys.executable).parent / exe)
    return f"{exe} {shlex.quote(redact(url))} --host {LOOPBACK} --port {port}"


def check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise UserError(f"--port must be between 1 and 65535, got {port}")
    return port


def check_host(host: str | None) -> None:
    if host not in (None, LOOPBACK, "localhost"):
        raise UserError(f"the dashboard listens on {LOOPBACK} only (anyone who reaches it can delete the study), "
                        f"not {host}; from another machine use an SSH tunnel: "
                        f"ssh -L 8080:{LOOPBACK}:8080 THIS_HOST, then open http://{LOOPBACK}:8080")


PROG = "python -m search.dashboard"


def build_parser(prog: str = PROG) -> Parser:
    p = Parser(prog=prog, description=describe(__doc__))
    p.add_argument("study", metavar="STUDY", help=STUDY_HELP)
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on {LOOPBACK} (default {DEFAULT_PORT})")
    p.add_argument("--results-dir", default=None, help=RESULTS_DIR_HELP)
    p.add_argument("--host", default=None, help=f"only {LOOPBACK} (or localhost) is accepted; the default")
    p.add_argument("--allow-edits", action="store_true",
                   help="let the page change the study (notes, renames, deletion, telling trials); "
                        "read-only without it")
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    check_host(args.host)
    port = check_port(args.port)
    store = study_store(find_study(args.study, args.results_dir))
    storage, name = open_storage(store)
    import optuna_dashboard

    app = optuna_dashboard.wsgi(storage)
    if not args.allow_edits:
        app = read_only(app)
    app = own_host_only(app, port)
    try:
        httpd = make_server(LOOPBACK, port, app, server_class=_ThreadedServer, handler_class=_QuietHandler)
    except OSError as e:
        raise UserError(f"cannot listen on {LOOPBACK}:{port} ({e.strerror or e})", option="port",
                        fix="a free port") from None
    study_id = storage.get_study_id_from_name(name)
    print(f"optuna-dashboard for study {name} (store {redact(store.url)})\n"
          f"  open http://{LOOPBACK}:{port}/dashboard/studies/{study_id}  (Ctrl-C stops it)"
          f"{'' if args.allow_edits else '; read-only (--allow-edits to change the study)'}\n"
          f"  from another machine: ssh -L {port}:{LOOPBACK}:{port} THIS_HOST, then open the same address\n"
          f"  the same view with optuna-dashboard's own command:\n"
          f"    {bare_command(store.url, port)}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C is how a viewer stops: not an error
        pass
    finally:
        httpd.server_close()
    return 0


def cli() -> None:
    run_cli(lambda: main(prog=entry_prog("search.dashboard")))


if __name__ == "__main__":
    cli()
