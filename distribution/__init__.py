"""Getting keys to people: the stock ledger, claim codes, shipping, activation and reports."""
