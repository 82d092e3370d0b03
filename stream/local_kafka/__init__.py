"""A single-node KRaft Kafka broker for development, tests and the demo.

The broker's jars come from Maven Central through the pom beside this file (the Kafka
version is pinned there); they are copied once into ``<home>/jars``. ``LocalKafka``
formats a data directory, starts ``kafka.Kafka`` as a detached process in a session of
its own (a terminal's Ctrl-C does not reach it: whoever started it stops it, after its
clients), waits until a real metadata request succeeds and a group coordinator answers
for every offsets partition (so consumer groups join without errors), and stops it with
SIGTERM. Everything lives under ``home`` (by default ``var/kafka`` in the project).
"""

from stream.local_kafka.launcher import KAFKA_VERSION, LocalKafka, find_free_port

__all__ = ["KAFKA_VERSION", "LocalKafka", "find_free_port"]
