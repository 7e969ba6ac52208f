"""The web page (``actionstream web``): live annotated cameras, an events timeline with
snapshots, worker and stream health. FastAPI, static HTML/CSS/JS served by the app itself
(no build step, no CDN: it works offline).

* :mod:`workers.web.view` — pure parts: drawing a camera's view, labels, health figures
* :mod:`workers.web.data` — reading Redis (and the event history, when there is one)
* :mod:`workers.web.app` — the FastAPI application and its routes
* :mod:`workers.web.server` — binding the port and running uvicorn
* :mod:`workers.web.auth` — login: sessions, bearer tokens, roles, the login rate limit
* :mod:`workers.web.users_cli` — ``actionstream users`` (users in :mod:`workers.history.users`)
"""
