"""The demo's user domain: users, passwords, rate limits and the account service.

It sits beside ``handlers/`` and uses the session library (``sessions/``) through its
public API only; the library knows nothing about users.

* :mod:`accounts.users`: the User model, the repository interface and
  :func:`~accounts.users.open_user_repository` (user storage by URL, a registry of
  its own; by default the session store's URL, so the demo needs one database);
* :mod:`accounts.backends`: one module per backend (memory, SQLite, MongoDB, Redis,
  PostgreSQL);
* :mod:`accounts.passwords`, :mod:`accounts.ratelimit`: bcrypt off the event loop,
  login and sign-up limits counted in the session store;
* :mod:`accounts.service` (:class:`~accounts.service.Accounts`: register,
  authenticate, password checks and changes) and :mod:`accounts.sessions`
  (:class:`~accounts.sessions.AccountSessions`: log in, log out, step-up, "is this
  login still current", active sessions), which pages, JSON API and websocket share.
"""
