"""Maintainers and staff: who they are, how they sign in, what staff may do."""
