"""The web view's ASGI application (Starlette) and how it is served (uvicorn).

Why Starlette: a small, maintained ASGI toolkit (routing, signed-cookie sessions, form parsing)
with no ORM, no template engine of its own and no JavaScript: the pages are the reports' Jinja2,
and the ledger access is the library's own. uvicorn serves it, with TLS when given a certificate.

Read-only by construction:
- every page reads through a Ledger opened read-only (`App.read_only`, as `reads_only` commands);
- the routes are GET (and HEAD) only, except the login form's POST, which checks a CSRF token
  kept in the session (and the session cookie is SameSite=Strict); `ROUTE_METHODS` is the whole
  list and a test holds the application to it;
- the one write is the record of each view (`audit.view`: who looked at which page, with which
  filters, from where, when), through a second handle that only ever appends that record. It is
  written before the page is sent: a view that cannot be recorded is not shown (503).
- the other writes are the sign-in records (`audit.signin`, `audit.signin-failed`: never a
  password), through the same handle; the sign-in throttle is computed from them (`signin`).

Text from hosts and desks is hostile: Jinja autoescapes it, control characters are shown as
visible stand-ins (`textsafe.visible`, on every value a template prints), CSV cells are
neutralised (`textsafe.CsvWriter`), JSON escapes what a terminal would obey (`json_safe`), and
the Content-Security-Policy allows no script at all.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from toolkit.errors import NotFound, ToolkitError
from toolkit.textsafe import CsvWriter, json_safe, visible
from toolkit.web import pages, signin
from toolkit.web.accounts import NAME, ROLE_PAGES, Account, Accounts

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from toolkit.app import App
    from toolkit.desk.projection import Projection

log = logging.getLogger("itops.web")

VIEW_KIND = "audit.view"
SESSION_COOKIE = "itops_session"
ANCHOR_EVERY = 60.0  # seconds: the head the views moved is signed at most this often, and on exit
# Every route and the methods it answers; a test holds the application to exactly this.
ROUTE_METHODS = {
    "/": {"GET", "HEAD"},
    "/login": {"GET", "HEAD", "POST"},
    "/logout": {"GET", "HEAD"},
    "/search": {"GET", "HEAD"},
    "/ticket": {"GET", "HEAD"},
    "/host": {"GET", "HEAD"},
    "/approvals": {"GET", "HEAD"},
    "/chain": {"GET", "HEAD"},
    "/kpi": {"GET", "HEAD"},
    "/kpi/tickets": {"GET", "HEAD"},
}
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
NAV = (
    ("search", "/search", "Search"),
    ("approvals", "/approvals", "Approvals"),
    ("chain", "/chain", "Chain"),
    ("kpi", "/kpi", "KPIs"),
)


@dataclass(frozen=True)
class ServeSettings:
    """[serve] in itops.toml (toolkit.settings), with the command line's overrides."""

    host: str = "127.0.0.1"
    port: int = 8470
    cert: Path | None = None
    key: Path | None = None
    proxy_header: str | None = None
    trusted_proxies: tuple[str, ...] = ("127.0.0.1",)
    proxy_role: str = "auditor"
    session_hours: int = 8
    page_size: int = 50
    # sign-in throttling (toolkit.web.signin): per account name and per client address
    signin_failures: int = 5
    signin_source_failures: int = 20
    signin_window_minutes: int = 60
    signin_backoff_seconds: int = 60
    signin_backoff_max_minutes: int = 30

    @classmethod
    def of(cls, section: dict[str, Any], root: Path, **given: Any) -> ServeSettings:
        values = {k: v for k, v in section.items() if k in cls.__dataclass_fields__}
        values |= {k: v for k, v in given.items() if v is not None}
        for name in ("cert", "key"):
            if values.get(name):
                path = Path(values[name]).expanduser()
                values[name] = path if path.is_absolute() else root / path
        if "trusted_proxies" in values:
            values["trusted_proxies"] = tuple(values["trusted_proxies"])
        found = cls(**values)
        if bool(found.cert) != bool(found.key):
            raise ToolkitError(
                "TLS needs both a certificate and its key",
                hint="--cert FILE --key FILE, or [serve] cert and key",
            )
        return found

    @property
    def tls(self) -> bool:
        return self.cert is not None

    @property
    def limits(self) -> signin.Limits:
        return signin.Limits(
            account_failures=self.signin_failures,
            source_failures=self.signin_source_failures,
            window=self.signin_window_minutes * 60.0,
            backoff=float(self.signin_backoff_seconds),
            backoff_max=self.signin_backoff_max_minutes * 60.0,
        )


