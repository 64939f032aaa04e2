-- Uploaded files (content-addressed per tenant, stored in parts so nobody holds a whole file),
-- documents parsed from them, their pages, and their chunks with vectors (pgvector).
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE files (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant        text NOT NULL,
    sha256        text,                         -- NULL while the upload is still streaming in
    size          bigint NOT NULL DEFAULT 0,
    head          bytea NOT NULL DEFAULT '',    -- the first bytes, to judge the type by
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX files_by_hash ON files (tenant, sha256) WHERE sha256 IS NOT NULL;

CREATE TABLE file_parts (
    file_id   uuid NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    n         integer NOT NULL,
    data      bytea NOT NULL,
    PRIMARY KEY (file_id, n)
);

CREATE TABLE documents (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant           text NOT NULL,
    sha256           text NOT NULL,
    file_id          uuid REFERENCES files (id) ON DELETE SET NULL,
    filename         text NOT NULL,
    size             bigint NOT NULL,
    metadata         jsonb NOT NULL DEFAULT '{}',
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'indexed', 'failed')),
    error            jsonb,
    title            text,
    pages            integer,
    chunk_count      integer NOT NULL DEFAULT 0,
    summary          jsonb,                     -- {method: llm | extractive, text, model}
    embedding_model  text,
    embedding_dim    integer,
    generation       uuid,                      -- the chunk generation search sees
    task_id          uuid,                      -- the last ingest task that touched it
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    indexed_at       timestamptz,
    UNIQUE (tenant, sha256)
);
CREATE INDEX documents_by_tenant ON documents (tenant, created_at DESC, id DESC);

CREATE TABLE document_pages (
    document_id  uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    page         integer NOT NULL,              -- 1-based
    text         text NOT NULL,
    PRIMARY KEY (document_id, page)
);

-- A re-run writes a new generation beside the old one and switches documents.generation in one
-- transaction, so search never sees half a document and a retry never duplicates a chunk.
CREATE TABLE chunks (
    id           bigserial PRIMARY KEY,
    document_id  uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    tenant       text NOT NULL,
    generation   uuid NOT NULL,
    idx          integer NOT NULL,
    page_start   integer NOT NULL,
    page_end     integer NOT NULL,
    text         text NOT NULL,
    tokens       integer NOT NULL,
    model        text NOT NULL,
    embedding    vector NOT NULL,
    UNIQUE (document_id, generation, idx)
);
CREATE INDEX chunks_by_tenant ON chunks (tenant, document_id);
-- One HNSW index per embedding model (its dimension fixed by the cast); the local default here,
-- others are made when a worker first uses them.
CREATE INDEX chunks_hnsw_minilm ON chunks
    USING hnsw ((embedding::vector(384)) vector_cosine_ops)
    WHERE model = 'all-MiniLM-L6-v2';
