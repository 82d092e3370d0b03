"""`make check-k8s`: the rendered overlays are valid Kubernetes, and they agree with the code.

    python k8s/check.py [--crd-dir DIR] [--kubernetes-version 1.31] build/k8s/dev.yaml ...
    python k8s/check.py --sync

Each file is one overlay as `kustomize build k8s/overlays/<name>` writes it; its stem names
the overlay, which selects a `Policy` below. Everything runs offline:

- Core kinds are validated with kubernetes-validate's bundled schemas for one Kubernetes
  version, in strict mode (an unknown field is an error).
- The operators' kinds (Strimzi, KEDA, Prometheus Operator) are validated with jsonschema
  against the openAPIV3Schema of their CRDs in the CRD directory (--crd-dir, else $CRD_DIR,
  else ../shared/crds next to the repository), for the version the manifest names. Made
  strict the way `kubectl apply --validate=strict` is: unknown fields are rejected except
  under x-kubernetes-preserve-unknown-fields; x-kubernetes-int-or-string accepts either;
  metadata is checked loosely; CEL rules (x-kubernetes-validations) are not evaluated. A kind
  whose CRD is absent is listed as not validated, which alone does not fail the check.
- Then the project's rules, read from the code rather than restated: the KafkaTopics are
  `topic_plan()`'s (and the fans app's `app_topics()`), KEDA never asks for more replicas
  than partitions, the PrometheusRule is grafana/alerts/idolstream.rules.yml, the containers
  run `idolstream serve ...` with settings that load and probes on the ports those settings
  open, the Ingress exposes only the page and the websocket, a tier's grace period outlasts
  its batch (the draw tier's: its entry's picture deadline), its models (and guards) are
  entries of the registry it mounts, the draw tier's pictures are judged by an image guard,
  the fans app runs alone and the tiers read the profiles it publishes, and so on.

`--sync` rewrites the copies kept under k8s/base (kustomize reads nothing outside it) from
the project's files: config/persona.json, config/models.json and the alert rules.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from consumers.fans_app import app_topics
from stream.cli import build_parser
from stream.settings import (
    CommonSettings, ConsoleSettings, DeepTierSettings, DrawTierSettings, FansSettings, FastTierSettings,
    GatewaySettings,
)
from stream.tokens import MIN_SECRET_BYTES
from stream.topics import TopicNames, TopicSpec, topic_plan

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "k8s" / "base"
RULES_FILE = ROOT / "grafana" / "alerts" / "idolstream.rules.yml"
# config/<path> -> k8s/base/config/<name>, carried by a ConfigMap under the key <name>.
CONFIG_COPIES = {"persona.json": "persona.json", "models.json": "models.json",
                 "moderation/words.json": "moderation-words.json"}
DEFAULT_CRD_DIR = "../shared/crds"  # relative to the repository root
CRD_GROUPS = ("kafka.strimzi.io", "keda.sh", "monitoring.coreos.com")


@dataclass(frozen=True)
class Policy:
    """What an overlay promises beyond validity."""

    gpu: bool  # the tiers run on GPU nodes (dev runs the tiny checkpoints on CPU)
    ha: bool  # survives losing a node: replicated Kafka, 2+ pods behind every PDB
    pinned_image: bool  # an image tag that names one build
    external_secrets: frozenset[str] = frozenset()  # created by hand, not rendered


POLICIES = {
    "dev": Policy(gpu=False, ha=False, pinned_image=False),
    "prod": Policy(gpu=True, ha=True, pinned_image=True,
                   external_secrets=frozenset({"idolstream-overlay", "idolstream-console"})),
}


@dataclass(frozen=True)
class ServiceKind:
    """A service of `idolstream serve <name>` and the settings that shape its pod."""

    settings: type[CommonSettings]
    port_field: str  # the HTTP port serving /healthz, /readyz and /metrics
    host_field: str
    # One pod by design: the fans app's faust tables are sharded by partition, so a second
    # worker would split them and each pod's views would show half. It runs `replicas: 1` with
    # the Recreate strategy, and HA's two pods per budget do not apply: it is off the answer
    # path, and what it reads waits in Kafka while it moves to another node.
    single: bool = False


SERVICES = {
    "fast-tier": ServiceKind(FastTierSettings, "admin_port", "admin_host"),
    "deep-tier": ServiceKind(DeepTierSettings, "deep_admin_port", "admin_host"),
    "draw-tier": ServiceKind(DrawTierSettings, "draw_admin_port", "admin_host"),
    "gateway": ServiceKind(GatewaySettings, "port", "host"),
    "console": ServiceKind(ConsoleSettings, "console_port", "console_host"),
    "fans": ServiceKind(FansSettings, "fans_port", "fans_host", single=True),
}
TIERS = ("fast-tier", "deep-tier", "draw-tier")
# The tiers that remember fans (their prompts carry the fans app's profiles); the draw tier does not.
REMEMBERING_TIERS = ("fast-tier", "deep-tier")
# The settings naming a guard model (a registry entry of tier guard), where a service has them.
GUARD_FIELDS = ("text_guard_model_id", "image_guard_model_id", "draw_image_guard_model_id")
# Topic configs an overlay may add to the code's (replication is the cluster's business).
REPLICATION_CONFIGS = {"min.insync.replicas"}
# Paths the gateway serves that must stay inside the cluster.
PRIVATE_PATHS = ("/metrics", "/healthz", "/readyz")


def consumption(service: str, settings) -> tuple[str, tuple[str, ...]] | None:
    """The consumer group and topics a tier reads (as wired in consumers/services.py)."""
    if service == "fast-tier":
        return settings.group_id, settings.topics.submissions
    if service == "deep-tier":
        return settings.deep_group_id, (settings.topics.items_deep,)
    if service == "draw-tier":
        return settings.draw_group_id, (settings.topics.items_draw,)
    return None


# -- rendered objects --------------------------------------------------------------------


def load_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def name_of(doc: dict) -> str:
    return doc.get("metadata", {}).get("name", "?")


def ref(doc: dict) -> str:
    return f"{doc.get('kind', '?')}/{name_of(doc)}"


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc.get("kind") == kind]


def named(docs: list[dict], kind: str, name: str) -> dict | None:
    return next((doc for doc in of_kind(docs, kind) if name_of(doc) == name), None)


def selects(selector: dict | None, labels: dict | None) -> bool:
    """A Service's selector map, or a LabelSelector's matchLabels (all this project uses).

    An empty selector selects nothing here: in these manifests it would be a mistake.
    """
    wanted = (selector or {}).get("matchLabels", selector or {})
    return bool(wanted) and all((labels or {}).get(k) == v for k, v in wanted.items())


def pod_labels(deployment: dict) -> dict:
    return deployment.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})


def pod_spec(deployment: dict) -> dict:
    return deployment.get("spec", {}).get("template", {}).get("spec", {})


def quantity(value) -> float:
    """A Kubernetes quantity in base units (bytes, cores)."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    text = str(value)
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


