"""Message properties that survive headers pika cannot decode.

pika decodes a message's properties while it reads the frame, before any code of ours sees the
message. A header it cannot turn into Python — a timestamp in milliseconds (year 50000), a field
type it does not know, a table nested deeper than the interpreter's recursion limit — raises in
the middle of the connection's read loop: pika drops the connection, the broker redelivers the
same message first, and nothing behind it is ever consumed.

`install()` puts a subclass of `BasicProperties` in pika's registry of property classes (the one
place where frames are turned into properties). It decodes as pika does; when that fails it keeps
the raw bytes and the error instead of raising, and decodes the other properties without the
headers table (message id, correlation id, delivery mode…), so the consumer receives the message
and can dead-letter it (reason `undecodable`) with its body untouched.

Installed by each worker of `cqrs_consume` when it starts (`ReliableRabbitMQTransport.consume`),
never on import: a process that only imports the replica (a Celery worker) keeps pika as it is.
"""

from __future__ import annotations

import struct

from pika import frame, spec

from django_tools.pika_support import UnsupportedPika, require


class TolerantBasicProperties(spec.BasicProperties):
    #: Why pika could not decode the properties; None when it could.
    undecodable: str | None = None
    #: The encoded properties as they came off the wire, when they could not be decoded.
    raw: bytes | None = None

    def decode(self, encoded, offset=0):
        try:
            return super().decode(encoded, offset)
        except (Exception, RecursionError) as exc:
            self.__dict__.update(spec.BasicProperties().__dict__)  # drop what was half decoded
            self.undecodable = f"{type(exc).__name__}: {exc}"[:500]
            self.raw = bytes(encoded[offset:])
        try:
            super().decode(_without_headers(self.raw))
        except (Exception, RecursionError):
            self.__dict__.update(spec.BasicProperties().__dict__)
        self.headers = None
        return self


def _without_headers(encoded: bytes) -> bytes:
    """The encoded properties with the headers table cut out (and its flag cleared). Only the
    two short strings before it (content type and encoding) need reading to find it."""
    props = spec.BasicProperties
    (flags,) = struct.unpack_from(">H", encoded, 0)
    if flags & 1 or not flags & props.FLAG_HEADERS:
        raise ValueError("no single flag word with a headers table")
    offset = 2
    for flag in (props.FLAG_CONTENT_TYPE, props.FLAG_CONTENT_ENCODING):
        if flags & flag:
            offset += 1 + encoded[offset]
    (length,) = struct.unpack_from(">I", encoded, offset)
    rest = encoded[offset + 4 + length :]
    flags &= ~props.FLAG_HEADERS
    return struct.pack(">H", flags) + encoded[2:offset] + rest


def supported() -> None:
    """Raise `UnsupportedPika` unless this pika is one the patch was written for: in the
    supported range, turning content headers into properties through `spec.props`, with the
    flags `_without_headers` reads."""
    props = spec.BasicProperties
    require(
        "amqp_properties",
        (spec, "props"),
        (props, "INDEX"),
        (props, "decode"),
        (props, "FLAG_HEADERS"),
        (props, "FLAG_CONTENT_TYPE"),
        (props, "FLAG_CONTENT_ENCODING"),
        (frame, "decode_frame"),
    )
    if spec.props.get(props.INDEX) not in (props, TolerantBasicProperties):
        raise UnsupportedPika("amqp_properties: spec.props no longer maps Basic to BasicProperties")
    if "props" not in frame.decode_frame.__code__.co_names:
        raise UnsupportedPika("amqp_properties: pika's frames no longer decode through spec.props")


def installed() -> bool:
    return spec.props.get(spec.BasicProperties.INDEX) is TolerantBasicProperties


def install() -> None:
    """Decode every `Basic` content header of this process with `TolerantBasicProperties`.
    Idempotent; raises `UnsupportedPika` on a pika the patch was not written for."""
    if installed():
        return
    supported()
    spec.props[spec.BasicProperties.INDEX] = TolerantBasicProperties


def undecodable(properties: spec.BasicProperties | None) -> str | None:
    """Why these properties could not be decoded, or None."""
    return getattr(properties, "undecodable", None)
