// The Avro schemas the verifier decodes, copied verbatim (as JSON) from schemas/*.avsc.
// Data, not code: tests/browser/test_proof_verifier.py checks they equal the files.
export const SCHEMAS = {
 "execution_event": {
  "type": "record",
  "name": "ExecutionEvent",
  "namespace": "lineage.v1",
  "doc": "One thing an agent or service did, or decided. Hashes and seals cover the exact single-object-encoded bytes of this record.",
  "fields": [
   {
    "name": "event_id",
    "type": "string",
    "doc": "UUIDv7, unique per event"
   },
   {
    "name": "workflow_id",
    "type": "string"
   },
   {
    "name": "parent_event_id",
    "type": [
     "null",
     "string"
    ],
    "default": null,
    "doc": "causal parent inside the workflow"
   },
   {
    "name": "parent_workflow_id",
    "type": [
     "null",
     "string"
    ],
    "default": null,
    "doc": "workflow that called into this one"
   },
   {
    "name": "trace_id",
    "type": [
     "null",
     "string"
    ],
    "default": null,
    "doc": "W3C trace context trace-id (32 hex)"
   },
   {
    "name": "span_id",
    "type": [
     "null",
     "string"
    ],
    "default": null,
    "doc": "W3C trace context span-id (16 hex)"
   },
   {
    "name": "kind",
    "type": {
     "type": "enum",
     "name": "EventKind",
     "symbols": [
      "WORKFLOW_STARTED",
      "AUTHORIZATION_DECISION",
      "EXECUTION_STARTED",
      "EXECUTION_COMPLETED",
      "EXECUTION_FAILED",
      "RESOURCE_ACCESS",
      "ATTESTATION",
      "WORKFLOW_COMPLETED"
     ]
    }
   },
   {
    "name": "event_time",
    "type": {
     "type": "long",
     "logicalType": "timestamp-micros"
    }
   },
   {
    "name": "principal",
    "type": "string",
    "doc": "who the work is done for or by (user, service account)"
   },
   {
    "name": "agent_id",
    "type": [
     "null",
     "string"
    ],
    "default": null
   },
   {
    "name": "model_id",
    "type": [
     "null",
     "string"
    ],
    "default": null
   },
   {
    "name": "model_version",
    "type": [
     "null",
     "string"
    ],
    "default": null
   },
   {
    "name": "action",
    "type": "string",
    "doc": "what executed, e.g. tool.call:search"
   },
   {
    "name": "resource",
    "type": [
     "null",
     "string"
    ],
    "default": null,
    "doc": "system or resource touched"
   },
   {
    "name": "authorization_id",
    "type": [
     "null",
     "string"
    ],
    "default": null,
    "doc": "the AUTHORIZATION_DECISION event_id this execution runs under"
   },
   {
    "name": "authorization",
    "type": [
     "null",
     {
      "type": "record",
      "name": "Authorization",
      "fields": [
       {
        "name": "decision",
        "type": {
         "type": "enum",
         "name": "Decision",
         "symbols": [
          "ALLOW",
          "DENY"
         ]
        }
       },
       {
        "name": "policy_id",
        "type": "string"
       },
       {
        "name": "policy_digest",
        "type": "string",
        "doc": "sha256:<hex> of the policy set that decided"
       },
       {
        "name": "determining_policies",
        "type": {
         "type": "array",
         "items": "string"
        }
       },
       {
        "name": "input_digest",
        "type": "string",
        "doc": "sha256:<hex> of the canonical request evaluated"
       },
       {
        "name": "expires_at",
        "type": {
         "type": "long",
         "logicalType": "timestamp-micros"
        }
       },
       {
        "name": "authorized_action",
        "type": "string"
       },
       {
        "name": "authorized_resource",
        "type": [
         "null",
         "string"
        ],
        "default": null
       }
      ]
     }
    ],
    "default": null,
    "doc": "set on AUTHORIZATION_DECISION events"
   },
   {
    "name": "runtime",
    "type": [
     "null",
     {
      "type": "record",
      "name": "Runtime",
      "fields": [
       {
        "name": "host",
        "type": "string"
       },
       {
        "name": "image_digest",
        "type": [
         "null",
         "string"
        ],
        "default": null
       },
       {
        "name": "attestation_type",
        "type": [
         "null",
         "string"
        ],
        "default": null
       },
       {
        "name": "measurement",
        "type": [
         "null",
         "string"
        ],
        "default": null
       }
      ]
     }
    ],
    "default": null
   },
   {
    "name": "input_digest",
    "type": [
     "null",
     "string"
    ],
    "default": null
   },
   {
    "name": "output_digest",
    "type": [
     "null",
     "string"
    ],
    "default": null
   },
   {
    "name": "attributes",
    "type": {
     "type": "map",
     "values": "string"
    },
    "default": {}
   },
   {
    "name": "emitter_id",
    "type": "string"
   },
   {
    "name": "emitter_seq",
    "type": "long",
    "doc": "gap-free per (emitter, topic, partition), starting at 0"
   },
   {
    "name": "topic",
    "type": "string",
    "doc": "the topic the emitter wrote this record to"
   },
   {
    "name": "partition",
    "type": "int",
    "doc": "the partition the emitter wrote this record to"
   }
  ]
 },
 "seal": {
  "type": "record",
  "name": "Seal",
  "namespace": "lineage.v1",
  "doc": "An emitter's signature over a contiguous range of its events in one partition.",
  "fields": [
   {
    "name": "emitter_id",
    "type": "string"
   },
   {
    "name": "key_id",
    "type": "string"
   },
   {
    "name": "topic",
    "type": "string"
   },
   {
    "name": "partition",
    "type": "int"
   },
   {
    "name": "first_seq",
    "type": "long"
   },
   {
    "name": "last_seq",
    "type": "long"
   },
   {
    "name": "merkle_root",
    "type": "bytes",
    "doc": "RFC 6962 root over the covered events' digests, in sequence order"
   },
   {
    "name": "prev_seal_hash",
    "type": "bytes",
    "doc": "seal hash of the emitter's previous seal in this partition, 32 zero bytes for the first"
   },
   {
    "name": "signature",
    "type": "bytes",
    "doc": "Ed25519 over the seal message (docs/integrity.md)"
   }
  ]
 },
 "violation": {
  "type": "record",
  "name": "Violation",
  "namespace": "lineage.v1",
  "doc": "A policy or integrity violation, published to lineage.violations for alerting consumers.",
  "fields": [
   {
    "name": "violation_id",
    "type": "string",
    "doc": "deterministic: a replay yields the same id"
   },
   {
    "name": "violation_type",
    "type": {
     "type": "enum",
     "name": "ViolationType",
     "symbols": [
      "UNAUTHORIZED_EXECUTION",
      "DENIED_EXECUTION",
      "EXPIRED_AUTHORIZATION",
      "SCOPE_MISMATCH",
      "UNTRUSTED_AUTHORIZER",
      "MISSING_ATTESTATION",
      "ATTESTATION_CHANGED",
      "DEPTH_EXCEEDED",
      "FANOUT_EXCEEDED",
      "FORBIDDEN_RESOURCE",
      "SEQUENCE_GAP",
      "DUPLICATE_CONFLICT",
      "ORPHAN_EVENT",
      "BAD_SIGNATURE",
      "UNSEALED_EVENT",
      "UNKNOWN_KEY",
      "CONTAINED_WORKFLOW"
     ]
    }
   },
   {
    "name": "rule",
    "type": "string"
   },
   {
    "name": "severity",
    "type": {
     "type": "enum",
     "name": "Severity",
     "symbols": [
      "LOW",
      "MEDIUM",
      "HIGH",
      "CRITICAL"
     ]
    }
   },
   {
    "name": "workflow_id",
    "type": "string"
   },
   {
    "name": "event_id",
    "type": [
     "null",
     "string"
    ],
    "default": null
   },
   {
    "name": "related_event_ids",
    "type": {
     "type": "array",
     "items": "string"
    },
    "default": []
   },
   {
    "name": "policy_digest",
    "type": "string"
   },
   {
    "name": "explanation",
    "type": "string"
   },
   {
    "name": "source_partition",
    "type": "int"
   },
   {
    "name": "source_offset",
    "type": "long"
   },
   {
    "name": "event_time",
    "type": {
     "type": "long",
     "logicalType": "timestamp-micros"
    },
    "doc": "event time of the offending event, or of the record that made the violation certain"
   }
  ]
 }
};
