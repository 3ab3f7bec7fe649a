-- Analyst query pack for the lineage tables (docs/clickhouse.md describes the tables).
--
-- Run one query:   lineage query --file docs/queries.sql --name NAME --param key=value
-- Format: each query starts with "-- name: NAME", then "--" lines of description and
-- "-- param: key = <SQL expression>" lines, then the SQL. Parameters are ClickHouse server-side
-- parameters {key:Type}; a value given with --param is bound, never pasted into the SQL. A
-- parameter not given takes its default expression (usually a scalar subquery over the data), so
-- every query runs as-is; a default that finds no rows is NULL and matches nothing. A default
-- selecting a LowCardinality column must CAST it AS String: ClickHouse cannot return an empty
-- LowCardinality scalar. Tables are unqualified: the client's database decides.
--
-- FINAL: the base tables are ReplacingMergeTree, and a redelivered batch stays duplicated until a
-- background merge. Every query that counts or lists rows of a base table reads it FINAL; the
-- rollup views (violations_hourly, agent_actions_daily) count distinct keys and need no FINAL.

-- name: workflow_timeline
-- What executed in workflow X, in chain order: who acted, what ran, what it touched, under which
-- authorization, and whether the entry is VERIFIED or CONTAINED.
-- param: workflow = (SELECT workflow_id FROM lineage_entries ORDER BY event_time DESC LIMIT 1)
SELECT
    chain_seq,
    event_time,
    kind,
    principal,
    agent_id,
    model_id,
    model_version,
    action,
    resource,
    authorization_id,
    decision,
    parent_event_id,
    event_id,
    verification,
    lower(hex(entry_hash)) AS entry_hash_hex
FROM lineage_entries FINAL
WHERE workflow_id = {workflow:String}
ORDER BY chain_seq;

-- name: execution_authorization
-- Who authorized execution Y and under which policy version: joins the execution to the
-- AUTHORIZATION_DECISION event named by its authorization_id. authorized_for is the principal the
-- decision was made for, recorded_by the emitter whose key signed it, policy_version the digest of
-- the policy set that decided; within_expiry says whether the execution began before expires_at.
-- An empty decision means the execution names no (known) authorization.
-- param: execution = (SELECT event_id FROM lineage_entries WHERE kind = 'EXECUTION_STARTED' AND authorization_id != '' ORDER BY event_time DESC LIMIT 1)
SELECT
    x.event_id AS execution_id,
    x.workflow_id AS workflow_id,
    x.event_time AS executed_at,
    x.action AS action,
    x.resource AS resource,
    x.principal AS executed_by,
    x.agent_id AS agent,
    x.authorization_id AS authorization_id,
    a.principal AS authorized_for,
    a.emitter_id AS recorded_by,
    a.event_time AS decided_at,
    a.decision AS decision,
    a.auth_policy_id AS policy_id,
    a.auth_policy_digest AS policy_version,
    a.determining_policies AS determining_policies,
    a.expires_at AS expires_at,
    a.decision = 'ALLOW' AND x.event_time <= a.expires_at AS within_expiry,
    lower(hex(x.policy_digest)) AS stream_policy_digest
FROM
(
    SELECT *
    FROM lineage_entries FINAL
    WHERE event_id = {execution:String}
) AS x
LEFT JOIN
(
    SELECT *
    FROM lineage_entries FINAL
    WHERE kind = 'AUTHORIZATION_DECISION'
      AND event_id IN (
          SELECT authorization_id FROM lineage_entries WHERE event_id = {execution:String}
      )
) AS a ON a.event_id = x.authorization_id;

