"""``lineage witness``: run a C2SP tlog-witness for the processor's logs, and the verify-side hooks."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from lineage import note
from lineage.bundle import loads_json
from lineage.config import Settings
from lineage.errors import ConfigError
from lineage.keys import KeyRegistry
from lineage.verify import Failure, FailureKind, Report, checkpoint_vkeys
from lineage.witness import (
    LogSpec,
    Witness,
    WitnessError,
    WitnessStore,
    parse_trusted_document,
    trusted_document,
)
from lineage.witnessed import WitnessFindings, WitnessPolicy, check_bundle, check_store

if TYPE_CHECKING:
    from lineage.pkcs11 import TokenConfig

DEFAULT_NAME = "witness.lineage.local/w1"
MAX_BODY = 64 * 1024
MAX_TRUSTED_BYTES = 16 * 1024 * 1024

witness_app = typer.Typer(
    help="A transparency-log witness (C2SP tlog-witness) for the processor's checkpoints.",
    no_args_is_help=True,
)


def _fail(message: str, code: int = 2) -> NoReturn:
    Console(stderr=True, highlight=False).print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def _settings(data_dir: Path | None) -> Settings:
    return Settings() if data_dir is None else Settings(data_dir=data_dir)


def _dir(witness_dir: Path | None, data_dir: Path | None) -> Path:
    return witness_dir or _settings(data_dir).data_dir / "witness"


WitnessDir = Annotated[
    Path | None,
    typer.Option("--witness-dir", help="the witness's own directory (default <data dir>/witness)"),
]
DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="lineage data directory (env LINEAGE_DATA_DIR)"),
]


# -- HTTP ---------------------------------------------------------------------------------------


def make_server(witness: Witness, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server: ``POST /add-checkpoint`` (tlog-witness), ``GET /checkpoints`` (state)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/add-checkpoint":
                self._send(404, b"not found\n", "text/plain")
                return
            try:
                length = int(self.headers.get("Content-Length", "-1"))
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                self._send(400, b"expected a Content-Length up to 65536\n", "text/plain")
                self.close_connection = True
                return
            resp = witness.add_checkpoint(self.rfile.read(length))
            self._send(resp.status, resp.body, resp.content_type)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/checkpoints":
                doc = witness.trusted_checkpoints()
                self._send(200, json.dumps(doc, indent=1).encode(), "application/json")
            elif self.path.rstrip("/") == "/key":
                self._send(200, (witness.vkey + "\n").encode(), "text/plain")
            else:
                self._send(404, b"not found\n", "text/plain")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return ThreadingHTTPServer((host, port), Handler)


def serve_in_thread(
    witness: Witness, host: str = "127.0.0.1", port: int = 0
) -> ThreadingHTTPServer:
    """Start the HTTP server in a daemon thread (tests, demo); ``server_address`` has the port."""
    server = make_server(witness, host, port)
    threading.Thread(target=server.serve_forever, name="witness-http", daemon=True).start()
    return server


# -- commands -----------------------------------------------------------------------------------


@witness_app.command("init")
def init_cmd(
    name: Annotated[
        str, typer.Option(help="the witness's key name (a schema-less URL)")
    ] = DEFAULT_NAME,
    log_key: Annotated[
        list[str] | None,
        typer.Option(
            "--log-key",
            help="processor verifier key trusted for the logs; repeatable "
            "(default: the registry's processor keys)",
        ),
    ] = None,
    origin_prefix: Annotated[
        str, typer.Option(help="accept every log origin under this prefix")
    ] = "lineage.local/",
    pkcs11: Annotated[
        str | None,
        typer.Option(
            "--pkcs11",
            metavar="URI",
            help="keep the key in a PKCS#11 token: pkcs11:token=LABEL;object=NAME (created "
            "there if missing); PIN from LINEAGE_PKCS11_PIN_FILE or LINEAGE_PKCS11_PIN",
        ),
    ] = None,
    witness_dir: WitnessDir = None,
    data_dir: DataDir = None,
) -> None:
    """Create the witness directory, its key (kept if present) and the logs it accepts."""
    settings = _settings(data_dir)
    keys = list(log_key or [])
    if not keys:
        try:
            keys = checkpoint_vkeys(KeyRegistry.load(settings.resolved_keys_file))
        except ConfigError as exc:
            _fail(f"{exc}: pass --log-key, or run where the processor's registry is")
    if not keys:
        _fail("no processor key: pass --log-key or a registry holding a processor key")
    store = WitnessStore(_dir(witness_dir, data_dir))
    try:
        config = store.init(
            name,
            [LogSpec(origin_prefix, tuple(keys), prefix=True)],
            key_uri=pkcs11,
            token=_token(settings) if pkcs11 else None,
        )
        vkey = store.vkey(config)
    except (ConfigError, WitnessError, note.NoteError) as exc:
        _fail(str(exc))
    typer.echo(vkey)


def _token(settings: Settings) -> TokenConfig:
    from lineage.pkcs11 import TokenConfig

    return TokenConfig.from_settings(settings)


def _store(witness_dir: Path | None, data_dir: Path | None) -> WitnessStore:
    return WitnessStore(_dir(witness_dir, data_dir))


def _open(witness_dir: Path | None, data_dir: Path | None) -> Witness:
    """The witness with its signing key open (a token key: library and PIN from the settings)."""
    try:
        return Witness(_store(witness_dir, data_dir), token=_token(_settings(data_dir)))
    except (ConfigError, WitnessError) as exc:
        _fail(str(exc))


@witness_app.command("serve")
def serve_cmd(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 7380,
    witness_dir: WitnessDir = None,
    data_dir: DataDir = None,
) -> None:
    """Serve add-checkpoint (POST /add-checkpoint) and the cosigned state (GET /checkpoints)."""
    witness = _open(witness_dir, data_dir)
    try:
        witness.store.lock()
    except ConfigError as exc:
        _fail(str(exc))
    server = make_server(witness, host, port)
    Console(highlight=False).print(
        f"witness {escape(witness.vkey)} on http://{host}:{server.server_address[1]}"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        witness.store.unlock()
        witness.close()


@witness_app.command("key")
def key_cmd(witness_dir: WitnessDir = None, data_dir: DataDir = None) -> None:
    """Print the witness's verifier key (give it to auditors as --witness-key)."""
    try:
        typer.echo(_store(witness_dir, data_dir).vkey())
    except (ConfigError, WitnessError) as exc:
        _fail(str(exc))


