"""Reports: stock and programme figures, the public transparency page and the staff PDF."""