-- name: unauthorized_executions
-- Executions (EXECUTION_STARTED) in the last `hours` hours that ran without a valid ALLOW: no
-- authorization_id, an id that names no decision, a DENY, or a decision already expired.
-- "Last 24 h" is measured back from `until`, which defaults to the newest event_time in the
-- data, not the wall clock, so replayed and demo data qualify; pass until='YYYY-MM-DD hh:mm:ss'
-- for a fixed window. flagged says whether the stream processor raised a violation for it.
-- param: until = (SELECT max(event_time) FROM lineage_entries)
-- param: hours = (24)
SELECT
    x.event_time AS executed_at,
    x.workflow_id AS workflow_id,
    x.event_id AS execution_id,
    x.principal AS principal,
    x.agent_id AS agent,
    x.action AS action,
    x.resource AS resource,
    x.authorization_id AS authorization_id,
    multiIf(
        x.authorization_id = '', 'NO_AUTHORIZATION',
        a.event_id = '', 'AUTHORIZATION_NOT_FOUND',
        a.decision != 'ALLOW', 'DENIED',
        'EXPIRED'
    ) AS problem,
    x.event_id IN (SELECT event_id FROM violations FINAL) AS flagged
FROM
(
    SELECT *
    FROM lineage_entries FINAL
    WHERE kind = 'EXECUTION_STARTED'
      AND event_time > {until:DateTime64(6, 'UTC')} - toIntervalHour({hours:UInt32})
      AND event_time <= {until:DateTime64(6, 'UTC')}
) AS x
LEFT JOIN
(
    SELECT event_id, decision, expires_at
    FROM lineage_entries FINAL
    WHERE kind = 'AUTHORIZATION_DECISION'
) AS a ON a.event_id = x.authorization_id
WHERE x.authorization_id = ''
   OR a.event_id = ''
   OR a.decision != 'ALLOW'
   OR x.event_time > a.expires_at
ORDER BY executed_at;

-- name: agent_systems
-- What systems did agent A access: every resource named on its events, with the actions, the
-- number of workflows and the first and last access. Defaults to the agent with most accesses.
-- param: agent = (SELECT CAST(agent_id AS String) FROM lineage_entries WHERE agent_id != '' AND resource != '' GROUP BY agent_id ORDER BY count() DESC, agent_id LIMIT 1)
SELECT
    resource AS system,
    count() AS event_count,
    countIf(kind = 'RESOURCE_ACCESS') AS accesses,
    arraySort(groupUniqArray(action)) AS actions,
    uniqExact(workflow_id) AS workflows,
    min(event_time) AS first_access,
    max(event_time) AS last_access
FROM lineage_entries FINAL
WHERE agent_id = {agent:String} AND resource != ''
GROUP BY resource
ORDER BY last_access DESC;

-- name: downstream_propagation
-- Everything that followed from event E: the causal tree below it along parent_event_id, level by
-- level (recursive CTE), across workflows when a callee names its caller event as parent.
-- max_depth bounds the walk (and stops a tampered cycle); defaults to the newest workflow root.
-- param: event = (SELECT event_id FROM lineage_entries WHERE kind = 'WORKFLOW_STARTED' ORDER BY event_time DESC LIMIT 1)
-- param: max_depth = (64)
WITH RECURSIVE tree AS
(
    SELECT
        event_id,
        parent_event_id,
        workflow_id,
        chain_seq,
        kind,
        action,
        resource,
        agent_id,
        event_time,
        toUInt32(0) AS depth,
        [event_id] AS path
    FROM lineage_entries FINAL
    WHERE event_id = {event:String}
    UNION ALL
    SELECT
        e.event_id,
        e.parent_event_id,
        e.workflow_id,
        e.chain_seq,
        e.kind,
        e.action,
        e.resource,
        e.agent_id,
        e.event_time,
        t.depth + 1,
        arrayPushBack(t.path, e.event_id)
    FROM lineage_entries AS e FINAL
    INNER JOIN tree AS t ON e.parent_event_id = t.event_id
    WHERE t.depth < {max_depth:UInt32} AND NOT has(t.path, e.event_id)
)
SELECT depth, workflow_id, chain_seq, event_id, parent_event_id, kind, action, resource, agent_id, event_time
FROM tree
ORDER BY depth, event_time, event_id;

