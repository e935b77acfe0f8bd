"""What every page shares and no feature owns: CSRF, rate limits, security headers, input
refused before any view reads it, and form widgets."""
