-- Users and roles for a ClickHouse server (applied by infra/compose.yaml at first start).
-- chDB (the embedded engine) has no access control, so this file cannot be tested here.

CREATE DATABASE IF NOT EXISTS lineage;

-- The sink: creates its tables through migrations, then only inserts.
CREATE ROLE IF NOT EXISTS lineage_writer_role;
GRANT CREATE TABLE, CREATE VIEW, CREATE DATABASE ON lineage.* TO lineage_writer_role;
GRANT SELECT(version) ON lineage.schema_version TO lineage_writer_role;
GRANT INSERT ON lineage.schema_version TO lineage_writer_role;
GRANT INSERT ON lineage.lineage_entries TO lineage_writer_role;
GRANT INSERT ON lineage.violations TO lineage_writer_role;
GRANT INSERT ON lineage.checkpoints TO lineage_writer_role;
GRANT INSERT ON lineage.quarantine TO lineage_writer_role;
CREATE USER IF NOT EXISTS lineage_writer IDENTIFIED WITH sha256_password BY 'change-me-writer'
    DEFAULT ROLE lineage_writer_role;
GRANT lineage_writer_role TO lineage_writer;

-- Analysts: read-only, with limits so one query cannot take the server down.
CREATE SETTINGS PROFILE IF NOT EXISTS lineage_analyst_profile SETTINGS
    readonly = 1,
    max_execution_time = 60,
    max_memory_usage = 10000000000,
    max_result_rows = 1000000;
CREATE QUOTA IF NOT EXISTS lineage_analyst_quota
    FOR INTERVAL 1 hour MAX queries = 2000, read_rows = 50000000000;
CREATE ROLE IF NOT EXISTS lineage_analyst;
GRANT SELECT ON lineage.* TO lineage_analyst;
CREATE USER IF NOT EXISTS analyst IDENTIFIED WITH sha256_password BY 'change-me-analyst'
    DEFAULT ROLE lineage_analyst SETTINGS PROFILE lineage_analyst_profile;
GRANT lineage_analyst TO analyst;
ALTER QUOTA lineage_analyst_quota TO lineage_analyst;

-- The auditor's verifier reads everything but trusts nothing it reads: it only needs SELECT.
CREATE USER IF NOT EXISTS auditor IDENTIFIED WITH sha256_password BY 'change-me-auditor'
    DEFAULT ROLE lineage_analyst SETTINGS PROFILE lineage_analyst_profile;
GRANT lineage_analyst TO auditor;