# -- schemas -----------------------------------------------------------------------------


def strict_crd_schema(node: dict, top: bool = True) -> dict:
    """An openAPIV3Schema as a JSON Schema that rejects unknown fields, like strict field validation."""
    node = dict(node)
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("anyOf", None)
        node["type"] = ["integer", "string"]
    if "pattern" in node:
        node["pattern"] = python_pattern(node["pattern"])
    for key in ("properties", "patternProperties"):
        if key in node:
            node[key] = {name: strict_crd_schema(sub, False) for name, sub in node[key].items()}
    if isinstance(node.get("items"), dict):
        node["items"] = strict_crd_schema(node["items"], False)
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = strict_crd_schema(node["additionalProperties"], False)
    for key in ("oneOf", "anyOf", "allOf"):
        if key in node:  # constraints over the structure, not structure: never closed here
            node[key] = [strict_crd_schema(sub, False) for sub in node[key]]
    open_ended = node.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in node
    if node.get("type") == "object" and "properties" in node and not open_ended:
        node["additionalProperties"] = False
    if top:  # the API server validates metadata itself; here a name and string maps suffice
        strings = {"type": "object", "additionalProperties": {"type": "string"}}
        node.setdefault("properties", {})["metadata"] = {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                           "labels": strings, "annotations": strings},
        }
    return node


def python_pattern(pattern: str) -> str:
    """Go's RE2 allows an inline flag after `^`; Python 3.11+ wants it first."""
    if "(?i)" in pattern and not pattern.startswith("(?i)"):
        return "(?i)" + pattern.replace("(?i)", "")
    return pattern


@dataclass
class CrdSchemas:
    """Validators for the CRD kinds, by (group, version, kind); empty when the directory is absent."""

    directory: str
    validators: dict[tuple[str, str, str], jsonschema.Validator] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: str) -> CrdSchemas:
        crds = cls(directory)
        path = Path(directory) if Path(directory).is_absolute() else ROOT / directory
        for file in sorted(path.glob("*.yaml")) if path.is_dir() else []:
            for doc in yaml.safe_load_all(file.read_text()):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
                for version in doc["spec"]["versions"]:
                    schema = version.get("schema", {}).get("openAPIV3Schema")
                    if version.get("served") and schema:
                        crds.validators[(group, version["name"], kind)] = jsonschema.Draft4Validator(
                            strict_crd_schema(schema)
                        )
        return crds

    def versions(self, group: str, kind: str) -> list[str]:
        return sorted(v for g, v, k in self.validators if (g, k) == (group, kind))


@dataclass
class Report:
    overlay: str
    objects: int = 0
    problems: list[str] = field(default_factory=list)
    core: Counter = field(default_factory=Counter)  # kind -> objects validated by kubernetes-validate
    custom: Counter = field(default_factory=Counter)  # kind -> objects validated against a CRD
    unvalidated: Counter = field(default_factory=Counter)  # kind -> objects whose CRD is absent
    facts: list[str] = field(default_factory=list)  # what the project rules covered


def validate_schemas(docs: list[dict], crds: CrdSchemas, k8s_version: str, report: Report) -> None:
    for doc in docs:
        api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
        group, _, version = api_version.rpartition("/")
        if group in CRD_GROUPS:
            validator = crds.validators.get((group, version, kind))
            if validator is None:
                served = crds.versions(group, kind)
                if served:
                    report.problems.append(f"{ref(doc)}: no CRD serves {api_version} (served: {', '.join(served)})")
                else:
                    report.unvalidated[kind] += 1
                continue
            errors = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
            for error in errors[:5]:
                report.problems.append(f"{ref(doc)}: {json_path(error)}: {error.message}")
            if not errors:
                report.custom[kind] += 1
            continue
        try:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            report.problems.append(f"{ref(doc)}: {json_path(error)}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            report.problems.append(f"{ref(doc)}: {error.message}")
        else:
            report.core[kind] += 1


def json_path(error: jsonschema.ValidationError) -> str:
    return "/" + "/".join(str(part) for part in error.absolute_path)


# -- the services' settings, as their pods will load them -----------------------------------


def isolated(cls: type[BaseSettings]) -> type[BaseSettings]:
    """The settings class reading only what it is given, not this process's environment."""

    class FromManifest(cls):
        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, **_):
            return (init_settings,)

    FromManifest.__name__ = cls.__name__
    return FromManifest


@dataclass
class ServedContainer:
    """A container that runs `idolstream serve <service>`, with its settings."""

    deployment: dict
    container: dict
    service: str
    settings: CommonSettings
    env: dict[str, dict]  # name -> the env entry (value or valueFrom)

    @property
    def where(self) -> str:
        return f"{ref(self.deployment)} container {self.container.get('name')}"


def served_containers(docs: list[dict], report: Report) -> list[ServedContainer]:
    found = []
    for deployment in of_kind(docs, "Deployment"):
        for container in pod_spec(deployment).get("containers", []):
            where = f"{ref(deployment)} container {container.get('name')}"
            served = serve_command(container, where, report)
            if served is None:
                continue
            if served not in SERVICES:
                report.problems.append(f"{where}: `serve {served}` is unknown here: add it to SERVICES in k8s/check.py")
                continue
            env = {item["name"]: item for item in container.get("env", [])}
            settings = settings_from_env(SERVICES[served].settings, env, where, report)
            if settings is not None:
                found.append(ServedContainer(deployment, container, served, settings, env))
    return found


