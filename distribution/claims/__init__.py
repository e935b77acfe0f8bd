"""Claims: the eligibility decision, claim codes, redemption and the waiting list."""
