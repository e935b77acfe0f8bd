"""The floor every feature stands on: settings, the database and its after-commit queue, audit
events, mail, logs, errors, health and countries. It imports no feature package."""