def serve_command(container: dict, where: str, report: Report) -> str | None:
    """The service a container runs, checked with the CLI's own parser."""
    argv = list(container.get("command", [])) + list(container.get("args", []))
    if argv[:1] != ["idolstream"]:
        report.problems.append(f"{where}: runs {argv!r}, not the project's CLI (idolstream serve ...)")
        return None
    try:
        with contextlib.redirect_stderr(io.StringIO()) as stderr:
            args = build_parser().parse_args(argv[1:])
    except SystemExit:
        refusal = (stderr.getvalue().strip().splitlines() or ["?"])[-1]
        report.problems.append(f"{where}: `{' '.join(argv)}` is refused by the CLI: {refusal}")
        return None
    if args.command != "serve":
        report.problems.append(f"{where}: runs `idolstream {args.command}`, not `idolstream serve ...`")
        return None
    return args.service


def settings_from_env(cls, env: dict[str, dict], where: str, report: Report) -> CommonSettings | None:
    """Load `cls` from the container's literal env; unknown IDOLSTREAM_* names are typos."""
    values = {}
    for name, item in env.items():
        if name == "KAFKA_BOOTSTRAP":
            key = "kafka_bootstrap"
        elif name.startswith("IDOLSTREAM_"):
            key = name.removeprefix("IDOLSTREAM_").lower()
            if key not in cls.model_fields:
                report.problems.append(f"{where}: {name} is not a setting of {cls.__name__}; it would be ignored")
                continue
        else:
            continue
        if "value" in item:
            values[key] = item["value"]
    try:
        return isolated(cls)(**values)
    except ValidationError as error:
        report.problems.append(f"{where}: {cls.__name__} refuses the env: {error}")
        return None


PLANNED_BY = {"topic_plan": "topic_plan()", "fans": "the fans app's app_topics()"}


def expected_topics(served: list[ServedContainer], report: Report) -> dict[str, list[TopicSpec]]:
    """topic_plan() for the prefix and partitions the services run with (all must agree), and the
    fans app's own topics (its tables' changelogs, its ticks) when it is deployed; by who plans them."""
    shapes = {(c.settings.topic_prefix, c.settings.topic_partitions) for c in served}
    if len(shapes) > 1:
        report.problems.append(f"services disagree on topic prefix/partitions: {sorted(shapes)}")
    prefix, partitions = min(shapes) if shapes else (CommonSettings.model_fields["topic_prefix"].default,
                                                     CommonSettings.model_fields["topic_partitions"].default)
    plans = {"topic_plan": topic_plan(TopicNames(prefix), partitions)}
    fans = [spec for c in served if c.service == "fans" for spec in app_topics(c.settings)]
    if fans:
        plans["fans"] = list({spec.name: spec for spec in fans}.values())
    return plans


# -- project rules -----------------------------------------------------------------------


def check_topics(docs: list[dict], plans: dict[str, list[TopicSpec]], report: Report) -> None:
    """The KafkaTopics are the code's: names, partitions and configs (plus replication)."""
    rendered = {doc.get("spec", {}).get("topicName") or name_of(doc): doc for doc in of_kind(docs, "KafkaTopic")}
    wanted = {spec.name: (spec, PLANNED_BY[plan]) for plan, specs in plans.items() for spec in specs}
    for name in sorted(wanted.keys() - rendered.keys()):
        report.problems.append(f"topic {name} of {wanted[name][1]} has no KafkaTopic")
    for name in sorted(rendered.keys() - wanted.keys()):
        report.problems.append(
            f"{ref(rendered[name])}: topic {name} is not in {' nor '.join(PLANNED_BY[plan] for plan in plans)}"
        )
    for name in sorted(wanted.keys() & rendered.keys()):
        (spec, planner), doc = wanted[name], rendered[name]
        body = doc.get("spec", {})
        if body.get("partitions") != spec.partitions:
            report.problems.append(
                f"{ref(doc)}: {body.get('partitions')} partitions, {planner} says {spec.partitions}"
            )
        config = {k: str(v) for k, v in (body.get("config") or {}).items()}
        for key, value in spec.configs.items():
            if config.get(key) != value:
                report.problems.append(f"{ref(doc)}: {key}={config.get(key)}, {planner} says {value}")
        for key in sorted(config.keys() - spec.configs.keys() - REPLICATION_CONFIGS):
            report.problems.append(f"{ref(doc)}: config {key} is not in {planner} (add it in the code)")
    report.facts.append(" + ".join(f"{len(specs)} topics = {PLANNED_BY[plan]}" for plan, specs in plans.items()))


def check_topic_replicas(docs: list[dict], served: list[ServedContainer], report: Report) -> None:
    """A service that finds a topic missing creates it with its topic_replicas: the KafkaTopics' count."""
    counts = {doc.get("spec", {}).get("replicas") for doc in of_kind(docs, "KafkaTopic")}
    for c in served:
        if counts and c.settings.topic_replicas not in counts:
            report.problems.append(
                f"{ref(c.deployment)}: IDOLSTREAM_TOPIC_REPLICAS={c.settings.topic_replicas}, "
                f"the KafkaTopics have {sorted(counts, key=str)} replicas"
            )


