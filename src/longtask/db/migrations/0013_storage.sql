-- The bytes of uploaded files each tenant keeps, held to LONGTASK_MAX_TENANT_BYTES. A file's
-- parts are added as they are stored, by the statement that stores each part and only while
-- they fit (store/files.py), so two uploads at once cannot both pass the quota; files.size
-- grows with them. They are taken off by a trigger when files go, however they go: an upload
-- over a limit or a duplicate discarded, a deleted document's file, the purge of orphans.
CREATE TABLE tenant_storage (
    tenant  text PRIMARY KEY,
    bytes   bigint NOT NULL DEFAULT 0
);

INSERT INTO tenant_storage (tenant, bytes)
SELECT tenant, sum(size) FROM files GROUP BY tenant;

CREATE FUNCTION longtask_storage_freed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tenant_storage s SET bytes = greatest(0, s.bytes - g.bytes)
    FROM (SELECT tenant, sum(size) AS bytes FROM gone GROUP BY tenant) g
    WHERE s.tenant = g.tenant;
    RETURN NULL;
END $$;

CREATE TRIGGER files_freed AFTER DELETE ON files REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION longtask_storage_freed();
