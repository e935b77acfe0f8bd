"""Personal data: retention, the maintainer's export and erasure."""
