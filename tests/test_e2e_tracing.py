"""Tracing across the real processes: with an OTLP endpoint set, one REST write on api_produtos
yields one trace whose spans cover both services — the request, the outbox write, the relay's
publish (api_produtos) and the apply (api_feed) — in that order. The endpoint here is an OTLP/HTTP
receiver of the test's own, decoding what the services' exporters send."""

import itertools
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from e2e_lab import API_KEY, Databases, delete_broker_objects, start_lab, wait_until
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.any_database,
]  # the database plays no part here: CI runs it in its SQLite pass only


class OtlpReceiver:
    """POST /v1/traces (protobuf), as an OpenTelemetry collector takes them."""

    def __init__(self) -> None:
        self.spans: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    service = next(
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    )
                    for scope in resource_spans.scope_spans:
                        receiver.spans.extend(
                            {"service": service, "name": s.name, "trace": s.trace_id.hex(),
                             "span": s.span_id.hex(), "parent": s.parent_span_id.hex(),
                             "start": s.start_time_unix_nano}
                            for s in scope.spans
                        )  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()


@pytest.mark.parametrize("mode", ["cqrs", "celery"])
def test_one_rest_write_is_one_trace_across_both_services(mode, tmp_path, rabbitmq_url, redis_url):
    receiver = OtlpReceiver()
    databases = Databases(tmp_path)
    lab = start_lab(
        tmp_path, rabbitmq_url, databases, REPLICATION_MODE=mode,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_BSP_SCHEDULE_DELAY="100",
    )  # fmt: skip
    try:
        with httpx.Client(base_url=lab.produtos_url, headers={"X-API-Key": API_KEY}) as produtos:
            created = produtos.post(
                "/api/produtos/", json={"sku": "TRACE-1", "nome": "Traçado", "preco": "5.00"}
            )
            assert created.status_code == 201

        def the_trace():
            writes = [s for s in receiver.spans if s["name"] == "cqrs.outbox.write"]
            if not writes:
                return None
            trace_id = writes[0]["trace"]
            spans = [s for s in receiver.spans if s["trace"] == trace_id]
            return spans if any(s["name"] == "cqrs.apply" for s in spans) else None

        spans = wait_until(the_trace, 30, interval=0.2, what="the apply span of the write's trace")
    finally:
        lab.stop()
        receiver.close()
        delete_broker_objects(rabbitmq_url, lab.exchange, lab.broker_queues())
        databases.drop_all()
    by_span = {s["span"]: s for s in spans}
    (request,) = [s for s in spans if s["parent"] == ""]  # the root: Django's server span
    # From the apply back to the root, parent by parent: one unbroken chain.
    chain = [next(s for s in spans if s["name"] == "cqrs.apply")]
    while chain[-1]["parent"]:
        chain.append(by_span[chain[-1]["parent"]])
    chain.reverse()
    names = [s["name"] for s in chain]
    assert chain[0] is request and names[1:3] == ["cqrs.outbox.write", "cqrs.publish"]
    assert chain[-1]["service"] == "api_feed" and chain[1]["service"] == "api_produtos"
    if mode == "celery":  # Celery's own producer and worker spans between publish and apply
        assert "run/replica.apply_event" in names
    for parent, child in itertools.pairwise(chain):
        assert child["start"] >= parent["start"], (parent["name"], child["name"])
    print("\n" + " → ".join(f"{s['service']}:{s['name']}" for s in chain))
