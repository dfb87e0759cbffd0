"""
A small site with sessions, built in a .tac file: a page that counts your
visits and lets you sign in and out under a name, with the session's CSRF
token in its forms, the identifier changed at sign-in (C{cycleKey}) and the
session dropped at sign-out (C{flush}). (A name and no password: it shows
the session mechanics, not authentication.)

With sessions in this process's memory::

    twistd -n --pidfile= -y examples/sessions.tac

and open http://127.0.0.1:8090/. To share the sessions of several such
processes, run the session daemon and point them at it::

    (umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(32))' \\
        > /tmp/tlsession-secret)
    twistd --pidfile=/tmp/tlsession.pid --logfile=/tmp/tlsession.log tlsession \\
        --listen unix:/tmp/tlsession.sock --secret-file /tmp/tlsession-secret
    TLSESSION_DAEMON=unix:path=/tmp/tlsession.sock \\
    TLSESSION_SECRET_FILE=/tmp/tlsession-secret \\
    twistd -n --pidfile= -y examples/sessions.tac

C{TLSESSION_LISTEN} changes where the site listens (a server endpoint
string; C{tcp:8090:interface=127.0.0.1} by default).
"""

from __future__ import annotations

import html
import os
from typing import Union

from twisted.application import strports
from twisted.application.service import Application
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Request
from twisted.web.util import redirectTo

from tlsession import ISession, MemorySessionStore, SessionManager, sessionSite
from tlsession.daemonconfig import readSecretFile
from tlsession.stores.pb import PBSessionStore

LISTEN = os.environ.get("TLSESSION_LISTEN", "tcp:8090:interface=127.0.0.1")
DAEMON = os.environ.get("TLSESSION_DAEMON")
SECRET_FILE = os.environ.get("TLSESSION_SECRET_FILE")

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>tlsession example</title></head>
<body>
<p>Visit {visits} in this session.</p>
{body}
</body></html>
"""

SIGN_IN = """<form method="post" action="/login">
<input type="hidden" name="csrf" value="{csrf}">
<label>Your name <input name="name" maxlength="40"></label>
<button>Sign in</button>
</form>
"""

SIGNED_IN = """<p>Signed in as <b>{user}</b>.</p>
<form method="post" action="/logout">
<input type="hidden" name="csrf" value="{csrf}">
<button>Sign out</button>
</form>
"""


def formValue(request: Request, name: bytes) -> str:
    """
    The first value of the form field C{name}, or the empty string.
    """
    values = request.args.get(name) or [b""]
    return values[0].decode("utf-8", "replace")


class Home(Resource):
    """
    Counts the visit and shows the sign-in or sign-out form.
    """

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        session = ISession(request)
        if not isinstance(session.get("visits", 0), int):
            del session["visits"]
        # Atomic: re-applied on a newer version if another request saved first.
        visits = session.increment("visits")
        user = session.get("user")
        csrf = html.escape(session.csrfToken())
        if isinstance(user, str):
            body = SIGNED_IN.format(user=html.escape(user), csrf=csrf)
        else:
            body = SIGN_IN.format(csrf=csrf)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return PAGE.format(visits=visits, body=body).encode("utf-8")


class CheckedForm(Resource):
    """
    A form target that refuses posts without the session's CSRF token.
    """

    isLeaf = True

    def render_POST(self, request: Request) -> bytes:
        session = ISession(request)
        if not session.checkCSRFToken(formValue(request, b"csrf")):
            request.setResponseCode(403)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"This form has expired: reload the page and try again.\n"
        self.act(request, session)
        return redirectTo(b"/", request)

    def act(self, request: Request, session: ISession) -> None:
        """
        What the form does, once its token was checked.
        """


class SignIn(CheckedForm):
    """
    Signs in under the name given.
    """

    def act(self, request: Request, session: ISession) -> None:
        name = formValue(request, b"name").strip()[:40]
        if name:
            session["user"] = name
            # A new identifier once signed in: one an attacker planted in
            # the browser before (session fixation) is now worthless.
            session.cycleKey()


class SignOut(CheckedForm):
    """
    Signs out: the session is deleted and its cookie cleared.
    """

    def act(self, request: Request, session: ISession) -> None:
        session.flush()


root = Resource()
root.putChild(b"", Home())
root.putChild(b"login", SignIn())
root.putChild(b"logout", SignOut())

application = Application("tlsession example")
store: Union[PBSessionStore, MemorySessionStore]
if DAEMON:
    if not SECRET_FILE:
        raise SystemExit("TLSESSION_DAEMON needs TLSESSION_SECRET_FILE too")
    store = PBSessionStore(DAEMON, readSecretFile(SECRET_FILE), reactor)
else:
    store = MemorySessionStore(reactor)
# A store takes calls while it runs as a service: the PB store connects to
# the daemon when the application starts, the memory store sweeps expired
# sessions.
store.setServiceParent(application)
site = sessionSite(root, SessionManager(store, reactor))
strports.service(LISTEN, site).setServiceParent(application)