def check_kafka(docs: list[dict], policy: Policy, report: Report) -> None:
    """One KRaft cluster with node pools, replication that its brokers can hold."""
    clusters = of_kind(docs, "Kafka")
    if len(clusters) != 1:
        report.problems.append(f"expected one Kafka, found {len(clusters)}")
        return
    kafka = clusters[0]
    cluster = name_of(kafka)
    annotations = kafka.get("metadata", {}).get("annotations", {})
    for key in ("strimzi.io/kraft", "strimzi.io/node-pools"):
        if annotations.get(key) != "enabled":
            report.problems.append(f"{ref(kafka)}: annotation {key}: enabled is missing")
    pools = of_kind(docs, "KafkaNodePool")
    for doc in pools + of_kind(docs, "KafkaTopic"):
        if doc.get("metadata", {}).get("labels", {}).get("strimzi.io/cluster") != cluster:
            report.problems.append(f"{ref(doc)}: label strimzi.io/cluster is not {cluster}")
    count = Counter()
    for pool in pools:
        spec = pool.get("spec", {})
        for role in spec.get("roles", []):
            count[role] += spec.get("replicas", 0)
        storage = spec.get("storage", {})
        volumes = storage.get("volumes", []) if storage.get("type") == "jbod" else [storage]
        if policy.ha and any(volume.get("type") == "ephemeral" for volume in volumes):
            report.problems.append(f"{ref(pool)}: ephemeral storage loses the log with the pod")
    brokers, controllers = count["broker"], count["controller"]
    if not brokers or not controllers:
        report.problems.append(f"{ref(kafka)}: node pools give {brokers} brokers and {controllers} controllers")
    if policy.ha and (brokers < 3 or controllers < 3 or controllers % 2 == 0):
        report.problems.append(
            f"{ref(kafka)}: {controllers} controllers and {brokers} brokers; HA needs 3+ (an odd number) and 3+"
        )
    config = kafka.get("spec", {}).get("kafka", {}).get("config", {})
    for key in ("default.replication.factor", "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor"):
        if key in config and int(config[key]) > brokers:
            report.problems.append(f"{ref(kafka)}: {key}={config[key]} but only {brokers} brokers")
    for topic in of_kind(docs, "KafkaTopic"):
        spec = topic.get("spec", {})
        replicas = spec.get("replicas", int(config.get("default.replication.factor", 1)))
        in_sync = int((spec.get("config") or {}).get("min.insync.replicas", config.get("min.insync.replicas", 1)))
        if replicas > brokers:
            report.problems.append(f"{ref(topic)}: {replicas} replicas but only {brokers} brokers")
        if in_sync > replicas:  # acks=all producers (stream/kafka_io.py) could never write
            report.problems.append(f"{ref(topic)}: min.insync.replicas={in_sync} exceeds its {replicas} replicas")
        if policy.ha and (replicas < 3 or not 2 <= in_sync < replicas):
            report.problems.append(f"{ref(topic)}: {replicas} replicas, {in_sync} in sync; HA needs 3 and 2")
    report.facts.append(f"KRaft {controllers} controller(s) + {brokers} broker(s)")


def kafka_bootstraps(docs: list[dict], namespace: str | None = None) -> set[str]:
    """What clients may use: <cluster>-kafka-bootstrap:<plain internal port> from the cluster's
    namespace; with `namespace`, only the qualified name that works from another namespace
    (KEDA's scaler runs in the keda-operator pod, where the short name resolves nothing)."""
    names = set()
    for kafka in of_kind(docs, "Kafka"):
        host = f"{name_of(kafka)}-kafka-bootstrap"
        for listener in kafka.get("spec", {}).get("kafka", {}).get("listeners", []):
            if listener.get("type") != "internal" or listener.get("tls") is not False:
                continue
            port = listener["port"]
            if namespace is None:
                names.add(f"{host}:{port}")
            names |= {f"{host}.{namespace}.svc:{port}", f"{host}.{namespace}.svc.cluster.local:{port}"}
    return names


def check_scaling(docs: list[dict], served: list[ServedContainer], plan: list[TopicSpec], report: Report) -> None:
    """One ScaledObject per tier, on its group's lag, capped at the partitions it consumes."""
    partitions = {spec.name: spec.partitions for spec in plan}
    scaled = {}
    for scaler in of_kind(docs, "ScaledObject"):
        spec = scaler.get("spec", {})
        bootstraps = kafka_bootstraps(docs, scaler.get("metadata", {}).get("namespace") or "default")
        target = spec.get("scaleTargetRef", {}).get("name")
        scaled[target] = scaler
        tier = next((c for c in served if name_of(c.deployment) == target), None)
        if tier is None or consumption(tier.service, tier.settings) is None:
            report.problems.append(f"{ref(scaler)}: scales {target}, which is not a tier's Deployment")
            continue
        group, topics = consumption(tier.service, tier.settings)
        triggers = spec.get("triggers", [])
        seen = set()
        for trigger in triggers:
            meta = trigger.get("metadata", {})
            if trigger.get("type") != "kafka":
                report.problems.append(f"{ref(scaler)}: trigger {trigger.get('type')} is not Kafka lag")
                continue
            if meta.get("consumerGroup") != group:
                report.problems.append(
                    f"{ref(scaler)}: consumerGroup {meta.get('consumerGroup')}, {tier.service} uses {group}"
                )
            if meta.get("bootstrapServers") not in bootstraps:
                report.problems.append(
                    f"{ref(scaler)}: bootstrapServers {meta.get('bootstrapServers')} is not the cluster's "
                    f"namespace-qualified address (one of {sorted(bootstraps)}): "
                    "KEDA resolves it from its own namespace"
                )
            if "lagThreshold" not in meta:
                report.problems.append(f"{ref(scaler)}: a kafka trigger without lagThreshold")
            seen.add(meta.get("topic"))
        if seen != set(topics):
            report.problems.append(
                f"{ref(scaler)}: triggers on {sorted(map(str, seen))}, {tier.service} consumes {list(topics)}"
            )
        cap = min((partitions.get(t, 0) for t in topics), default=0)
        maximum = spec.get("maxReplicaCount", 100)  # KEDA's default
        if maximum > cap:
            report.problems.append(
                f"{ref(scaler)}: maxReplicaCount {maximum} exceeds the {cap} partitions of {', '.join(topics)}"
                " (replicas past the partition count sit idle)"
            )
        if spec.get("minReplicaCount", 0) > maximum:  # KEDA's CRD says so in CEL, which is not evaluated here
            report.problems.append(f"{ref(scaler)}: minReplicaCount exceeds maxReplicaCount {maximum}")
        if spec.get("minReplicaCount", 0) < 1:
            report.problems.append(
                f"{ref(scaler)}: minReplicaCount below 1 scales a tier to zero (a model takes minutes to load)"
            )
        behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior", {})
        for direction in ("scaleUp", "scaleDown"):
            if "stabilizationWindowSeconds" not in behavior.get(direction, {}):
                report.problems.append(f"{ref(scaler)}: no {direction} stabilizationWindowSeconds")
    for tier in served:
        if tier.service not in TIERS:
            continue
        if name_of(tier.deployment) not in scaled:
            report.problems.append(f"{ref(tier.deployment)}: no ScaledObject scales it on lag")
        elif "replicas" in tier.deployment.get("spec", {}):
            report.problems.append(
                f"{ref(tier.deployment)}: sets replicas, which KEDA owns (every apply would reset it)"
            )
    report.facts.append(f"{len(scaled)} ScaledObjects capped at partitions")


