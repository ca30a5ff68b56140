"""OpenTelemetry tracing: off unless an OTLP endpoint is set (the standard OTEL_* variables,
read by the OpenTelemetry SDK itself: OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL,
OTEL_SERVICE_NAME, …). Off, it costs nothing: no provider, no spans, no headers."""

from __future__ import annotations

from django_tools.env import env_bool, env_str

OTEL_EXPORTER_OTLP_ENDPOINT = env_str("OTEL_EXPORTER_OTLP_ENDPOINT")
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = env_str("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
#: The SDK's own switch-off.
OTEL_SDK_DISABLED = env_bool("OTEL_SDK_DISABLED", False)
TRACING = bool(OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) and not (
    OTEL_SDK_DISABLED
)