@witness_app.command("state")
def state_cmd(
    out: Annotated[
        Path | None, typer.Option("--out", help="write a trusted-checkpoints file for verify")
    ] = None,
    witness_dir: WitnessDir = None,
    data_dir: DataDir = None,
) -> None:
    """List the latest cosigned checkpoint of every log."""
    store = _store(witness_dir, data_dir)
    try:
        vkey = store.vkey()
    except (ConfigError, WitnessError) as exc:
        _fail(str(exc))
    states = store.states()
    console = Console(highlight=False)
    for s in states:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s.cosigned_at))
        console.print(
            f"{escape(s.origin)}  size {s.size}  root {s.root_hash.hex()}  cosigned {when}"
        )
    if out is not None:
        doc = trusted_document(vkey, [s.note for s in states])
        out.write_text(json.dumps(doc, indent=1) + "\n")
        console.print(f"wrote {len(states)} checkpoints to {escape(str(out))}")


@witness_app.command("refusals")
def refusals_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="print the evidence documents")] = False,
    witness_dir: WitnessDir = None,
    data_dir: DataDir = None,
) -> None:
    """List refused checkpoints (rollbacks, forks, failed proofs), each kept as evidence."""
    store = _store(witness_dir, data_dir)
    try:
        store.load_config()
    except ConfigError as exc:
        _fail(str(exc))
    refusals = store.refusals()
    if as_json:
        typer.echo(json.dumps(refusals, indent=1))
        return
    console = Console(highlight=False)
    for r in refusals:
        console.print(
            f"{escape(str(r.get('kind')))} {escape(str(r.get('origin')))} "
            f"({r.get('status')}): {escape(str(r.get('message')))}  {escape(str(r.get('file')))}"
        )
    if not refusals:
        console.print("no refusals")


@witness_app.command("feed")
def feed_cmd(
    url: Annotated[str, typer.Option("--url", help="the witness's base URL")],
    witness_key: Annotated[str, typer.Option("--witness-key", help="the witness's verifier key")],
    data_dir: DataDir = None,
) -> None:
    """Feed the witness from a ClickHouse server (embedded chDB: the sink process feeds it)."""
    from sinks.clickhouse import open_client
    from sinks.witness_feeder import WitnessFeeder

    settings = _settings(data_dir)
    if settings.clickhouse_url is None:
        _fail(
            "embedded chDB allows one process per data directory: `lineage demo` feeds its witness"
        )
    feeder = WitnessFeeder(
        open_client(settings), threading.Lock(), settings.clickhouse_database, url, witness_key
    )
    try:
        feeder.run()
    except KeyboardInterrupt:
        feeder.close()


# -- verify hooks (called from lineage_cli/evidence.py) -----------------------------------------


class OptionError(Exception):
    """Witness options or trusted checkpoints ``lineage verify`` cannot use (unusable input)."""


def _option_error(message: str) -> NoReturn:
    raise OptionError(message)