def check_alert_rules(docs: list[dict], rules_file: Path, report: Report) -> None:
    """The PrometheusRule carries exactly the groups of the project's rules file."""
    rules = of_kind(docs, "PrometheusRule")
    groups = yaml.safe_load(rules_file.read_text())["groups"]
    shown = rules_file.relative_to(ROOT) if rules_file.is_relative_to(ROOT) else rules_file
    if len(rules) != 1:
        report.problems.append(f"expected one PrometheusRule, found {len(rules)}")
        return
    if rules[0].get("spec", {}).get("groups") != groups:
        report.problems.append(f"{ref(rules[0])}: spec.groups differ from {shown} (run `python k8s/check.py --sync`)")
    count = sum(len(group.get("rules", [])) for group in groups)
    report.facts.append(f"{count} alert rules = {shown}")


def check_config_copies(docs: list[dict], report: Report) -> None:
    """The persona and registry ConfigMaps hold the project's own files."""
    for source, filename in CONFIG_COPIES.items():
        maps = [doc for doc in of_kind(docs, "ConfigMap") if filename in (doc.get("data") or {})]
        if not maps:
            report.problems.append(f"no ConfigMap carries {filename}")
        project = json.loads((ROOT / "config" / source).read_text())
        for doc in maps:
            if json.loads(doc["data"][filename]) != project:
                report.problems.append(
                    f"{ref(doc)}: {filename} differs from config/{source} (run `python k8s/check.py --sync`)"
                )


def container_port(container: dict, port) -> int | None:
    if isinstance(port, int):
        return port
    return next((p["containerPort"] for p in container.get("ports", []) if p.get("name") == port), None)


def check_workloads(docs: list[dict], served: list[ServedContainer], policy: Policy, report: Report) -> None:
    """Every container: image, resources, probes on the port its settings open; tiers: GPU, grace, config."""
    for deployment in of_kind(docs, "Deployment"):
        for container in pod_spec(deployment).get("containers", []):
            where = f"{ref(deployment)} container {container.get('name')}"
            check_image(container.get("image", ""), policy, where, report)
            resources = container.get("resources", {})
            for part, names in (("requests", ("cpu", "memory")), ("limits", ("memory",))):
                missing = [n for n in names if n not in resources.get(part, {})]
                if missing:
                    report.problems.append(f"{where}: no {part} for {', '.join(missing)}")
            check_gpu(deployment, container, where, report)
    deadline_s = max((c.settings.deep_deadline_ms for c in served if c.service == "fast-tier"),
                     default=FastTierSettings.model_fields["deep_deadline_ms"].default) / 1000
    for served_container in served:
        check_served(docs, served_container, policy, deadline_s, report)
    report.facts.append(f"{len(served)} services run `idolstream serve` with valid settings and probes")



def check_alone(c: ServedContainer, report: Report) -> None:
    """A service that runs one replica by design: exactly one, and never two during a rollout."""
    spec = c.deployment.get("spec", {})
    if spec.get("replicas", 1) != 1:
        report.problems.append(
            f"{ref(c.deployment)}: {spec.get('replicas')} replicas; the {c.service} app runs one (its faust tables "
            "are sharded by partition: more workers split them, and each pod's views would show a part)"
        )
    if spec.get("strategy", {}).get("type") != "Recreate":
        report.problems.append(
            f"{ref(c.deployment)}: strategy {spec.get('strategy', {}).get('type', 'RollingUpdate')}; a rollout "
            "would run two workers at once (use Recreate)"
        )


def check_fans(served: list[ServedContainer], report: Report) -> None:
    """The tiers remember fans exactly when a fans app publishes their profiles, and the fans app
    checks operator tokens with the console's secret."""
    fans = [c for c in served if c.service == "fans"]
    for tier in (c for c in served if c.service in REMEMBERING_TIERS):
        if tier.settings.fan_memory and not fans:
            report.problems.append(
                f"{tier.where}: IDOLSTREAM_FAN_MEMORY is on but no fans app publishes profiles: every fan a first-timer"
            )
        elif fans and not tier.settings.fan_memory:
            report.problems.append(
                f"{tier.where}: fan memory off while a fans app publishes profiles (set IDOLSTREAM_FAN_MEMORY=true)"
            )
    secrets = {
        (c.service, str(secret_ref.get("name")), str(secret_ref.get("key"))) for c in served
        if (secret_ref := c.env.get("IDOLSTREAM_CONSOLE_SECRET", {}).get("valueFrom", {}).get("secretKeyRef"))
    }
    if len({(name, key) for _, name, key in secrets}) > 1:
        report.problems.append(
            "IDOLSTREAM_CONSOLE_SECRET comes from different Secrets "
            f"({', '.join(f'{s}: {n}/{k}' for s, n, k in sorted(secrets))}): one operator token would not open both"
        )
    if fans:
        report.facts.append("the fans app runs alone, the tiers read its profiles")


def check_image(image: str, policy: Policy, where: str, report: Report) -> None:
    """The overlay set a repository and tag (kustomize images:); a pinned one names a release."""
    if "@sha256:" in image:
        return
    last = image.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    if "/" not in image or not tag:
        report.problems.append(f"{where}: image {image} lacks a registry path or a tag (kustomize images: sets them)")
    elif policy.pinned_image and not re.search(r"\d", tag):  # latest, dev, main: moving names
        report.problems.append(f"{where}: image tag {tag} names no single build; pin a release")


def check_gpu(deployment: dict, container: dict, where: str, report: Report) -> None:
    """A container asking for a GPU lands on GPU nodes, with the request equal to the limit."""
    resources = container.get("resources", {})
    gpus = resources.get("limits", {}).get("nvidia.com/gpu")
    if gpus is None:
        if "nvidia.com/gpu" in resources.get("requests", {}):
            report.problems.append(f"{where}: nvidia.com/gpu requested without a limit (extended resources need both)")
        return
    requested = resources.get("requests", {}).get("nvidia.com/gpu", gpus)
    if str(requested) != str(gpus):
        report.problems.append(f"{where}: nvidia.com/gpu request {requested} differs from its limit {gpus}")
    spec = pod_spec(deployment)
    if not any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", [])):
        report.problems.append(f"{where}: asks for a GPU but does not tolerate the nvidia.com/gpu taint")
    affinity_keys = {
        expression.get("key")
        for term in spec.get("affinity", {}).get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", [])
        for expression in term.get("matchExpressions", [])
    }
    if not any(k.startswith("nvidia.com/gpu") for k in set(spec.get("nodeSelector", {})) | affinity_keys):
        report.problems.append(f"{where}: asks for a GPU but selects no GPU nodes (nodeSelector or affinity)")


