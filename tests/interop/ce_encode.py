"""Encodes CloudEvents as Kafka records with the official CloudEvents SDK.

Reads JSON lines {"mode": "binary"|"structured", "attributes": {...}, "data": JSON} or with
"data_hex" (bytes data) from stdin, and writes one JSON line per event:
{"headers": [[name, hex]], "key": hex|null, "value": hex}.
"""
import json
import sys

from cloudevents.core.bindings.kafka import to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

for line in sys.stdin:
    spec = json.loads(line)
    data = bytes.fromhex(spec["data_hex"]) if "data_hex" in spec else spec.get("data")
    event = CloudEvent(attributes=spec["attributes"], data=data)
    message = (to_structured if spec["mode"] == "structured" else to_binary)(event, JSONFormat())
    key = message.key.encode() if isinstance(message.key, str) else message.key
    print(json.dumps({
        "headers": [[k, (v.encode() if isinstance(v, str) else v).hex()] for k, v in message.headers.items()],
        "key": key.hex() if key is not None else None,
        "value": message.value.hex(),
    }), flush=True)
