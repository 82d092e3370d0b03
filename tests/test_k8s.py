"""`make check-k8s` in the suite: the overlays render, validate offline and agree with the code.

The mutation tests break one thing in a rendered overlay and feed it to the checker's
functions: each break must be reported, or the check would pass manifests that fail on a
cluster (or drift from the code) without anyone noticing.
"""

import copy
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S_VERSION = "1.31"
CRD_KINDS = ("Kafka", "KafkaNodePool", "KafkaTopic", "PrometheusRule", "ScaledObject", "ServiceMonitor")


def _load_checker():
    spec = importlib.util.spec_from_file_location("k8s_check", ROOT / "k8s" / "check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


check = _load_checker()
CRD_DIR = os.environ.get("CRD_DIR") or check.DEFAULT_CRD_DIR
HAVE_CRDS = (ROOT / CRD_DIR).is_dir()
needs_crds = pytest.mark.skipif(not HAVE_CRDS, reason=f"no CRDs in {CRD_DIR}")


@pytest.fixture(scope="module")
def make_check_k8s():
    return subprocess.run(["make", "-s", "check-k8s"], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def crds():
    return check.CrdSchemas.load(CRD_DIR)


@pytest.fixture(scope="module")
def rendered(make_check_k8s):
    """The overlays as `make check-k8s` rendered them."""
    assert make_check_k8s.returncode == 0, make_check_k8s.stdout + make_check_k8s.stderr
    return {name: check.load_docs(ROOT / "build" / "k8s" / f"{name}.yaml") for name in ("dev", "prod")}


def problems(overlay, docs, crds):
    return check.check_overlay(overlay, docs, crds, K8S_VERSION).problems


def obj(docs, kind, name):
    found = check.named(docs, kind, name)
    assert found is not None, f"{kind}/{name} not rendered"
    return found


def container(docs, name):
    return obj(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]


def test_make_check_k8s_passes(make_check_k8s):
    out = make_check_k8s.stdout
    assert make_check_k8s.returncode == 0, out + make_check_k8s.stderr
    assert "check-k8s: 2 overlays valid" in out
    for overlay in ("dev", "prod"):
        assert f"{overlay} (build/k8s/{overlay}.yaml):" in out
    assert "Deployment 6" in out and "Ingress 1" in out and "PodDisruptionBudget 6" in out
    assert f"{len(check.topic_plan(check.TopicNames()))} topics = topic_plan()" in out
    assert "6 topics = the fans app's app_topics()" in out and "jobs console, deep-tier, draw-tier, fans," in out


@needs_crds
def test_the_operator_kinds_were_validated_against_their_crds(make_check_k8s):
    out = make_check_k8s.stdout
    assert "NOT validated" not in out
    crd_lines = [line for line in out.splitlines() if "CRD schemas, strict" in line]
    assert len(crd_lines) == 2
    for line in crd_lines:
        for kind in CRD_KINDS:
            assert re.search(rf"[:,] {kind} [1-9]", line), f"{kind} not validated: {line}"


def test_without_crds_the_check_says_what_it_could_not_validate(rendered, tmp_path):
    done = subprocess.run(
        [sys.executable, "k8s/check.py", "--crd-dir", str(tmp_path), "build/k8s/dev.yaml"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(line for line in done.stdout.splitlines() if "NOT validated" in line)
    for kind in CRD_KINDS:
        assert kind in line


def test_the_rendered_overlays_have_no_problems(rendered, crds):
    # The baseline the mutation tests start from: any problem they find is theirs.
    for overlay, docs in rendered.items():
        assert problems(overlay, docs, crds) == [], overlay


def _unknown_container_field(docs):
    container(docs, "fast-tier")["imagePullPolicyy"] = "Always"


def _grace_as_string(docs):
    obj(docs, "Deployment", "deep-tier")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "30"


def _grace_shorter_than_a_batch(docs):
    obj(docs, "Deployment", "deep-tier")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 5


def _too_many_replicas(docs):
    obj(docs, "ScaledObject", "fast-tier")["spec"]["maxReplicaCount"] = 100


def _lag_threshold_as_number(docs):
    obj(docs, "ScaledObject", "deep-tier")["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 4


def _wrong_consumer_group(docs):
    obj(docs, "ScaledObject", "deep-tier")["spec"]["triggers"][0]["metadata"]["consumerGroup"] = "idolstream-fast"


def _no_scale_down_window(docs):
    behavior = obj(docs, "ScaledObject", "fast-tier")["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    del behavior["scaleDown"]


def _wrong_partitions(docs):
    obj(docs, "KafkaTopic", "fan-images")["spec"]["partitions"] = 3  # topic_plan() never makes 3


def _wrong_topic_config(docs):
    obj(docs, "KafkaTopic", "items-dlq")["spec"]["config"]["retention.ms"] = "3600000"


def _missing_topic(docs):
    docs.remove(obj(docs, "KafkaTopic", "replies"))


def _kafka_typo(docs):
    kafka = obj(docs, "Kafka", "idolstream")["spec"]["kafka"]
    kafka["listners"] = kafka.pop("listeners")


def _kafka_old_api(docs):
    obj(docs, "Kafka", "idolstream")["apiVersion"] = "kafka.strimzi.io/v1beta2"


def _more_replicas_than_brokers(docs):
    obj(docs, "KafkaTopic", "replies")["spec"]["replicas"] = 3


def _alert_rule_dropped(docs):
    obj(docs, "PrometheusRule", "idolstream")["spec"]["groups"][0]["rules"].pop()


def _ingress_exposes_everything(docs):
    paths = obj(docs, "Ingress", "gateway")["spec"]["rules"][0]["http"]["paths"]
    paths[0]["pathType"] = "Prefix"


def _ingress_short_timeout(docs):
    obj(docs, "Ingress", "gateway")["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"] = "5"


def _env_typo(docs):
    env = container(docs, "fast-tier")["env"]
    next(e for e in env if e["name"] == "IDOLSTREAM_ADMIN_PORT")["name"] = "IDOLSTREAM_ADMN_PORT"


def _readiness_on_healthz(docs):
    container(docs, "gateway")["readinessProbe"]["httpGet"]["path"] = "/healthz"


def _no_startup_probe(docs):
    del container(docs, "deep-tier")["startupProbe"]


def _no_memory_limit(docs):
    del container(docs, "gateway")["resources"]["limits"]["memory"]


def _not_a_cli_subcommand(docs):
    container(docs, "fast-tier")["args"] = ["serve", "fast_tier"]


def _unknown_model(docs):
    env = container(docs, "deep-tier")["env"]
    next(e for e in env if e["name"] == "IDOLSTREAM_DEEP_MODEL_ID")["value"] = "Qwen/Qwen3-VL-2B-Instruct"


def _persona_not_mounted(docs):
    env = container(docs, "fast-tier")["env"]
    next(e for e in env if e["name"] == "IDOLSTREAM_PERSONA_PATH")["value"] = "/etc/persona.json"


def _word_list_not_set(docs):
    env = container(docs, "deep-tier")["env"]
    env[:] = [e for e in env if e["name"] != "IDOLSTREAM_MODERATION_WORDS_PATH"]


def _console_persona_not_mounted(docs):
    volumes = obj(docs, "Deployment", "console")["spec"]["template"]["spec"]["volumes"]
    config = next(v for v in volumes if v["name"] == "config")
    config["projected"]["sources"] = [s for s in config["projected"]["sources"]
                                      if not s["configMap"]["name"].startswith("idolstream-persona")]


def _short_overlay_secret(docs):
    _secret(docs, "idolstream-overlay")["data"]["secret"] = "c2hvcnQ="  # "short"


def _short_console_secret(docs):
    _secret(docs, "idolstream-console")["data"]["secret"] = "c2hvcnQ="  # "short"


def _secret(docs, prefix):
    """A rendered Secret by name (kustomize adds a hash suffix to generated ones)."""
    return next(doc for doc in docs if doc["kind"] == "Secret" and doc["metadata"]["name"].startswith(prefix))


def _service_renamed(docs):
    obj(docs, "Service", "fast-tier")["metadata"]["name"] = "fast"


def _min_above_max(docs):
    obj(docs, "ScaledObject", "deep-tier")["spec"]["minReplicaCount"] = 2


def _one_broker(docs):
    obj(docs, "KafkaNodePool", "brokers")["spec"]["replicas"] = 1


def _ephemeral_brokers(docs):
    obj(docs, "KafkaNodePool", "brokers")["spec"]["storage"] = {"type": "ephemeral"}


def _tier_without_gpu(docs):
    resources = container(docs, "fast-tier")["resources"]
    del resources["requests"]["nvidia.com/gpu"], resources["limits"]["nvidia.com/gpu"]


def _gpu_without_toleration(docs):
    del obj(docs, "Deployment", "deep-tier")["spec"]["template"]["spec"]["tolerations"]


def _secret_not_rendered(docs):
    docs.remove(next(doc for doc in docs if doc["kind"] == "Secret"))


def _services_create_topics_unreplicated(docs):
    env = container(docs, "gateway")["env"]
    next(item for item in env if item["name"] == "IDOLSTREAM_TOPIC_REPLICAS")["value"] = "1"


def _keda_with_the_short_kafka_name(docs):
    obj(docs, "ScaledObject", "deep-tier")["spec"]["triggers"][0]["metadata"]["bootstrapServers"] = (
        "idolstream-kafka-bootstrap:9092"
    )


def _moving_image_tag(docs):
    container(docs, "gateway")["image"] = "ghcr.io/idolstream/idolstream:latest"


def _fans_scaled_out(docs):
    obj(docs, "Deployment", "fans")["spec"]["replicas"] = 2


def _fans_rolling_update(docs):
    obj(docs, "Deployment", "fans")["spec"]["strategy"] = {"type": "RollingUpdate"}


def _fans_changelog_missing(docs):
    docs.remove(obj(docs, "KafkaTopic", "idolstream-fans-fan-profiles-changelog"))


def _fans_changelog_partitions(docs):
    obj(docs, "KafkaTopic", "idolstream-fans-reply-tallies-changelog")["spec"]["partitions"] = 3


def _fans_probe_on_another_port(docs):
    container(docs, "fans")["readinessProbe"]["httpGet"]["port"] = 8081


def _fans_word_list_not_mounted(docs):
    volumes = obj(docs, "Deployment", "fans")["spec"]["template"]["spec"]["volumes"]
    config = next(v for v in volumes if v["name"] == "config")
    config["projected"]["sources"] = [s for s in config["projected"]["sources"]
                                      if not s["configMap"]["name"].startswith("idolstream-moderation-words")]


def _fans_with_another_secret(docs):
    env = container(docs, "fans")["env"]
    next(e for e in env if e["name"] == "IDOLSTREAM_CONSOLE_SECRET")["valueFrom"]["secretKeyRef"]["name"] = "other"


def _tier_forgets_fans(docs):
    env = container(docs, "deep-tier")["env"]
    env[:] = [e for e in env if e["name"] != "IDOLSTREAM_FAN_MEMORY"]


def _no_fans_app(docs):
    docs.remove(obj(docs, "Deployment", "fans"))


def _draw_env(docs, name, value):
    env = container(docs, "draw-tier")["env"]
    if value is None:
        env[:] = [e for e in env if e["name"] != name]
    else:
        next(e for e in env if e["name"] == name)["value"] = value


def _draw_grace_shorter_than_a_picture(docs):
    obj(docs, "Deployment", "draw-tier")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 30


def _draw_model_of_another_tier(docs):
    _draw_env(docs, "IDOLSTREAM_DRAW_MODEL_ID", "tiny-qwen3vl-moe")


def _draw_guard_not_a_guard(docs):
    _draw_env(docs, "IDOLSTREAM_DRAW_IMAGE_GUARD_MODEL_ID", "Qwen/Qwen-Image")


def _draw_guard_unknown(docs):
    _draw_env(docs, "IDOLSTREAM_DRAW_IMAGE_GUARD_MODEL_ID", "Qwen/ShieldGemma-2")


def _draw_pictures_unjudged(docs):
    _draw_env(docs, "IDOLSTREAM_DRAW_IMAGE_GUARD_MODEL_ID", None)


def _draw_scaled_on_the_fast_group(docs):
    obj(docs, "ScaledObject", "draw-tier")["spec"]["triggers"][0]["metadata"]["consumerGroup"] = "idolstream-fast"


def _draw_scaled_on_another_topic(docs):
    obj(docs, "ScaledObject", "draw-tier")["spec"]["triggers"][0]["metadata"]["topic"] = "items.deep"


def _draw_not_scaled(docs):
    docs.remove(obj(docs, "ScaledObject", "draw-tier"))


def _draw_not_scraped(docs):
    docs.remove(obj(docs, "ServiceMonitor", "draw-tier"))


def _draw_topic_missing(docs):
    docs.remove(obj(docs, "KafkaTopic", "items-draw"))


def _draw_probe_on_the_fast_port(docs):
    container(docs, "draw-tier")["readinessProbe"]["httpGet"]["port"] = 8081


def _draw_gpu_on_dev(docs):
    resources = container(docs, "draw-tier")["resources"]
    resources["requests"]["nvidia.com/gpu"] = resources["limits"]["nvidia.com/gpu"] = 1


MUTATIONS = [
    # (overlay, mutation, what the report must say)
    ("dev", _unknown_container_field, "'imagePullPolicyy' was unexpected"),
    ("dev", _grace_as_string, "is not of type 'integer'"),
    ("dev", _grace_shorter_than_a_batch, "terminationGracePeriodSeconds 5 is not longer than a batch"),
    ("prod", _too_many_replicas, "ScaledObject/fast-tier: maxReplicaCount 100 exceeds the"),
    ("dev", _wrong_consumer_group, "consumerGroup idolstream-fast, deep-tier uses idolstream-deep"),
    ("dev", _no_scale_down_window, "no scaleDown stabilizationWindowSeconds"),
    ("dev", _wrong_partitions, "KafkaTopic/fan-images: 3 partitions, topic_plan() says"),
    ("prod", _wrong_topic_config, "KafkaTopic/items-dlq: retention.ms=3600000, topic_plan() says"),
    ("prod", _missing_topic, "topic replies of topic_plan() has no KafkaTopic"),
    ("dev", _more_replicas_than_brokers, "KafkaTopic/replies: 3 replicas but only 1 brokers"),
    ("prod", _alert_rule_dropped, "spec.groups differ from grafana/alerts/idolstream.rules.yml"),
    ("prod", _ingress_exposes_everything, "Ingress/gateway: exposes /metrics"),
    ("dev", _ingress_short_timeout, "proxy-read-timeout 5 would cut websockets"),
    ("dev", _env_typo, "IDOLSTREAM_ADMN_PORT is not a setting of FastTierSettings"),
    ("prod", _readiness_on_healthz, "readinessProbe is GET /healthz"),
    ("prod", _no_startup_probe, "no startupProbe"),
    ("dev", _no_memory_limit, "no limits for memory"),
    ("prod", _not_a_cli_subcommand, "is refused by the CLI"),
    ("prod", _unknown_model, "model Qwen/Qwen3-VL-2B-Instruct is a fast-tier model, not deep"),
    ("dev", _persona_not_mounted, "IDOLSTREAM_PERSONA_PATH=/etc/persona.json is no file of a mounted ConfigMap"),
    ("prod", _word_list_not_set, "IDOLSTREAM_MODERATION_WORDS_PATH=config/moderation/words.json is no file of a"),
    ("dev", _short_overlay_secret, "the overlay secret is 5 bytes; the gateway needs 32+"),
    ("dev", _short_console_secret, "the console secret is 5 bytes; the console needs 32+"),
    ("prod", _console_persona_not_mounted, "Deployment/console container console: IDOLSTREAM_PERSONA_PATH=/etc/idol"),
    ("prod", _service_renamed, "scraped as job=fast; alert rules and dashboards know it as job=fast-tier"),
    ("dev", _min_above_max, "ScaledObject/deep-tier: minReplicaCount exceeds maxReplicaCount 1"),
    ("prod", _one_broker, "3 controllers and 1 brokers; HA needs"),
    ("prod", _ephemeral_brokers, "KafkaNodePool/brokers: ephemeral storage"),
    ("prod", _tier_without_gpu, "fast-tier: a tier without a GPU"),
    ("prod", _gpu_without_toleration, "does not tolerate the nvidia.com/gpu taint"),
    ("dev", _secret_not_rendered, "neither rendered nor listed as created by hand"),
    ("prod", _moving_image_tag, "image tag latest names no single build"),
    ("dev", _keda_with_the_short_kafka_name, "KEDA resolves it from its own namespace"),
    ("prod", _services_create_topics_unreplicated, "IDOLSTREAM_TOPIC_REPLICAS=1, the KafkaTopics have [3] replicas"),
    ("prod", _fans_scaled_out, "Deployment/fans: 2 replicas; the fans app runs one"),
    ("dev", _fans_rolling_update, "Deployment/fans: strategy RollingUpdate; a rollout would run two workers"),
    ("prod", _fans_changelog_missing,
     "topic idolstream-fans-fan-profiles-changelog of the fans app's app_topics() has no KafkaTopic"),
    ("dev", _fans_changelog_partitions, "3 partitions, the fans app's app_topics() says 6"),
    ("dev", _fans_probe_on_another_port, "readinessProbe is GET /readyz on port 8081, the service answers /readyz on "
     "IDOLSTREAM_FANS_PORT=8790"),
    ("prod", _fans_word_list_not_mounted, "Deployment/fans container fans: IDOLSTREAM_MODERATION_WORDS_PATH="),
    ("prod", _fans_with_another_secret, "IDOLSTREAM_CONSOLE_SECRET comes from different Secrets"),
    ("prod", _tier_forgets_fans, "fan memory off while a fans app publishes profiles"),
    ("dev", _no_fans_app, "IDOLSTREAM_FAN_MEMORY is on but no fans app publishes profiles"),
    ("prod", _draw_grace_shorter_than_a_picture, "Deployment/draw-tier container draw-tier: "
     "terminationGracePeriodSeconds 30 is not longer than a batch can take to finish (60.5 s: the picture deadline "
     "of Qwen/Qwen-Image 60 s"),
    ("dev", _draw_model_of_another_tier, "model tiny-qwen3vl-moe is a fast-tier model, not draw"),
    ("prod", _draw_guard_not_a_guard, "model Qwen/Qwen-Image is a draw-tier model, not guard"),
    ("prod", _draw_guard_unknown, "model Qwen/ShieldGemma-2 is not in the registry it mounts"),
    ("prod", _draw_pictures_unjudged, "IDOLSTREAM_DRAW_IMAGE_GUARD_MODEL_ID unset: her pictures would go on air"),
    ("dev", _draw_scaled_on_the_fast_group, "consumerGroup idolstream-fast, draw-tier uses idolstream-draw"),
    ("prod", _draw_scaled_on_another_topic, "ScaledObject/draw-tier: triggers on ['items.deep'], draw-tier consumes "
     "['items.draw']"),
    ("prod", _draw_not_scaled, "Deployment/draw-tier: no ScaledObject scales it on lag"),
    ("prod", _draw_not_scraped, "Deployment/draw-tier: no ServiceMonitor scrapes its /metrics"),
    ("prod", _draw_topic_missing, "topic items.draw of topic_plan() has no KafkaTopic"),
    ("dev", _draw_probe_on_the_fast_port, "readinessProbe is GET /readyz on port 8081, the service answers /readyz on "
     "IDOLSTREAM_DRAW_ADMIN_PORT=8083"),
    ("dev", _draw_gpu_on_dev, "Deployment/draw-tier container draw-tier: asks for a GPU in an overlay meant to run"),
]
CRD_MUTATIONS = [
    ("prod", _kafka_typo, "'listners' was unexpected"),
    ("dev", _lag_threshold_as_number, "4 is not of type 'string'"),
    ("prod", _kafka_old_api, "no CRD serves kafka.strimzi.io/v1beta2 (served: v1)"),
]


@pytest.mark.parametrize(("overlay", "mutate", "expected"), MUTATIONS, ids=[m.__name__[1:] for _, m, _ in MUTATIONS])
def test_a_broken_manifest_is_reported(rendered, crds, overlay, mutate, expected):
    docs = copy.deepcopy(rendered[overlay])
    mutate(docs)
    found = problems(overlay, docs, crds)
    assert any(expected in problem for problem in found), found


@needs_crds
@pytest.mark.parametrize(("overlay", "mutate", "expected"), CRD_MUTATIONS,
                         ids=[m.__name__[1:] for _, m, _ in CRD_MUTATIONS])
def test_a_broken_operator_resource_is_reported(rendered, crds, overlay, mutate, expected):
    docs = copy.deepcopy(rendered[overlay])
    mutate(docs)
    found = problems(overlay, docs, crds)
    assert any(expected in problem for problem in found), found


def test_a_service_the_check_does_not_know_is_reported_not_crashed_on(rendered, crds, monkeypatch):
    # As if `idolstream serve` gained a service before the check learnt its settings.
    monkeypatch.delitem(check.SERVICES, "draw-tier")
    found = problems("prod", rendered["prod"], crds)
    assert any("Deployment/draw-tier container draw-tier: `serve draw-tier` is unknown here" in p for p in found), found


def test_prod_keeps_a_tier_pod_up_through_a_drain(rendered, crds):
    docs = copy.deepcopy(rendered["prod"])
    obj(docs, "ScaledObject", "deep-tier")["spec"]["minReplicaCount"] = 1
    found = problems("prod", docs, crds)
    expected = "PodDisruptionBudget/deep-tier: at 1 replica(s) a drain may take every pod down"
    assert any(expected in problem for problem in found), found


def test_a_partition_change_in_code_alone_fails_the_check(rendered, crds, monkeypatch):
    # As if stream/topics.py now made 4 partitions: the topics and the KEDA caps no longer match.
    real_plan = check.topic_plan
    monkeypatch.setattr(check, "topic_plan", lambda names, partitions: real_plan(names, 4))
    found = problems("prod", rendered["prod"], crds)
    assert any("KafkaTopic/fan-images: 6 partitions, topic_plan() says 4" in p for p in found), found
    assert any("ScaledObject/fast-tier: maxReplicaCount 6 exceeds the 4 partitions" in p for p in found), found


def test_an_alert_rule_change_alone_fails_the_check(rendered, tmp_path):
    rules = yaml.safe_load((ROOT / "grafana" / "alerts" / "idolstream.rules.yml").read_text())
    rules["groups"].append({"name": "added", "rules": [{"alert": "Added", "expr": "vector(1)"}]})
    changed = tmp_path / "idolstream.rules.yml"
    changed.write_text(yaml.safe_dump(rules))
    report = check.Report("prod")
    check.check_alert_rules(rendered["prod"], changed, report)
    assert any("spec.groups differ" in p for p in report.problems), report.problems