def check_served(docs: list[dict], c: ServedContainer, policy: Policy, deadline_s: float, report: Report) -> None:
    kind, settings, container = SERVICES[c.service], c.settings, c.container
    port = getattr(settings, kind.port_field)
    env_name = f"IDOLSTREAM_{kind.port_field.upper()}"
    if not port:
        report.problems.append(f"{c.where}: {env_name} unset: no /healthz, /readyz or /metrics to probe and scrape")
    if getattr(settings, kind.host_field) != "0.0.0.0":
        report.problems.append(f"{c.where}: IDOLSTREAM_{kind.host_field.upper()} must be 0.0.0.0 to be probed")
    if port and port not in [p.get("containerPort") for p in container.get("ports", [])]:
        report.problems.append(f"{c.where}: {env_name}={port} is not a containerPort")
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        http = container.get(probe, {}).get("httpGet")
        if http is None:
            report.problems.append(f"{c.where}: no {probe} (HTTP GET {path})")
        elif http.get("path") != path or container_port(container, http.get("port")) != port:
            report.problems.append(
                f"{c.where}: {probe} is GET {http.get('path')} on port {http.get('port')}, "
                f"the service answers {path} on {env_name}={port}"
            )
    bootstraps = kafka_bootstraps(docs)
    if bootstraps and settings.kafka_bootstrap not in bootstraps:
        report.problems.append(
            f"{c.where}: KAFKA_BOOTSTRAP={settings.kafka_bootstrap}, the cluster is {', '.join(sorted(bootstraps))}"
        )
    check_secrets(docs, c, policy, report)
    if c.service == "console":
        check_mounted_files(docs, c, report)
        return
    if c.service == "fans":
        check_mounted_files(docs, c, report)
        check_alone(c, report)
        return
    if c.service == "gateway":
        memory = quantity(container.get("resources", {}).get("limits", {}).get("memory", "0"))
        if memory <= settings.history_max_mib * 2**20:
            report.problems.append(f"{c.where}: memory limit below the room histories' own budget "
                                   f"(IDOLSTREAM_HISTORY_MAX_MIB={settings.history_max_mib})")
        return
    asks_gpu = "nvidia.com/gpu" in container.get("resources", {}).get("limits", {})
    if policy.gpu and not asks_gpu:
        report.problems.append(f"{c.where}: a tier without a GPU (nvidia.com/gpu limit)")
    if not policy.gpu and asks_gpu:
        report.problems.append(f"{c.where}: asks for a GPU in an overlay meant to run without one")
    if c.service == "draw-tier" and settings.draw_image_guard_model_id is None:
        report.problems.append(
            f"{c.where}: IDOLSTREAM_DRAW_IMAGE_GUARD_MODEL_ID unset: her pictures would go on air unjudged"
        )
    registry = check_mounted_files(docs, c, report)["registry_path"]
    entries = {} if registry is None else {m.get("id"): m for m in json.loads(registry).get("models", [])}
    model_ids = {"fast-tier": "model_id", "deep-tier": "deep_model_id", "draw-tier": "draw_model_id"}
    wanted = [(getattr(settings, model_ids[c.service]), c.service.removesuffix("-tier"))]
    wanted += [(getattr(settings, name), "guard") for name in GUARD_FIELDS
               if getattr(settings, name, None) is not None]
    for model_id, tier in wanted:
        entry = entries.get(model_id)
        if registry is None:  # not mounted: check_mounted_files said so
            break
        if entry is None:
            report.problems.append(f"{c.where}: model {model_id} is not in the registry it mounts")
        elif entry.get("tier") != tier:
            report.problems.append(f"{c.where}: model {model_id} is a {entry.get('tier')}-tier model, not {tier}")
    # The batch in flight is finished before exit: bounded by the deep deadline (a fast batch is
    # settled by then, a deep one must meet it); a picture by its entry's deadline_ms.
    if c.service == "draw-tier":
        entry = entries.get(settings.draw_model_id) or {}
        bound_s = (entry.get("draw") or {}).get("deadline_ms", 0) / 1000
        why = f"the picture deadline of {settings.draw_model_id} {bound_s:g} s + commit interval"
        drain_s = bound_s + settings.commit_interval_s
    else:
        batch_wait_ms = settings.batch_max_wait_ms if c.service == "fast-tier" else settings.deep_batch_max_wait_ms
        why = f"deep deadline {deadline_s:g} s + batch wait + commit interval"
        drain_s = deadline_s + batch_wait_ms / 1000 + settings.commit_interval_s
    grace = pod_spec(c.deployment).get("terminationGracePeriodSeconds", 30)
    if grace <= drain_s:
        report.problems.append(
            f"{c.where}: terminationGracePeriodSeconds {grace} is not longer than a batch can take to finish "
            f"({drain_s:g} s: {why})"
        )


def check_mounted_files(docs: list[dict], c: ServedContainer, report: Report) -> dict[str, str | None]:
    """The persona, registry and word list a service reads (those of its settings) are files of
    mounted ConfigMaps; their contents."""
    files = {name: mounted_file(docs, c, getattr(c.settings, name))
             for name in ("persona_path", "registry_path", "moderation_words_path")
             if name in type(c.settings).model_fields}
    for name, content in files.items():
        if content is None:
            report.problems.append(
                f"{c.where}: IDOLSTREAM_{name.upper()}={getattr(c.settings, name)} is no file of a mounted ConfigMap"
            )
    return files


def mounted_file(docs: list[dict], c: ServedContainer, path: Path) -> str | None:
    """The content of `path` inside the container when it is a key of a mounted ConfigMap."""
    volumes = {v.get("name"): v for v in pod_spec(c.deployment).get("volumes", [])}
    for mount in c.container.get("volumeMounts", []):
        root = Path(mount.get("mountPath", "/"))
        if not path.is_absolute() or root not in path.parents or mount.get("subPath"):
            continue
        key = str(path.relative_to(root))
        volume = volumes.get(mount.get("name"), {})
        sources = [volume["configMap"]] if "configMap" in volume else [
            s["configMap"] for s in volume.get("projected", {}).get("sources", []) if "configMap" in s
        ]
        for source in sources:
            config_map = named(docs, "ConfigMap", source.get("name"))
            if config_map and key in (config_map.get("data") or {}):
                return config_map["data"][key]
    return None


