"""The HTTP layer: handlers, streaming multipart, routing, status API. It talks to the
storage and bus only through core.ingest and the interfaces, never to boto3 or Kafka."""
