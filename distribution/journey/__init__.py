"""The maintainer's journey read across every stage of a claim: the My claim page gathers the
decision, the claim, its parcel and incidents, and the keys counted, from the packages below."""
