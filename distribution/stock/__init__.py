"""The stock of keys: the ledger of movements, balances per model, the daily burn-down."""
