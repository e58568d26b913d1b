"""``pulmo serve``: the front door over HTTP (FastAPI), with a database of results and an
audit trail (SQLAlchemy + Alembic), content-addressed uploads, a worker pool and one
static web page. Routes call :mod:`pulmo.frontdoor` only. Needs the ``serve`` extra."""
