"""The production entry point, for gunicorn: ``gunicorn -w 4 -b 127.0.0.1:8000 wsgi:app``.

The settings come from the ``KEYS_*`` environment; an unsafe one stops the start with a message
(see README, "Production"). gunicorn also reads ``gunicorn.conf.py`` from the same directory.
"""

from app import create_app

app = create_app()
