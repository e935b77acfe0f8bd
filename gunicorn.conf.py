"""gunicorn's settings for ``wsgi:app``, read from the working directory by default.

The app writes one JSON line per request itself, naming the route rather than the raw path:
paths carry sign-in tokens and claim codes. So gunicorn's own access log stays off, and should
an operator turn it on (``--access-logfile``), its lines hold no path or query string either.
gunicorn's own lines (worker timeouts and kills, the 500s it answers itself) are JSON lines too.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the checkout, wherever gunicorn starts

from core.logs import gunicorn_logconfig  # noqa: E402

accesslog = None
access_log_format = '%(h)s "%(m)s" %(s)s %(b)s %(M)sms'
logconfig_dict = gunicorn_logconfig()
