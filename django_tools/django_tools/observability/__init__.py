"""Seeing the pipeline from the services themselves: one correlation id from request to replica
(`correlation`), structured logs (`logs`) and Prometheus metrics (`metrics`)."""
