-- Hybrid search: Postgres full text beside the vectors. Each document has a text-search
-- configuration (its language, judged at ingest; `simple` where no stemmer fits, e.g. Japanese),
-- and each chunk its tsvector in it, written with the chunk (no generated column: adding one
-- would rewrite the table under an exclusive lock during the deploy). Chunks stored before this
-- get `simple` until their document is indexed again.
ALTER TABLE documents ADD COLUMN language regconfig NOT NULL DEFAULT 'simple';

ALTER TABLE chunks ADD COLUMN language regconfig NOT NULL DEFAULT 'simple';
ALTER TABLE chunks ADD COLUMN tsv tsvector;
UPDATE chunks SET tsv = to_tsvector('simple', text);
CREATE INDEX chunks_tsv ON chunks USING gin (tsv);

-- A query is parsed in each language a tenant's documents use, and the parses ORed: one
-- tsquery that the GIN index can serve, whatever the language of each chunk.
CREATE AGGREGATE longtask_tsquery_or (tsquery) (SFUNC = tsquery_or, STYPE = tsquery);
