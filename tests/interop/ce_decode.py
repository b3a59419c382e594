"""Decodes Kafka records with the official CloudEvents SDK (cloudevents.core.bindings.kafka).

Reads JSON lines {"headers": [[name, hex]], "key": hex|null, "value": hex} from stdin and
writes one JSON line per record: {"mode", "attributes", "data"} or {"error"}.
"""
import json
import sys

from cloudevents.core.bindings.kafka import KafkaMessage, from_binary, from_structured
from cloudevents.core.formats.json import JSONFormat

for line in sys.stdin:
    record = json.loads(line)
    headers = {name: bytes.fromhex(value) for name, value in record["headers"]}
    key = bytes.fromhex(record["key"]) if record["key"] is not None else None
    message = KafkaMessage(headers=headers, key=key, value=bytes.fromhex(record["value"]))
    content_type = headers.get("content-type", b"").decode()
    structured = content_type.startswith("application/cloudevents")
    try:
        event = (from_structured if structured else from_binary)(message, JSONFormat())
        attributes = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in event.get_attributes().items()}
        out = {"mode": "structured" if structured else "binary", "attributes": attributes, "data": event.get_data()}
    except Exception as e:  # reported to the Rust test, which fails on it
        out = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out, default=str), flush=True)
