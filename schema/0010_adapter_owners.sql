-- ltst-memory schema, version 0010: every row of the framework adapters has an owner.
--
-- The adapter tables of 0003 (LangChain collections and documents, LangGraph store items and their
-- vectors) get a `user_id` column, are keyed per user (two users may both have a collection
-- "langchain" or an item ("memories",) / "k"), and are put under the Row Level Security policy of
-- 0005 (`ltst_user_isolation`, key `ltst.user_id`). See docs/adapters.md ("Owners").
--
-- Existing rows are given the owner that is known:
--   * a collection: `metadata->>'user_id'` when set; its documents take the collection's owner;
--   * a store item: the one label of its namespace that is the user_id of a conversation session
--     (e.g. ("memories", "alice") -> alice); its vectors take the item's owner;
--   * otherwise the placeholder owner ' ' (one space): a blank id, which every ltst-memory entry point
--     refuses as a user id (check_id), so no user-scoped store or adapter ever matches it. Such rows
--     are shared: only unscoped adapters (`unscoped=True`) and the tables' owner see them. It is also
--     the column default, for rows written without an owner.
--
-- Idempotent: safe to apply twice, by `ltst migrate` or `psql -v ON_ERROR_STOP=1 -f`.

ALTER TABLE ltst_collections   ADD COLUMN IF NOT EXISTS user_id text;
ALTER TABLE ltst_documents     ADD COLUMN IF NOT EXISTS user_id text;
ALTER TABLE ltst_store_items   ADD COLUMN IF NOT EXISTS user_id text;
ALTER TABLE ltst_store_vectors ADD COLUMN IF NOT EXISTS user_id text;

-- Backfill (only rows without an owner yet) ----------------------------------------------------------

UPDATE ltst_collections
   SET user_id = coalesce(nullif(btrim(metadata ->> 'user_id'), ''), ' ')
 WHERE user_id IS NULL;

UPDATE ltst_documents AS d
   SET user_id = c.user_id
  FROM ltst_collections AS c
 WHERE d.user_id IS NULL AND c.collection = d.collection;

UPDATE ltst_store_items AS i
   SET user_id = coalesce(
       (SELECT min(label) FROM unnest(i.namespace) AS label
         WHERE EXISTS (SELECT 1 FROM conversation_sessions AS s WHERE s.user_id = label)
        HAVING count(DISTINCT label) = 1),
       ' ')
 WHERE i.user_id IS NULL;

UPDATE ltst_store_vectors AS v
   SET user_id = i.user_id
  FROM ltst_store_items AS i
 WHERE v.user_id IS NULL AND i.ns_path = v.ns_path AND i.key = v.key;

UPDATE ltst_documents     SET user_id = ' ' WHERE user_id IS NULL;  -- none expected (foreign key)
UPDATE ltst_store_vectors SET user_id = ' ' WHERE user_id IS NULL;

ALTER TABLE ltst_collections   ALTER COLUMN user_id SET NOT NULL;
ALTER TABLE ltst_documents     ALTER COLUMN user_id SET NOT NULL;
ALTER TABLE ltst_store_items   ALTER COLUMN user_id SET NOT NULL;
ALTER TABLE ltst_store_vectors ALTER COLUMN user_id SET NOT NULL;

-- a row written without an owner (older code, plain SQL) is a shared row, as unknown owners above
ALTER TABLE ltst_collections   ALTER COLUMN user_id SET DEFAULT ' ';
ALTER TABLE ltst_documents     ALTER COLUMN user_id SET DEFAULT ' ';
ALTER TABLE ltst_store_items   ALTER COLUMN user_id SET DEFAULT ' ';
ALTER TABLE ltst_store_vectors ALTER COLUMN user_id SET DEFAULT ' ';

-- Keys per owner ---------------------------------------------------------------------------------------
-- Primary keys and foreign keys of 0003 are replaced by ones that start with user_id (once: skipped
-- when the primary key of ltst_collections already has user_id).

DO $$
DECLARE
    c record;
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_constraint AS k
          JOIN pg_attribute AS a ON a.attrelid = k.conrelid AND a.attnum = ANY (k.conkey)
         WHERE k.conrelid = 'ltst_collections'::regclass AND k.contype = 'p' AND a.attname = 'user_id'
    ) THEN
        RETURN;
    END IF;
    -- foreign keys first (they depend on the primary keys they reference)
    FOR c IN
        SELECT k.conrelid::regclass AS tbl, k.conname
          FROM pg_constraint AS k
         WHERE k.contype = 'f'
           AND k.conrelid IN ('ltst_documents'::regclass, 'ltst_store_vectors'::regclass)
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', c.tbl, c.conname);
    END LOOP;
    FOR c IN
        SELECT k.conrelid::regclass AS tbl, k.conname
          FROM pg_constraint AS k
         WHERE k.contype = 'p'
           AND k.conrelid IN ('ltst_collections'::regclass, 'ltst_documents'::regclass,
                              'ltst_store_items'::regclass, 'ltst_store_vectors'::regclass)
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', c.tbl, c.conname);
    END LOOP;
    ALTER TABLE ltst_collections   ADD CONSTRAINT ltst_collections_pkey PRIMARY KEY (user_id, collection);
    ALTER TABLE ltst_documents     ADD CONSTRAINT ltst_documents_pkey PRIMARY KEY (user_id, collection, document_id);
    ALTER TABLE ltst_store_items   ADD CONSTRAINT ltst_store_items_pkey PRIMARY KEY (user_id, ns_path, key);
    ALTER TABLE ltst_store_vectors ADD CONSTRAINT ltst_store_vectors_pkey
        PRIMARY KEY (user_id, ns_path, key, field_name);
    ALTER TABLE ltst_documents ADD CONSTRAINT ltst_documents_collection_fkey
        FOREIGN KEY (user_id, collection) REFERENCES ltst_collections (user_id, collection) ON DELETE CASCADE;
    ALTER TABLE ltst_store_vectors ADD CONSTRAINT ltst_store_vectors_item_fkey
        FOREIGN KEY (user_id, ns_path, key) REFERENCES ltst_store_items (user_id, ns_path, key) ON DELETE CASCADE;
END;
$$;

-- "items under a namespace prefix" of one owner: a left-anchored LIKE on ns_path after user_id
DROP INDEX IF EXISTS idx_store_items_prefix;
CREATE INDEX IF NOT EXISTS idx_store_items_owner_prefix
    ON ltst_store_items (user_id, ns_path text_pattern_ops);

-- Row Level Security: the same policy as the core tables ------------------------------------------------

SELECT ltst_enable_rls('ltst_collections');
SELECT ltst_enable_rls('ltst_documents');
SELECT ltst_enable_rls('ltst_store_items');
SELECT ltst_enable_rls('ltst_store_vectors');