-- name: workflow_call_tree
-- Workflows called, directly or transitively, by workflow X (parent_workflow_id edges), with
-- each callee's summary. Defaults to the newest workflow that called another.
-- param: workflow = (SELECT parent_workflow_id FROM lineage_entries WHERE parent_workflow_id != '' ORDER BY event_time DESC LIMIT 1)
-- param: max_depth = (16)
WITH RECURSIVE calls AS
(
    SELECT toString({workflow:String}) AS callee, '' AS caller, toUInt32(0) AS depth
    WHERE callee != ''
    UNION ALL
    SELECT c.workflow_id, c.parent_workflow_id, calls.depth + 1
    FROM
    (
        SELECT DISTINCT workflow_id, parent_workflow_id
        FROM lineage_entries
        WHERE parent_workflow_id != ''
    ) AS c
    INNER JOIN calls ON c.parent_workflow_id = calls.callee
    WHERE calls.depth < {max_depth:UInt32}
)
SELECT
    calls.depth AS depth,
    calls.callee AS workflow_id,
    calls.caller AS called_by,
    s.started_at AS started_at,
    s.ended_at AS ended_at,
    s.events AS events,
    s.violations AS violations,
    s.verified AS verified
FROM calls
LEFT JOIN workflow_summary AS s ON s.workflow_id = calls.callee
ORDER BY depth, started_at, workflow_id;

-- name: workflows_by_policy
-- Which workflows ran under policy digest P. P may be an authorization policy digest
-- ("sha256:<hex>", the policy set the SDK gate evaluated) or the hex of the stream policy file
-- digest bound into chain entries; both are matched with or without the "sha256:" prefix.
-- param: policy = (SELECT CAST(auth_policy_digest AS String) FROM lineage_entries WHERE auth_policy_digest != '' ORDER BY event_time DESC LIMIT 1)
WITH lower(replaceRegexpOne({policy:String}, '^sha256:', '')) AS wanted
SELECT
    workflow_id,
    min(event_time) AS started_at,
    max(event_time) AS ended_at,
    count() AS entries,
    countIf(lower(replaceRegexpOne(auth_policy_digest, '^sha256:', '')) = wanted) AS decisions,
    countIf(lower(replaceRegexpOne(auth_policy_digest, '^sha256:', '')) = wanted AND decision = 'ALLOW') AS allowed,
    countIf(lower(hex(policy_digest)) = wanted) AS entries_under_stream_policy
FROM lineage_entries FINAL
GROUP BY workflow_id
HAVING decisions > 0 OR entries_under_stream_policy > 0
ORDER BY started_at;

-- name: runtime_attestations
-- Which runtime attestations were in force for workflow X: each distinct runtime reported on its
-- events (host, image digest, attestation type, measurement), when it was first and last seen and
-- which executions ran under it. Two rows for one host mean the attested runtime changed.
-- param: workflow = (SELECT workflow_id FROM lineage_entries WHERE attestation_type != '' ORDER BY event_time DESC LIMIT 1)
SELECT
    host,
    image_digest,
    attestation_type,
    measurement,
    min(event_time) AS first_seen,
    max(event_time) AS last_seen,
    countIf(kind = 'ATTESTATION') AS attestations,
    countIf(kind IN ('EXECUTION_STARTED', 'EXECUTION_COMPLETED', 'EXECUTION_FAILED')) AS executions,
    arraySort(groupUniqArrayIf(action, kind IN ('EXECUTION_STARTED', 'EXECUTION_COMPLETED', 'EXECUTION_FAILED'))) AS actions
FROM lineage_entries FINAL
WHERE workflow_id = {workflow:String} AND host != ''
GROUP BY host, image_digest, attestation_type, measurement
ORDER BY first_seen;

-- name: violation_trends_hourly
-- Violations per type per hour over the last `hours` hours of data (measured back from the newest
-- hour with a violation). violation_type = '' means every type.
-- param: violation_type = ('')
-- param: hours = (168)
SELECT violation_type, hour, count
FROM violations_hourly
WHERE ({violation_type:String} = '' OR violation_type = {violation_type:String})
  AND hour >= (SELECT max(hour) FROM violations_hourly) - toIntervalHour({hours:UInt32})
