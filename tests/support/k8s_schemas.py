"""Offline schema checks of Kubernetes manifests.

Built-in kinds go through kubernetes-validate (the Kubernetes OpenAPI schemas,
bundled in the package, strict: unknown fields are errors). Custom resources
are not in those schemas: the KEDA ScaledObject (keda.sh/v1alpha1) is checked
against the JSON schema below, which covers the fields of its CRD that we use
(and refuses others), and its HPA `behavior` against the Kubernetes schema of
a HorizontalPodAutoscaler. Kustomize's own files get a small schema too. A kind
with no schema is an error, never a silent skip.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate

KUBERNETES_VERSION = "1.37"

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": _NAME,
        "namespace": _NAME,
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
    "additionalProperties": False,
}
_COUNT = {"type": "integer", "minimum": 0}
# The Prometheus scaler's metadata (every value a string, as in the CRD).
_PROMETHEUS_METADATA = {
    "type": "object",
    "required": ["serverAddress", "query", "threshold"],
    "properties": {
        "serverAddress": {"type": "string", "pattern": "^https?://"},
        "query": {"type": "string", "minLength": 1},
        "threshold": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
        "activationThreshold": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
        "namespace": {"type": "string"},
        "customHeaders": {"type": "string"},
        "queryParameters": {"type": "string"},
        "ignoreNullValues": {"enum": ["true", "false"]},
        "unsafeSsl": {"enum": ["true", "false"]},
        "timeout": {"type": "string"},
    },
    "additionalProperties": False,
}
SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": _NAME,
                        "envSourceContainerName": {"type": "string"},
                    },
                    "additionalProperties": False,
                },
                "pollingInterval": _COUNT,
                "cooldownPeriod": _COUNT,
                "initialCooldownPeriod": _COUNT,
                "idleReplicaCount": _COUNT,
                "minReplicaCount": _COUNT,
                "maxReplicaCount": _COUNT,
                "fallback": {
                    "type": "object",
                    "required": ["failureThreshold", "replicas"],
                    "properties": {"failureThreshold": _COUNT, "replicas": _COUNT},
                    "additionalProperties": False,
                },
                "advanced": {
                    "type": "object",
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "properties": {"name": _NAME, "behavior": {"type": "object"}},
                            "additionalProperties": False,
                        },
                    },
                    "additionalProperties": False,
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"const": "prometheus"},
                            "name": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": _NAME,
                                    "kind": {
                                        "enum": [
                                            "TriggerAuthentication",
                                            "ClusterTriggerAuthentication",
                                        ]
                                    },
                                },
                                "additionalProperties": False,
                            },
                            "metadata": _PROMETHEUS_METADATA,
                        },
                        "additionalProperties": False,
                    },
                },
            },
            "additionalProperties": False,
        },
        "status": {"type": "object"},
    },
    "additionalProperties": False,
}

_PATHS = {"type": "array", "items": {"type": "string", "minLength": 1}}
_KUSTOMIZE_FIELDS = {
    "apiVersion": {"type": "string"},
    "kind": {"type": "string"},
    "metadata": {"type": "object"},
    "namespace": _NAME,
    "resources": _PATHS,
    "components": _PATHS,
    "patches": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "patch": {"type": "string"},
                "target": {"type": "object"},
                "options": {"type": "object"},
            },
            "additionalProperties": False,
        },
    },
    "labels": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["pairs"],
            "properties": {
                "pairs": _STRING_MAP,
                "includeSelectors": {"type": "boolean"},
                "includeTemplates": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
    },
    "images": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "newName": {"type": "string"},
                "newTag": {"type": "string"},
                "digest": {"type": "string"},
            },
            "additionalProperties": False,
        },
    },
}
KUSTOMIZE_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    (api_version, kind): {
        "type": "object",
        "required": ["apiVersion", "kind"],
        "properties": _KUSTOMIZE_FIELDS,
        "additionalProperties": False,
    }
    for api_version, kind in (
        ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
        ("kustomize.config.k8s.io/v1alpha1", "Component"),
    )
}


def _hpa_behavior_problems(doc: dict[str, Any]) -> list[str]:
    config = doc["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {})
    if "behavior" not in config:
        return []
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "behavior-check"},
        "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "x"},
            "maxReplicas": 1,
            "behavior": config["behavior"],
        },
    }
    return kubernetes_problems(hpa)


def kubernetes_problems(doc: dict[str, Any]) -> list[str]:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(p) for p in error.path)
        return [f"{where}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [error.message]
    return []


def _json_schema_problems(schema: dict[str, Any], doc: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'.'.join(str(p) for p in error.path)}: {error.message}"
        for error in validator.iter_errors(doc)
    ]


def manifest_problems(doc: dict[str, Any]) -> list[str]:
    """Schema errors of one manifest document; [] when it is valid."""
    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    if key == ("keda.sh/v1alpha1", "ScaledObject"):
        problems = _json_schema_problems(SCALED_OBJECT_SCHEMA, doc)
        return problems or _hpa_behavior_problems(doc)
    if key in KUSTOMIZE_SCHEMAS:
        return _json_schema_problems(KUSTOMIZE_SCHEMAS[key], doc)
    return kubernetes_problems(doc)
