"""Publishes what non-eventkit services publish, with aiokafka:
a CloudEvent made by the official SDK in binary and in structured mode, and an ERP-style
legacy envelope. Usage: produce.py BOOTSTRAP SDK_TOPIC LEGACY_TOPIC. Prints what it sent.
"""
import asyncio
import json
import sys
from datetime import datetime, timezone

from aiokafka import AIOKafkaProducer
from cloudevents.core.bindings.kafka import to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent


def sdk_event(n):
    return CloudEvent(
        attributes={
            "type": "com.example.sdk.order",
            "source": "/python/orders",
            "id": f"sdk-{n}",
            "time": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
            "subject": f"order-{n}",
            "datacontenttype": "application/json",
            "correlationid": f"corr-{n}",
            "tenantid": "t-py",
            "priority": "high",
        },
        data={"order_id": f"py-{n}", "total": 12.5},
    )


async def main(bootstrap, sdk_topic, legacy_topic):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for n, convert in [(1, to_binary), (2, to_structured)]:
            message = convert(sdk_event(n), JSONFormat(), key_mapper=lambda e: e.get_attributes()["subject"])
            headers = list(message.headers.items())
            key = message.key.encode() if isinstance(message.key, str) else message.key
            await producer.send_and_wait(sdk_topic, message.value, key=key, headers=headers)
        legacy = {
            "metadata": {
                "event_id": "evt-123456",
                "event_type": "inventory.low_stock",
                "event_version": "1.0",
                "timestamp": "2024-01-15T10:00:00Z",
                "source_service": "inventory-service",
                "tenant_id": "tenant-1",
                "correlation_id": "corr-789",
                "priority": "high",
            },
            "payload": {"product_id": "PRD-123", "product_sku": "LAP-001", "current_stock": 3, "reorder_point": 10},
        }
        await producer.send_and_wait(legacy_topic, json.dumps(legacy).encode(), key=b"PRD-123")
    finally:
        await producer.stop()
    print("sent 3 records")


asyncio.run(main(*sys.argv[1:4]))
