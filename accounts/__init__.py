"""The demo's user domain: users, password hashing and login rate limiting.

It sits beside ``handlers/`` and uses the session library (``sessions/``), which
knows nothing about users. Users live in the same backend as the sessions: see
:func:`accounts.users.open_user_repository`.
"""
