"""Domain errors the services raise and the APIs translate into HTTP answers."""


class ConflictError(Exception):
    """The write would break a uniqueness rule (answered 409)."""