def check_secrets(docs: list[dict], c: ServedContainer, policy: Policy, report: Report) -> None:
    """Secrets the env refers to are rendered (and usable) or known to be created by hand."""
    for name, item in c.env.items():
        secret_ref = item.get("valueFrom", {}).get("secretKeyRef")
        if not secret_ref:
            continue
        secret = named(docs, "Secret", secret_ref.get("name"))
        if secret is None:
            if secret_ref.get("name") not in policy.external_secrets:
                report.problems.append(
                    f"{c.where}: {name} refers to Secret {secret_ref.get('name')}, "
                    "which is neither rendered nor listed as created by hand (Policy.external_secrets)"
                )
            continue
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        data.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
        value = data.get(secret_ref.get("key"))
        if value is None:
            report.problems.append(f"{c.where}: {name}: Secret {name_of(secret)} has no key {secret_ref.get('key')}")
        elif name in ("IDOLSTREAM_OVERLAY_SECRET", "IDOLSTREAM_CONSOLE_SECRET") and len(value) < MIN_SECRET_BYTES:
            which = name.removeprefix("IDOLSTREAM_").removesuffix("_SECRET").lower()
            report.problems.append(
                f"{c.where}: the {which} secret is {len(value)} bytes; the {c.service} needs {MIN_SECRET_BYTES}+"
            )


def routes(path_type: str, rule_path: str, request_path: str) -> bool:
    """Whether an Ingress path may send `request_path` on (ImplementationSpecific read as a prefix)."""
    if path_type == "Exact":
        return request_path == rule_path
    return request_path.startswith(rule_path.rstrip("/"))


def check_ingress(docs: list[dict], served: list[ServedContainer], report: Report) -> None:
    """Only the page and the websocket are public, to the gateway, with websocket timeouts."""
    gateways = [c for c in served if c.service == "gateway"]
    gateway_services = {
        name_of(s) for s in of_kind(docs, "Service")
        if any(selects(s.get("spec", {}).get("selector"), pod_labels(c.deployment)) for c in gateways)
    }
    for ingress in of_kind(docs, "Ingress"):
        paths = [
            path for rule in ingress.get("spec", {}).get("rules", [])
            for path in rule.get("http", {}).get("paths", [])
        ]
        for path in paths:
            backend = path.get("backend", {}).get("service", {})
            if backend.get("name") not in gateway_services:
                report.problems.append(
                    f"{ref(ingress)}: routes {path.get('path')} to {backend.get('name')}, not the gateway"
                )
                continue
            wanted = backend.get("port", {})
            ports = named(docs, "Service", backend["name"]).get("spec", {}).get("ports", [])
            if not any(p.get("name") == wanted.get("name") or p.get("port") == wanted.get("number") for p in ports):
                report.problems.append(f"{ref(ingress)}: backend port {wanted} is not a port of {backend['name']}")
        for private in PRIVATE_PATHS:
            if any(routes(p.get("pathType"), p.get("path", ""), private) for p in paths):
                report.problems.append(f"{ref(ingress)}: exposes {private}")
        for public in ("/", "/ws/a-room"):
            if not any(routes(p.get("pathType"), p.get("path", ""), public) for p in paths):
                report.problems.append(f"{ref(ingress)}: does not route {public}")
        annotations = ingress.get("metadata", {}).get("annotations", {})
        heartbeat_s = max((c.settings.heartbeat_s for c in gateways), default=5.0)
        for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
            value = annotations.get(f"nginx.ingress.kubernetes.io/{timeout}")
            if value is None or float(value) <= 2 * heartbeat_s:
                report.problems.append(
                    f"{ref(ingress)}: {timeout} {value} would cut websockets before the gateway's heartbeats do "
                    f"(2 x {heartbeat_s:g} s)"
                )
    report.facts.append("Ingress routes only / and /ws/")


def check_monitors(docs: list[dict], served: list[ServedContainer], report: Report) -> None:
    """Every service's /metrics is scraped under job=<service name>, the jobs the alert rules use."""
    scraped: dict[str, str] = {}  # deployment name -> job
    for monitor in of_kind(docs, "ServiceMonitor"):
        spec = monitor.get("spec", {})
        services = [
            s for s in of_kind(docs, "Service") if selects(spec.get("selector"), s.get("metadata", {}).get("labels"))
        ]
        if not services:
            report.problems.append(f"{ref(monitor)}: selects no Service")
        for service in services:
            # Prometheus Operator: job = the Service's jobLabel label when set, else its name.
            labels = service.get("metadata", {}).get("labels", {})
            job = labels.get(spec["jobLabel"]) if spec.get("jobLabel") else name_of(service)
            ports = {p.get("name"): p for p in service.get("spec", {}).get("ports", [])}
            for endpoint in spec.get("endpoints", []):
                port = ports.get(endpoint.get("port"))
                if port is None:
                    report.problems.append(f"{ref(monitor)}: no port {endpoint.get('port')} on {ref(service)}")
                    continue
                if endpoint.get("path", "/metrics") != "/metrics":
                    continue
                for c in served:
                    target = container_port(c.container, port.get("targetPort", port.get("port")))
                    if (selects(service.get("spec", {}).get("selector"), pod_labels(c.deployment))
                            and target == getattr(c.settings, SERVICES[c.service].port_field)):
                        scraped[name_of(c.deployment)] = job
    for c in served:
        job = scraped.get(name_of(c.deployment))
        if job is None:
            report.problems.append(f"{ref(c.deployment)}: no ServiceMonitor scrapes its /metrics")
        elif job != c.service:
            report.problems.append(
                f"{ref(c.deployment)}: scraped as job={job}; alert rules and dashboards know it as job={c.service}"
            )
    exprs = [
        str(rule.get("expr", "")) for doc in of_kind(docs, "PrometheusRule")
        for group in doc.get("spec", {}).get("groups", []) for rule in group.get("rules", [])
    ]
    for job in sorted({job for expr in exprs for job in re.findall(r'job="([^"]+)"', expr)} - set(scraped.values())):
        report.problems.append(f"the alert rules select job={job}, which no monitor produces")
    report.facts.append(f"jobs {', '.join(sorted(set(scraped.values())))} scraped")


