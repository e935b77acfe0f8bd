"""Activation: registering the received keys over WebAuthn and the review of other makes."""