class Site:
    """What the pages share: the workspace read-only, the view recorder, accounts, templates."""

    def __init__(self, workspace: str | Path, settings: ServeSettings) -> None:
        from toolkit.app import App
        from toolkit.desk.service import policy_for

        self.settings = settings
        self.reader: App = App(workspace)
        self.reader.read_only = True  # every read: the ledger opened read-only
        self.writer: App = App(workspace)  # appends `audit.view` records, nothing else
        ws = self.reader.workspace
        self.accounts = Accounts(ws.state_dir)
        self.policy = policy_for(ws)
        self.reader.ledger  # noqa: B018  (open it now: a missing ledger fails the start)
        self._write_lock = threading.Lock()
        self._projection_lock = threading.Lock()
        self._projection: Projection | None = None
        self._anchored = time.monotonic()
        self.env = _templates()
        # failed sign-ins counted from the ledger's records: a restart forgets nothing
        self.throttle = signin.Throttle.on(self.reader.ledger, settings.limits)

    def session_key(self) -> str:
        """The key that signs session cookies: made once, 0600 in the state folder."""
        from toolkit.statefiles import write_private

        path = self.reader.workspace.state_dir / "web-session.key"
        if not path.exists():
            write_private(path, secrets.token_hex(32) + "\n")
        return path.read_text().strip()

    def record_view(
        self, user: Account, via: str, request: Request, page: str, view: pages.View
    ) -> int:
        from toolkit.ledger import Entry

        client = request.client.host if request.client else None
        with self._write_lock:
            rec = self.writer.ledger.append(
                Entry(
                    VIEW_KIND,
                    operator=user.name,
                    data={
                        "page": page,
                        "path": request.url.path,
                        "scope": view.scope,
                        "rows": sum(len(t.rows) for t in view.tables),  # how much was shown
                        "format": request.query_params.get("format") or "html",
                        "role": user.role,
                        "via": via,
                        "client": client,
                    },
                )
            )
            if time.monotonic() - self._anchored > ANCHOR_EVERY:
                self._anchored = time.monotonic()
                self.writer.anchor()  # the views' head signed (a failure is logged, not raised)
        return rec.seq

    def record_signin(self, kind: str, operator: str | None, data: dict[str, Any]) -> int:
        """A sign-in or a failed one, in the ledger (`signin`); never a password."""
        from toolkit.ledger import Entry

        with self._write_lock:
            rec = self.writer.ledger.append(Entry(kind, data=data, operator=operator))
        return rec.seq

    def sign_in(self, name: Any, password: Any, client: str) -> tuple[Account | None, int, int]:
        """Check a sign-in and record it: (the account or None, the HTTP status to answer with —
        200 signed in, 401 refused, 429 refused while locked, 503 not recorded —, and when
        locked, the seconds until an attempt is checked again)."""
        typed = name if isinstance(name, str) else ""
        refused = self.throttle.begin(typed, client)
        if refused is not None:
            try:
                self.record_signin(
                    signin.FAILED_KIND,
                    None,
                    signin.failed_data(
                        name, client, refused.reason, locked_until=signin.iso(refused.until)
                    ),
                )
            except Exception as exc:  # locked anyway; the record is what was lost
                log.error("a refused sign-in could not be recorded: %s", exc)
            log.warning("web sign-in refused for %s from %s: %s", visible(typed[:64]), client,
                        refused.reason)  # fmt: skip
            return None, 429, refused.retry_after(time.time())
        account, reason = None, signin.BAD_NAME
        recorded = False
        try:
            if isinstance(password, str) and NAME.match(typed):
                account = self.accounts.check(typed, password)
                if account is None:
                    known = self.accounts.get(typed) is not None
                    reason = signin.WRONG_PASSWORD if known else signin.NO_ACCOUNT
            if account is not None:
                self.record_signin(
                    signin.SIGNIN_KIND, account.name,
                    {"client": client, "role": account.role, "via": "password"},
                )  # fmt: skip
                recorded = True
                return account, 200, 0
            self.record_signin(signin.FAILED_KIND, None, signin.failed_data(name, client, reason))
            recorded = True
            log.warning("web sign-in refused for %s from %s: %s", visible(typed[:64]), client,
                        reason)  # fmt: skip
            return None, 401, 0
        except Exception as exc:
            log.error("a sign-in could not be recorded, so it was refused: %s", exc)
            return None, 503, 0
        finally:
            self.throttle.end(typed, client, failed_unrecorded=not recorded and account is None)

    @contextlib.contextmanager
    def projection(self) -> Iterator[Projection]:
        """The KPI projection, kept between pages and brought up to the ledger's head for each
        (read-only: in memory, beside the ledger; one page at a time uses it)."""
        from toolkit.desk.projection import open_projection

        with self._projection_lock:
            if self._projection is None:
                ledger = self.reader.ledger
                self._projection = open_projection(
                    ledger.read_url, self.policy, read_only=True, refresh=False
                )
            self._projection.refresh()
            yield self._projection

    def close(self) -> None:
        if self._projection is not None:
            self._projection.close()
            self._projection = None
        self.writer.close()  # signs the head it moved into the anchor log
        self.reader.close()

    # -- who is asking ---------------------------------------------------------------------
    def identify(self, request: Request) -> tuple[Account, str] | None:
        """The user and how they were identified (`proxy` or `password`), or None."""
        header = self.settings.proxy_header
        if header:
            client = request.client.host if request.client else ""
            name = request.headers.get(header)
            if client in self.settings.trusted_proxies and name and NAME.match(name):
                known = self.accounts.get(name)
                return (known or Account(name, self.settings.proxy_role)), "proxy"
        held = request.session.get("user")
        if not isinstance(held, dict):
            return None
        known = self.accounts.get(str(held.get("name")))  # a removed account is out at once
        if known is None or known.role != held.get("role"):
            request.session.clear()
            return None
        return known, "password"