def policy_for(
    keys: list[str] | None,
    required: int | None,
    clickhouse: bool = False,
    trusted: Path | None = None,
    url: str | None = None,
) -> WitnessPolicy | None:
    """The auditor's witness policy from --witness-key/--witnesses-required (exit 2 if unusable)."""
    if not clickhouse and (trusted is not None or url is not None):
        _option_error("--trusted-checkpoints and --witness-url apply to --clickhouse")
    if trusted is not None and url is not None:
        _option_error("give either --trusted-checkpoints or --witness-url")
    if url is not None and not keys:
        _option_error(
            "--witness-url needs --witness-key: a witness's answers are trusted only by its key"
        )
    if clickhouse and keys and trusted is None and url is None:
        _option_error(
            "--witness-key with --clickhouse needs --trusted-checkpoints or --witness-url"
        )
    if not keys:
        if required is not None:
            _option_error("--witnesses-required needs at least one --witness-key")
        return None
    try:
        return WitnessPolicy.from_vkeys(keys, required, int(time.time()))
    except (WitnessError, note.NoteError) as exc:
        _option_error(str(exc))


def bundle_findings(
    doc: dict[str, Any], report: Report, policy: WitnessPolicy | None, registry: KeyRegistry | None
) -> WitnessFindings | None:
    """Run the witness checks on a verified bundle when witness keys were given."""
    if policy is None:
        return None
    findings = check_bundle(doc, report, policy, registry)
    report.witness = findings.to_json()
    return findings


ROLLBACK_GAP = "rows deleted together with the checkpoints"
"""How ``verify_entries`` starts its "not proven" line on rollback, dropped once checked."""


def _trusted_notes(file: Path | None, url: str | None) -> list[str]:
    try:
        if file is not None:
            if file.stat().st_size > MAX_TRUSTED_BYTES:
                _option_error(f"{file}: larger than {MAX_TRUSTED_BYTES} bytes")
            return parse_trusted_document(
                loads_json(file.read_bytes(), MAX_TRUSTED_BYTES), str(file)
            )
        assert url is not None
        with urllib.request.urlopen(url.rstrip("/") + "/checkpoints", timeout=10) as resp:
            data = resp.read(MAX_TRUSTED_BYTES + 1)
        return parse_trusted_document(loads_json(data, MAX_TRUSTED_BYTES), url)
    except (OSError, ValueError, urllib.error.URLError) as exc:
        _option_error(f"cannot read trusted checkpoints from {file or url}: {exc}")


def store_findings(
    report: Report,
    client: Any,
    database: str,
    *,
    trusted_file: Path | None,
    witness_url: str | None,
    policy: WitnessPolicy | None,
    registry: KeyRegistry,
    vkeys: list[str] | None,
) -> WitnessFindings | None:
    """Check the store against trusted checkpoints (a file, or a witness's cosigned state)."""
    if trusted_file is None and witness_url is None:
        if policy is not None:
            _option_error(
                "--witness-key with --clickhouse needs --trusted-checkpoints or --witness-url"
            )
        return None
    if witness_url is not None and policy is None:
        _option_error(
            "--witness-url needs --witness-key: a witness's answers are trusted only by its key"
        )
    from sinks.witness_feeder import stored_logs, stored_root

    notes = _trusted_notes(trusted_file, witness_url)
    try:
        processor_keys = [
            note.parse_verifier_key(k)
            for k in (vkeys if vkeys is not None else checkpoint_vkeys(registry))
        ]
    except note.NoteError as exc:
        _option_error(f"checkpoint key: {exc}")
    try:
        stored = stored_logs(client, database)
        findings = check_store(
            report,
            notes,
            processor_keys,
            stored,
            lambda p, n: stored_root(client, database, p, n),
            policy=policy,
            registry=registry,
            now=int(time.time()),
        )
    except Exception as exc:
        _option_error(f"ClickHouse query failed: {exc}")
    source = f"witness {witness_url}" if witness_url else f"file {trusted_file}"
    if report.failure is None and not notes:
        report.failure = Failure(FailureKind.UNUSABLE_INPUT, "no trusted checkpoints", {})
    apply_store_findings(report, findings, source, policy)
    return findings


def apply_store_findings(
    report: Report, findings: WitnessFindings, source: str, policy: WitnessPolicy | None
) -> None:
    """Put what ``check_store`` established into the store's report: the witness section, the
    witnesses that cosigned, the claim, and no more "rollback not checked" line."""
    report.witness = findings.to_json()
    report.warnings += findings.notes
    if report.failure is None:
        if policy is not None:
            report.trust.witnesses += sorted(
                {c["witness"] for log in findings.logs for c in log["cosignatures"]}
            )
        report.not_proven = [g for g in report.not_proven if not g.startswith(ROLLBACK_GAP)]
        report.claims.append(
            f"the store holds every entry of the {len(findings.logs)} trusted checkpoint(s) from "
            f"{source}, with the same roots: no rollback or rewrite before them"
        )
    else:
        report.claims.clear()


def print_findings(findings: WitnessFindings | None, console: Console) -> None:
    """Print the witness lines after the main report."""
    if findings is None:
        return
    for line in findings.lines():
        console.print(escape(line))