def pods_of(value, replicas: int) -> int:
    """A PDB's count or percentage as pods (percentages round up, as the disruption controller does)."""
    if isinstance(value, str) and value.endswith("%"):
        return -(-replicas * int(value[:-1]) // 100)
    return int(value)


def check_disruption(docs: list[dict], served: list[ServedContainer], policy: Policy, report: Report) -> None:
    """A PDB per service; under HA each keeps a pod up while still letting a node drain."""
    budgets = of_kind(docs, "PodDisruptionBudget")
    for c in served:
        pdbs = [b for b in budgets if selects(b.get("spec", {}).get("selector"), pod_labels(c.deployment))]
        if not pdbs:
            report.problems.append(f"{ref(c.deployment)}: no PodDisruptionBudget")
            continue
        scaler = next((s for s in of_kind(docs, "ScaledObject")
                       if s.get("spec", {}).get("scaleTargetRef", {}).get("name") == name_of(c.deployment)), None)
        if scaler is not None:  # the fewest pods there will be
            replicas = scaler["spec"].get("minReplicaCount", 0)
        else:
            replicas = c.deployment.get("spec", {}).get("replicas", 1)
        budget = pdbs[0].get("spec", {})
        if "maxUnavailable" in budget:
            allowed = pods_of(budget["maxUnavailable"], replicas)
        else:
            allowed = replicas - pods_of(budget.get("minAvailable", 0), replicas)
        if allowed < 1:
            report.problems.append(f"{ref(pdbs[0])}: allows no disruption at {replicas} replica(s): drains would hang")
        if policy.ha and replicas - allowed < 1 and not SERVICES[c.service].single:
            report.problems.append(f"{ref(pdbs[0])}: at {replicas} replica(s) a drain may take every pod down")


def check_overlay(name: str, docs: list[dict], crds: CrdSchemas, k8s_version: str) -> Report:
    report = Report(name, objects=len(docs))
    policy = POLICIES.get(name)
    if policy is None:
        report.problems.append(f"no policy for overlay {name!r}: add one to POLICIES in k8s/check.py")
        return report
    validate_schemas(docs, crds, k8s_version, report)
    served = served_containers(docs, report)
    plans = expected_topics(served, report)
    rules = [
        lambda: check_topics(docs, plans, report),
        lambda: check_topic_replicas(docs, served, report),
        lambda: check_kafka(docs, policy, report),
        lambda: check_scaling(docs, served, plans["topic_plan"], report),
        lambda: check_alert_rules(docs, RULES_FILE, report),
        lambda: check_config_copies(docs, report),
        lambda: check_workloads(docs, served, policy, report),
        lambda: check_ingress(docs, served, report),
        lambda: check_monitors(docs, served, report),
        lambda: check_disruption(docs, served, policy, report),
        lambda: check_fans(served, report),
    ]
    for rule in rules:
        try:
            rule()
        except (TypeError, ValueError, KeyError, AttributeError) as error:
            # A field of the wrong shape; its schema problem is reported already.
            report.problems.append(f"a project rule could not read a malformed manifest: {error!r}")
    return report


# -- output and copies -------------------------------------------------------------------


def counts(counter: Counter) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counter.items())) or "none"


def summary(report: Report, source: str, k8s_version: str, crds: CrdSchemas) -> Iterator[str]:
    yield f"{report.overlay} ({source}): {report.objects} objects"
    yield f"  Kubernetes {k8s_version} schemas, strict (kubernetes-validate): {counts(report.core)}"
    yield f"  CRD schemas, strict ({crds.directory}): {counts(report.custom)}"
    if report.unvalidated:
        yield f"  NOT validated, no CRD for them in {crds.directory}: {counts(report.unvalidated)}"
    yield f"  project rules: {'; '.join(report.facts)}"
    for problem in report.problems:
        yield f"  PROBLEM {problem}"


PROMETHEUS_RULE_HEAD = """\
# Generated by `python k8s/check.py --sync` from grafana/alerts/idolstream.rules.yml: edit
# that file, then sync (`make check-k8s` fails while the two differ). The rules' `job` labels
# (fast-tier, deep-tier, draw-tier, gateway, console, fans) are the names of the Services the
# ServiceMonitors scrape.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: idolstream
spec:
"""


def prometheus_rule_text(rules_text: str) -> str:
    """The rules file under `spec:`, its own header comment left out, block scalars intact."""
    lines = rules_text.splitlines()
    while lines and (lines[0].startswith("#") or not lines[0].strip()):
        lines.pop(0)
    return PROMETHEUS_RULE_HEAD + "".join(f"  {line}\n" if line.strip() else "\n" for line in lines)


def sync_copies() -> list[Path]:
    written = []
    for source, filename in CONFIG_COPIES.items():
        target = BASE / "config" / filename
        target.write_bytes((ROOT / "config" / source).read_bytes())
        written.append(target)
    target = BASE / "prometheusrule.yaml"
    target.write_text(prometheus_rule_text(RULES_FILE.read_text()))
    written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="k8s/check.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rendered", nargs="*", type=Path, help="kustomize output, one file per overlay")
    parser.add_argument("--crd-dir", default=os.environ.get("CRD_DIR") or DEFAULT_CRD_DIR,
                        help=f"CRD YAML files (default: $CRD_DIR, else {DEFAULT_CRD_DIR} from the repository root)")
    parser.add_argument("--kubernetes-version", default="1.31", help="schemas of this Kubernetes version")
    parser.add_argument("--sync", action="store_true", help="rewrite the copies under k8s/base, then exit")
    args = parser.parse_args(argv)
    if args.sync:
        for path in sync_copies():
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    if not args.rendered:
        parser.error("give the rendered overlays (build/k8s/<overlay>.yaml), or --sync")
    crds = CrdSchemas.load(args.crd_dir)
    failed = False
    for path in args.rendered:
        report = check_overlay(path.stem, load_docs(path), crds, args.kubernetes_version)
        for line in summary(report, str(path), args.kubernetes_version, crds):
            print(line)
        failed |= bool(report.problems)
    print("check-k8s: " + ("FAILED" if failed else f"{len(args.rendered)} overlays valid"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