def _templates() -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape
    from markupsafe import Markup

    def finalize(value: Any) -> Any:
        """Every printed value: control characters (ESC…) as visible stand-ins, then escaped
        (a macro's output is the template's own markup, already made of such values)."""
        if value is None:
            return ""
        if isinstance(value, str) and not isinstance(value, Markup):
            return visible(value)
        return value

    return Environment(
        loader=PackageLoader("toolkit.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        finalize=finalize,
    )


def build_app(workspace: str | Path, settings: ServeSettings) -> Starlette:
    """The ASGI application. Closing the returned app's `state.site` ends the recorder."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.middleware.sessions import SessionMiddleware
    from starlette.responses import HTMLResponse, RedirectResponse, Response
    from starlette.routing import Route

    site = Site(workspace, settings)
    env = site.env

    def html(template: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(template).render(**context), status_code=status)

    def problem(
        request: Request, status: int, message: str, hint: str = "", user: Any = None
    ) -> Response:
        return html(
            "error.html", status, title=f"{status}", message=message, hint=hint,
            user=user, nav=_nav(user), request=request,
        )  # fmt: skip

    def page(name: str, build: Callable[[Request], pages.View]) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            who = site.identify(request)
            if who is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target, safe='')}", 303)
            user, via = who
            if name not in ROLE_PAGES.get(user.role, ()):
                return problem(
                    request, 403, f"the {user.role} role does not read this page", user=user
                )
            fmt = request.query_params.get("format") or "html"
            if fmt not in ("html", "csv", "json"):
                return problem(request, 400, f"no format {fmt!r}", "html, csv or json", user)
            now = datetime.now(UTC)
            try:
                view = build(request)
            except NotFound as exc:
                return problem(request, 404, exc.message, exc.hint or "", user)
            except ToolkitError as exc:
                return problem(request, 400, exc.message, exc.hint or "", user)
            try:
                seq = site.record_view(user, via, request, name, view)
            except Exception as exc:  # no record, no page: auditors' reads are logged
                log.error("a view could not be recorded, so it was not shown: %s", exc)
                return problem(request, 503, "this view could not be recorded in the ticket "
                               "log, so it is not shown", "see itops.log", user)  # fmt: skip
            if fmt == "json":
                body = json.dumps(
                    pages.as_json(view, now) | {"recorded_as": seq},
                    ensure_ascii=False, default=str, indent=1,
                )  # fmt: skip
                return Response(
                    json_safe(body), media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="itops-{name}.json"'},
                )  # fmt: skip
            if fmt == "csv":
                out = io.StringIO()
                writer = CsvWriter(out)  # cells an outsider wrote: no formulas (OWASP)
                for n, (title, header, rows) in enumerate(pages.cells(view)):
                    if n:
                        writer.writerow([])
                    if len(view.tables) > 1:
                        writer.writerow([title])
                    writer.writerow(header)
                    for row in rows:  # as the page shows them: control characters visible
                        writer.writerow([visible(c) if isinstance(c, str) else c for c in row])
                return Response(
                    out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="itops-{name}.csv"'},
                )  # fmt: skip
            return html(
                f"{name}.html" if name in ("search", "kpi") else "view.html",
                view=view, user=user, via=via, nav=_nav(user), request=request,
                page=name, recorded_as=seq,
                csv_url=str(request.url.include_query_params(format="csv")),
                json_url=str(request.url.include_query_params(format="json")),
            )  # fmt: skip

        return endpoint

    def q(request: Request) -> dict[str, str]:
        return dict(request.query_params)

    def now() -> datetime:
        return datetime.now(UTC)

    def with_projection(show: Callable[..., pages.View], request: Request) -> pages.View:
        with site.projection() as projection:
            return show(projection, site.policy, q(request), now())

    views: dict[str, Callable[[Request], pages.View]] = {
        "search": lambda r: pages.search(site.reader.ledger, site.policy, q(r), settings.page_size),
        "ticket": lambda r: pages.ticket(
            site.reader.ledger, site.policy, r.query_params.get("id") or "", now().timestamp()
        ),
        "host": lambda r: pages.host(site.reader.ledger, r.query_params.get("name") or ""),
        "approvals": lambda r: pages.approval_list(site.reader.ledger),
        "chain": lambda r: pages.chain(site.reader),
        "kpi": lambda r: with_projection(pages.kpi, r),
        "kpi_tickets": lambda r: with_projection(pages.kpi_tickets, r),
    }

    def home(request: Request) -> Response:
        who = site.identify(request)
        if who is None:
            return RedirectResponse("/login", 303)
        return RedirectResponse("/search" if who[0].role == "auditor" else "/kpi", 303)

    def login_form(request: Request, status: int = 200, message: str = "") -> Response:
        token = request.session.get("csrf")
        if not isinstance(token, str):
            token = request.session["csrf"] = secrets.token_urlsafe(32)
        return html(
            "login.html", status, title="Sign in", csrf=token, message=message,
            next=_safe_next(request.query_params.get("next")), nav=(), user=None,
            proxy=bool(settings.proxy_header), request=request,
        )  # fmt: skip

    async def login(request: Request) -> Response:
        if request.method != "POST":
            return login_form(request)
        form = await request.form()
        expected = request.session.get("csrf")
        given = form.get("csrf")
        if (
            not isinstance(expected, str)
            or not isinstance(given, str)
            or not secrets.compare_digest(expected, given)
        ):
            client = request.client.host if request.client else "?"
            with contextlib.suppress(Exception):  # (refused either way)
                await run_in_threadpool(
                    site.record_signin, signin.FAILED_KIND, None,
                    signin.failed_data(form.get("name"), client, signin.FORM_EXPIRED),
                )  # fmt: skip
            return problem(request, 403, "the form expired or did not come from this site",
                           "open the sign-in page again")  # fmt: skip
        client = request.client.host if request.client else "?"
        account, status, retry = await run_in_threadpool(
            site.sign_in, form.get("name"), form.get("password"), client
        )
        if account is None:
            if status == 503:
                return problem(request, 503, "the sign-in could not be recorded in the ticket "
                               "log, so it was refused", "see itops.log")  # fmt: skip
            answer = login_form(request, status, "wrong name or password")
            if status == 429:
                answer.headers["Retry-After"] = str(retry)
            return answer
        request.session.clear()  # a fresh session: nothing carried over from before sign-in
        request.session["user"] = {"name": account.name, "role": account.role}
        request.session["csrf"] = secrets.token_urlsafe(32)
        given_next = form.get("next")
        target = _safe_next(given_next if isinstance(given_next, str) else None)
        return RedirectResponse(target or "/", 303)

    def logout(request: Request) -> Response:
        request.session.clear()
        return RedirectResponse("/login", 303)

    routes = [
        Route("/", home, methods=["GET"], name="home"),
        Route("/login", login, methods=["GET", "POST"], name="login"),
        Route("/logout", logout, methods=["GET"], name="logout"),
        Route("/search", page("search", views["search"]), methods=["GET"], name="search"),
        Route("/ticket", page("ticket", views["ticket"]), methods=["GET"], name="ticket"),
        Route("/host", page("host", views["host"]), methods=["GET"], name="host"),
        Route("/approvals", page("approvals", views["approvals"]), methods=["GET"]),
        Route("/chain", page("chain", views["chain"]), methods=["GET"], name="chain"),
        Route("/kpi", page("kpi", views["kpi"]), methods=["GET"], name="kpi"),
        Route("/kpi/tickets", page("kpi_tickets", views["kpi_tickets"]), methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(_SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=site.session_key(),
                session_cookie=SESSION_COOKIE,
                max_age=settings.session_hours * 3600,
                same_site="strict",
                https_only=settings.tls,
            ),
        ],
        lifespan=_lifespan(site),
        max_body_size=64 * 1024,  # the sign-in form is all anyone posts
    )
    app.state.site = site
    return app


def _lifespan(site: Site) -> Any:
    import contextlib

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        try:
            yield
        finally:
            site.close()

    return lifespan


def _safe_next(value: str | None) -> str | None:
    """Only a path on this site (`/search?…`), never `//elsewhere` or a URL."""
    if value and value.startswith("/") and not value.startswith(("//", "/\\")):
        return value
    return None


def _nav(user: Account | None) -> list[tuple[str, str]]:
    if user is None:
        return []
    allowed = ROLE_PAGES.get(user.role, frozenset())
    return [(href, label) for name, href, label in NAV if name in allowed]


class _SecurityHeaders:
    """No script, no framing, no sniffing, no caching of audit pages, no referrer."""

    HEADERS: tuple[tuple[bytes, bytes], ...] = (
        (b"content-security-policy", CSP.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"cache-control", b"no-store"),
    )

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *self.HEADERS]
            await send(message)

        await self.app(scope, receive, sending)


def server_for(workspace: str | Path, settings: ServeSettings) -> Any:
    """A uvicorn server for the application (TLS with a certificate and key), not yet running."""
    import uvicorn

    app = build_app(workspace, settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.cert) if settings.cert else None,
        ssl_keyfile=str(settings.key) if settings.key else None,
        log_level="warning",
        access_log=False,  # every page view is in the ledger already
        server_header=False,
        proxy_headers=False,  # the client address is the socket's (trusted_proxies decides)
    )
    return uvicorn.Server(config)


def serve(workspace: str | Path, settings: ServeSettings) -> None:
    """Serve until interrupted."""
    server_for(workspace, settings).run()
