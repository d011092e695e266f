"""What every app shares and nothing else: the one error vocabulary (core/errors.py)."""
