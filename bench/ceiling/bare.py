"""The ceiling of ``bench/load.py``: a bare Flask app with one trivial endpoint.

Served by the same gunicorn command and configuration as the app and driven by the same load
generator, it shows what this machine can serve at most, so that the app's figure can be read
as a share of it. Nothing of the app is imported: no database, templates, sessions or limits.
"""

from flask import Flask

app = Flask(__name__)


@app.get("/ping")
def ping() -> str:
    return "pong"