ORDER BY hour, violation_type;

-- name: workflow_violations
-- Every violation recorded against workflow X, oldest first. Defaults to the workflow of the
-- newest violation.
-- param: workflow = (SELECT workflow_id FROM violations ORDER BY event_time DESC LIMIT 1)
SELECT
    event_time,
    violation_type,
    severity,
    rule,
    event_id,
    related_event_ids,
    explanation,
    policy_digest,
    violation_id
FROM violations FINAL
WHERE workflow_id = {workflow:String}
ORDER BY event_time, violation_type, violation_id;

-- name: top_agents
-- Agents ranked by executions started over the last `days` days of data (measured back from the
-- newest day in agent_actions_daily), with all their events and distinct actions.
-- param: days = (30)
-- param: limit = (10)
SELECT
    agent_id,
    sum(count) AS executions,
    sum(events) AS all_events,
    uniqExact(action) AS distinct_actions,
    min(day) AS first_day,
    max(day) AS last_day
FROM agent_actions_daily
WHERE day > (SELECT max(day) FROM agent_actions_daily) - toIntervalDay({days:UInt32})
GROUP BY agent_id
ORDER BY executions DESC, all_events DESC, agent_id
LIMIT {limit:UInt32};

-- name: quarantine_by_reason
-- Records kept out of verified lineage, per reason code: how many, from which topics, the offset
-- range and one example reason. topic = '' means every topic.
-- param: topic = ('')
SELECT
    reason_code,
    count() AS records,
    arraySort(groupUniqArray(source_topic)) AS topics,
    min(source_offset) AS first_offset,
    max(source_offset) AS last_offset,
    any(reason) AS example_reason
FROM quarantine FINAL
WHERE {topic:String} = '' OR source_topic = {topic:String}
GROUP BY reason_code
ORDER BY records DESC, reason_code;

-- name: latest_checkpoints
-- The newest signed checkpoint of each partition log: tree size, root hash, signing key, the
-- input offset it covers and the signed note to hand to a witness.
SELECT
    origin,
    partition,
    max(tree_size) AS latest_tree_size,
    lower(hex(argMax(root_hash, tree_size))) AS root_hash_hex,
    argMax(key_name, tree_size) AS signed_by,
    argMax(source_offset, tree_size) AS covers_offset,
    count() AS checkpoints,
    argMax(note, tree_size) AS signed_note
FROM checkpoints FINAL
GROUP BY origin, partition
ORDER BY origin, partition;

-- name: workflow_summaries
-- The newest workflows with start, end, events, actors, systems touched, violations and whether
-- every entry is VERIFIED with no violation. unverified_only = 1 lists only the others.
-- param: unverified_only = (0)
-- param: limit = (50)
SELECT
    workflow_id,
    started_at,
    ended_at,
    events,
    actors,
    systems,
    violations,
    verified
FROM workflow_summary
WHERE {unverified_only:UInt8} = 0 OR NOT verified
ORDER BY started_at DESC, workflow_id
LIMIT {limit:UInt32};

-- name: contained_workflows
-- Workflows a critical violation contained: when containment began, how many later entries were
-- flagged CONTAINED and which violations the workflow has.
SELECT
    e.workflow_id AS workflow_id,
    e.contained_from AS contained_from,
    e.contained_entries AS contained_entries,
    v.types AS violation_types
FROM
(
    SELECT workflow_id, min(event_time) AS contained_from, count() AS contained_entries
    FROM lineage_entries FINAL
    WHERE verification = 'CONTAINED'
    GROUP BY workflow_id
) AS e
LEFT JOIN
(
    SELECT workflow_id, arraySort(groupUniqArray(violation_type)) AS types
    FROM violations FINAL
    GROUP BY workflow_id
) AS v ON v.workflow_id = e.workflow_id
ORDER BY contained_from;
