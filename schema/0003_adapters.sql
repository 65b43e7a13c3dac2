-- ltst-memory schema, version 0003: tables of the framework adapters (ltst_memory.adapters).
--
--   ltst_collections / ltst_documents   the LangChain VectorStore (LTSTVectorStore): documents with string
--                                        ids, JSON metadata and vectors of any dimension, kept apart per
--                                        collection (each collection records its own dimension).
--   ltst_store_items / ltst_store_vectors  the LangGraph BaseStore (LTSTStore): namespaced JSON items with
--                                        optional TTL, and one vector per indexed field of an item.
--
-- Chat history (LTSTChatMessageHistory) needs no table: it stores LangChain messages as conversation
-- messages. Idempotent: safe to apply twice, by `ltst migrate` or `psql -v ON_ERROR_STOP=1 -f`.

CREATE EXTENSION IF NOT EXISTS vector;

-- LangChain vector store ----------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS ltst_collections (
    collection       text PRIMARY KEY CHECK (length(collection) BETWEEN 1 AND 255),
    dimension        integer CHECK (dimension > 0),
    embedding_model  text,
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS ltst_documents (
    collection   text NOT NULL REFERENCES ltst_collections (collection) ON DELETE CASCADE,
    document_id  text NOT NULL CHECK (length(document_id) >= 1),
    content      text NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- no fixed dimension: every collection has its own (checked against ltst_collections.dimension)
    embedding    vector NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection, document_id)
);

CREATE INDEX IF NOT EXISTS idx_documents_metadata
    ON ltst_documents USING gin (metadata jsonb_path_ops);

-- LangGraph store -----------------------------------------------------------------------------------
-- ns_path is the namespace labels joined and terminated by U+001F, so "items under a prefix" is a
-- left-anchored LIKE served by the text_pattern_ops index.

CREATE TABLE IF NOT EXISTS ltst_store_items (
    ns_path      text NOT NULL,
    key          text NOT NULL,
    namespace    text[] NOT NULL CHECK (cardinality(namespace) >= 1),
    value        jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    ttl_minutes  double precision CHECK (ttl_minutes IS NULL OR ttl_minutes > 0),
    PRIMARY KEY (ns_path, key)
);

CREATE INDEX IF NOT EXISTS idx_store_items_prefix
    ON ltst_store_items (ns_path text_pattern_ops);
CREATE INDEX IF NOT EXISTS idx_store_items_expires
    ON ltst_store_items (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_store_items_value
    ON ltst_store_items USING gin (value jsonb_path_ops);

CREATE TABLE IF NOT EXISTS ltst_store_vectors (
    ns_path     text NOT NULL,
    key         text NOT NULL,
    field_name  text NOT NULL,
    embedding   vector NOT NULL,
    PRIMARY KEY (ns_path, key, field_name),
    FOREIGN KEY (ns_path, key) REFERENCES ltst_store_items (ns_path, key) ON DELETE CASCADE
);
