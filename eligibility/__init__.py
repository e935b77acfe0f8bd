"""Who may claim a key: download statistics, critical projects, maintainer roles, countries."""
