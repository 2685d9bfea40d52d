"""The account pages: register, log in, log out, profile, password, active sessions.

HTML forms over the same rules as the JSON API (:mod:`handlers.auth_api`): every
decision is made by the account service (:class:`accounts.sessions.AccountSessions`,
:class:`accounts.service.Accounts`); this module only reads form fields, renders
pages and redirects.

* A form that is refused re-renders its page with the refusal's status (400, 401,
  403, 409, 429) and the error beside every field at fault; the typed values come back
  in the form, passwords never. A 429 says when to try again (``retry``). The forms
  of ``/account`` (the password change) post elsewhere: their errors come back by
  post/redirect/get (flashes of category ``field:<name>``), so a reload re-posts nothing.
* Every accepted form ends in a 303 redirect with a flash message for the next page
  (post/redirect/get). Logging out ends the session that would carry a flash, so those
  redirects name a fixed notice instead (``/login?notice=logged-out``).
* Pages that need a login redirect to ``/login?next=<path>``; ``next`` is followed
  only when it is a path on this site (:func:`safe_next`), never to another host.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode, urlsplit

from tornado.web import HTTPError

from accounts.passwords import MAX_LENGTH as MAX_PASSWORD
from accounts.ratelimit import wait_words
from accounts.service import AccountError, registration_errors
from accounts.sessions import StepUpRequired
from accounts.users import MAX_EMAIL, MAX_NAME, User
from accounts.wording import browser_label, format_when

from .account_base import AccountHandler

#: Where a login or a page that is already logged in goes by default.
HOME = "/account"
MAX_NEXT = 512
#: Messages for redirects that cannot carry a flash (the session just ended).
NOTICES = {
    "logged-out": "You have logged out.",
    "logged-out-everywhere": "You have logged out on every device.",
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


def safe_next(target: str | None, default: str = HOME) -> str:
    """``target`` when it is a path on this site (``/...``), else ``default``.

    Refused: absolute URLs (``https://evil.test``), scheme-relative ones
    (``//evil.test``), backslashes (browsers read ``/\\evil.test`` as ``//evil.test``),
    control characters, and anything over a few hundred characters.
    """
    if not target or len(target) > MAX_NEXT or not target.startswith("/") or target.startswith("//"):
        return default
    if _CONTROL.search(target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


def login_url(next_path: str) -> str:
    return "/login?" + urlencode({"next": next_path})


__all__ = ["browser_label", "safe_next", "login_url", "ROUTES"]
#: Flash categories ``field:<name>`` carry a form's errors across a redirect.
FIELD_FLASH = "field:"


class AccountPage(AccountHandler):
    """An HTML page of the demo that knows who is logged in (``current_user``)."""

    #: When a refused attempt may be tried again ({"words", "at"}), for the page.
    _retry: dict[str, str] | None = None

    async def prepare(self) -> None:
        await self.current_account()
        self.depends_on_cookies()  # after the session load, which adds its Vary: Cookie

    # -- rendering -------------------------------------------------------------------
    async def render_page(self, template: str, status: int = 200, **kwargs: Any) -> None:
        """Render ``template`` with this session's flash messages (each shown once)."""
        self.set_status(status)
        flashes = []
        carried: dict[str, str] = {}
        for category, message in await self.pop_flashes():
            if category.startswith(FIELD_FLASH):  # a form's errors, across post/redirect/get
                carried.setdefault(category[len(FIELD_FLASH):], message)
            else:
                flashes.append((category, message))
        if carried and "errors" in kwargs:
            kwargs["errors"] = {**carried, **(kwargs["errors"] or {})}
        notice = NOTICES.get(self.get_query_argument("notice", ""))
        if notice:
            flashes.append(("info", notice))
        self.render(template, flashes=flashes, **kwargs)

    def format_time(self, timestamp: float) -> str:
        """A time in the visitor's time zone preference (UTC by default): "2026-12-01 07:42 UTC"."""
        return format_when(timestamp, self.preferences.get()["timezone"])

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace["format_time"] = self.format_time
        namespace["retry"] = self._retry
        return namespace

    # -- forms -------------------------------------------------------------------------
    def read_form(self, **limits: int) -> tuple[dict[str, str], AccountError | None]:
        """The form's fields as sent (not stripped: passwords keep their spaces), and their
        problems: a field over its limit (name=max characters) or not UTF-8 comes back
        empty, with an AccountError naming every such field for the caller to raise."""
        values: dict[str, str] = {}
        problems: dict[str, str] = {}
        for name, limit in limits.items():
            raw = (self.request.body_arguments.get(name) or [b""])[-1]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = ""
                problems[name] = "this is not valid UTF-8 text"
            if len(text) > limit:
                text = ""
                problems[name] = f"at most {limit} characters, please"
            values[name] = text
        return values, AccountError.invalid(problems) if problems else None

    def redirect_with_flash(self, url: str, message: str, category: str = "success") -> None:
        self.session.flash(message, category)
        self.redirect(url, status=303)

    def refused(self, error: AccountError) -> dict[str, str]:
        """The error map for a template (field name, or "form", to message); sets RateLimit
        headers, and when to try again (``retry``) after a 429."""
        self.rate_limit_headers(error.limit)
        if error.limit is not None and not error.limit.allowed:
            wait = error.limit.reset_after
            self._retry = {"words": wait_words(wait), "at": self.format_time(self.session_manager.clock() + wait)}
        return dict(error.errors) if error.errors else {"form": error.message}

    def redirect_with_errors(self, url: str, errors: dict[str, str]) -> None:
        """Post/redirect/get for a refused form: its errors go along as ``field:`` flashes."""
        for name, message in errors.items():
            self.session.flash(message, FIELD_FLASH + name)
        self.redirect(url, status=303)

    async def redirect_now(self, url: str) -> None:
        """Redirect from ``prepare()``: finished (session committed) before the method would run."""
        self.set_status(303 if self.request.method == "POST" else 302)
        self.set_header("Location", url)
        await self.finish()


class LoggedInPage(AccountPage):
    """A page for logged-in users only; others go to the login page and come back."""

    #: The page to come back to after logging in (None: the requested path).
    return_to: str | None = None

    async def prepare(self) -> None:
        await super().prepare()
        if self._account is None:
            await self.redirect_now(login_url(self.return_to or self.request.path))

    @property
    def user(self) -> User:
        if self._account is None:  # prepare() has redirected already
            raise HTTPError(401)
        return self._account

    def reauthenticate_first(self) -> None:
        """Step-up: to the password confirmation, then back to this page."""
        target = "/account/reauthenticate?" + urlencode({"next": self.return_to or "/account"})
        self.session.flash("Please confirm your password first.", "warning")
        self.redirect(target, status=303)


class LoggedOutPage(AccountPage):
    """Register and log in: someone logged in already goes to their account."""

    async def prepare(self) -> None:
        await super().prepare()
        if self._account is not None:
            await self.redirect_now(HOME)


# -- register and log in ------------------------------------------------------------------


class RegisterPage(LoggedOutPage):
    async def get(self) -> None:
        await self.render_page("register.html", values={}, errors={})

    async def post(self) -> None:
        values, problem = self.read_form(email=MAX_EMAIL + 64, name=MAX_NAME + 64, password=MAX_PASSWORD)
        password = values.pop("password")
        try:
            if problem:  # every field at once: what could not be read, and what is wrong with the rest
                errors, _, _ = registration_errors(values["email"], values["name"], password)
                raise AccountError.invalid({**errors, **problem.errors})
            user = await self.accounts.register(values["email"], values["name"], password, self.address)
        except AccountError as error:
            await self.render_page("register.html", error.status, values=values, errors=self.refused(error))
            return
        await self.log_in(user)
        self.redirect_with_flash(HOME, f"Welcome, {user.name}! Your account is ready.")


class LoginPage(LoggedOutPage):
    async def get(self) -> None:
        next_path = safe_next(self.get_query_argument("next", ""))
        await self.render_page("login.html", values={}, errors={}, next_path=next_path)

    async def post(self) -> None:
        next_path = safe_next(self.get_body_argument("next", ""))
        values, problem = self.read_form(email=MAX_EMAIL + 64, password=MAX_PASSWORD)
        password = values.pop("password")
        try:
            if problem:
                raise problem
            user, decision = await self.accounts.authenticate(values["email"], password, self.address)
        except AccountError as error:
            errors = self.refused(error)
            await self.render_page("login.html", error.status, values=values, errors=errors, next_path=next_path)
            return
        self.rate_limit_headers(decision)
        await self.log_in(user, remember=self.get_body_argument("remember", "") == "1")
        self.redirect_with_flash(next_path, f"Welcome back, {user.name}.")


class LogoutForm(AccountPage):
    async def post(self) -> None:
        await self.log_out()
        self.redirect("/login?notice=logged-out", status=303)


# -- the account ------------------------------------------------------------------------


class AccountPageBase(LoggedInPage):
    return_to = "/account"

    async def render_account(self, status: int = 200, *, name: str | None = None,
                             errors: dict[str, str] | None = None) -> None:
        await self.render_page(
            "account.html", status, user=self.user, name_value=self.user.name if name is None else name,
            errors=errors or {},
        )


class AccountOverview(AccountPageBase):
    async def get(self) -> None:
        await self.render_account()


class NameForm(AccountPageBase):
    async def post(self) -> None:
        values, problem = self.read_form(name=MAX_NAME + 64)
        try:
            if problem:
                raise problem
            user = await self.accounts.rename(self.user, values["name"])
        except AccountError as error:
            await self.render_account(error.status, name=values["name"], errors=self.refused(error))
            return
        await self.account_sessions.renamed(await self.get_session(), user)
        self._now_logged_in(user)
        self.redirect_with_flash("/account", "Your name is changed.")


class PasswordForm(AccountPageBase):
    """The password change, in one pass.

    The current password typed in the form is the confirmation that step-up asks for,
    so a session restored from "remember me" is not sent to confirm it first (and does
    not come back to an empty form). Errors come back by post/redirect/get.
    """

    async def post(self) -> None:
        values, problem = self.read_form(current=MAX_PASSWORD, new=MAX_PASSWORD)
        try:
            if problem:
                raise problem
            ended = await self.change_password(self.user, values["current"], values["new"])
        except AccountError as error:
            errors = self.refused(error)
            if self._retry is not None:
                errors["form"] = f"{error.message} (at {self._retry['at']})"
            self.redirect_with_errors("/account", errors)
            return
        if ended:
            others = f"{ended} other browser{' is' if ended == 1 else 's are'} logged out"
        else:
            others = "you were not logged in anywhere else"
        self.redirect_with_flash("/account", f"Your password is changed; {others}.")


# -- active sessions ------------------------------------------------------------------------


class SessionsPageBase(LoggedInPage):
    return_to = "/account/sessions"


class SessionsPage(SessionsPageBase):
    """One row per browser: its sessions and the remember-me token that restores them."""

    async def get(self) -> None:
        service = self.account_sessions
        devices = await service.devices(self.user, self.session, own_token=service.own_token_key(self))
        for item in devices:
            item["browser"] = browser_label(item["user_agent"])
        await self.render_page("sessions.html", sessions=devices)


class RevokeForm(SessionsPageBase):
    async def post(self, handle: str) -> None:
        service = self.account_sessions
        devices = await service.devices(self.user, self.session, own_token=service.own_token_key(self))
        label = next((browser_label(d["user_agent"]) for d in devices if d["handle"] == handle), "That browser")
        try:
            revoked = await self.revoke(self.user, handle)
        except StepUpRequired:
            self.reauthenticate_first()
            return
        if not revoked:
            self.redirect_with_flash("/account/sessions", "That session had ended already.", "warning")
        elif self.session.destroyed:
            self.redirect("/login?notice=logged-out", status=303)  # it was this one
        else:
            self.redirect_with_flash("/account/sessions", f"{label} is logged out.")


class LogoutEverywhereForm(SessionsPageBase):
    async def post(self) -> None:
        if not self.is_fresh(self.session):
            self.reauthenticate_first()
            return
        await self.log_out_everywhere(self.user)
        self.redirect("/login?notice=logged-out-everywhere", status=303)


class ReauthenticatePage(LoggedInPage):
    """Confirm the password before sensitive actions, then back to where the user was."""

    return_to = "/account"

    async def get(self) -> None:
        next_path = safe_next(self.get_query_argument("next", ""))
        await self.render_page("reauthenticate.html", next_path=next_path, errors={})

    async def post(self) -> None:
        next_path = safe_next(self.get_body_argument("next", ""))
        values, problem = self.read_form(password=MAX_PASSWORD)
        try:
            if problem:
                raise problem
            decision = await self.account_sessions.reauthenticate(self.session, self.user, values["password"], self.address)
        except AccountError as error:
            await self.render_page("reauthenticate.html", error.status, next_path=next_path, errors=self.refused(error))
            return
        self.rate_limit_headers(decision)
        self.redirect_with_flash(next_path, "Password confirmed. You can go ahead.")


ROUTES = [
    (r"/register", RegisterPage),
    (r"/login", LoginPage),
    (r"/logout", LogoutForm),
    (r"/account", AccountOverview),
    (r"/account/name", NameForm),
    (r"/account/password", PasswordForm),
    (r"/account/sessions", SessionsPage),
    (r"/account/sessions/([0-9a-f]{24})/revoke", RevokeForm),
    (r"/account/logout-all", LogoutEverywhereForm),
    (r"/account/reauthenticate", ReauthenticatePage),
]
