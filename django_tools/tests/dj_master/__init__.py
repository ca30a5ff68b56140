"""A throwaway master for django_tools' own tests: one model written through the outbox."""
